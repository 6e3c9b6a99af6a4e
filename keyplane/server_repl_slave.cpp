// The key server, slave side of replication: the upstream session to the
// master, applying its pushes, forwarding billing, maintenance.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

void Server::Impl::start_upstream() {
  ClientOptions o;
  o.servers = cfg.masters;
  o.tls = cfg.tls;
  o.require_master = true;
  o.request_timeout = milliseconds(10000);
  o.backoff_min = milliseconds(100);
  o.backoff_max = milliseconds(2000);
  upstream = std::make_unique<Client>(o);
  std::weak_ptr<Impl> w = shared_from_this();
  upstream->set_push_handler([w](Message m) {
    auto self = w.lock();
    if (!self) return;
    // Handlers queued on our io_context hold only weak references: one that
    // never runs (the loop already stopped) must not keep the server alive.
    asio::post(self->io, [w, m = std::move(m)]() mutable {
      if (auto self = w.lock()) self->apply_repl(std::move(m));
    });
  });
  upstream->set_on_connect([w](Client& cl) {
    auto self = w.lock();
    if (!self) return;
    Message s;
    s.type = MsgType::ReplSubscribe;
    s.seq = self->repl_seq.load();
    const uint64_t conn_no = cl.connects();
    cl.request(std::move(s), [w, conn_no](Result r) {
      auto self = w.lock();
      if (!self) return;
      if (!r.ok()) self->log(LogLevel::Warning, "subscribe to master failed: " + r.message);
      else self->log("subscribed to master " + r.server + ", master seq " + std::to_string(r.reply.seq.value_or(0)));
      // The catch-up keys came before this ack on the same session, and
      // their handlers were queued first: once this runs, they are applied.
      if (r.ok())
        asio::post(self->io, [w, conn_no] {
          if (auto self = w.lock()) self->repl_synced_connect = conn_no;
        });
    });
  });
  upstream->set_persistent(true);
}

void Server::Impl::apply_repl(Message m) {
  if (stopping) return;
  if (m.type == MsgType::ReplEntitlement && m.seq && m.mode && !m.text.empty()) return apply_entitlement(m);
  if (m.type != MsgType::ReplKey || m.keys.size() != 1 || !m.seq) return;
  const WireKey& k = m.keys[0];
  Chan& c = chan_for(k.channel);
  auto now = MonoClock::now();
  try {
    add_key(c, k.spi, k.material, now + milliseconds(k.remaining_ms), k.lifetime_ms, *m.seq);
    vlog("replicated channel " + std::to_string(k.channel) + " spi " + std::to_string(k.spi) +
         " seq " + std::to_string(*m.seq));
  } catch (const std::exception& e) {
    log(LogLevel::Error, std::string("cannot store replicated key: ") + e.what());
  }
  for (auto& kk : m.keys) secure_zero(kk.material.key, sizeof kk.material.key);
}

void Server::Impl::apply_entitlement(const Message& m) {
  Entitlement e;
  e.mode = *m.mode;
  e.channels.insert(m.channel_list.begin(), m.channel_list.end());
  e.seq = *m.seq;
  try {
    store->replication().put_entitlement(m.text, e);
  } catch (const std::exception& ex) {
    // Not confirmed: the master's admin learns this slave is behind.
    log(LogLevel::Error, std::string("cannot store replicated entitlement: ") + ex.what());
    return;
  }
  ents.set(m.text, e);
  log("entitlement of " + entitlement_json(m.text, e));
  Message a;
  a.type = MsgType::ReplAck;
  a.seq = e.seq;
  upstream->request(std::move(a));
}

void Server::Impl::forward_billing() {
  if (master() || !upstream || forward_inflight || !upstream->connected()) return;
  auto entries = store->replication().outbox_peek(1000, wall_now_ms());
  if (entries.empty()) return;
  uint64_t last = entries.back().seq;
  Message m;
  m.type = MsgType::BillingForward;
  m.text = instance_id;
  m.bills = std::move(entries);
  forward_inflight = true;
  std::weak_ptr<Impl> w = shared_from_this();
  upstream->request(std::move(m), [w, last](Result r) {
    auto self = w.lock();
    if (!self) return;
    asio::post(self->io, [w, last, ok = r.ok(), msg = r.message] {
      auto self = w.lock();
      if (!self) return;
      self->forward_inflight = false;
      if (ok) {
        try {
          self->store->replication().outbox_delete_upto(last);
        } catch (const std::exception& e) {
          self->log(LogLevel::Error, std::string("outbox: ") + e.what());
        }
      } else {
        self->vlog("billing forward failed (will retry): " + msg);
      }
    });
  });
}

void Server::Impl::maintenance() {
  if (stopping) return;
  auto now = MonoClock::now();
  for (auto& [id, c] : chans) prune(c, now);
  if (!master()) replication_lag_s(now);  // notes when the slave falls behind
  forward_billing();
  if (master() && active && now - last_event_prune > std::chrono::minutes(10)) {
    last_event_prune = now;
    try {
      store->ledger().prune_request_events(kRequestEventRetentionS);
      store->ledger().prune_checkpoints(kCheckpointRetentionMs, wall_now_ms());
    } catch (const std::exception& e) {
      log(LogLevel::Warning, std::string("pruning request event ids failed: ") + e.what());
    }
  }
  maint.expires_after(milliseconds(cfg.forward_interval_ms));
  maint.async_wait([this](boost::system::error_code ec) {
    if (!ec) maintenance();
  });
}

}  // namespace keycast::kp
