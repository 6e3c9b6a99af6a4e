// Prometheus text (exposition format 0.0.4) of keycast-send's and
// keycast-recv's live figures, and what /healthz answers. Pure: the control
// lcore gathers the inputs (the same figures telemetry and --stats-json use,
// and the NIC's counters) and these functions only format them.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/stats.hpp"

namespace keycast::dp {

// One DPDK port as the control lcore read it for a scrape.
struct NicSnapshot {
  uint16_t port = 0;
  bool link_up = false;
  // rte_eth_stats
  uint64_t ipackets = 0, opackets = 0, ibytes = 0, obytes = 0;
  uint64_t imissed = 0, ierrors = 0, oerrors = 0, rx_nombuf = 0;
  // rte_eth_xstats_get_names / rte_eth_xstats_get, as the PMD names them
  std::vector<std::pair<std::string, uint64_t>> xstats;
};

enum class MetricsRole { Send, Recv };

// totals: the process's figures (sender_figures / receiver_figures); channels:
// one record a channel, each with its "channel" id and spi_current. Every
// family has HELP and TYPE, and families are never split.
std::string render_metrics(MetricsRole role, const Figures& totals, const std::vector<Figures>& channels,
                           const std::vector<NicSnapshot>& nics, std::string_view version);

// What keeps a sender or receiver from doing its job right now.
struct HealthInput {
  bool worker_failed = false;
  std::vector<uint32_t> channels_without_key;  // no current key (none fetched yet, or refused)
  std::vector<uint16_t> ports_down;            // link down
};
// "" when healthy, else the reasons in one line ("port 0: link down; no key
// for channel 3").
std::string unhealthy_reason(const HealthInput& h);

}  // namespace keycast::dp
