// A DPDK port's counters for a metrics scrape: rte_eth_stats, the link and
// the PMD's extended statistics. Control lcore only (the xstats calls
// allocate and may take the PMD's time).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/metrics_render.hpp"

namespace keycast::dp {

NicSnapshot nic_snapshot(uint16_t port);
bool port_link_up(uint16_t port);

class KeyPublisher;
// What /healthz answers for a sender or receiver: a failed worker, channels
// (by id, in publisher order) without a current key, ports whose link is down.
std::string process_health(bool worker_failed, const KeyPublisher& pub, const std::vector<uint32_t>& channel_ids,
                           const std::vector<uint16_t>& ports);

}  // namespace keycast::dp
