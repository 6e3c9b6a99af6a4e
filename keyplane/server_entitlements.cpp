// The key server: grant/revoke of entitlements, slave confirmations and
// eviction of channels a client lost.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

// grant/revoke: applied and made durable on the master at once, pushed to
// every subscribed slave, answered when each has confirmed it (or after
// --entitlement-sync-ms with not_confirmed naming the silent ones: the
// change stands, and a slave that reconnects gets every entitlement
// before any key, so it can never hand a later key to a revoked client).
void Server::Impl::change_entitlement(const std::shared_ptr<Conn>& c, const Message& m, AuditEntry entry) {
  const std::set<uint32_t> list(m.channel_list.begin(), m.channel_list.end());
  const Entitlement none;
  const Entitlement* old = ents.find(m.text);
  Entitlement e = m.type == MsgType::AdminGrant ? granted(old ? *old : none, m.all, list)
                                                 : revoked(old ? *old : none, m.all, list);
  std::vector<uint32_t> lost;
  for (auto& [id, ch] : chans)
    if ((old ? *old : none).allows(id) && !e.allows(id)) lost.push_back(id);
  e.seq = ents.seq() + 1;
  try {
    store->begin();
    store->replication().put_entitlement(m.text, e);
    store->keys().set_meta("entitlement_seq", std::to_string(e.seq));
    store->commit();
  } catch (const std::exception& ex) {
    store->rollback();
    entry.result = "internal";
    entry.detail += ": " + std::string(ex.what());
    write_audit(entry);
    return reply_error(c, m, ErrorCode::Internal, "entitlement store unavailable");
  }
  ents.set(m.text, e);
  const Message push = entitlement_frame(m.text, e);
  Confirm cf;
  cf.admin = c;
  cf.seq = e.seq;
  cf.entry = std::move(entry);
  if (!lost.empty()) {
    std::string l;
    for (uint32_t id : lost) l += (l.empty() ? "" : ",") + std::to_string(id);
    cf.entry.detail += ", channels lost: " + l;
  }
  cf.reply.type = MsgType::AdminReply;
  cf.reply.req_id = m.req_id;
  cf.reply.text = entitlement_json(m.text, e);
  for (auto& w : subscribers)
    if (auto s = w.lock(); s && !s->closed) {
      s->send(push);
      cf.slaves.emplace_back(s->peer.identity + " " + s->remote, w);
    }
  log(std::string(m.type == MsgType::AdminGrant ? "grant" : "revoke") + " by " + c->peer.identity +
      ": " + cf.reply.text + ", pushed to " + std::to_string(cf.slaves.size()) + " slave(s)");
  // After the entitlement push: a slave stores the revocation before it
  // can see the fresh key.
  for (uint32_t id : lost) {
    auto it = chans.find(id);
    if (it == chans.end() || !it->second.configured) continue;
    const std::string d = evict(it->second, "revoke " + m.text);
    write_audit(AuditEntry{cf.entry.who, cf.entry.role, cf.entry.from, "eviction", {id}, "ok",
                           "identity " + m.text + ": " + d});
  }
  cf.timer = std::make_unique<asio::steady_timer>(io);
  confirms.push_back(std::move(cf));
  auto it = std::prev(confirms.end());
  it->timer->expires_after(milliseconds(cfg.entitlement_sync_ms));
  it->timer->async_wait([this, it](boost::system::error_code ec) {
    if (!ec) finish_confirm(it, true);
  });
  check_confirms();
}

void Server::Impl::note_sender(const std::shared_ptr<Conn>& c, uint32_t ch) {
  auto& v = chan_senders[ch];
  for (auto it = v.begin(); it != v.end();) {
    auto s = it->lock();
    if (s.get() == c.get()) return;
    it = !s || s->closed ? v.erase(it) : std::next(it);
  }
  v.push_back(c);
}

