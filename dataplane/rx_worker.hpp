// The receiver's worker: one per RX queue of --port. Per burst: parse, key
// lookup by (group, SPI) in the published table, anti-replay check, decipher
// in place, replay window update, deliver, count per channel.
//
// Queues: one RX queue per worker (RSS when there are several). Replay windows
// are per SPI *and per queue*, each written by one worker only: RSS hashes on
// the IP addresses, so one sender's flow to one group always lands on one
// queue and its window sees every packet of that flow.
//
// Everything here is set up before the workers launch and read-only while
// they run, except the counters (one writer each: their worker).
#pragma once
#include <pcap/pcap.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/aead.hpp"
#include "common/drop_reason.hpp"
#include "common/esp.hpp"
#include "dataplane/app.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/control_events.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/pattern.hpp"
#include "dataplane/stats.hpp"
#include "dataplane/vlan.hpp"

namespace keycast::dp {

enum class Deliver { Verify, Null, Pcap, Port };

struct RxChannel {
  uint32_t id;
  uint32_t group_ip;  // the key table's lookup tag for this channel
  uint16_t port;
};

struct RxConfig {
  uint16_t port = 0;
  Deliver deliver = Deliver::Null;
  std::string deliver_pcap;
  uint16_t deliver_port = 0;
  uint32_t burst = 32;
  uint32_t idle_sleep_us = 0;
  bool any_group = false;  // one channel, any destination (no group/port check)
  std::vector<RxChannel> channels;
  GroupIndex groups;
  VlanConfig vlan;  // --vlan: only this VLAN's tagged frames are taken
  VlanConfig deliver_vlan;  // --deliver port: onto the same VLAN port: tagged again
};

constexpr unsigned kNDrop = static_cast<unsigned>(Drop::kCount);
// SPIs a worker records per channel for the final spi_list; past this many
// a channel's list is cut (its key_switches still count every switch).
constexpr unsigned kMaxSpisPerChannel = 256;

// One channel's figures in one worker: one cache line, the SPI list out of line. With many
// channels interleaved each packet counts on another channel's line; kept to one line each
// (64 KiB for 1,024 channels) they stay in L2 instead of taking 1 KiB per channel.
struct alignas(64) RxChannelStats {
  Counter packets_ok, bytes_ok, corrupted, key_switches, spis_seen;
  uint32_t last_spi = 0;
  std::unique_ptr<uint32_t[]> spi_list = std::make_unique<uint32_t[]>(kMaxSpisPerChannel);  // read after the worker stopped
  std::unique_ptr<DeliveryTracker> tracker;  // --deliver verify
};
static_assert(sizeof(RxChannelStats) == 64);

struct alignas(64) RecvWorkerStats {
  explicit RecvWorkerStats(std::size_t channels) : chan(new RxChannelStats[channels]) {}
  Counter rx, packets_ok, bytes_ok, notices, deliver_fail;
  Counter igmp_rx, igmp_ring_full;  // IGMP frames handed to control, and those it had no room for
  Counter drops[kNDrop];
  Counter first_rx_tsc, last_rx_tsc;
  // TSC cycles from the start of each non-empty poll to the end of its
  // processing: the worker's cost per packet whatever the input rate (DPDK's
  // "busy cycles"; empty polls are not counted).
  Counter busy_tsc;
  std::unique_ptr<RxChannelStats[]> chan;  // index = channel index
};

struct RxShared {
  RxConfig cfg;
  KeyTableHolder* holder = nullptr;
  ControlEvents* events = nullptr;  // ControlEvent::channel is the channel index
  // IGMP frames (queries from the switch or router) go to control through
  // this ring (multi-producer, single-consumer); nullptr: --igmp off, they
  // are dropped as not_esp.
  rte_ring* igmp = nullptr;
  std::vector<std::unique_ptr<RecvWorkerStats>> stats;
  std::atomic<unsigned> running{0};
  std::atomic<bool> failed{false};  // a worker stopped on an error
};

class RecvWorker {
 public:
  RecvWorker(RxShared& sh, unsigned id);
  ~RecvWorker();
  RecvWorker(const RecvWorker&) = delete;
  RecvWorker& operator=(const RecvWorker&) = delete;

  // Polls until g_stop, then drains what is queued.
  void run();
  // One burst (the caller owns pkts; every mbuf is consumed: delivered,
  // freed or dropped). next: the burst received after this one, whose first
  // frames are fetched once this burst's own are in flight.
  void process(const KeyTable* t, rte_mbuf** pkts, uint16_t n, rte_mbuf* const* next,
               uint16_t nnext);

 private:
  void drop(rte_mbuf* m, Drop why) {
    st_.drops[static_cast<unsigned>(why)].add();
    release(m);
  }
  // Freed at the end of the burst, in one call (the mempool put is per burst, not per packet).
  void release(rte_mbuf* m) { free_[nfree_++] = m; }
  void post_unknown(uint32_t chan_index, uint32_t spi);
  void note_spi(uint32_t chan_index, uint32_t spi);

  RxShared& sh_;
  unsigned id_;
  uint16_t q_;
  RecvWorkerStats& st_;
  IdleBackoff backoff_;
  Aead aead_;
  SpiCache cache_;  // last (group, SPI) lookup
  rte_mbuf* free_[kMaxBurst];
  uint16_t nfree_ = 0;
  // The last unknown SPI reported (and its channel, when): reported at most every report_every_.
  uint32_t last_unknown_chan_ = GroupIndex::kNone, last_unknown_ = 0;
  uint64_t last_unknown_tsc_ = 0, report_every_ = 0;
  pcap_t* pcap_ = nullptr;
  pcap_dumper_t* dumper_ = nullptr;
};

// rte_eal_remote_launch entry: arg is an RxWorkerArg.
struct RxWorkerArg {
  RxShared* sh;
  unsigned id;  // worker index = RX queue = RCU reader id
};
int rx_worker_main(void* arg);

}  // namespace keycast::dp
