#include "dataplane/key_table.hpp"

#include <rte_malloc.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>

namespace keycast::dp {

KeySlot::KeySlot(const KeyRecord& r, uint64_t first_seq, unsigned queues, uint32_t replay_size,
                 unsigned workers)
    : channel(r.channel),
      spi(r.spi),
      key(r.material),
      expires_at(r.expires_at),
      next_seq(first_seq),
      replay_queues(queues),
      send_workers(workers) {
  if (queues) {
    replay = std::make_unique<PerQueue[]>(queues);
    for (unsigned q = 0; q < queues; ++q) replay[q].window = ReplayWindow(replay_size);
  }
  if (workers) per_worker = std::make_unique<PerWorker[]>(workers);
}

uint64_t KeySlot::sent_packets() const noexcept {
  uint64_t n = 0;
  for (unsigned w = 0; w < send_workers; ++w) n += per_worker[w].packets.load(std::memory_order_relaxed);
  return n;
}

uint64_t KeySlot::sent_bytes() const noexcept {
  uint64_t n = 0;
  for (unsigned w = 0; w < send_workers; ++w) n += per_worker[w].bytes.load(std::memory_order_relaxed);
  return n;
}

void KeyTable::add(std::shared_ptr<KeySlot> s) {
  auto it = std::lower_bound(spis_.begin(), spis_.end(), s->spi);
  const std::size_t i = static_cast<std::size_t>(it - spis_.begin());
  if (it != spis_.end() && *it == s->spi) {
    raw_[i] = s.get();
    owned_[i] = std::move(s);
    return;
  }
  spis_.insert(it, s->spi);
  raw_.insert(raw_.begin() + static_cast<std::ptrdiff_t>(i), s.get());
  owned_.insert(owned_.begin() + static_cast<std::ptrdiff_t>(i), std::move(s));
}

KeyTableHolder::KeyTableHolder(unsigned max_readers) {
  if (max_readers == 0) max_readers = 1;
  const std::size_t sz = rte_rcu_qsbr_get_memsize(max_readers);
  // Plain aligned memory: works with or without an initialised EAL.
  void* mem = std::aligned_alloc(RTE_CACHE_LINE_SIZE,
                                 (sz + RTE_CACHE_LINE_SIZE - 1) / RTE_CACHE_LINE_SIZE *
                                     RTE_CACHE_LINE_SIZE);
  if (mem == nullptr) throw std::bad_alloc();
  qsv_ = static_cast<rte_rcu_qsbr*>(mem);
  if (rte_rcu_qsbr_init(qsv_, max_readers) != 0) {
    std::free(mem);
    throw std::runtime_error("rte_rcu_qsbr_init failed");
  }
}

KeyTableHolder::~KeyTableHolder() {
  // Readers are gone by now; free everything.
  retired_.clear();
  owned_cur_.reset();
  std::free(qsv_);
}

void KeyTableHolder::register_reader(unsigned id) {
  if (rte_rcu_qsbr_thread_register(qsv_, id) != 0)
    throw std::runtime_error("rte_rcu_qsbr_thread_register failed for reader " +
                             std::to_string(id));
  rte_rcu_qsbr_thread_online(qsv_, id);
}

void KeyTableHolder::unregister_reader(unsigned id) {
  rte_rcu_qsbr_thread_offline(qsv_, id);
  rte_rcu_qsbr_thread_unregister(qsv_, id);
}

void KeyTableHolder::publish(std::unique_ptr<KeyTable> t) {
  cur_.store(t.get(), std::memory_order_release);
  // StoreLoad: the new pointer must be visible before the grace-period check
  // reads which readers are registered/online (a reader coming online after
  // this fence loads the new pointer; one online before it is waited for).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (owned_cur_) {
    // Token taken after the store: a reader that reports quiescent after this
    // point can no longer hold the old pointer.
    const uint64_t token = rte_rcu_qsbr_start(qsv_);
    retired_.push_back(Retired{token, std::move(owned_cur_)});
  }
  owned_cur_ = std::move(t);
}

std::size_t KeyTableHolder::reclaim() {
  std::size_t freed = 0;
  // Tokens increase, so retired_ is ordered: stop at the first not yet safe.
  auto it = retired_.begin();
  for (; it != retired_.end(); ++it) {
    if (rte_rcu_qsbr_check(qsv_, it->token, false) != 1) break;
    ++freed;
  }
  retired_.erase(retired_.begin(), it);
  return freed;
}

void KeyTableHolder::synchronize() {
  for (auto& r : retired_) {
    while (rte_rcu_qsbr_check(qsv_, r.token, false) != 1) std::this_thread::yield();
  }
  retired_.clear();
}

bool KeyControl::add(const KeyRecord& r) {
  if (holds(r.spi)) return false;
  slots_.push_back(std::shared_ptr<KeySlot>(
      new KeySlot(r, params_.first_seq, params_.replay_queues, params_.replay_size,
                  params_.send_workers)));
  return true;
}

bool KeyControl::holds(uint32_t spi) const {
  return std::any_of(slots_.begin(), slots_.end(), [&](auto& s) { return s->spi == spi; });
}

std::shared_ptr<KeySlot> KeyControl::slot(uint32_t spi) const {
  for (auto& s : slots_)
    if (s->spi == spi) return s;
  return nullptr;
}

void KeyControl::set_current(uint32_t spi) {
  if (!holds(spi)) throw std::logic_error("set_current: SPI not held");
  if (current_ != spi) {
    previous_ = current_;
    current_ = spi;
  }
  if (next_ == spi) next_ = 0;
}

void KeyControl::set_next(uint32_t spi) {
  if (!holds(spi)) throw std::logic_error("set_next: SPI not held");
  next_ = spi;
}

void KeyControl::remove(uint32_t spi) {
  slots_.erase(std::remove_if(slots_.begin(), slots_.end(),
                              [&](auto& s) { return s->spi == spi; }),
               slots_.end());
  if (previous_ == spi) previous_ = 0;
  if (current_ == spi) current_ = 0;
  if (next_ == spi) next_ = 0;
}

void KeyControl::set_notice(uint32_t next_spi, uint64_t switch_tsc) {
  notice_.next_spi = next_spi;
  notice_.switch_tsc = switch_tsc;
  notice_.generation = ++notice_gen_;
}

void KeyControl::publish() {
  auto t = std::make_unique<KeyTable>();
  t->generation = holder_.next_generation();
  t->channel = channel_;
  for (auto& s : slots_) {
    t->add(s);
    if (s->spi == previous_) t->previous = s.get();
    if (s->spi == current_) t->current = s.get();
    if (s->spi == next_) t->next = s.get();
  }
  t->notice = notice_;
  holder_.publish(std::move(t));
}

uint64_t static_key_first_seq() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

}  // namespace keycast::dp
