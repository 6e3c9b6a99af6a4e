// libFuzzer target for the key-plane protocol codec (keyplane/protocol.hpp).
// Any input: decode() must return without crashing; a frame that decodes must
// re-encode to a frame that decodes to the same fields.
#include <cstdlib>

#include "keyplane/protocol.hpp"

using namespace keycast::kp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Message m;
  if (decode(data, size, m) != DecodeStatus::Ok) {
    // Also exercise the streaming path the server uses.
    Header h;
    if (size >= kHeaderLen && decode_header(data, size, h) == DecodeStatus::Ok) {
      Message b;
      (void)decode_body(h, data + kHeaderLen, size - kHeaderLen, b);
    }
    return 0;
  }
  auto again = encode(m);
  Message n;
  if (decode(again.data(), again.size(), n) != DecodeStatus::Ok) std::abort();
  if (n.type != m.type || n.req_id != m.req_id || n.channel != m.channel || n.spi != m.spi ||
      n.which != m.which || n.remaining_ms != m.remaining_ms || n.seq != m.seq ||
      n.text != m.text || n.instance != m.instance || n.since_ms != m.since_ms ||
      n.until_ms != m.until_ms || n.bytes != m.bytes || n.packets != m.packets ||
      n.channel_list != m.channel_list || n.all != m.all || n.mode != m.mode || n.usages != m.usages ||
      n.active != m.active || n.error != m.error || n.retry_after_ms != m.retry_after_ms ||
      n.keys.size() != m.keys.size() || n.bills.size() != m.bills.size())
    std::abort();
  for (size_t i = 0; i < m.keys.size(); ++i)
    if (!(n.keys[i].material == m.keys[i].material) || n.keys[i].spi != m.keys[i].spi ||
        n.keys[i].remaining_ms != m.keys[i].remaining_ms)
      std::abort();
  for (size_t i = 0; i < m.bills.size(); ++i)
    if (!(n.bills[i] == m.bills[i])) std::abort();
  return 0;
}
