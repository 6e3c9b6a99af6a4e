// Test tool: writes the IGMP frames keycast builds into a pcap, so that
// independent decoders (Scapy, tshark) check them.
//
//   igmp_tool OUT.pcap   v3 join, current-state and leave reports for
//                        239.1.1.1, 239.1.1.2 and (SSM) 232.1.1.1 from 10.0.0.1;
//                        a v2 report and leave for 239.1.1.1; a v3 join on VLAN 301
#include <cstdio>
#include <string>
#include <vector>

#include "common/igmp.hpp"
#include "common/pcap_io.hpp"

using namespace keycast;
using namespace keycast::igmp;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: igmp_tool OUT.pcap\n");
    return 2;
  }
  Sender s;
  s.ip = 0xc0000205;  // 192.0.2.5
  const uint8_t mac[6] = {0x02, 0, 0, 0, 0, 7};
  std::copy(mac, mac + 6, s.mac);
  const std::vector<Membership> groups = {{0xef010101, {}}, {0xef010102, {}}, {0xe8010101, 0x0a000001}};
  std::vector<Frame> out;
  for (ReportKind k : {ReportKind::Join, ReportKind::Current, ReportKind::Leave})
    for (auto& f : v3_reports(groups, k, s)) out.emplace_back(f.begin(), f.end());
  for (bool leave : {false, true}) {
    auto f = v2_message(0xef010101, leave, s);
    out.emplace_back(f.begin(), f.end());
  }
  s.vlan = 301;
  for (auto& f : v3_reports({groups[0]}, ReportKind::Join, s)) out.emplace_back(f.begin(), f.end());
  pcap_write(argv[1], out);
  return 0;
}
