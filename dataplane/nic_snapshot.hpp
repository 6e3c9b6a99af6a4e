// A DPDK port's counters for a metrics scrape: rte_eth_stats, the link and
// the PMD's extended statistics. Control lcore only (the xstats calls
// allocate and may take the PMD's time).
#pragma once
#include <cstdint>

#include "dataplane/metrics_render.hpp"

namespace keycast::dp {

NicSnapshot nic_snapshot(uint16_t port);
bool port_link_up(uint16_t port);

}  // namespace keycast::dp
