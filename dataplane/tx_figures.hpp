// keycast-send's figures: totals over every worker and each channel's, for the final JSON,
// the periodic line and the telemetry.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "dataplane/stats.hpp"
#include "dataplane/tx_worker.hpp"

namespace keycast::dp {

// The keys one channel's data went out under, from the workers' records
// merged in order of first use; nullopt when a worker kept too many to list.
std::optional<std::vector<uint64_t>> worker_spis(const TxShared& sh, std::size_t ci);

// The control's view of each channel's keys (live figures, and the fallback
// for the final ones): what became current, in order.
struct KeyView {
  std::vector<uint64_t> spis;
  uint64_t switches = 0;
  uint32_t spi_now = 0;
};

Figures sender_figures(const TxShared& sh, double duration, const std::vector<KeyView>& views);

}  // namespace keycast::dp
