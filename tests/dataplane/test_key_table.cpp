// Key table publish/retire under concurrent readers: readers look keys up
// while the writer swaps tables thousands of times. Run under ASan (see
// KEYCAST_SANITIZE) a use-after-free of a retired table or slot is caught;
// torn reads are caught by checking every table's invariants.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "common/key_record.hpp"
#include "dataplane/control_events.hpp"
#include "dataplane/key_source.hpp"
#include "dataplane/key_table.hpp"

using namespace keycast;
using namespace keycast::dp;

namespace {

KeyRecord make_key(uint32_t spi) {
  KeyRecord r;
  r.channel = 7;
  r.spi = spi;
  r.material = KeyMaterial::generate(Suite::Aes128Gcm);
  // Encode the SPI in the salt so a reader can check slot/key consistency.
  r.material.salt[0] = static_cast<uint8_t>(spi);
  r.material.salt[1] = static_cast<uint8_t>(spi >> 8);
  r.material.salt[2] = static_cast<uint8_t>(spi >> 16);
  r.material.salt[3] = static_cast<uint8_t>(spi >> 24);
  return r;
}

uint32_t salt_spi(const KeySlot* s) {
  const uint8_t* b = s->key.salt();
  return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}

}  // namespace

TEST(KeyTable, FindSortedAndRoles) {
  KeyTableHolder h(1);
  KeyControl ctl(h, 7, SlotParams{1, 128, 1});
  for (uint32_t spi : {900u, 300u, 600u}) ASSERT_TRUE(ctl.add(make_key(spi)));
  EXPECT_FALSE(ctl.add(make_key(600)));  // an SPI is never installed twice
  ctl.set_current(300);
  ctl.set_next(600);
  ctl.publish();
  const KeyTable* t = h.acquire();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->size(), 3u);
  EXPECT_EQ(t->at(0).current->spi, 300u);
  EXPECT_EQ(t->at(0).next->spi, 600u);
  EXPECT_EQ(t->at(0).previous, nullptr);
  EXPECT_EQ(t->find(7, 900)->spi, 900u);
  EXPECT_EQ(t->find(7, 899), nullptr);
  EXPECT_EQ(t->find(7, 0), nullptr);
  EXPECT_EQ(t->find(7, 0xffffffff), nullptr);
  ctl.set_current(600);
  ctl.publish();
  t = h.acquire();
  EXPECT_EQ(t->at(0).previous->spi, 300u);
  EXPECT_EQ(t->at(0).current->spi, 600u);
  EXPECT_EQ(t->at(0).next, nullptr);
  EXPECT_EQ(h.retired(), 1u);
  EXPECT_EQ(h.reclaim(), 1u);  // no registered readers: grace period is immediate
}

TEST(KeyTable, SlotStateSurvivesRepublish) {
  KeyTableHolder h(1);
  KeyControl ctl(h, 7, SlotParams{0, 64, 1000});
  ctl.add(make_key(256));
  ctl.set_current(256);
  ctl.publish();
  KeySlot* s = h.acquire()->at(0).current;
  EXPECT_EQ(s->reserve(10), 1000u);
  ctl.add(make_key(257));
  ctl.set_next(257);
  ctl.publish();
  // Same slot (same counter) in the new table: no IV can repeat.
  EXPECT_EQ(h.acquire()->at(0).current, s);
  EXPECT_EQ(s->reserve(1), 1010u);
}

TEST(KeyTable, RetiredTableWaitsForReaders) {
  KeyTableHolder h(2);
  KeyControl ctl(h, 7, SlotParams{});
  ctl.add(make_key(256));
  ctl.set_current(256);
  ctl.publish();
  h.register_reader(0);
  const KeyTable* old = h.acquire();
  ctl.add(make_key(257));
  ctl.set_current(257);
  ctl.publish();
  // Reader 0 still may hold `old`: it must not be freed.
  EXPECT_EQ(h.reclaim(), 0u);
  EXPECT_EQ(old->at(0).current->spi, 256u);
  h.quiescent(0);
  EXPECT_EQ(h.reclaim(), 1u);
  // An offline reader does not hold up reclamation.
  ctl.add(make_key(258));
  ctl.set_current(258);
  ctl.publish();
  h.offline(0);
  EXPECT_EQ(h.reclaim(), 1u);
  h.online(0);
  h.unregister_reader(0);
}

