#include "common/control_msg.hpp"

namespace keycast {

namespace {
void put_tlv32(uint8_t*& p, ControlTlv t, uint32_t v) noexcept {
  *p++ = static_cast<uint8_t>(t);
  *p++ = 4;
  *p++ = static_cast<uint8_t>(v >> 24);
  *p++ = static_cast<uint8_t>(v >> 16);
  *p++ = static_cast<uint8_t>(v >> 8);
  *p++ = static_cast<uint8_t>(v);
}
}  // namespace

std::size_t encode_notice(const KeyChangeNotice& n, uint8_t* out, std::size_t cap) noexcept {
  if (cap < kNoticeLen) return 0;
  uint8_t* p = out;
  *p++ = kControlVersion;
  *p++ = kControlKeyChangeNotice;
  *p++ = 0;
  *p++ = 18;
  put_tlv32(p, ControlTlv::NextSpi, n.next_spi);
  put_tlv32(p, ControlTlv::MsToSwitch, n.ms_to_switch);
  put_tlv32(p, ControlTlv::Channel, n.channel);
  return static_cast<std::size_t>(p - out);
}

ControlError decode_notice(const uint8_t* in, std::size_t len, KeyChangeNotice& n) noexcept {
  if (len < 4) return ControlError::Truncated;
  if (in[0] != kControlVersion) return ControlError::BadVersion;
  if (in[1] != kControlKeyChangeNotice) return ControlError::BadType;
  const std::size_t body = std::size_t(in[2]) << 8 | in[3];
  if (body > len - 4) return ControlError::Truncated;
  const uint8_t* p = in + 4;
  const uint8_t* end = p + body;
  bool have_spi = false, have_ms = false;
  KeyChangeNotice out;
  while (p < end) {
    if (end - p < 2) return ControlError::Truncated;
    const uint8_t type = p[0], l = p[1];
    if (static_cast<std::size_t>(end - p - 2) < l) return ControlError::Truncated;
    const uint8_t* v = p + 2;
    auto u32 = [&](uint32_t& dst) {
      if (l != 4) return false;
      dst = uint32_t(v[0]) << 24 | uint32_t(v[1]) << 16 | uint32_t(v[2]) << 8 | v[3];
      return true;
    };
    switch (static_cast<ControlTlv>(type)) {
      case ControlTlv::NextSpi:
        if (!u32(out.next_spi)) return ControlError::BadLength;
        have_spi = true;
        break;
      case ControlTlv::MsToSwitch:
        if (!u32(out.ms_to_switch)) return ControlError::BadLength;
        have_ms = true;
        break;
      case ControlTlv::Channel:
        if (!u32(out.channel)) return ControlError::BadLength;
        break;
      default:
        break;  // forward compatible: skip what this version does not know
    }
    p += 2 + l;
  }
  if (!have_spi || !have_ms) return ControlError::Missing;
  n = out;
  return ControlError::Ok;
}

}  // namespace keycast
