// The data-plane key table: lock-free for workers, RCU-retired.
//
// A KeyTable is an immutable snapshot (per channel: previous, current, next,
// plus any further held keys) published through one atomic pointer. Workers
// load it with acquire ordering, use it for a burst, and report a quiescent
// state (rte_rcu_qsbr) between bursts. The control thread (the only writer)
// builds a new table and publishes it; the old table is freed only after every
// registered worker has reported quiescent since the swap.
//
// Keys live in KeySlots, shared between successive tables (shared_ptr held by
// tables only; workers use raw pointers and never copy a shared_ptr), so the
// per-key mutable state survives republishing:
//  - sender: the 64-bit sequence counter. Workers reserve disjoint blocks with
//    one fetch_add per kSeqBlock numbers, so an IV is never repeated under a key.
//  - receiver: one replay window per RX queue, each written only by the worker
//    that polls that queue.
// A slot is freed when the last table holding it is reclaimed.
#pragma once
#include <rte_rcu_qsbr.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "common/aead.hpp"
#include "common/key_record.hpp"
#include "dataplane/replay_window.hpp"

namespace keycast::dp {

struct alignas(64) KeySlot {
  KeySlot(const KeyRecord& r, uint64_t first_seq, unsigned replay_queues, uint32_t replay_size,
          unsigned send_workers = 0);
  KeySlot(const KeySlot&) = delete;
  KeySlot& operator=(const KeySlot&) = delete;

  // The first line holds all a receiver reads of the slot per packet besides the schedule
  // (identity, channel index, where its replay windows are): with many channels every packet
  // may need another slot, so each line it touches is likely a cache miss.
  uint32_t channel;
  uint32_t spi;
  uint32_t tag = 0;         // lookup tag of its channel (see KeyTable)
  uint32_t chan_index = 0;  // its channel's index in the process

  // Receiver: per RX queue window; index = queue id. Single writer each.
  struct alignas(64) PerQueue {
    ReplayWindow window;
    // This queue's worker has recorded this SPI in its channel's statistics (spi list, key
    // switches): checked here, on a line the packet reads anyway, not in the channel's stats.
    bool noted = false;
  };
  std::unique_ptr<PerQueue[]> replay;
  unsigned replay_queues;

  AeadKey key;                       // precomputed GCM schedule
  MonoClock::time_point expires_at;  // remaining effective time reaches 0 (sender switches)
  alignas(64) std::atomic<uint64_t> next_seq;  // sender: next unreserved sequence number

  // Sender, per worker (index = worker id = TX queue), single writer each: a
  // block of reserved sequence numbers, and what was sent under this key (its
  // epoch) for the usage report the KMS bills from (final once no
  // worker can still hold the slot, after an RCU grace period). Plain stores,
  // no locked instruction per burst: a locked add waits for the store buffer
  // to drain, and it is full of the previous burst's ciphertext.
  struct alignas(64) PerWorker {
    uint64_t seq_next = 0, seq_end = 0;  // reserved, not yet used: [next, end)
    std::atomic<uint64_t> packets{0}, bytes{0};
  };
  std::unique_ptr<PerWorker[]> per_worker;
  unsigned send_workers;
  // Sequence numbers are taken from next_seq in blocks of this many; a block's
  // unused rest is skipped when the slot is retired (gaps are harmless: an IV
  // is never repeated, and the receiver's window accepts gaps).
  static constexpr uint32_t kSeqBlock = 512;

  // Reserve n consecutive sequence numbers; returns the first. Any thread.
  uint64_t reserve(uint32_t n) noexcept { return next_seq.fetch_add(n, std::memory_order_relaxed); }
  // The same for worker w (< send_workers) only, from its block.
  uint64_t reserve(unsigned w, uint32_t n) noexcept {
    PerWorker& p = per_worker[w];
    if (p.seq_end - p.seq_next < n) [[unlikely]] {
      const uint32_t block = n > kSeqBlock ? n : kSeqBlock;
      p.seq_next = reserve(block);
      p.seq_end = p.seq_next + block;
    }
    const uint64_t s = p.seq_next;
    p.seq_next += n;
    return s;
  }
  // Worker w sent packets/bytes under this key (single writer per w).
  void count_sent(unsigned w, uint64_t packets, uint64_t bytes) noexcept {
    PerWorker& p = per_worker[w];
    p.packets.store(p.packets.load(std::memory_order_relaxed) + packets, std::memory_order_relaxed);
    p.bytes.store(p.bytes.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
  }
  uint64_t sent_packets() const noexcept;
  uint64_t sent_bytes() const noexcept;
};

// Pending in-band "key data change previous notice" (sender side).
struct PendingNotice {
  uint32_t next_spi = 0;
  uint64_t switch_tsc = 0;   // TSC at which the sender switches
  uint64_t generation = 0;   // changes for every new notice
};

// One channel's key roles in a snapshot.
struct ChannelKeys {
  uint32_t channel = 0;  // channel id
  KeySlot* previous = nullptr;
  KeySlot* current = nullptr;
  KeySlot* next = nullptr;
  PendingNotice notice;
};

// A snapshot of every channel a process carries. Channels are addressed by
// index (their order in the configuration, dense from 0), keys by (tag, SPI):
// the tag is what a packet names its channel by, the group address on a
// receiver (SPIs are only unique within a channel), the channel id elsewhere.
// The lookup is one probe sequence in an open-addressed hash kept at most half
// full, so its cost does not grow with the number of channels.
class KeyTable {
 public:
  uint64_t generation = 0;
  std::vector<ChannelKeys> channels;  // index = channel index
  std::vector<uint32_t> noticing;     // indexes of channels with a pending notice

