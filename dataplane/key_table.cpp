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
      replay_queues(queues),
      key(r.material),
      expires_at(r.expires_at),
      next_seq(first_seq),
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

void KeyTable::add(std::shared_ptr<KeySlot> s) { owned_.push_back(std::move(s)); }

void KeyTable::build_index() {
  std::size_t cap = 16;
  while (cap < 2 * owned_.size()) cap <<= 1;
  index_.assign(cap, Entry{});
  mask_ = cap - 1;
  for (auto& s : owned_) {
    const uint64_t k = key_of(s->tag, s->spi);
    std::size_t i = hash(k) & mask_;
    while (index_[i].slot != nullptr && index_[i].key != k) i = (i + 1) & mask_;
    index_[i] = Entry{k, s.get()};
  }
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

KeyControl::KeyControl(KeyTableHolder& holder, uint32_t channel, SlotParams params)
    : own_pub_(std::make_unique<KeyPublisher>(holder)),
      pub_(own_pub_.get()),
      index_(0),
      channel_(channel),
      tag_(channel),
      params_(params) {
  pub_->attach(this);
}

KeyControl::KeyControl(KeyPublisher& pub, uint32_t index, uint32_t channel, uint32_t tag,
                       SlotParams params)
    : pub_(&pub), index_(index), channel_(channel), tag_(tag), params_(params) {}

KeyControl::~KeyControl() = default;

KeyTableHolder& KeyControl::holder() { return pub_->holder(); }

bool KeyControl::add(const KeyRecord& r) {
  if (holds(r.spi)) return false;
  auto s = std::shared_ptr<KeySlot>(new KeySlot(r, params_.first_seq, params_.replay_queues,
                                                params_.replay_size, params_.send_workers));
  s->tag = tag_;
  s->chan_index = index_;
  slots_.push_back(std::move(s));
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

void KeyControl::publish() { pub_->publish(); }

KeyControl& KeyPublisher::add_channel(uint32_t channel, uint32_t tag, SlotParams params) {
  owned_.push_back(std::make_unique<KeyControl>(*this, static_cast<uint32_t>(chans_.size()),
                                                channel, tag, params));
  attach(owned_.back().get());
  return *owned_.back();
}

// The whole table is rebuilt for any change: a few thousand slots at most
// (1,024 channels, 2-3 keys each), tens of microseconds, at key-switch rate.
void KeyPublisher::publish() {
  if (batch_depth_) {
    stale_ = true;
    return;
  }
  stale_ = false;
  auto t = std::make_unique<KeyTable>();
  t->generation = holder_.next_generation();
  t->channels.resize(chans_.size());
  for (std::size_t i = 0; i < chans_.size(); ++i) {
    const KeyControl& c = *chans_[i];
    ChannelKeys& ck = t->channels[i];
    ck.channel = c.channel_;
    for (auto& s : c.slots_) {
      if (s->spi == c.previous_) ck.previous = s.get();
      if (s->spi == c.current_) ck.current = s.get();
      if (s->spi == c.next_) ck.next = s.get();
      t->add(s);
    }
    ck.notice = c.notice_;
    if (ck.notice.generation) t->noticing.push_back(static_cast<uint32_t>(i));
  }
  t->build_index();
  holder_.publish(std::move(t));
}

uint64_t static_key_first_seq() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

}  // namespace keycast::dp
