// libFuzzer target: the receive path. The first input byte picks the mode:
//  even: the rest is a whole frame, parsed and deciphered as received (the
//        key is fixed, so corpus frames built by esp_tool authenticate);
//  odd:  the rest is the plaintext of the enciphered region (inner packet,
//        padding, pad length, next header, all fuzzed), sealed here under the
//        corpus key, so every mutation authenticates and reaches the padding,
//        next-header and inner-UDP checks that a forged tag never would.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/esp.hpp"

using namespace keycast;

namespace {
struct Ctx {
  Aead aead;
  AeadKey key;
  Ctx() : key(make()) {}
  static KeyMaterial make() {
    KeyMaterial m;  // corpus key: 000102..0f, salt a0a1a2a3
    for (int i = 0; i < 16; ++i) m.key[i] = static_cast<uint8_t>(i);
    const uint8_t salt[4] = {0xa0, 0xa1, 0xa2, 0xa3};
    std::memcpy(m.salt, salt, 4);
    return m;
  }
};
}  // namespace

// Builds a sealed frame whose enciphered region is exactly `plain` (rounded
// down to ESP's 4-byte alignment).
std::vector<uint8_t> sealed_frame(Ctx& ctx, const uint8_t* plain, size_t avail) {
  const size_t n = std::max<size_t>(4, avail - avail % 4);
  static const esp::Template t = [] {
    esp::Flow f;
    f.src_ip = 0x0a000001;
    f.group_ip = 0xef010101;
    return esp::make_template(f);
  }();
  std::vector<uint8_t> frame(esp::kCipherOffset + n + kIcvLen + 8);
  uint8_t aad[esp::kAadLen];
  AeadOp op{};
  // inner_len n - 2 needs no padding: the region is n bytes, then overwritten.
  if (esp::prepare(t, 0x1000, 7, esp::kNextUdp, frame.data(), n - 2, frame.size(), aad, op) == 0) return {};
  std::memset(op.data, 0, op.len);
  std::memcpy(op.data, plain, std::min<size_t>(avail, op.len));
  ctx.aead.seal(ctx.key, op);
  frame.resize(esp::kCipherOffset + op.len + kIcvLen);  // exact size: overreads are caught
  return frame;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Ctx ctx;
  if (size == 0) return 0;
  std::vector<uint8_t> frame = (data[0] & 1) ? sealed_frame(ctx, data + 1, size - 1)
                                             : std::vector<uint8_t>(data + 1, data + size);
  if (frame.empty()) return 0;
  esp::Parsed p;
  if (esp::parse(frame.data(), frame.size(), p) != Drop::None) return 0;
  // Everything parse accepted must lie inside the frame.
  if (p.cipher < frame.data() || p.icv + kIcvLen > frame.data() + frame.size()) __builtin_trap();
  esp::Opened o;
  if (esp::decap(ctx.aead, ctx.key, p, o) == Drop::None) {
    if (o.inner + o.inner_len > frame.data() + frame.size()) __builtin_trap();
    if (o.payload && o.payload + o.payload_len > frame.data() + frame.size()) __builtin_trap();
  }
  return 0;
}