  const ChannelKeys& at(std::size_t index) const noexcept { return channels[index]; }

  KeySlot* find(uint32_t tag, uint32_t spi) const noexcept {
    const uint64_t k = key_of(tag, spi);
    for (std::size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      const Entry& e = index_[i];
      if (e.slot == nullptr) return nullptr;  // the index is never full: a probe ends
      if (e.key == k) return e.slot;
    }
  }
  // Fetches the index entry find(tag, spi) starts from, to look it up a few packets later.
  void prefetch(uint32_t tag, uint32_t spi) const noexcept {
    __builtin_prefetch(&index_[hash(key_of(tag, spi)) & mask_]);
  }
  std::size_t size() const noexcept { return owned_.size(); }

  // Writer side: add every key, then build_index() once, before publishing.
  void add(std::shared_ptr<KeySlot> s);  // under s->tag; a later equal (tag, SPI) wins
  void build_index();

 private:
  struct Entry {
    uint64_t key = 0;
    KeySlot* slot = nullptr;
  };
  static uint64_t key_of(uint32_t tag, uint32_t spi) noexcept { return uint64_t(tag) << 32 | spi; }
  // Fibonacci hashing: the high bits of key * 2^64/phi, folded down; SPIs are
  // often consecutive and tags share prefixes, which a plain mask would cluster.
  static std::size_t hash(uint64_t k) noexcept {
    const uint64_t h = k * 0x9e3779b97f4a7c15ull;
    return static_cast<std::size_t>(h ^ (h >> 29) ^ (h >> 41));
  }
  std::vector<Entry> index_ = std::vector<Entry>(1);  // an empty table finds nothing
  std::size_t mask_ = 0;
  std::vector<std::shared_ptr<KeySlot>> owned_;
};

// Per-worker cache of the last (tag, SPI) lookup. Keyed on the table
// generation, never on the table's address: a retired table's memory can be
// reused by a newer table at the same address (ABA), and a stale slot pointer
// would then be used after free.
class SpiCache {
 public:
  KeySlot* lookup(const KeyTable& t, uint32_t tag, uint32_t spi) noexcept {
    if (t.generation == gen_ && spi == spi_ && tag == tag_) return slot_;
    slot_ = t.find(tag, spi);
    gen_ = t.generation;
    tag_ = tag;
    spi_ = spi;
    return slot_;
  }

 private:
  uint64_t gen_ = 0;  // table generations start at 1
  uint32_t tag_ = 0, spi_ = 0;
  KeySlot* slot_ = nullptr;
};

// Atomic publication + RCU retirement. One writer thread; up to max_readers
// reader threads, each with a distinct id in [0, max_readers).
class KeyTableHolder {
 public:
  explicit KeyTableHolder(unsigned max_readers);
  ~KeyTableHolder();
  KeyTableHolder(const KeyTableHolder&) = delete;
  KeyTableHolder& operator=(const KeyTableHolder&) = delete;

  // ---- reader (worker) side: no locks, no allocation ----
  // Once per reader before it first calls acquire(). Apps register every
  // worker from the control thread before launching it, so a slow-starting
  // worker can only delay reclamation, never miss a grace period.
  void register_reader(unsigned id);
  void unregister_reader(unsigned id);  // when the reader stops for good
  const KeyTable* acquire() const noexcept { return cur_.load(std::memory_order_acquire); }
  // Between bursts: "I hold no pointer obtained before this call".
  void quiescent(unsigned id) noexcept { rte_rcu_qsbr_quiescent(qsv_, id); }
  // Around sleeps, so a sleeping worker does not hold up reclamation.
  void offline(unsigned id) noexcept { rte_rcu_qsbr_thread_offline(qsv_, id); }
  void online(unsigned id) noexcept { rte_rcu_qsbr_thread_online(qsv_, id); }

  // ---- writer (control) side ----
  // Publishes t (release) and retires the previous table.
  void publish(std::unique_ptr<KeyTable> t);
  const KeyTable* latest() const noexcept { return cur_.load(std::memory_order_relaxed); }
  // Frees retired tables whose grace period has ended; non-blocking.
  std::size_t reclaim();
  // Blocks until every retired table can be freed, then frees them.
  void synchronize();
  std::size_t retired() const noexcept { return retired_.size(); }
  uint64_t next_generation() noexcept { return ++generation_; }

