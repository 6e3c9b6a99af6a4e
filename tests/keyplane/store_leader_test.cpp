// Leadership, fencing and key generations of the Store, on both backends
// (StoreLeader.*/sqlite and StoreLeader.*/postgres): what keeps two masters
// on one database from minting two different keys, whatever each believes.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "store_backends.hpp"
#include "store_test_util.hpp"

using namespace kptest;
using keycast::kp::Fenced;
using keycast::kp::Store;
using keycast::kp::StoredKey;

namespace {

class StoreLeader : public StoreBackends {};

StoredKey gen_key(uint32_t ch, uint64_t gen, uint8_t fill) {
  StoredKey k = key(ch, 0, fill);
  k.gen = gen;
  return k;
}

TEST_P(StoreLeader, OneLeaseHolderAtATimeAndEveryTakeoverANewEpoch) {
  auto a = t().open();
  auto b = t().open();
  EXPECT_EQ(a->lease().leadership().epoch, 0u);
  EXPECT_LE(a->lease().leadership().remaining_ms, 0);

  auto ea = a->lease().try_lead("a", "10.0.0.1:7000", 60000);
  ASSERT_TRUE(ea);
  EXPECT_FALSE(b->lease().try_lead("b", "10.0.0.2:7000", 60000)) << "the lease is held";
  auto l = b->lease().leadership();
  EXPECT_EQ(l.epoch, *ea);
  EXPECT_EQ(l.holder, "a");
  EXPECT_EQ(l.address, "10.0.0.1:7000");
  EXPECT_GT(l.remaining_ms, 50000);
  EXPECT_TRUE(a->lease().renew_lead(*ea, 60000));

  a->lease().release_lead(*ea);  // a clean stop: no waiting for the lease to run out
  EXPECT_EQ(b->lease().leadership().holder, "");
  auto eb = b->lease().try_lead("b", "10.0.0.2:7000", 60000);
  ASSERT_TRUE(eb);
  EXPECT_EQ(*eb, *ea + 1);
  EXPECT_FALSE(a->lease().renew_lead(*ea, 60000)) << "a stale epoch renews nothing";
  a->lease().release_lead(*ea);  // nor releases b's lease
  EXPECT_EQ(a->lease().leadership().holder, "b");
}

TEST_P(StoreLeader, AnExpiredLeaseIsTakenOver) {
  auto a = t().open();
  auto b = t().open();
  auto ea = a->lease().try_lead("a", "a:1", 300);
  ASSERT_TRUE(ea);
  EXPECT_FALSE(b->lease().try_lead("b", "b:1", 300));
  std::this_thread::sleep_for(std::chrono::milliseconds(450));  // the database's clock passes the lease
  EXPECT_LE(b->lease().leadership().remaining_ms, 0);
  auto eb = b->lease().try_lead("b", "b:1", 300);
  ASSERT_TRUE(eb);
  EXPECT_GT(*eb, *ea);
  EXPECT_FALSE(a->lease().renew_lead(*ea, 300));
}

// The old leader's writes fail once another has taken over, whatever they
// are, and leave nothing behind; the new leader's go through.
TEST_P(StoreLeader, AFencedStoreWritesNothingAfterATakeover) {
  auto a = t().open();
  auto b = t().open();
  auto ea = a->lease().try_lead("a", "a:1", 60000);
  ASSERT_TRUE(ea);
  a->lease().fence(*ea);
  const StoredKey k1 = a->keys().mint_key(gen_key(5, 1, 0x11));
  a->ledger().add_requests("client", 1, kT0);
  a->lease().release_lead(*ea);
  auto eb = b->lease().try_lead("b", "b:1", 60000);
  ASSERT_TRUE(eb);
  b->lease().fence(*eb);

  EXPECT_THROW(a->keys().mint_key(gen_key(5, 2, 0x22)), Fenced);
  EXPECT_THROW(a->keys().put_key(key(5, 900, 0x33)), Fenced);
  EXPECT_THROW(a->ledger().add_requests("client", 1, kT0), Fenced);
  EXPECT_THROW(a->ledger().add_checkpoint("sender", 1, 5, k1.spi, 100, 1, kT0), Fenced);
  EXPECT_THROW(a->keys().set_meta("x", "y"), Fenced);
  // A fenced failure inside a caller's transaction rolls it back whole.
  a->begin();
  EXPECT_THROW(a->ledger().add_holder("client", 5, k1.spi), Fenced);
  a->rollback();

  const StoredKey k2 = b->keys().mint_key(gen_key(5, 2, 0x44));
  b->ledger().add_requests("client", 2, kT0);
  auto keys = b->keys().load_keys();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].spi, k1.spi);
  EXPECT_EQ(keys[1].spi, k2.spi);
  EXPECT_TRUE(same_material(keys[1].material, gen_key(5, 2, 0x44).material));
  auto rows = b->ledger().billing();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].requests, 3u);  // a's one before the takeover, b's two
  EXPECT_FALSE(b->keys().meta("x"));

  // Unfenced (a single master, a slave): writes are not checked.
  a->lease().fence(0);
  EXPECT_NO_THROW(a->keys().set_meta("x", "y"));
}

