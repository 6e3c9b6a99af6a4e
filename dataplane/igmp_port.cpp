#include "dataplane/igmp_port.hpp"

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace keycast::dp {

namespace {
IgmpAgent::Options options(uint16_t port, uint32_t local_ip, std::optional<uint16_t> vlan) {
  IgmpAgent::Options o;
  o.from.ip = local_ip;
  o.from.vlan = vlan;
  rte_ether_addr mac{};
  if (rte_eth_macaddr_get(port, &mac) == 0) std::memcpy(o.from.mac, mac.addr_bytes, 6);
  return o;
}
}  // namespace

IgmpPort::IgmpPort(uint16_t port, uint16_t tx_queue, rte_mempool* pool,
                   std::vector<igmp::Membership> groups, uint32_t local_ip,
                   std::optional<uint16_t> vlan)
    : port_(port), queue_(tx_queue), pool_(pool),
      agent_(std::move(groups), options(port, local_ip, vlan), rte_get_tsc_cycles()) {
  const std::string name = "igmp_" + std::to_string(port);
  ring_ = rte_ring_create(name.c_str(), 1024, SOCKET_ID_ANY, RING_F_SC_DEQ);
  if (!ring_) throw std::runtime_error("IGMP ring: " + std::string(rte_strerror(rte_errno)));
}

IgmpPort::~IgmpPort() {
  void* m = nullptr;
  while (rte_ring_dequeue(ring_, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  rte_ring_free(ring_);
}

void IgmpPort::start() { agent_.start(IgmpAgent::Clock::now()); }

void IgmpPort::poll() {
  void* got[32];
  const auto now = IgmpAgent::Clock::now();
  for (unsigned n; (n = rte_ring_sc_dequeue_burst(ring_, got, 32, nullptr)) > 0;)
    for (unsigned i = 0; i < n; ++i) {
      auto* m = static_cast<rte_mbuf*>(got[i]);
      igmp::Message msg;
      const igmp::Error e = rte_pktmbuf_is_contiguous(m)
                                ? igmp::parse(rte_pktmbuf_mtod(m, const uint8_t*), m->data_len, msg)
                                : igmp::Error::Short;
      if (e != igmp::Error::None)
        bump(malformed_);
      else if (msg.kind == igmp::Kind::Query)
        agent_.on_message(msg, now);
      else
        bump(others_);
      rte_pktmbuf_free(m);
    }
  send(agent_.poll(now));
  queries_.store(agent_.queries, std::memory_order_relaxed);
  v2_.store(agent_.v2_mode(now), std::memory_order_relaxed);
}

void IgmpPort::leave() { send(agent_.leave(IgmpAgent::Clock::now())); }

void IgmpPort::send(const std::vector<IgmpAgent::Frame>& frames) {
  for (const auto& f : frames) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    char* d = m ? rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())) : nullptr;
    if (!d) {
      if (m) rte_pktmbuf_free(m);
      bump(send_failed_);
      continue;
    }
    std::memcpy(d, f.data(), f.size());
    if (rte_eth_tx_burst(port_, queue_, &m, 1) == 1) {
      bump(sent_);
    } else {
      rte_pktmbuf_free(m);
      bump(send_failed_);
    }
  }
}

}  // namespace keycast::dp
