// libFuzzer target: the in-band control message decoder.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/control_msg.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> in(data, data + size);
  keycast::KeyChangeNotice n;
  if (keycast::decode_notice(in.data(), in.size(), n) == keycast::ControlError::Ok) {
    // A decoded notice re-encodes and decodes to the same values.
    uint8_t buf[64];
    std::size_t len = keycast::encode_notice(n, buf, sizeof buf);
    keycast::KeyChangeNotice m;
    if (len == 0 || keycast::decode_notice(buf, len, m) != keycast::ControlError::Ok ||
        m.next_spi != n.next_spi || m.ms_to_switch != n.ms_to_switch || m.channel != n.channel)
      __builtin_trap();
  }
  return 0;
}
