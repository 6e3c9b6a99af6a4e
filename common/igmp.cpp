#include "common/igmp.hpp"

#include <algorithm>

namespace keycast::igmp {

namespace {

constexpr std::size_t kEth = 14, kVlanTag = 4, kIpWithRa = 24, kV3Header = 8, kV3Record = 8;

void put16(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void put32(uint8_t* p, uint32_t v) {
  put16(p, v >> 16);
  put16(p + 2, v);
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) { return uint32_t(get16(p)) << 16 | get16(p + 2); }

// The Internet checksum (RFC 1071) of n bytes.
uint16_t checksum(const uint8_t* p, std::size_t n) {
  uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  if (n & 1) sum += uint32_t(p[n - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

// Ethernet (+ 802.1Q) and IPv4 with Router Alert around an IGMP message of
// igmp_len bytes, which the caller writes at the returned offset.
std::size_t headers(std::vector<uint8_t>& f, const Sender& from, uint32_t dst, std::size_t igmp_len) {
  const std::size_t l2 = kEth + (from.vlan ? kVlanTag : 0);
  f.assign(l2 + kIpWithRa + igmp_len, 0);
  uint8_t* e = f.data();
  e[0] = 0x01;  // RFC 1112: 01:00:5e + the group's low 23 bits
  e[1] = 0x00;
  e[2] = 0x5e;
  e[3] = static_cast<uint8_t>((dst >> 16) & 0x7f);
  e[4] = static_cast<uint8_t>(dst >> 8);
  e[5] = static_cast<uint8_t>(dst);
  std::copy(from.mac, from.mac + 6, e + 6);
  if (from.vlan) {
    put16(e + 12, 0x8100);
    put16(e + 14, *from.vlan & 0x0fff);
  }
  put16(e + l2 - 2, 0x0800);
  uint8_t* ip = e + l2;
  ip[0] = 0x46;  // version 4, IHL 6: the Router Alert option
  ip[1] = 0xc0;  // internetwork control
  put16(ip + 2, static_cast<uint32_t>(kIpWithRa + igmp_len));
  put16(ip + 6, 0x4000);  // DF
  ip[8] = 1;              // TTL 1: link-local by definition
  ip[9] = kProtoIgmp;
  put32(ip + 12, from.ip);
  put32(ip + 16, dst);
  ip[20] = 0x94;  // Router Alert (copied, option 20), length 4, value 0
  ip[21] = 0x04;
  put16(ip + 10, checksum(ip, kIpWithRa));
  return l2 + kIpWithRa;
}

uint8_t record_type(ReportKind kind, bool ssm) {
  switch (kind) {
    case ReportKind::Join: return ssm ? 5 : 4;     // ALLOW_NEW_SOURCES {S} / CHANGE_TO_EXCLUDE {}
    case ReportKind::Current: return ssm ? 1 : 2;  // MODE_IS_INCLUDE {S} / MODE_IS_EXCLUDE {}
    case ReportKind::Leave: return ssm ? 6 : 3;    // BLOCK_OLD_SOURCES {S} / CHANGE_TO_INCLUDE {}
  }
  return 0;
}

}  // namespace

const char* error_name(Error e) noexcept {
  switch (e) {
    case Error::None: return "none";
    case Error::NotIgmp: return "not_igmp";
    case Error::Short: return "short";
    case Error::BadChecksum: return "bad_checksum";
    case Error::BadLength: return "bad_length";
    case Error::UnknownType: return "unknown_type";
  }
  return "?";
}

std::vector<std::vector<uint8_t>> v3_reports(const std::vector<Membership>& groups, ReportKind kind,
                                             const Sender& from, std::size_t mtu) {
  std::vector<std::vector<uint8_t>> out;
  // Every record here has at most one source: 8 or 12 bytes.
  const std::size_t room = mtu - kIpWithRa - kV3Header;
  std::size_t i = 0;
  while (i < groups.size()) {
    std::size_t n = 0, len = 0;
    while (i + n < groups.size()) {
      const std::size_t r = kV3Record + (groups[i + n].source ? 4 : 0);
      if (len + r > room) break;
      len += r;
      ++n;
    }
    std::vector<uint8_t> f;
    const std::size_t at = headers(f, from, kV3Reports, kV3Header + len);
    uint8_t* g = f.data() + at;
    g[0] = kTypeV3Report;
    put16(g + 6, static_cast<uint32_t>(n));
    uint8_t* r = g + kV3Header;
    for (std::size_t k = 0; k < n; ++k) {
      const Membership& m = groups[i + k];
      r[0] = record_type(kind, m.source.has_value());
      put16(r + 2, m.source ? 1 : 0);
      put32(r + 4, m.group);
      if (m.source) put32(r + 8, *m.source);
      r += kV3Record + (m.source ? 4 : 0);
    }
    put16(g + 2, checksum(g, kV3Header + len));
    out.push_back(std::move(f));
    i += n;
  }
  return out;
}

std::vector<uint8_t> v2_message(uint32_t group, bool leave, const Sender& from) {
  std::vector<uint8_t> f;
  const std::size_t at = headers(f, from, leave ? kAllRouters : group, 8);
  uint8_t* g = f.data() + at;
  g[0] = leave ? kTypeV2Leave : kTypeV2Report;
  put32(g + 4, group);
  put16(g + 2, checksum(g, 8));
  return f;
}

uint32_t decode_max_resp(uint8_t code) noexcept {
  if (code < 128) return code;
  const uint32_t exp = (code >> 4) & 0x07, mant = code & 0x0f;
  return (mant | 0x10) << (exp + 3);
}

Error parse(const uint8_t* f, std::size_t len, Message& m) noexcept {
  m = Message{};
  std::size_t l2 = kEth;
  if (len < kEth) return Error::Short;
  uint16_t type = get16(f + 12);
  if (type == 0x8100) {
    if (len < kEth + kVlanTag) return Error::Short;
    m.vlan = get16(f + 14) & 0x0fff;
    type = get16(f + 16);
    l2 += kVlanTag;
  }
  if (type != 0x0800 || len < l2 + 20 || (f[l2] >> 4) != 4) return Error::NotIgmp;
  const uint8_t* ip = f + l2;
  if (ip[9] != kProtoIgmp) return Error::NotIgmp;
  const std::size_t ihl = (ip[0] & 0x0f) * 4u, total = get16(ip + 2);
  if (ihl < 20 || total < ihl || l2 + total > len) return Error::Short;
  const uint8_t* g = ip + ihl;
  const std::size_t glen = total - ihl;  // Ethernet padding is not part of it
  if (glen < 8) return Error::Short;
  if (checksum(g, glen) != 0) return Error::BadChecksum;
  switch (g[0]) {
    case kTypeQuery:
      m.kind = Kind::Query;
      m.group = get32(g + 4);
      if (glen == 8) {
        // v1 queries carry no max resp time (10 s is implied); v2's is in tenths.
        m.version = g[1] == 0 ? 1 : 2;
        m.max_resp_ms = (g[1] == 0 ? 100u : g[1]) * 100u;
        return Error::None;
      }
      if (glen < 12) return Error::Short;  // RFC 3376 §7.1: 9..11 octets are ignored
      m.version = 3;
      m.max_resp_ms = decode_max_resp(g[1]) * 100u;
      m.qrv = g[8] & 0x07;
      m.qqi_s = decode_max_resp(g[9]);
      m.sources = get16(g + 10);
      if (12 + std::size_t(m.sources) * 4 > glen) return Error::BadLength;
      return Error::None;
    case kTypeV1Report:
    case kTypeV2Report:
    case kTypeV3Report:
      m.kind = Kind::Report;
      m.version = g[0] == kTypeV1Report ? 1 : g[0] == kTypeV2Report ? 2 : 3;
      if (m.version < 3) m.group = get32(g + 4);
      return Error::None;
    case kTypeV2Leave:
      m.kind = Kind::Leave;
      m.version = 2;
      m.group = get32(g + 4);
      return Error::None;
    default:
      return Error::UnknownType;
  }
}

}  // namespace keycast::igmp
