// Data-plane key hygiene: a KeySlot retired from the key table (removed, its
// table past the RCU grace period, the last reference gone) holds no key
// bytes when its memory is released. The global aligned operator new/delete
// (KeySlot is alignas(64)) are replaced here: delete scans the block for the
// key before freeing it. The same scan of the live slot must find the key
// (the GCM schedule's first round key is the key itself), so the test cannot
// pass by looking in the wrong place.
#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "common/key_record.hpp"
#include "dataplane/key_table.hpp"

using namespace keycast;
using namespace keycast::dp;

namespace {
std::atomic<const void*> g_watch{nullptr};  // block to inspect when freed
uint8_t g_needle[16];
std::atomic<int> g_watched_frees{0}, g_needle_found_at_free{0};

bool contains(const uint8_t* p, std::size_t n, const uint8_t* needle, std::size_t m) {
  return std::search(p, p + n, needle, needle + m) != p + n;
}

void inspect_and_free(void* p) noexcept {
  if (p && p == g_watch.load()) {
    std::size_t n = malloc_usable_size(p);
    ++g_watched_frees;
    if (contains(static_cast<const uint8_t*>(p), n, g_needle, sizeof g_needle)) ++g_needle_found_at_free;
  }
  std::free(p);
}
}  // namespace

void* operator new(std::size_t n, std::align_val_t a) {
  std::size_t al = std::max<std::size_t>(static_cast<std::size_t>(a), sizeof(void*));
  void* p = std::aligned_alloc(al, (n + al - 1) / al * al);
  if (!p) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p, std::align_val_t) noexcept { inspect_and_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { inspect_and_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { inspect_and_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { inspect_and_free(p); }

TEST(KeySlotHygiene, RetiredSlotIsZeroisedBeforeItsMemoryIsFreed) {
  KeyTableHolder holder(1);
  holder.register_reader(0);
  KeyControl ctl(holder, 3, SlotParams{});
  KeyRecord a, b;
  a.channel = b.channel = 3;
  a.spi = 4096;
  b.spi = 4097;
  a.material = KeyMaterial::generate(Suite::Aes128Gcm);
  b.material = KeyMaterial::generate(Suite::Aes128Gcm);
  a.set_remaining_ms(1000);
  b.set_remaining_ms(2000);
  std::memcpy(g_needle, a.material.key, sizeof g_needle);
  ASSERT_TRUE(ctl.add(a));
  ASSERT_TRUE(ctl.add(b));
  ctl.set_current(a.spi);
  ctl.set_next(b.spi);
  ctl.publish();
  // A reader holds the table with the key while it is being removed.
  const KeyTable* t = holder.acquire();
  ASSERT_NE(t->find(3, a.spi), nullptr);
  {
    auto s = ctl.slot(a.spi);
    ASSERT_TRUE(s);
    ASSERT_TRUE(contains(reinterpret_cast<const uint8_t*>(s.get()), malloc_usable_size(s.get()), g_needle,
                         sizeof g_needle))
        << "the live slot does not hold the key bytes: the scan would prove nothing";
    g_watch = s.get();
  }
  ctl.set_current(b.spi);
  ctl.remove(a.spi);
  ctl.publish();
  holder.reclaim();  // the reader has not passed a quiescent point: nothing may be freed
  EXPECT_EQ(g_watched_frees.load(), 0) << "slot freed while a reader could still use it";
  EXPECT_NE(t->find(3, a.spi), nullptr);
  holder.quiescent(0);
  holder.synchronize();
  holder.reclaim();
  EXPECT_EQ(g_watched_frees.load(), 1) << "the retired slot was never freed";
  EXPECT_EQ(g_needle_found_at_free.load(), 0) << "key bytes still in the slot's memory when it was freed";
  g_watch = nullptr;
  holder.unregister_reader(0);
}
