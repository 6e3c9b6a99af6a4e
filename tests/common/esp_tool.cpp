// Test tool: builds keycast ESP frames into a pcap, or opens frames from a pcap,
// so an independent implementation (Scapy, tshark) can check both directions.
//
//   esp_tool build KEYFILE OUT.pcap COUNT SEQ_BASE   packet k: key k % nkeys,
//            seq SEQ_BASE + k, payload size from a fixed list, byte i = (k*31 + i) & 255
//   esp_tool open KEYFILE IN.pcap                    one line per frame:
//            "ok SPI SEQ PAYLOAD_HEX" or "drop REASON"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "common/esp.hpp"
#include "common/hex.hpp"
#include "common/pcap_io.hpp"

using namespace keycast;

static const std::size_t kSizes[] = {0, 1, 2, 3, 4, 5, 64, 255, 256, 512, 1024, 1400, 1458};

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: esp_tool build KEYFILE OUT COUNT SEQ_BASE | open KEYFILE IN\n");
    return 2;
  }
  std::string cmd = argv[1];
  auto keys = load_key_file(argv[2]);
  Aead aead;
  esp::Flow flow;
  flow.src_ip = 0xc0a80001;    // 192.168.0.1
  flow.group_ip = 0xef000001;  // 239.0.0.1
  flow.src_port = 4000;
  flow.dst_port = 5000;
  auto tmpl = esp::make_template(flow);
  if (cmd == "build" && argc == 6) {
    long count = std::atol(argv[4]);
    uint64_t base = std::strtoull(argv[5], nullptr, 0);
    std::vector<Frame> frames;
    std::vector<AeadKey> sched;
    for (auto& k : keys) sched.emplace_back(k.material);
    for (long k = 0; k < count; ++k) {
      std::size_t len = kSizes[k % (sizeof kSizes / sizeof kSizes[0])];
      std::vector<uint8_t> payload(len);
      for (std::size_t i = 0; i < len; ++i) payload[i] = static_cast<uint8_t>(k * 31 + i);
      Frame f(esp::frame_len(len));
      std::size_t ki = k % keys.size();
      if (!esp::encap_udp(aead, sched[ki], tmpl, keys[ki].spi, base + k, payload.data(), len,
                          f.data(), f.size()))
        return 1;
      frames.push_back(std::move(f));
    }
    pcap_write(argv[3], frames);
    return 0;
  }
  if (cmd == "open" && argc == 4) {
    std::map<uint32_t, AeadKey> sched;
    for (auto& k : keys) sched.emplace(k.spi, AeadKey(k.material));
    for (auto& f : pcap_read(argv[3])) {
      esp::Parsed p;
      esp::Opened o;
      Drop d = esp::parse(f.data(), f.size(), p);
      if (d == Drop::None) {
        auto it = sched.find(p.spi);
        d = it == sched.end() ? Drop::UnknownSpi : esp::decap(aead, it->second, p, o);
      }
      if (d != Drop::None) {
        std::printf("drop %s\n", std::string(drop_name(d)).c_str());
        continue;
      }
      std::printf("ok %u %llu %s\n", p.spi, static_cast<unsigned long long>(p.seq),
                  o.next_header == esp::kNextUdp ? hex_encode(o.payload, o.payload_len).c_str()
                                                 : "control");
    }
    return 0;
  }
  std::fprintf(stderr, "esp_tool: bad arguments\n");
  return 2;
}
