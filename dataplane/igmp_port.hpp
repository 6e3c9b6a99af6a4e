// The receiver's IGMP on its DPDK port, run by the control lcore: the IGMP
// frames the workers hand over (a ring) are parsed and given to the
// IgmpAgent; the reports it decides on are sent on the port's control TX
// queue, which no worker uses, so a worker never waits on them.
#pragma once
#include <rte_mempool.h>
#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "common/igmp.hpp"
#include "dataplane/igmp_agent.hpp"

namespace keycast::dp {

class IgmpPort {
 public:
  // vlan: the 802.1Q VLAN the reports are tagged for (--vlan); the workers
  // hand over frames already stripped of it.
  IgmpPort(uint16_t port, uint16_t tx_queue, rte_mempool* pool, std::vector<igmp::Membership> groups,
           uint32_t local_ip, std::optional<uint16_t> vlan);
  ~IgmpPort();
  IgmpPort(const IgmpPort&) = delete;
  IgmpPort& operator=(const IgmpPort&) = delete;

  rte_ring* ring() { return ring_; }  // for the workers (RxShared::igmp)
  void start();
  void poll();   // every control iteration
  void leave();  // at exit, after the workers stopped

  // Any thread (telemetry): written by control only, read untorn.
  uint64_t queries() const { return queries_.load(std::memory_order_relaxed); }
  uint64_t reports_sent() const { return sent_.load(std::memory_order_relaxed); }
  uint64_t send_failed() const { return send_failed_.load(std::memory_order_relaxed); }
  uint64_t malformed() const { return malformed_.load(std::memory_order_relaxed); }
  uint64_t others() const { return others_.load(std::memory_order_relaxed); }  // other hosts' reports, leaves
  bool v2_mode() const { return v2_.load(std::memory_order_relaxed); }

 private:
  void send(const std::vector<IgmpAgent::Frame>& frames);
  static void bump(std::atomic<uint64_t>& c) { c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
  uint16_t port_, queue_;
  rte_mempool* pool_;
  rte_ring* ring_ = nullptr;
  IgmpAgent agent_;
  std::atomic<uint64_t> queries_{0}, sent_{0}, send_failed_{0}, malformed_{0}, others_{0};
  std::atomic<bool> v2_{false};
};

}  // namespace keycast::dp
