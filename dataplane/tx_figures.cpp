#include "dataplane/tx_figures.hpp"

#include <algorithm>
#include <utility>

namespace keycast::dp {

std::optional<std::vector<uint64_t>> worker_spis(const TxShared& sh, std::size_t ci) {
  std::vector<std::pair<uint64_t, uint32_t>> used;
  for (auto& s : sh.stats) {
    const TxChannelStats& c = s->chan[ci];
    if (c.spis_full) return std::nullopt;
    for (uint32_t i = 0; i < c.spis; ++i) used.emplace_back(c.spi_first_tsc[i], c.spi_used[i]);
  }
  std::sort(used.begin(), used.end());
  std::vector<uint64_t> spis;
  for (auto& [tsc, spi] : used)
    if (std::find(spis.begin(), spis.end(), spi) == spis.end()) spis.push_back(spi);
  return spis;
}

Figures sender_figures(const TxShared& sh, double duration, const std::vector<KeyView>& views) {
  uint64_t pk = 0, by = 0, wb = 0, no = 0, td = 0, af = 0, ir = 0, ib = 0, inc = 0;
  for (auto& s : sh.stats) {
    pk += s->packets.get();
    by += s->bytes.get();
    wb += s->wire_bytes.get();
    no += s->notices.get();
    td += s->tx_dropped.get();
    af += s->alloc_fail.get();
    ir += s->ingest_rx.get();
    ib += s->ingest_bad.get();
    inc += s->ingest_no_channel.get();
  }
  uint64_t switches = 0;
  std::vector<uint64_t> spis;
  std::vector<Figures> per_channel;
  for (std::size_t ci = 0; ci < views.size(); ++ci) {
    switches += views[ci].switches;
    spis.insert(spis.end(), views[ci].spis.begin(), views[ci].spis.end());
    uint64_t cp = 0, cb = 0;
    for (auto& s : sh.stats) {
      cp += s->chan[ci].packets.get();
      cb += s->chan[ci].bytes.get();
    }
    Figures c;
    c.push_back(Figure::integer("channel", sh.cfg.channels[ci].id));
    c.push_back(Figure::integer("group_port", sh.cfg.channels[ci].group_port));
    c.push_back(Figure::integer("packets_sent", cp));
    c.push_back(Figure::integer("bytes_sent", cb));
    c.push_back(Figure::integer("key_switches", views[ci].switches));
    c.push_back(Figure::ints("spi_list", views[ci].spis));
    c.push_back(Figure::integer("spi_current", views[ci].spi_now));
    per_channel.push_back(std::move(c));
  }
  Figures f;
  f.push_back(Figure::integer("packets_sent", pk));
  f.push_back(Figure::integer("bytes_sent", by));
  f.push_back(Figure::integer("wire_bytes", wb));
  f.push_back(Figure::real("duration_s", duration));
  f.push_back(Figure::integer("key_switches", switches));
  f.push_back(Figure::integer("spis_used", spis.size()));
  f.push_back(Figure::ints("spi_list", spis));
  f.push_back(Figure::integer("spi_current", views.empty() ? 0 : views[0].spi_now));
  f.push_back(Figure::integer("notices_sent", no));
  f.push_back(Figure::integer("tx_dropped", td));
  f.push_back(Figure::integer("alloc_fail", af));
  f.push_back(Figure::integer("ingest_rx", ir));
  f.push_back(Figure::integer("ingest_bad", ib));
  f.push_back(Figure::integer("ingest_no_channel", inc));
  f.push_back(Figure::real("pps", duration > 0 ? pk / duration : 0));
  f.push_back(Figure::real("gbps", duration > 0 ? wb * 8 / duration / 1e9 : 0));
  f.push_back(Figure::integer("workers", sh.stats.size()));
  f.push_back(Figure::integer("channels_configured", views.size()));
  f.push_back(Figure::objects("channels", std::move(per_channel)));
  return f;
}

}  // namespace keycast::dp