TEST(KeyTable, ConcurrentReadersWhileWriterSwaps) {
  constexpr unsigned kReaders = 3;
  constexpr unsigned kSwaps = 5000;
  KeyTableHolder h(kReaders);
  KeyControl ctl(h, 7, SlotParams{kReaders, 256, 1});
  uint32_t spi = 256;
  ctl.add(make_key(spi));
  ctl.set_current(spi);
  ctl.publish();

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> lookups{0}, bad{0};
  std::atomic<unsigned> ready{0};
  std::vector<std::thread> readers;
  for (unsigned id = 0; id < kReaders; ++id) {
    readers.emplace_back([&, id] {
      h.register_reader(id);
      ready.fetch_add(1);
      uint64_t n = 0, b = 0;
      uint64_t last_gen = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const KeyTable* t = h.acquire();
        // Generations only move forward.
        if (t->generation < last_gen) ++b;
        last_gen = t->generation;
        KeySlot* cur = t->at(0).current;
        if (!cur || t->find(7, cur->spi) != cur || salt_spi(cur) != cur->spi) ++b;
        if (t->at(0).previous && (t->find(7, t->at(0).previous->spi) != t->at(0).previous ||
                            salt_spi(t->at(0).previous) != t->at(0).previous->spi))
          ++b;
        // Touch per-queue mutable state as a worker would (own queue only).
        cur->replay[id].window.update(n);
        cur->reserve(4);
        ++n;
        h.quiescent(id);
      }
      lookups.fetch_add(n);
      bad.fetch_add(b);
      h.unregister_reader(id);
    });
  }
  while (ready.load() < kReaders) std::this_thread::yield();
  for (unsigned i = 0; i < kSwaps; ++i) {
    const uint32_t old_prev = ctl.previous_spi();
    ctl.add(make_key(++spi));
    ctl.set_current(spi);
    if (old_prev) ctl.remove(old_prev);  // slot freed once no table holds it
    ctl.publish();
    h.reclaim();
    if (i % 64 == 0) std::this_thread::yield();
  }
  stop.store(true);
  for (auto& t : readers) t.join();
  h.synchronize();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(lookups.load(), 0u);
  EXPECT_EQ(h.retired(), 0u);
  EXPECT_EQ(h.acquire()->at(0).current->spi, spi);
  EXPECT_LE(h.acquire()->size(), 2u);
}

// Workers take sequence numbers from per-worker blocks; whatever the burst
// sizes, no two reservations (any worker, any thread) overlap: no IV repeats.
TEST(KeyTable, PerWorkerSequenceBlocksNeverOverlap) {
  constexpr unsigned kWorkers = 3, kEach = 20000;
  KeyTableHolder h(kWorkers);
  SlotParams p;
  p.first_seq = 5;
  p.send_workers = kWorkers;
  KeyControl ctl(h, 7, p);
  ctl.add(make_key(256));
  ctl.set_current(256);
  ctl.publish();
  KeySlot* s = h.acquire()->at(0).current;
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> got(kWorkers + 1);
  std::vector<std::thread> ts;
  for (unsigned w = 0; w <= kWorkers; ++w)
    ts.emplace_back([&, w] {
      std::mt19937 rng(w);
      for (unsigned i = 0; i < kEach; ++i) {
        const uint32_t n = 1 + rng() % 700;  // also larger than a block
        // Thread kWorkers is not a worker: it uses the shared counter.
        const uint64_t first = w < kWorkers ? s->reserve(w, n) : s->reserve(n);
        got[w].emplace_back(first, first + n);
        if (w < kWorkers) s->count_sent(w, n, uint64_t(n) * 100);
      }
    });
  for (auto& t : ts) t.join();
  std::vector<std::pair<uint64_t, uint64_t>> all;
  uint64_t packets = 0;
  for (unsigned w = 0; w <= kWorkers; ++w) {
    for (auto& r : got[w]) {
      all.push_back(r);
      if (w < kWorkers) packets += r.second - r.first;
    }
  }
  std::sort(all.begin(), all.end());
  EXPECT_GE(all.front().first, 5u);
  uint64_t overlaps = 0;
  for (std::size_t i = 1; i < all.size(); ++i) overlaps += all[i].first < all[i - 1].second;
  EXPECT_EQ(overlaps, 0u);
  EXPECT_EQ(s->sent_packets(), packets);
  EXPECT_EQ(s->sent_bytes(), packets * 100);
}