// A client lost the channel: it may hold the current key and the next
// one (fetched at P2, from this server or any slave; holdings reach the
// master late, so every next key counts as handed out). The next key is
// discarded everywhere (its end moved into the past and replicated, so
// slaves drop it too), a fresh one made (kms-origin), the current key cut
// to end within the channel's evict time, and the channel's senders told
// at once on their open sessions. A sender-origin sender makes and uploads
// the fresh key itself. From the switch on nothing is sent under a key
// the client ever received.
std::string Server::Impl::evict(Chan& ch, const std::string& why) {
  settle_mint(ch);
  const auto now = MonoClock::now();
  prune(ch, now);
  View v = view(ch, now);
  if (!v.cur) return "channel " + std::to_string(ch.pol.id) + ": no current key";
  const MemKey cur = *v.cur;
  std::optional<MemKey> old_next;
  if (v.next) old_next = *v.next;
  // The push takes a moment to reach the sender and the sender a moment
  // to act: aim a little early so the switch lands within evict_ms.
  const auto margin = milliseconds(std::min<int64_t>(250, ch.pol.evict_ms / 4));
  const auto target = std::min(cur.expires, now + milliseconds(ch.pol.evict_ms) - margin);
  if (old_next)
    add_key(ch, old_next->spi, old_next->material,
            now - milliseconds(ch.pol.grace_ms + cfg.retention_ms + 1000), old_next->lifetime_ms, 0);
  prune(ch, now);
  const MemKey& c2 = add_key(ch, cur.spi, cur.material, target, cur.lifetime_ms, 0);
  Message p;
  p.type = MsgType::KeyPush;
  p.req_id = 0;
  p.channel = ch.pol.id;
  p.remaining_ms = ms_between(now, target);
  p.text = why;
  p.keys.push_back(wire(ch, c2, Slot::Current, now));
  std::string fresh = "sender makes it";
  if (ch.pol.origin == KeyOrigin::Kms) {
    const MemKey& f = make_key(ch, target + milliseconds(ch.pol.lifetime_ms));
    p.keys.push_back(wire(ch, f, Slot::Next, now));
    fresh = "spi " + std::to_string(f.spi);
  }
  std::size_t told = 0;
  for (auto& w : chan_senders[ch.pol.id])
    if (auto s = w.lock(); s && !s->closed) {
      s->send(p);
      ++told;
    }
  for (auto& k : p.keys) secure_zero(k.material.key, sizeof k.material.key);
  ++evictions;
  schedule(ch);
  const std::string d = "channel " + std::to_string(ch.pol.id) + ": current spi " + std::to_string(cur.spi) +
                        " ends in " + std::to_string(*p.remaining_ms) + " ms, next " +
                        (old_next ? "spi " + std::to_string(old_next->spi) + " discarded" : "none") +
                        ", fresh " + fresh + ", " + std::to_string(told) + " sender session(s) told";
  log("eviction (" + why + "): " + d);
  return d;
}

Message Server::Impl::entitlement_frame(const std::string& id, const Entitlement& e) {
  Message p;
  p.type = MsgType::ReplEntitlement;
  p.req_id = 0;
  p.seq = e.seq;
  p.text = id;
  p.mode = e.mode;
  p.channel_list.assign(e.channels.begin(), e.channels.end());
  return p;
}

void Server::Impl::on_repl_ack(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Slave}) || !require_master(c, m)) return;
  c->entitlements_acked = std::max(c->entitlements_acked, *m.seq);
  Message r;
  r.type = MsgType::Ack;
  r.req_id = m.req_id;
  c->send(r);
  check_confirms();
}

void Server::Impl::check_confirms() {
  for (auto it = confirms.begin(); it != confirms.end();) {
    auto next = std::next(it);
    bool all = true;
    for (auto& [name, w] : it->slaves) {
      auto s = w.lock();
      all &= s && s->entitlements_acked >= it->seq;
    }
    if (all) finish_confirm(it, false);
    it = next;
  }
}

void Server::Impl::finish_confirm(std::list<Confirm>::iterator it, bool timed_out) {
  Confirm& cf = *it;
  std::string missing;
  std::size_t confirmed = 0;
  for (auto& [name, w] : cf.slaves) {
    auto s = w.lock();
    if (s && s->entitlements_acked >= cf.seq)
      ++confirmed;
    else
      missing += (missing.empty() ? "" : ", ") + name;
  }
  if (auto a = cf.admin.lock()) {
    if (missing.empty() || !timed_out) {
      a->send(cf.reply);
    } else {
      cf.entry.result = std::string(error_name(ErrorCode::NotConfirmed));
      ++err_by_code[cf.entry.result];
      a->send(make_error(cf.reply.req_id, ErrorCode::NotConfirmed,
                         "applied on the master, not confirmed within " +
                             std::to_string(cfg.entitlement_sync_ms) + " ms by: " + missing));
    }
  }
  cf.entry.detail += ", confirmed by " + std::to_string(confirmed) + " of " +
                     std::to_string(cf.slaves.size()) + " slave(s)";
  write_audit(cf.entry);
  cf.timer->cancel();
  confirms.erase(it);
}

}  // namespace keycast::kp
