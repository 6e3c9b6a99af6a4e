// Worker -> control thread events over a lock-free ring (rte_ring,
// multi-producer / single-consumer, 16-byte elements).
//
// Receiver workers post an event when a packet names an SPI the key table does
// not hold (UnknownSpi, rate limited per worker) and when an authenticated
// in-band key change notice arrives (Notice). The control thread drains the
// ring and decides what to do: today (static keys) it logs; with the key
// plane (kms_key_source.hpp) it asks the KMS for that key and installs it through
// KeyControl (dataplane/key_table.hpp). Posting never blocks: if the ring is
// full, the event is dropped and counted.
#pragma once
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <atomic>
#include <cstdint>

namespace keycast::dp {

enum class EventType : uint32_t { UnknownSpi = 1, Notice = 2 };

struct ControlEvent {
  EventType type;
  uint32_t channel;
  uint32_t spi;           // UnknownSpi: the SPI seen; Notice: the next SPI
  uint32_t ms_to_switch;  // Notice only
};
static_assert(sizeof(ControlEvent) == 16);

class ControlEvents {
 public:
  explicit ControlEvents(unsigned count = 1024);  // count: power of two
  ~ControlEvents();
  ControlEvents(const ControlEvents&) = delete;
  ControlEvents& operator=(const ControlEvents&) = delete;

  // Any thread (workers). Lock-free; false if full (counted in dropped()).
  bool post(const ControlEvent& e) noexcept {
    if (rte_ring_mp_enqueue_elem(ring_, const_cast<ControlEvent*>(&e), sizeof e) == 0)
      return true;
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  // Control thread only.
  unsigned drain(ControlEvent* out, unsigned n) noexcept {
    return rte_ring_sc_dequeue_burst_elem(ring_, out, sizeof(ControlEvent), n, nullptr);
  }
  uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

 private:
  rte_ring* ring_;
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace keycast::dp