TEST(ControlEvents, MultiProducerSingleConsumer) {
  ControlEvents ev(256);
  constexpr unsigned kProducers = 3, kEach = 2000;
  std::vector<std::thread> ps;
  std::atomic<uint64_t> posted{0};
  for (unsigned p = 0; p < kProducers; ++p)
    ps.emplace_back([&, p] {
      for (unsigned i = 0; i < kEach; ++i)
        while (!ev.post(ControlEvent{EventType::UnknownSpi, p, i, 0})) std::this_thread::yield();
      posted.fetch_add(kEach);
    });
  std::vector<unsigned> next(kProducers, 0);
  uint64_t got = 0;
  bool in_order = true;
  ControlEvent buf[32];
  while (got < kProducers * kEach) {
    unsigned n = ev.drain(buf, 32);
    for (unsigned i = 0; i < n; ++i) {
      in_order &= buf[i].spi == next[buf[i].channel]++;
      ++got;
    }
  }
  for (auto& t : ps) t.join();
  EXPECT_TRUE(in_order);  // per producer FIFO, nothing lost or duplicated
  EXPECT_EQ(ev.drain(buf, 32), 0u);
}

TEST(ControlEvents, FullRingDropsAndCounts) {
  ControlEvents ev(8);  // usable capacity 7
  unsigned ok = 0;
  for (unsigned i = 0; i < 20; ++i) ok += ev.post(ControlEvent{EventType::Notice, 1, i, 5});
  EXPECT_EQ(ok, 7u);
  EXPECT_EQ(ev.dropped(), 13u);
}

TEST(StaticKeySource, SenderRotatesWithoutReusingSpis) {
  std::vector<KeyRecord> keys;
  for (uint32_t s = 300; s < 303; ++s) keys.push_back(make_key(s));
  KeyTableHolder h(1);
  KeyControl ctl(h, 7, SlotParams{});
  StaticKeySource src(keys, StaticKeySource::Role::Sender, 100, 0);
  auto t0 = MonoClock::now();
  src.start(ctl, t0);
  EXPECT_EQ(h.acquire()->at(0).current->spi, 300u);
  EXPECT_EQ(h.acquire()->at(0).next->spi, 301u);
  const uint64_t seq300 = h.acquire()->at(0).current->reserve(0);
  EXPECT_GT(seq300, uint64_t(1) << 60);  // wall-clock origin (ns since 1970)
  src.poll(ctl, t0 + std::chrono::milliseconds(50));
  EXPECT_EQ(h.acquire()->at(0).current->spi, 300u);
  src.poll(ctl, t0 + std::chrono::milliseconds(100));
  EXPECT_EQ(h.acquire()->at(0).current->spi, 301u);
  EXPECT_EQ(h.acquire()->at(0).next->spi, 302u);
  src.poll(ctl, t0 + std::chrono::milliseconds(200));
  EXPECT_EQ(h.acquire()->at(0).current->spi, 302u);
  EXPECT_EQ(h.acquire()->at(0).next, nullptr);
  src.poll(ctl, t0 + std::chrono::milliseconds(400));  // exhausted: stays, never wraps
  EXPECT_EQ(h.acquire()->at(0).current->spi, 302u);
}

