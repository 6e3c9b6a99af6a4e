#include "dataplane/nic_snapshot.hpp"

#include <rte_ethdev.h>

#include <vector>

#include "dataplane/key_table.hpp"

namespace keycast::dp {

bool port_link_up(uint16_t port) {
  rte_eth_link link{};
  return rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP;
}

NicSnapshot nic_snapshot(uint16_t port) {
  NicSnapshot n;
  n.port = port;
  n.link_up = port_link_up(port);
  rte_eth_stats st{};
  if (rte_eth_stats_get(port, &st) == 0) {
    n.ipackets = st.ipackets;
    n.opackets = st.opackets;
    n.ibytes = st.ibytes;
    n.obytes = st.obytes;
    n.imissed = st.imissed;
    n.ierrors = st.ierrors;
    n.oerrors = st.oerrors;
    n.rx_nombuf = st.rx_nombuf;
  }
  const int count = rte_eth_xstats_get_names(port, nullptr, 0);
  if (count <= 0) return n;
  std::vector<rte_eth_xstat_name> names(static_cast<std::size_t>(count));
  std::vector<rte_eth_xstat> values(static_cast<std::size_t>(count));
  const int got_names = rte_eth_xstats_get_names(port, names.data(), static_cast<unsigned>(count));
  const int got = rte_eth_xstats_get(port, values.data(), static_cast<unsigned>(count));
  // The two calls agree unless the port changed in between: then none.
  if (got_names != count || got != count) return n;
  for (const rte_eth_xstat& x : values)
    if (x.id < names.size()) n.xstats.emplace_back(names[x.id].name, x.value);
  return n;
}

std::string process_health(bool worker_failed, const KeyPublisher& pub, const std::vector<uint32_t>& channel_ids,
                           const std::vector<uint16_t>& ports) {
  HealthInput h;
  h.worker_failed = worker_failed;
  for (std::size_t ci = 0; ci < channel_ids.size(); ++ci)
    if (pub.at(ci).current_spi() == 0) h.channels_without_key.push_back(channel_ids[ci]);
  for (uint16_t p : ports)
    if (!port_link_up(p)) h.ports_down.push_back(p);
  return unhealthy_reason(h);
}

}  // namespace keycast::dp
