// The key server, master side of replication: key pushes to subscribed
// slaves, subscriptions, forwarded billing.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

Message Server::Impl::repl_frame(const Chan& c, const MemKey& k, MonoClock::time_point now) {
  Message p;
  p.type = MsgType::ReplKey;
  p.req_id = 0;
  p.seq = k.seq;
  p.keys.push_back(wire(c, k, Slot::Other, now));
  return p;
}

void Server::Impl::replicate(const Chan& c, const MemKey& k) {
  auto now = MonoClock::now();
  Message p = repl_frame(c, k, now);
  for (auto it = subscribers.begin(); it != subscribers.end();) {
    auto s = it->lock();
    if (!s || s->closed) {
      it = subscribers.erase(it);
      continue;
    }
    s->send(p);
    ++keys_replicated;
    ++it;
  }
  for (auto& k2 : p.keys) secure_zero(k2.material.key, sizeof k2.material.key);
}

void Server::Impl::on_subscribe(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Slave}) || !require_master(c, m)) return;
  auto now = MonoClock::now();
  // Entitlements before any key: a slave never holds a key it could hand
  // to a client it does not yet know is revoked.
  for (auto& [id, e] : ents.all()) c->send(entitlement_frame(id, e));
  std::vector<std::pair<uint64_t, std::pair<uint32_t, uint32_t>>> todo;
  for (auto& [id, ch] : chans)
    for (auto& [spi, k] : ch.keys)
      if (k.seq > *m.seq) todo.push_back({k.seq, {id, spi}});
  std::sort(todo.begin(), todo.end());
  for (auto& [seq, cs] : todo) {
    const Chan& ch = chans.at(cs.first);
    c->send(repl_frame(ch, ch.keys.at(cs.second), now));
    ++keys_replicated;
  }
  // One session is one subscriber however often it asks (a slave's client
  // carries a subscription still unanswered when a session fails over to the
  // next, then subscribes again on connecting): a second entry would push
  // every key to it twice, and count it as two slaves.
  if (!c->subscribed) subscribers.push_back(c);
  c->subscribed = true;
  Message r;
  r.type = MsgType::Ack;
  r.req_id = m.req_id;
  r.seq = repl_seq.load();
  c->send(r);
  log("slave " + c->peer.identity + " subscribed from seq " + std::to_string(*m.seq) + ", sent " +
      std::to_string(todo.size()) + " key(s)");
}

// A slave's outbox rows: booked by the store worker, in the transaction
// order of the billing commits, so the two never hold the ledger's rows
// against each other; the ack (after which the slave deletes the rows)
// goes only once they are committed.
void Server::Impl::on_forward(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Slave}) || !require_master(c, m)) return;
  struct Forward {
    std::string key;
    std::vector<BillEntry> bills;
    int64_t now_ms = 0;
    uint64_t last = 0, duplicates = 0;
  };
  auto f = std::make_shared<Forward>();
  f->key = c->peer.identity + "/" + m.text;
  f->bills = m.bills;
  std::sort(f->bills.begin(), f->bills.end(), [](auto& a, auto& b) { return a.seq < b.seq; });
  f->now_ms = wall_now_ms();
  Message req = m;
  req.bills.clear();
  std::weak_ptr<Conn> wc = c;
  worker->post(
      [f](Store& s) {
        s.begin();
        try {
          f->last = s.replication().forward_applied(f->key);
          for (auto& e : f->bills) {
            if (e.seq <= f->last) continue;  // counted before: exactly once
            // The event's own time, measured on the slave as an age: a request
            // made before a close and forwarded after it is booked late.
            const int64_t at = f->now_ms - e.age_ms;
            if (e.requests && e.event_id) {
              if (!s.ledger().add_request_event(e.identity, e.event_id, e.requests, at)) ++f->duplicates;
            } else if (e.requests) {
              s.ledger().add_requests(e.identity, e.requests, at);
            }
            if (e.spi) s.ledger().add_holder(e.identity, e.channel, e.spi);
            f->last = e.seq;
          }
          s.replication().set_forward_applied(f->key, f->last);
          s.commit();
        } catch (...) {
          s.rollback();
          throw;
        }
      },
      [this, f, wc, req](std::exception_ptr err) {
        auto c = wc.lock();
        if (err) {
          try {
            std::rethrow_exception(err);
          } catch (const Fenced& e) {
            step_down(e.what());
            if (c) reply_not_active(c, req);
          } catch (const std::exception& e) {
            log(LogLevel::Error, std::string("billing forward from a slave: ") + e.what());
            if (c) reply_error(c, req, ErrorCode::Internal, "internal error");
          }
          return;
        }
        duplicate_requests += f->duplicates;
        if (!c) return;
        Message r;
        r.type = MsgType::Ack;
        r.req_id = req.req_id;
        r.seq = f->last;
        c->send(r);
      });
}

}  // namespace keycast::kp