TEST(SpiCache, KeyedOnGenerationNotAddress) {
  KeyTableHolder h(1);
  KeyControl ctl(h, 7, SlotParams{});
  ctl.add(make_key(500));
  ctl.add(make_key(501));
  ctl.set_current(500);
  ctl.publish();
  const KeyTable* t = h.acquire();
  SpiCache c;
  EXPECT_EQ(c.lookup(*t, 7, 502), nullptr);
  KeySlot* s500 = c.lookup(*t, 7, 500);
  ASSERT_NE(s500, nullptr);
  EXPECT_EQ(c.lookup(*t, 7, 500), s500);
  // A table at the very same address with other contents (what memory reuse
  // after retirement produces) must not be served from the cache.
  KeyTable reused;
  reused.generation = 1;
  auto other = std::shared_ptr<KeySlot>(new KeySlot(make_key(500), 1, 0, 64));
  other->tag = 7;
  reused.add(other);
  reused.build_index();
  EXPECT_EQ(c.lookup(reused, 7, 500), s500);  // same generation: same table by contract
  reused.generation = 99;
  EXPECT_EQ(c.lookup(reused, 7, 500), other.get());
}

// 1,024 channels whose SPIs coincide (each channel has its own SPI space): the
// (tag, SPI) lookup finds each channel's own slot and nothing under a tag no
// channel has; one batch publishes one table.
TEST(KeyPublisher, ManyChannelsSameSpis) {
  KeyTableHolder h(1);
  KeyPublisher pub(h);
  constexpr uint32_t kChannels = 1024;
  const uint32_t tag0 = 0xef000000;  // e.g. groups 239.0.0.0 + i
  {
    KeyPublisher::Batch batch(pub);
    for (uint32_t i = 0; i < kChannels; ++i) {
      KeyControl& c = pub.add_channel(100 + i, tag0 + i, SlotParams{});
      for (uint32_t spi : {256u, 257u}) {
        KeyRecord r = make_key(spi);
        r.channel = 100 + i;
        ASSERT_TRUE(c.add(r));
      }
      c.set_current(256);
      c.set_next(257);
      if (i % 100 == 0) c.set_notice(257, 12345);
      c.publish();
    }
    EXPECT_EQ(h.latest(), nullptr);  // nothing published inside the batch
  }
  const KeyTable* t = h.acquire();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->generation, 1u);
  ASSERT_EQ(t->channels.size(), kChannels);
  EXPECT_EQ(t->size(), 2 * kChannels);
  for (uint32_t i = 0; i < kChannels; ++i) {
    KeySlot* s = t->find(tag0 + i, 257);
    ASSERT_NE(s, nullptr) << i;
    EXPECT_EQ(s->chan_index, i);
    EXPECT_EQ(s->channel, 100 + i);
    EXPECT_EQ(t->at(i).next, s);
    EXPECT_EQ(t->at(i).current, t->find(tag0 + i, 256));
    EXPECT_EQ(t->find(tag0 + i, 258), nullptr);
  }
  EXPECT_EQ(t->find(tag0 + kChannels, 256), nullptr);
  EXPECT_EQ(t->find(0, 256), nullptr);
  ASSERT_EQ(t->noticing.size(), 11u);
  EXPECT_EQ(t->noticing[1], 100u);
  EXPECT_EQ(t->at(100).notice.next_spi, 257u);

  // One channel's switch changes only that channel.
  KeyControl& c5 = pub.at(5);
  c5.set_current(257);
  c5.remove(256);
  c5.publish();
  t = h.acquire();
  EXPECT_EQ(t->generation, 2u);
  EXPECT_EQ(t->at(5).current->spi, 257u);
  EXPECT_EQ(t->at(5).previous, nullptr);
  EXPECT_EQ(t->find(tag0 + 5, 256), nullptr);
  EXPECT_EQ(t->at(6).current->spi, 256u);
  h.synchronize();
}

TEST(KeyTable, EmptyTableFindsNothing) {
  KeyTable t;
  EXPECT_EQ(t.find(0, 0), nullptr);
  EXPECT_EQ(t.find(7, 1), nullptr);
  t.build_index();
  EXPECT_EQ(t.find(7, 1), nullptr);
}
