// 802.1Q on a data-plane port (--vlan ID): the sender tags what it transmits,
// the receiver accepts only its VLAN's frames and strips the tag, so that the
// ESP parse and everything after it see the untagged frame they always saw.
//
// The NIC does the work where it can (RTE_ETH_TX_OFFLOAD_VLAN_INSERT,
// RTE_ETH_RX_OFFLOAD_VLAN_STRIP, enabled by port_start when asked); otherwise
// the tag is inserted or removed here, which moves the 12 MAC bytes and
// nothing else (the frame stays where it is, the mbuf's headroom gives or
// takes the 4 bytes).
#pragma once
#include <rte_ether.h>
#include <rte_mbuf.h>

#include <cstddef>
#include <cstdint>

#include "common/drop_reason.hpp"

namespace keycast::dp {

struct VlanConfig {
  bool on = false;    // --vlan given: tagged frames of `id` only
  uint16_t id = 0;    // 1..4094
  uint8_t pcp = 0;    // sender: 802.1p priority, 0..7
  bool hw = false;    // the port inserts (TX) or strips (RX) in hardware

  uint16_t tci() const noexcept { return static_cast<uint16_t>(pcp << 13 | id); }
};

constexpr uint16_t kVlanHdrLen = 4;

// An 802.1Q or 802.1ad tag follows the MAC addresses.
inline bool vlan_tagged(const uint8_t* f, std::size_t len) noexcept {
  if (len < RTE_ETHER_HDR_LEN + kVlanHdrLen) return false;
  const uint16_t type = static_cast<uint16_t>(f[12] << 8 | f[13]);
  return type == RTE_ETHER_TYPE_VLAN || type == RTE_ETHER_TYPE_QINQ;
}

// Receive side, before the ESP parse. Returns Drop::None when m is (now) an
// untagged frame the port should take: with --vlan, one that carried our VLAN
// id (stripped by the NIC or here); without, an untagged one or a
// priority-tagged one (VID 0, 802.1Q-2018 §6.9.1: "no VLAN", only a priority),
// whose tag is removed. Anything else is Drop::WrongVlan: a frame of another
// VLAN, an untagged frame on a VLAN port, or a stacked (QinQ) frame, which
// keycast does not terminate.
inline Drop vlan_accept(rte_mbuf* m, const VlanConfig& v) noexcept {
  const uint16_t want = v.on ? v.id : 0;
  if (m->ol_flags & RTE_MBUF_F_RX_VLAN_STRIPPED)
    return (m->vlan_tci & 0x0fff) == want ? Drop::None : Drop::WrongVlan;
  if (m->data_len < RTE_ETHER_HDR_LEN + kVlanHdrLen) return v.on ? Drop::WrongVlan : Drop::None;
  const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint16_t type = static_cast<uint16_t>(f[12] << 8 | f[13]);
  if (type == RTE_ETHER_TYPE_QINQ) return Drop::WrongVlan;
  if (type != RTE_ETHER_TYPE_VLAN) return v.on ? Drop::WrongVlan : Drop::None;
  if ((static_cast<uint16_t>(f[14] << 8 | f[15]) & 0x0fff) != want) return Drop::WrongVlan;
  rte_vlan_strip(m);
  return Drop::None;
}

// Transmit side: tags the n frames of a burst just before they are handed
// to the TX queue, and returns how many are left at the front of pkts. The
// frames are the worker's own (direct, unshared, with the pool's headroom),
// so software insertion does not fail for them; one that does anyway is freed
// (the caller counts it dropped), never sent untagged onto the native VLAN.
inline uint16_t vlan_tag_burst(rte_mbuf** pkts, uint16_t n, const VlanConfig& v) noexcept {
  const uint16_t tci = v.tci();
  uint16_t kept = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    m->vlan_tci = tci;
    if (v.hw) {
      m->ol_flags |= RTE_MBUF_F_TX_VLAN;
    } else if (rte_vlan_insert(&m) != 0) {
      rte_pktmbuf_free(m);
      continue;
    }
    pkts[kept++] = m;
  }
  return kept;
}

}  // namespace keycast::dp
