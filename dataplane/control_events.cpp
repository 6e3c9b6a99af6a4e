#include "dataplane/control_events.hpp"

#include <cstdlib>
#include <new>
#include <stdexcept>

namespace keycast::dp {

ControlEvents::ControlEvents(unsigned count) {
  const ssize_t sz = rte_ring_get_memsize_elem(sizeof(ControlEvent), count);
  if (sz < 0) throw std::invalid_argument("ControlEvents: count must be a power of two");
  const std::size_t alloc = (static_cast<std::size_t>(sz) + RTE_CACHE_LINE_SIZE - 1) /
                            RTE_CACHE_LINE_SIZE * RTE_CACHE_LINE_SIZE;
  // Private memory (no memzone): usable with or without an initialised EAL.
  void* mem = std::aligned_alloc(RTE_CACHE_LINE_SIZE, alloc);
  if (!mem) throw std::bad_alloc();
  ring_ = static_cast<rte_ring*>(mem);
  if (rte_ring_init(ring_, "keycast_events", count, RING_F_SC_DEQ) != 0) {
    std::free(mem);
    throw std::runtime_error("rte_ring_init failed");
  }
}

ControlEvents::~ControlEvents() { std::free(ring_); }

}  // namespace keycast::dp
