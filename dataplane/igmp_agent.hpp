// The receiver's IGMP host side (RFC 3376 §5, RFC 2236 §3 for v2
// compatibility): which membership frames to send, and when. No I/O: the
// control loop feeds it the IGMP messages its workers received and the time,
// and sends the frames it returns through the control's own TX queue.
//
//  - start: the unsolicited state-change report, robustness times, spaced by
//    the unsolicited report interval (so one lost report does not leave the
//    switch without the join);
//  - a query: one current-state report after a random delay within the
//    query's max response time (general: every group; group-specific: that
//    group if it is ours); a report already pending is not postponed;
//  - a v1/v2 query: v2 reports from then on, until no such querier has been
//    heard for the older-version-querier-present timeout (robustness x query
//    interval + half the max response time), then v3 again;
//  - stop: the leave (v3 TO_IN {} / BLOCK {S}, or v2 leaves).
#pragma once
#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "common/igmp.hpp"

namespace keycast::dp {

class IgmpAgent {
 public:
  using Clock = std::chrono::steady_clock;
  using Frame = std::vector<uint8_t>;
  struct Options {
    igmp::Sender from;
    unsigned robustness = 2;
    std::chrono::milliseconds unsolicited_interval{1000};
    std::chrono::milliseconds query_interval{125000};  // until a v3 querier says otherwise
  };

  IgmpAgent(std::vector<igmp::Membership> groups, Options o, uint64_t seed);

  void start(Clock::time_point now);
  void on_message(const igmp::Message& m, Clock::time_point now);
  // Frames due now (reports); empty most of the time.
  std::vector<Frame> poll(Clock::time_point now);
  std::vector<Frame> leave(Clock::time_point now);

  bool v2_mode(Clock::time_point now) const { return now < v2_until_; }
  uint64_t queries = 0, reports_sent = 0, v2_switches = 0;

 private:
  std::vector<Frame> reports(igmp::ReportKind kind, const std::vector<igmp::Membership>& which,
                             Clock::time_point now);

  std::vector<igmp::Membership> groups_;
  Options o_;
  std::mt19937_64 rng_;
  unsigned unsolicited_left_ = 0;
  Clock::time_point next_unsolicited_{};
  // A pending answer to a general query, and per-group answers.
  bool general_due_ = false;
  Clock::time_point general_at_{};
  struct GroupAnswer {
    std::size_t index;
    Clock::time_point at;
  };
  std::vector<GroupAnswer> group_due_;
  Clock::time_point v2_until_{};
};

}  // namespace keycast::dp
