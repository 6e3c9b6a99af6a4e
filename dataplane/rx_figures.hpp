// keycast-recv's figures: totals over every worker, each channel's, the final JSON's and the
// telemetry's, read from the workers' counters while they run (final: once they stopped).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/rx_worker.hpp"
#include "dataplane/stats.hpp"

namespace keycast::dp {

class ChannelKeySources;
class ControlEvents;
class IgmpPort;
class KmsKeySource;

struct Totals {
  uint64_t rx = 0, ok = 0, bytes = 0, notices = 0, deliver_fail = 0;
  uint64_t drops[kNDrop] = {};
  uint64_t malformed = 0, last_rx_tsc = 0, first_rx_tsc = 0, busy_tsc = 0;
};
Totals totals(const RxShared& sh);

// One channel's figures over every worker. Loss and the SPI list are final
// figures: the trackers and lists are read only once the workers stopped.
struct ChannelTotals {
  uint64_t ok = 0, bytes = 0, corrupted = 0, switches = 0, spis_seen = 0;
  uint64_t lost = 0, duplicated = 0, late = 0;
  std::vector<uint64_t> spis;
};
ChannelTotals channel_totals(const RxShared& sh, std::size_t ci, bool final_figs);
Figures channel_figures(const RxShared& sh, std::size_t ci, const ChannelTotals& c, bool final_figs,
                        const KmsKeySource* kms);

// " reason=count ..." of every drop reason counted, or " none".
std::string drops_line(const Totals& t);

Figures receiver_figures(const RxShared& sh, const ChannelKeySources& keys, const ControlEvents& events,
                         const IgmpPort* igmp, double duration, bool final_figs);

// Channels with a corrupted packet so far (loss is known only at the end).
std::size_t channels_with_errors(const RxShared& sh);

}  // namespace keycast::dp
