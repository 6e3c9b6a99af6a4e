// libFuzzer target: the IGMP parse a receiver runs on every IGMP frame its
// port delivers (queries from the switch or router, other hosts' reports).
// Whatever the bytes, parse stays within them and a query it accepts has a
// source list that fits; the reports this host builds parse as reports.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/igmp.hpp"

using namespace keycast::igmp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Message m;
  const Error e = parse(data, size, m);
  if (e == Error::None && m.kind == Kind::Query && m.version == 3 && 14 + 20 + 12 + 4u * m.sources > size)
    std::abort();
  if (size >= 4) {
    // The input's first bytes as a group and source: a built report must parse back.
    const uint32_t g = 0xe0000000u | (uint32_t(data[0]) << 16 | uint32_t(data[1]) << 8 | data[2]);
    Sender s;
    s.ip = uint32_t(data[3]) << 24;
    if (data[3] & 1) s.vlan = data[2] & 0x0fff;
    for (auto& f : v3_reports({{g, data[3] & 2 ? std::optional<uint32_t>(g ^ 0xffff) : std::nullopt}},
                              ReportKind::Join, s)) {
      Message r;
      if (parse(f.data(), f.size(), r) != Error::None || r.kind != Kind::Report) std::abort();
    }
    const auto v2 = v2_message(g, data[3] & 4, s);
    Message r;
    if (parse(v2.data(), v2.size(), r) != Error::None) std::abort();
  }
  return 0;
}
