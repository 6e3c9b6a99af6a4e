// Why a received frame was not delivered. Every rejection has exactly one
// reason; statistics are kept per reason and summed into the coarse figures
// (malformed, auth_fail, ...) that --stats-json reports.
#pragma once
#include <cstdint>
#include <string_view>

namespace keycast {

enum class Drop : uint8_t {
  None = 0,
  NotIpv4,        // not Ethernet/IPv4 (ARP, IPv6, ...): not ours, counted apart
  NotEsp,         // IPv4 but protocol is not 50
  BadIpHeader,    // IHL, total length or version inconsistent with the frame
  Fragment,       // IPv4 fragment: keycast never fragments, so it is not ours
  Truncated,      // frame shorter than its IP length, or than ESP header + IV
  ShortIcv,       // no room for a minimal trailer and a 16-byte ICV
  BadLength,      // ciphertext length not a multiple of 4 (RFC 4303 §2.4)
  IvMismatch,     // explicit IV low word disagrees with the ESP sequence number
  UnknownSpi,     // no key held for this SPI
  AuthFail,       // ICV did not verify
  BadPad,         // pad length exceeds payload or pad bytes are not 1,2,3,...
  BadNextHeader,  // next header neither UDP (17) nor control (253)
  BadInner,       // inner UDP header inconsistent with the ESP payload
  Replay,         // sequence number already seen or left of the replay window
  WrongGroup,     // destination is not the configured group/port
  BadControl,     // control message (next header 253) failed to decode
  WrongVlan,      // another VLAN's frame, untagged on a --vlan port, or stacked (QinQ)
  kCount
};

constexpr std::string_view drop_name(Drop d) noexcept {
  switch (d) {
    case Drop::None: return "none";
    case Drop::NotIpv4: return "not_ipv4";
    case Drop::NotEsp: return "not_esp";
    case Drop::BadIpHeader: return "bad_ip_header";
    case Drop::Fragment: return "fragment";
    case Drop::Truncated: return "truncated";
    case Drop::ShortIcv: return "short_icv";
    case Drop::BadLength: return "bad_length";
    case Drop::IvMismatch: return "iv_mismatch";
    case Drop::UnknownSpi: return "unknown_spi";
    case Drop::AuthFail: return "auth_fail";
    case Drop::BadPad: return "bad_pad";
    case Drop::BadNextHeader: return "bad_next_header";
    case Drop::BadInner: return "bad_inner";
    case Drop::Replay: return "replay";
    case Drop::WrongGroup: return "wrong_group";
    case Drop::BadControl: return "bad_control";
    case Drop::WrongVlan: return "wrong_vlan";
    case Drop::kCount: break;
  }
  return "?";
}

// Reasons that make up the "malformed" figure: structurally broken ESP.
constexpr bool drop_is_malformed(Drop d) noexcept {
  switch (d) {
    case Drop::BadIpHeader: case Drop::Truncated: case Drop::ShortIcv: case Drop::BadLength:
    case Drop::IvMismatch: case Drop::BadPad: case Drop::BadNextHeader:
    case Drop::BadInner: case Drop::BadControl:
      return true;
    default:
      return false;
  }
}

}  // namespace keycast
