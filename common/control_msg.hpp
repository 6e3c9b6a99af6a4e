// In-band control: the "key data change previous notice".
// Carried in an ESP packet under the current key with next header 253, so it
// is authenticated exactly like data.
//
// Body: version (1) | type (1) | length of TLVs (2, big-endian) | TLVs
// TLV:  type (1) | length (1) | value. Unknown TLV types are skipped so a newer
// sender can add fields; a notice missing a mandatory TLV is rejected.
#pragma once
#include <cstddef>
#include <cstdint>

namespace keycast {

constexpr uint8_t kControlVersion = 1;
constexpr uint8_t kControlKeyChangeNotice = 1;

enum class ControlTlv : uint8_t {
  NextSpi = 1,       // u32: key identifier that becomes current
  MsToSwitch = 2,    // u32: milliseconds until the sender switches
  Channel = 3,       // u32: channel the notice is about
};

struct KeyChangeNotice {
  uint32_t channel = 0;
  uint32_t next_spi = 0;
  uint32_t ms_to_switch = 0;
};

enum class ControlError : uint8_t { Ok, Truncated, BadVersion, BadType, BadLength, Missing };

constexpr std::size_t kNoticeLen = 4 + 3 * 6;

// Returns bytes written, 0 if cap is too small.
std::size_t encode_notice(const KeyChangeNotice& n, uint8_t* out, std::size_t cap) noexcept;
ControlError decode_notice(const uint8_t* in, std::size_t len, KeyChangeNotice& n) noexcept;

}  // namespace keycast