 private:
  struct Retired {
    uint64_t token;
    std::unique_ptr<KeyTable> table;
  };
  rte_rcu_qsbr* qsv_ = nullptr;
  std::atomic<const KeyTable*> cur_{nullptr};
  std::unique_ptr<KeyTable> owned_cur_;
  std::vector<Retired> retired_;
  uint64_t generation_ = 0;
};

// Control-side key state for one channel. Every change goes through here;
// publish() hands the whole process's state to its KeyPublisher, which builds
// one table for all channels. Not thread-safe: call from the control thread.
struct SlotParams {
  unsigned replay_queues = 0;   // receiver: RX queues (one window each)
  uint32_t replay_size = 4096;  // receiver: --replay-window
  uint64_t first_seq = 1;       // sender: first sequence number of a fresh key
  unsigned send_workers = 0;    // sender: workers (per-worker sequence blocks and counters)
};

class KeyPublisher;

class KeyControl {
 public:
  // A process with this one channel (tag = channel id, index 0).
  KeyControl(KeyTableHolder& holder, uint32_t channel, SlotParams params);
  // Channel number `index` of pub's process (KeyPublisher::add_channel).
  KeyControl(KeyPublisher& pub, uint32_t index, uint32_t channel, uint32_t tag, SlotParams params);
  ~KeyControl();
  KeyControl(const KeyControl&) = delete;
  KeyControl& operator=(const KeyControl&) = delete;

  // Installs a key (e.g. fetched from the KMS, or a key-file line). Returns
  // false if the SPI is already held (an SPI is never reused).
  bool add(const KeyRecord& r);
  bool holds(uint32_t spi) const;
  // The slot itself (e.g. to read a finished epoch's counters after removal).
  std::shared_ptr<KeySlot> slot(uint32_t spi) const;
  // Roles. set_current moves the old current to previous.
  void set_current(uint32_t spi);
  void set_next(uint32_t spi);
  void clear_next() { next_ = 0; }
  // Drops a key (e.g. the previous key when its grace period ends).
  void remove(uint32_t spi);
  void set_notice(uint32_t next_spi, uint64_t switch_tsc);
  void clear_notice() { notice_ = {}; }
  void set_first_seq(uint64_t s) { params_.first_seq = s; }

  // Publishes this change (one table for every channel of the process; inside
  // a KeyPublisher::Batch, once at the batch's end). Then call
  // holder.reclaim() periodically.
  void publish();

  uint32_t current_spi() const { return current_; }
  uint32_t next_spi() const { return next_; }
  uint32_t previous_spi() const { return previous_; }
  std::size_t size() const { return slots_.size(); }
  uint32_t channel() const { return channel_; }
  uint32_t index() const { return index_; }
  KeyTableHolder& holder();

 private:
  friend class KeyPublisher;
  std::unique_ptr<KeyPublisher> own_pub_;  // the one-channel form
  KeyPublisher* pub_;
  uint32_t index_, channel_, tag_;
  SlotParams params_;
  std::vector<std::shared_ptr<KeySlot>> slots_;
  uint32_t previous_ = 0, current_ = 0, next_ = 0;
  PendingNotice notice_;
  uint64_t notice_gen_ = 0;
};

// Every channel of a process: builds and publishes their one table.
class KeyPublisher {
 public:
  explicit KeyPublisher(KeyTableHolder& holder) : holder_(holder) {}
  KeyPublisher(const KeyPublisher&) = delete;
  KeyPublisher& operator=(const KeyPublisher&) = delete;

  // The next channel index; tag: what packets name the channel by (see KeyTable).
  KeyControl& add_channel(uint32_t channel, uint32_t tag, SlotParams params);
  KeyControl& at(std::size_t index) { return *chans_[index]; }
  const KeyControl& at(std::size_t index) const { return *chans_[index]; }
  std::size_t size() const { return chans_.size(); }

  // Builds a table from every channel's state and publishes it.
  void publish();
  KeyTableHolder& holder() { return holder_; }

  // Within a batch, publish() only marks the table stale; the batch's end
  // publishes once (e.g. the first keys of 1,024 channels at start).
  class Batch {
   public:
    explicit Batch(KeyPublisher& p) : p_(p) { ++p_.batch_depth_; }
    ~Batch() {
      if (--p_.batch_depth_ == 0 && p_.stale_) p_.publish();
    }
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

   private:
    KeyPublisher& p_;
  };

 private:
  friend class KeyControl;
  void attach(KeyControl* c) { chans_.push_back(c); }
  KeyTableHolder& holder_;
  std::vector<KeyControl*> chans_;
  std::vector<std::unique_ptr<KeyControl>> owned_;
  unsigned batch_depth_ = 0;
  bool stale_ = false;
};

// Sequence start for static keys: nanoseconds since the epoch (CLOCK_REALTIME)
// so a restarted sender never repeats an IV under a key-file key.
uint64_t static_key_first_seq() noexcept;

}  // namespace keycast::dp
