// The key server: key state of each channel (the in-memory keys, their
// expiry index, making, scheduling and pruning keys).
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

void Server::Impl::insert_mem(Chan& c, MemKey k) {
  auto it = c.keys.find(k.spi);
  if (it != c.keys.end()) erase_index(c, it->second);
  c.by_exp.emplace(k.expires, k.spi);
  c.hwm = std::max(c.hwm, k.spi);
  c.keys[k.spi] = std::move(k);
}

void Server::Impl::erase_index(Chan& c, const MemKey& k) {
  auto range = c.by_exp.equal_range(k.expires);
  for (auto it = range.first; it != range.second; ++it)
    if (it->second == k.spi) {
      c.by_exp.erase(it);
      break;
    }
}

View Server::Impl::view(const Chan& c, MonoClock::time_point now) const {
  View v;
  auto it = c.by_exp.upper_bound(now);
  if (it != c.by_exp.end()) {
    v.cur = &c.keys.at(it->second);
    auto n = std::next(it);
    if (n != c.by_exp.end()) v.next = &c.keys.at(n->second);
  }
  if (it != c.by_exp.begin()) {
    auto p = std::prev(it);
    if (p->first > now - milliseconds(c.pol.grace_ms)) v.prev = &c.keys.at(p->second);
  }
  return v;
}

bool Server::Impl::ended(const Chan& c, std::optional<uint32_t> spi, MonoClock::time_point now) const {
  if (!spi) return false;
  auto it = c.keys.find(*spi);
  return it != c.keys.end() && it->second.expires <= now;
}

WireKey Server::Impl::wire(const Chan& c, const MemKey& k, Slot slot, MonoClock::time_point now) const {
  WireKey w;
  w.channel = c.pol.id;
  w.spi = k.spi;
  w.material = k.material;
  w.remaining_ms = ms_between(now, k.expires);
  w.lifetime_ms = k.lifetime_ms;
  w.slot = slot;
  return w;
}

std::optional<int64_t> Server::Impl::cur_remaining(const Chan& c, MonoClock::time_point now) const {
  View v = view(c, now);
  if (!v.cur) return std::nullopt;
  return ms_between(now, v.cur->expires);
}

// Persist (keys are durable before anyone sees them), index, replicate.
const MemKey& Server::Impl::add_key(Chan& c, uint32_t spi, const KeyMaterial& m, MonoClock::time_point expires,
                                    int64_t lifetime_ms, uint64_t seq) {
  auto now = MonoClock::now();
  StoredKey sk;
  sk.seq = seq;
  sk.channel = c.pol.id;
  sk.spi = spi;
  sk.material = m;
  sk.expires_wall_ms = wall_now_ms() + ms_between(now, expires);
  sk.lifetime_ms = lifetime_ms;
  store->begin();
  try {
    sk.seq = store->keys().put_key(sk);
    store->keys().set_spi_hwm(c.pol.id, std::max(c.hwm, spi));
    store->commit();
  } catch (...) {
    store->rollback();
    throw;
  }
  MemKey k;
  k.seq = sk.seq;
  k.spi = spi;
  k.material = m;
  k.expires = expires;
  k.lifetime_ms = lifetime_ms;
  insert_mem(c, std::move(k));
  repl_seq = std::max<uint64_t>(repl_seq, sk.seq);
  const MemKey& ref = c.keys.at(spi);
  if (master()) replicate(c, ref);
  return ref;
}

// A new key is the channel's next generation, minted by the store: the
// database numbers its SPI and keeps one key per generation, so a master
// that wrongly believes it leads gets the key the leader made (with its
// deadline) instead of a second one. Here on the loop's connection, for the
// admin's rare writes (eviction); timers and requests mint on the key
// worker (keyplane/server_mint.cpp).
const MemKey& Server::Impl::make_key(Chan& c, MonoClock::time_point expires) {
  const auto now = MonoClock::now();
  const int64_t wnow = wall_now_ms();
  const StoredKey want = key_wanted(c, expires, now, wnow);
  return key_minted(c, want, store->keys().mint_key(want), expires, now, wnow);
}

StoredKey Server::Impl::key_wanted(const Chan& c, MonoClock::time_point expires, MonoClock::time_point now,
                                   int64_t wnow) const {
  StoredKey want;
  want.channel = c.pol.id;
  want.material = KeyMaterial::generate(c.pol.suite);
  want.expires_wall_ms = wnow + ms_between(now, expires);
  want.lifetime_ms = c.pol.lifetime_ms;
  want.gen = c.gen + 1;
  return want;
}

// now and wnow: when the key was asked for (the stored deadline counts from there).
const MemKey& Server::Impl::key_minted(Chan& c, const StoredKey& want, const StoredKey& got,
                                       MonoClock::time_point expires, MonoClock::time_point now, int64_t wnow) {
  c.gen = std::max(c.gen, got.gen);
  c.hwm = std::max(c.hwm, got.spi);
  repl_seq = std::max<uint64_t>(repl_seq, got.seq);
  if (auto it = c.keys.find(got.spi); it != c.keys.end()) return it->second;
  ++keys_made;
  MemKey k;
  k.seq = got.seq;
  k.spi = got.spi;
  k.material = got.material;
  // Ours: the exact deadline (the stored one is rounded to the ms); else
  // the deadline of the master that made it.
  k.expires = got.material == want.material ? expires : now + milliseconds(got.expires_wall_ms - wnow);
  k.lifetime_ms = got.lifetime_ms;
  insert_mem(c, std::move(k));
  const MemKey& ref = c.keys.at(got.spi);
  if (master()) replicate(c, ref);
  vlog("channel " + std::to_string(c.pol.id) + ": made key spi " + std::to_string(got.spi) + " generation " +
       std::to_string(got.gen) + " remaining " + std::to_string(ms_between(MonoClock::now(), ref.expires)) + " ms");
  return ref;
}

// kms-origin on the master: keep a current key, and make the next one when
// the current key's remaining time reaches P1. A key being made is waited
// for: its completion runs this again.
void Server::Impl::schedule(Chan& c) {
  if (!master() || c.pol.origin != KeyOrigin::Kms || !c.configured || stopping || minting(c) || !ensure_lease())
    return;
  const auto now = MonoClock::now();
  View v = view(c, now);
  MonoClock::time_point when;
  if (!v.cur) return mint(c, now + milliseconds(c.pol.lifetime_ms));
  if (!v.next) {
    const auto at_p1 = v.cur->expires - milliseconds(c.pol.p1_ms);
    if (at_p1 <= now) return mint(c, v.cur->expires + milliseconds(c.pol.lifetime_ms));
    when = at_p1;
  } else {
    when = v.cur->expires;
  }
  c.timer->expires_at(when + milliseconds(1));
  uint32_t id = c.pol.id;
  c.timer->async_wait([this, id](boost::system::error_code ec) {
    if (!ec) schedule(chans.at(id));
  });
}

void Server::Impl::prune(Chan& c, MonoClock::time_point now) {
  auto limit = now - milliseconds(c.pol.grace_ms + cfg.retention_ms);
  while (!c.by_exp.empty() && c.by_exp.begin()->first < limit) {
    uint32_t spi = c.by_exp.begin()->second;
    c.by_exp.erase(c.by_exp.begin());
    c.keys.erase(spi);
  }
}

}  // namespace keycast::kp