TEST_P(StoreLeader, MintKeyNumbersSpisFromTheDatabaseAndKeepsOneKeyPerGeneration) {
  auto s = t().open();
  s->keys().set_spi_hwm(7, 300);  // SPIs already handed out (e.g. by an older keyd)
  const StoredKey g1 = s->keys().mint_key(gen_key(7, 1, 0x01));
  const StoredKey g2 = s->keys().mint_key(gen_key(7, 2, 0x02));
  EXPECT_EQ(g1.spi, 301u);
  EXPECT_EQ(g2.spi, 302u);
  EXPECT_EQ(g1.gen, 1u);
  EXPECT_GT(g2.seq, g1.seq);
  // Generation 2 again, other material: the stored key comes back, nothing new is made.
  const StoredKey again = s->keys().mint_key(gen_key(7, 2, 0x99));
  EXPECT_EQ(again.spi, g2.spi);
  EXPECT_EQ(again.seq, g2.seq);
  EXPECT_TRUE(same_material(again.material, gen_key(7, 2, 0x02).material));
  // Another channel has its own counter, above the reserved SPIs 1..255.
  EXPECT_EQ(s->keys().mint_key(gen_key(8, 1, 0x03)).spi, 256u);
  EXPECT_EQ(s->keys().load_spi_hwm()[7], 302u);
  // Survives a restart, generation included.
  s.reset();
  auto r = t().open();
  std::map<uint64_t, StoredKey> by_gen;
  for (auto& k : r->keys().load_keys())
    if (k.channel == 7) by_gen[k.gen] = k;
  ASSERT_EQ(by_gen.size(), 2u);
  EXPECT_EQ(by_gen[2].spi, 302u);
  EXPECT_EQ(r->keys().mint_key(gen_key(7, 3, 0x04)).spi, 303u);
  EXPECT_THROW(r->keys().mint_key(gen_key(7, 0, 0x05)), std::invalid_argument);
}

// Forced double-active: two stores that both believe they lead (both fenced
// at the same, current epoch: a fake lease) race to mint the same
// generations of one channel from two threads. Every generation ends with
// exactly one key, both sides were handed that key, and no SPI repeats.
TEST_P(StoreLeader, TwoActivesRacingStillMakeOneKeyPerGeneration) {
  auto a = t().open();
  auto b = t().open();
  auto e = a->lease().try_lead("a", "a:1", 60000);
  ASSERT_TRUE(e);
  a->lease().fence(*e);
  b->lease().fence(*e);
  constexpr uint64_t kGens = 60;
  std::map<uint64_t, StoredKey> got_a, got_b;
  std::string err_a, err_b;
  auto run = [&](Store& s, uint8_t fill, std::map<uint64_t, StoredKey>& got, std::string& err) {
    try {
      for (uint64_t g = 1; g <= kGens; ++g) got[g] = s.keys().mint_key(gen_key(9, g, uint8_t(fill + g)));
    } catch (const std::exception& x) {
      err = x.what();
    }
  };
  std::thread ta(run, std::ref(*a), uint8_t(0x00), std::ref(got_a), std::ref(err_a));
  std::thread tb(run, std::ref(*b), uint8_t(0x80), std::ref(got_b), std::ref(err_b));
  ta.join();
  tb.join();
  ASSERT_EQ(err_a, "");
  ASSERT_EQ(err_b, "");
  auto keys = a->keys().load_keys();
  ASSERT_EQ(keys.size(), kGens);
  std::set<uint32_t> spis;
  uint32_t last_spi = 0;
  for (auto& k : keys) {
    ASSERT_GE(k.gen, 1u);
    ASSERT_LE(k.gen, kGens);
    spis.insert(k.spi);
    EXPECT_EQ(k.spi, got_a[k.gen].spi) << "gen " << k.gen;
    EXPECT_EQ(k.spi, got_b[k.gen].spi) << "gen " << k.gen;
    EXPECT_TRUE(same_material(k.material, got_a[k.gen].material)) << "gen " << k.gen;
    EXPECT_TRUE(same_material(k.material, got_b[k.gen].material)) << "gen " << k.gen;
    EXPECT_GT(k.spi, last_spi) << "SPIs grow with the generation (seq order)";
    last_spi = k.spi;
  }
  EXPECT_EQ(spis.size(), kGens);
  std::set<uint64_t> gens;
  for (auto& k : keys) gens.insert(k.gen);
  EXPECT_EQ(gens.size(), kGens);
}

KP_BOTH_BACKENDS(StoreLeader);

}  // namespace
