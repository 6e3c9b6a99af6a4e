// libFuzzer target: the receive path on arbitrary frames. The first input byte
// picks how the fuzzer's frame is used: raw, or with a valid ESP header
// prefix so the fuzzer reaches the AEAD and trailer checks quickly. The key is
// fixed, so inputs built by esp_tool with the corpus key authenticate and
// reach the padding and inner-UDP checks.
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

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Ctx ctx;
  std::vector<uint8_t> frame(data, data + size);  // exact size: overreads are caught
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
