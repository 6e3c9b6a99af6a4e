#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace keycast {

std::string hex_encode(const uint8_t* p, std::size_t n);
// Decodes exactly n bytes from 2n hex digits; false on any other input.
bool hex_decode(std::string_view hex, uint8_t* out, std::size_t n);

}  // namespace keycast
