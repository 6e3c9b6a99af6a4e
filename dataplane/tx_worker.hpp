// The sender's worker: one per TX queue of --port. Each burst is one
// channel's: generated (round robin over the channels, each paced at its own
// rate) or ingested (plaintext datagrams from --ingest-port, the destination
// group:port picking the channel), enciphered under that channel's current
// key in the published table, and sent. Worker 0 also multicasts each
// channel's pending key change notice.
//
// Everything here is set up before the workers launch and read-only while
// they run, except the counters (one writer each: their worker) and the
// generator's per-channel packet indexes (shared by the workers).
#pragma once
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/aead.hpp"
#include "common/esp.hpp"
#include "dataplane/app.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/pacer.hpp"
#include "dataplane/stats.hpp"
#include "dataplane/vlan.hpp"

namespace keycast::dp {

struct TxChannel {
  uint32_t id;
  esp::Template tmpl;     // outer headers: group, source, TTL
  uint32_t group_ip;      // ingest: the datagrams of this channel go to
  uint16_t group_port;    //   group_ip:group_port
  uint64_t rate;          // generator: packets per second over all workers (0: flat out)
  uint32_t payload_size;  // generator
  uint32_t plain_slot;    // generator: index of its plaintext (one per payload size)
};

struct TxConfig {
  uint16_t port = 0;
  int ingest_port = -1;
  uint64_t count = 0;  // generator: packets per channel; ingest: frames in all (0: no limit)
  uint32_t burst = 32;
  uint32_t idle_sleep_us = 0;
  uint32_t notice_interval_ms = 50;
  std::vector<TxChannel> channels;
  std::vector<uint32_t> payload_sizes;  // distinct, indexed by TxChannel::plain_slot
  GroupIndex groups;                    // ingest
  VlanConfig vlan;                      // 802.1Q tag on every frame sent on port
};

// Keys a worker's data packets of one channel went out under, in the order
// it first used them (an SPI is never reused); at most this many are kept.
constexpr unsigned kMaxSpisUsed = 256;

struct TxChannelStats {
  Counter packets, bytes;
  // Written by the worker only, read after it stopped: the final spi_list is
  // what was sent, not what the control thread saw (it may see a switch after
  // the last packet, or miss one in the first moments of sending).
  uint32_t spis = 0;
  bool spis_full = false;  // more keys than kMaxSpisUsed: the control's view is used
  uint32_t last_spi = 0;
  uint32_t spi_used[kMaxSpisUsed];
  uint64_t spi_first_tsc[kMaxSpisUsed];
};

struct alignas(64) SendWorkerStats {
  explicit SendWorkerStats(std::size_t channels) : chan(new TxChannelStats[channels]) {}
  Counter packets, bytes, wire_bytes, notices, tx_dropped, alloc_fail, ingest_rx, ingest_bad,
      ingest_no_channel;
  std::unique_ptr<TxChannelStats[]> chan;  // index = channel index
};

// The generator's packet indexes are per channel (the receiver checks each
// channel's for loss and order) and global over the workers.
struct alignas(64) ChannelIndex {
  std::atomic<uint64_t> next{0};
};

struct TxShared {
  TxConfig cfg;
  KeyTableHolder* holder = nullptr;
  rte_mempool* pool = nullptr;                // when worker_pools is empty
  std::vector<rte_mempool*> worker_pools;     // per worker: its NUMA socket's pool
  std::unique_ptr<ChannelIndex[]> next_index;  // index = channel index
  std::atomic<uint64_t> start_tsc{0};
  std::atomic<unsigned> running{0};
  std::atomic<bool> failed{false};  // a worker stopped on an error
  std::vector<std::unique_ptr<SendWorkerStats>> stats;
};

class SendWorker {
 public:
  SendWorker(TxShared& sh, unsigned id, unsigned nworkers);
  SendWorker(const SendWorker&) = delete;
  SendWorker& operator=(const SendWorker&) = delete;

  // Sends until g_stop or, with --count, until every channel has sent its count.
  void run();
  // One generated burst of channel ci (0 if its pacer or pool said no, or
  // its count is reached: then done is set).
  unsigned generate_burst(const KeyTable* t, uint32_t ci, bool& done);
  // One burst from the ingest port (every frame consumed: sent or dropped).
  unsigned ingest_burst(const KeyTable* t, bool& done);

 private:
  struct Plain {
    // Generator plaintext (two copies, see generate_burst) and its length: the
    // enciphered region of a generated frame, UDP header and trailer included.
    alignas(64) uint8_t b[2][RTE_MBUF_DEFAULT_DATAROOM];
    std::size_t len = 0;
  };
  void idle();
  uint64_t take_indices(uint32_t ci, uint32_t n) noexcept;
  unsigned seal_and_send(uint32_t ci, KeySlot* key, rte_mbuf** out, uint16_t n);
  void count_sent(uint32_t ci, KeySlot* key, uint16_t n, uint16_t sent, uint64_t payload,
                  uint64_t wire) noexcept;
  void note_key(uint32_t ci, uint32_t spi) noexcept;
  void notices(const KeyTable* t);
  void send_notice(const KeyTable* t, uint32_t ci);

  TxShared& sh_;
  unsigned id_;
  rte_mempool* pool_;
  uint16_t q_;
  bool sole_worker_;
  SendWorkerStats& st_;
  IdleBackoff backoff_;
  std::vector<Pacer> pacers_;  // index = channel index
  std::vector<uint8_t> done_;  // generator: channel reached --count
  std::size_t ndone_ = 0;
  uint32_t rr_ = 0;            // next channel in the generator's round
  Aead aead_;
  uint64_t notice_every_ = 0;
  std::vector<uint64_t> last_notice_gen_, last_notice_tsc_;  // worker 0, per channel
  AeadOp ops_[kMaxBurst];
  uint8_t aad_[kMaxBurst][esp::kAadLen];
  std::vector<std::unique_ptr<Plain>> plain_;  // index = TxChannel::plain_slot
};

struct TxWorkerArg {
  TxShared* sh;
  unsigned id;  // worker index = TX queue = RCU reader id
  unsigned nworkers;
};
int tx_worker_main(void* arg);

}  // namespace keycast::dp
