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
  c->subscribed = true;
  subscribers.push_back(c);
  Message r;
  r.type = MsgType::Ack;
  r.req_id = m.req_id;
  r.seq = repl_seq.load();
  c->send(r);
  log("slave " + c->peer.identity + " subscribed from seq " + std::to_string(*m.seq) + ", sent " +
      std::to_string(todo.size()) + " key(s)");
}

void Server::Impl::on_forward(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Slave}) || !require_master(c, m)) return;
  std::string key = c->peer.identity + "/" + m.text;
  auto bills = m.bills;
  std::sort(bills.begin(), bills.end(), [](auto& a, auto& b) { return a.seq < b.seq; });
  store->begin();
  uint64_t last;
  const int64_t now_ms = wall_now_ms();
  try {
    last = store->forward_applied(key);
    for (auto& e : bills) {
      if (e.seq <= last) continue;  // counted before: exactly once
      // The event's own time, measured on the slave as an age: a request
      // made before a close and forwarded after it is booked late.
      const int64_t at = now_ms - e.age_ms;
      if (e.requests && e.event_id) {
        if (!store->add_request_event(e.identity, e.event_id, e.requests, at)) ++duplicate_requests;
      } else if (e.requests) {
        store->add_requests(e.identity, e.requests, at);
      }
      if (e.spi) store->add_holder(e.identity, e.channel, e.spi);
      last = e.seq;
    }
    store->set_forward_applied(key, last);
    store->commit();
  } catch (...) {
    store->rollback();
    throw;
  }
  Message r;
  r.type = MsgType::Ack;
  r.req_id = m.req_id;
  r.seq = last;
  c->send(r);
}

}  // namespace keycast::kp
