// Cipher suites carried on the wire and in the key plane.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace keycast {

enum class Suite : uint8_t {
  Aes128Gcm = 1,  // RFC 4106, 16-byte key: the default
  Aes256Gcm = 2,  // RFC 4106, 32-byte key
};

constexpr std::size_t kSaltLen = 4;   // RFC 4106 salt, taken from the key material
constexpr std::size_t kIvLen = 8;     // RFC 4106 explicit IV
constexpr std::size_t kIcvLen = 16;   // RFC 4106 full-length ICV
constexpr std::size_t kMaxKeyLen = 32;

constexpr std::size_t key_len(Suite s) noexcept { return s == Suite::Aes256Gcm ? 32 : 16; }

constexpr std::string_view suite_name(Suite s) noexcept {
  return s == Suite::Aes256Gcm ? "aes256gcm" : "aes128gcm";
}

inline std::optional<Suite> parse_suite(std::string_view name) noexcept {
  if (name == "aes128gcm") return Suite::Aes128Gcm;
  if (name == "aes256gcm") return Suite::Aes256Gcm;
  return std::nullopt;
}

inline std::optional<Suite> suite_from_wire(uint8_t v) noexcept {
  if (v == 1) return Suite::Aes128Gcm;
  if (v == 2) return Suite::Aes256Gcm;
  return std::nullopt;
}

}  // namespace keycast
