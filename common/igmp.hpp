// IGMP for a receiver that the kernel cannot see: the frames a DPDK port must
// send so that IGMP-snooping switches and PIM routers forward its groups, and
// the parse of the queries it must answer. Pure functions over bytes, like
// the ESP codec: fuzzed, no allocation but the returned frames.
//
//   IGMPv3 (RFC 3376) reports to 224.0.0.22: state-change records on join
//     (TO_EX {} for any-source groups, ALLOW {S} for source-specific ones,
//     RFC 4604) and leave (TO_IN {} / BLOCK {S}); current-state records when
//     answering a query (IS_EX {} / IS_IN {S}). Records are split over as many
//     reports as the MTU needs.
//   IGMPv2 (RFC 2236), while a v2 querier is present: a report to the group,
//     a leave to 224.0.0.2. Source-specific groups cannot be expressed in v2;
//     they are reported as any-source joins (what a v2 network can do).
//   Every frame: IPv4 TTL 1, TOS 0xc0 (internetwork control), the Router
//   Alert option (RFC 2113), the IP and IGMP checksums, the destination MAC
//   of the destination group (RFC 1112), an optional 802.1Q tag.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace keycast::igmp {

constexpr uint32_t kAllSystems = 0xe0000001;     // 224.0.0.1: general queries
constexpr uint32_t kAllRouters = 0xe0000002;     // 224.0.0.2: v2 leaves
constexpr uint32_t kV3Reports = 0xe0000016;      // 224.0.0.22: v3 reports
constexpr uint8_t kProtoIgmp = 2;
constexpr uint8_t kTypeQuery = 0x11;
constexpr uint8_t kTypeV1Report = 0x12;
constexpr uint8_t kTypeV2Report = 0x16;
constexpr uint8_t kTypeV2Leave = 0x17;
constexpr uint8_t kTypeV3Report = 0x22;

// One group this host wants, from any source or from one (SSM).
struct Membership {
  uint32_t group;                  // host byte order
  std::optional<uint32_t> source;  // host byte order
};

enum class ReportKind { Join, Current, Leave };

struct Sender {
  uint32_t ip = 0;  // host byte order; 0.0.0.0 is allowed (RFC 3376 §4.2.13)
  uint8_t mac[6] = {};
  std::optional<uint16_t> vlan;  // 802.1Q VLAN id
};

// IGMPv3 reports for every membership (as many frames as mtu needs).
std::vector<std::vector<uint8_t>> v3_reports(const std::vector<Membership>& groups, ReportKind kind,
                                             const Sender& from, std::size_t mtu = 1500);
// One IGMPv2 report (join, current) or leave for a group.
std::vector<uint8_t> v2_message(uint32_t group, bool leave, const Sender& from);

// What a received IGMP frame was. Queries are what a receiver answers;
// reports of other hosts are seen on a shared segment and ignored.
enum class Kind { Query, Report, Leave };
struct Message {
  Kind kind = Kind::Query;
  int version = 0;           // query: 1, 2 or 3 (RFC 3376 §7.1: by length and max resp code)
  uint32_t group = 0;        // 0: general query
  uint32_t max_resp_ms = 0;  // query: the time within which to answer
  uint8_t qrv = 0;           // v3 query: querier's robustness variable (0: not given)
  uint32_t qqi_s = 0;        // v3 query: querier's query interval, seconds (0: not given)
  uint16_t sources = 0;      // v3 query: number of sources (group-and-source-specific)
  std::optional<uint16_t> vlan;
};

enum class Error {
  None,
  NotIgmp,      // not IPv4 protocol 2 (the caller's frame is something else)
  Short,        // shorter than its headers say, or than an IGMP message
  BadChecksum,  // the IGMP checksum does not verify
  BadLength,    // a v3 query whose source list does not fit its length
  UnknownType,  // an IGMP type this host does not act on
};
const char* error_name(Error e) noexcept;

// Bounds-checked; never reads outside [frame, frame + len). Accepts one
// 802.1Q tag.
Error parse(const uint8_t* frame, std::size_t len, Message& m) noexcept;

// RFC 3376 §4.1.1: a max resp code of 128 or more is a floating-point value.
uint32_t decode_max_resp(uint8_t code) noexcept;  // tenths of a second

}  // namespace keycast::igmp
