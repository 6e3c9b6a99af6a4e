// The key server: dispatch of peer requests and the key, generate, upload,
// usage and checkpoint handlers.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

void Server::Impl::reply_error(const std::shared_ptr<Conn>& c, const Message& req, ErrorCode code,
                               const std::string& text, std::optional<int64_t> rem, std::string active) {
  ++err_by_code[std::string(error_name(code))];
  if (audit_pending) {
    audit_pending->result = std::string(error_name(code));
    audit_pending->detail = text;
  }
  Message e = make_error(req.req_id, code, text, rem);
  e.active = std::move(active);
  c->send(e);
}

void Server::Impl::reply_busy(const std::shared_ptr<Conn>& c, const Message& req, int64_t retry_after_ms,
                              const std::string& why) {
  ++err_by_code[std::string(error_name(ErrorCode::Busy))];
  Message e = make_error(req.req_id, ErrorCode::Busy, why + ": ask again in " + std::to_string(retry_after_ms) + " ms");
  e.retry_after_ms = retry_after_ms;
  c->send(e);
}

bool Server::Impl::require(const std::shared_ptr<Conn>& c, const Message& m, std::initializer_list<Role> roles) {
  for (Role r : roles)
    if (c->peer.role == r) return true;
  reply_error(c, m, ErrorCode::NotAuthorised,
              std::string(type_name(m.type)) + " is not allowed for role " +
                  std::string(role_name(c->peer.role)));
  return false;
}

bool Server::Impl::require_any_master(const std::shared_ptr<Conn>& c, const Message& m) {
  if (master()) return true;
  reply_error(c, m, ErrorCode::NotMaster, std::string(type_name(m.type)) + " goes to the master");
  return false;
}

bool Server::Impl::require_master(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require_any_master(c, m)) return false;
  if (ensure_lease()) return true;
  reply_not_active(c, m);
  return false;
}

bool Server::Impl::require_serving(const std::shared_ptr<Conn>& c, const Message& m) {
  return !master() || require_master(c, m);
}

void Server::Impl::reply_not_active(const std::shared_ptr<Conn>& c, const Message& m) {
  // Not a leader whose lease has run out (it died): peers would only go
  // there to fail; this standby is about to take over.
  const bool known = !seen.address.empty() && seen.address != advertised &&
                     MonoClock::now() < seen_at + milliseconds(seen.remaining_ms);
  reply_error(c, m, ErrorCode::NotActive,
              "not the active master; " + (known ? "the active one is " + seen.address + " (epoch " +
                                                       std::to_string(seen.epoch) + ")"
                                                 : std::string("none leads at the moment")),
              std::nullopt, known ? seen.address : std::string());
}

Chan* Server::Impl::channel_for(const std::shared_ptr<Conn>& c, const Message& m) {
  uint32_t ch = *m.channel;
  if (!c->peer.allows(ch)) {
    reply_error(c, m, ErrorCode::ChannelDenied,
                "channel " + std::to_string(ch) + " is not allowed for " + c->peer.identity);
    return nullptr;
  }
  // Checked on every request, so an open session loses a revoked channel
  // at its next request for it.
  if ((c->peer.role == Role::Client || c->peer.role == Role::Sender) && !ents.allows(c->peer.identity, ch)) {
    reply_error(c, m, ErrorCode::ChannelDenied,
                "channel " + std::to_string(ch) + " is not entitled to " + c->peer.identity);
    return nullptr;
  }
  auto it = chans.find(ch);
  if (it == chans.end() || (!it->second.configured && it->second.keys.empty())) {
    reply_error(c, m, ErrorCode::UnknownChannel, "channel " + std::to_string(ch) + " is not served");
    return nullptr;
  }
  return &it->second;
}

void Server::Impl::handle(const std::shared_ptr<Conn>& c, Message m) {
  ++req_by_type[std::string(type_name(m.type))];
  try {
    switch (m.type) {
      case MsgType::Hello: {
        Message r;
        r.type = MsgType::HelloOk;
        r.req_id = m.req_id;
        r.role = cfg.role;
        r.text = c->peer.identity + " " + std::string(role_name(c->peer.role)) + " " +
                 c->peer.channels_text();
        return c->send(r);
      }
      case MsgType::Ping: {
        Message r;
        r.type = MsgType::Ack;
        r.req_id = m.req_id;
        return c->send(r);
      }
      case MsgType::KeyRequest: return on_key_request(c, m);
      case MsgType::GenerateRequest: return on_generate(c, m);
      case MsgType::KeyUpload: return on_upload(c, m);
      case MsgType::UsageReport: return on_usage(c, m);
      case MsgType::UsageCheckpoint: return on_checkpoint(c, m);
      case MsgType::AdminStatus:
      case MsgType::AdminChannels:
      case MsgType::AdminBilling:
      case MsgType::AdminBillingClose:
      case MsgType::AdminInvoices:
      case MsgType::AdminGrant:
      case MsgType::AdminRevoke:
      case MsgType::AdminEntitlements:
      case MsgType::AdminRotate: return on_admin(c, m);
      case MsgType::ReplSubscribe: return on_subscribe(c, m);
      case MsgType::BillingForward: return on_forward(c, m);
      case MsgType::ReplAck: return on_repl_ack(c, m);
      default:
        return reply_error(c, m, ErrorCode::BadRequest,
                           std::string(type_name(m.type)) + " is not a request");
    }
  } catch (const Fenced& e) {
    step_down(e.what());
    reply_not_active(c, m);
  } catch (const std::exception& e) {
    log(LogLevel::Error, std::string("internal error: ") + e.what());
    reply_error(c, m, ErrorCode::Internal, "internal error");
  }
}

void Server::Impl::on_key_request(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Client, Role::Sender, Role::Admin}) || !require_serving(c, m)) return;
  if (shed)
    if (const int64_t wait = shed->admit(MonoClock::now(), kMaxBusyWaitMs)) {
      // Cheaper than the request itself: no key lookup, nothing billed.
      return reply_busy(c, m, wait, "busy");
    }
  Chan* ch = channel_for(c, m);
  if (!ch) return;
  auto now = MonoClock::now();
  prune(*ch, now);
  View v = view(*ch, now);
  // "next" after a key that has ended here: the client read the switch late
  // (a slow process or host), and what it lacks is this server's current
  // key. The key after that one would make it skip the key senders now use.
  const bool behind = *m.which == Which::Next && v.cur && ended(*ch, m.spi, now);
  if (master() && ch->pol.origin == KeyOrigin::Kms && !behind &&
      (!v.cur || (!v.next && v.cur->expires - milliseconds(ch->pol.p1_ms) <= now))) {
    schedule(*ch);  // the P1 timer has not run yet (busy loop): make the key now
    // What is being made is what this request lacks (a current key; the
    // next one, past P1, unless only the current one is asked for): it is
    // answered once the key is in. Keys by SPI are answered from what is held.
    const bool lacks = !v.cur || (*m.which != Which::Current && *m.which != Which::BySpi);
    if (minting(*ch) && lacks) return wait_for_mint(*ch, c, m);
  }
  std::optional<int64_t> rem;
  if (v.cur) rem = ms_between(now, v.cur->expires);
  Message r;
  r.type = MsgType::KeyReply;
  r.req_id = m.req_id;
  r.channel = ch->pol.id;
  r.remaining_ms = rem;
  switch (*m.which) {
    case Which::Current:
      if (!v.cur) return reply_error(c, m, ErrorCode::NotFound, "no current key", rem);
      r.keys.push_back(wire(*ch, *v.cur, Slot::Current, now));
      break;
    case Which::Next:
      if (behind) {
        r.keys.push_back(wire(*ch, *v.cur, Slot::Current, now));
        break;
      }
      if (!v.next) return reply_error(c, m, ErrorCode::NoNextKey, "next key not made yet", rem);
      r.keys.push_back(wire(*ch, *v.next, Slot::Next, now));
      break;
    case Which::Both:
    case Which::All:
      if (*m.which == Which::All && v.prev) r.keys.push_back(wire(*ch, *v.prev, Slot::Previous, now));
      if (v.cur) r.keys.push_back(wire(*ch, *v.cur, Slot::Current, now));
      if (v.next) r.keys.push_back(wire(*ch, *v.next, Slot::Next, now));
      if (r.keys.empty()) return reply_error(c, m, ErrorCode::NotFound, "no key", rem);
      break;
    case Which::BySpi: {
      auto it = ch->keys.find(*m.spi);
      if (it == ch->keys.end())
        return reply_error(c, m, ErrorCode::NotFound,
                           "no key with SPI " + std::to_string(*m.spi), rem);
      Slot s = &it->second == v.cur ? Slot::Current
               : &it->second == v.next ? Slot::Next
               : &it->second == v.prev ? Slot::Previous
                                       : Slot::Other;
      r.keys.push_back(wire(*ch, it->second, s, now));
      break;
    }
  }
  c->served.insert(ch->pol.id);
  if (c->peer.role == Role::Client)
    bill_and_reply(c, std::move(r), m.event_id);
  else
    c->send(r);
}

void Server::Impl::on_generate(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Sender}) || !require_master(c, m)) return;
  Chan* ch = channel_for(c, m);
  if (!ch) return;
  note_sender(c, ch->pol.id);
  if (ch->pol.origin != KeyOrigin::Kms)
    return reply_error(c, m, ErrorCode::WrongOrigin,
                       "channel " + std::to_string(ch->pol.id) + " is sender-origin: upload keys");
  auto now = MonoClock::now();
  View v = view(*ch, now);
  // Made on the key worker; the request is handled again once it is in.
  if (!v.cur) {
    mint(*ch, now + milliseconds(ch->pol.lifetime_ms));
    return wait_for_mint(*ch, c, m);
  }
  // As for a key request: a sender whose current key has ended here gets
  // this server's current key as its next, not a key made after it.
  const bool behind = *m.which == Which::Next && ended(*ch, m.spi, now);
  if ((*m.which == Which::Next || *m.which == Which::Both) && !v.next && !behind) {
    mint(*ch, v.cur->expires + milliseconds(ch->pol.lifetime_ms));
    return wait_for_mint(*ch, c, m);
  }
  Message r;
  r.type = MsgType::KeyReply;
  r.req_id = m.req_id;
  r.channel = ch->pol.id;
  r.remaining_ms = ms_between(now, v.cur->expires);
  if (*m.which != Which::Next) r.keys.push_back(wire(*ch, *v.cur, Slot::Current, now));
  if (behind)
    r.keys.push_back(wire(*ch, *v.cur, Slot::Current, now));
  else if (*m.which != Which::Current)
    r.keys.push_back(wire(*ch, *v.next, Slot::Next, now));
  schedule(*ch);
  c->send(r);
}

void Server::Impl::on_upload(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Sender}) || !require_master(c, m)) return;
  Chan* ch = channel_for(c, m);
  if (!ch) return;
  note_sender(c, ch->pol.id);
  if (ch->pol.origin != KeyOrigin::Sender)
    return reply_error(c, m, ErrorCode::WrongOrigin,
                       "channel " + std::to_string(ch->pol.id) + " is kms-origin: send generate requests");
  const WireKey& k = m.keys[0];
  auto now = MonoClock::now();
  uint32_t spi = k.spi;
  auto it = spi ? ch->keys.find(spi) : ch->keys.end();
  if (it != ch->keys.end() && it->second.material == k.material) {
    // repeat of an upload that already succeeded: idempotent
  } else if (spi != 0 && spi <= ch->hwm) {
    return reply_error(c, m, ErrorCode::SpiReused,
                       "SPI " + std::to_string(spi) + " is at or below the channel's high-water mark " +
                           std::to_string(ch->hwm) + ": SPIs are never reused",
                       cur_remaining(*ch, now));
  } else {
    if (spi == 0) {
      if (ch->hwm == 0xffffffffu) return reply_error(c, m, ErrorCode::Internal, "SPI space exhausted");
      spi = ch->hwm + 1;
    }
    if (k.material.suite != ch->pol.suite)
      return reply_error(c, m, ErrorCode::BadRequest, "suite differs from the channel policy");
    add_key(*ch, spi, k.material, now + milliseconds(k.remaining_ms),
            k.lifetime_ms > 0 ? k.lifetime_ms : ch->pol.lifetime_ms, 0);
    vlog("channel " + std::to_string(ch->pol.id) + ": sender " + c->peer.identity +
         " uploaded spi " + std::to_string(spi));
  }
  View v = view(*ch, now);
  const MemKey& mk = ch->keys.at(spi);
  Message r;
  r.type = MsgType::KeyReply;
  r.req_id = m.req_id;
  r.channel = ch->pol.id;
  r.remaining_ms = cur_remaining(*ch, now);
  r.keys.push_back(wire(*ch, mk, &mk == v.cur ? Slot::Current : &mk == v.next ? Slot::Next : Slot::Other, now));
  c->send(r);
}

void Server::Impl::on_usage(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Sender}) || !require_master(c, m)) return;
  Chan* ch = channel_for(c, m);
  if (!ch) return;
  store->begin();
  bool fresh;
  try {
    fresh = store->ledger().add_usage(c->peer.identity, *m.event_id, ch->pol.id, *m.spi, *m.bytes, *m.packets,
                             wall_now_ms());
    store->commit();
  } catch (...) {
    store->rollback();
    throw;
  }
  Message r;
  r.type = MsgType::Ack;
  r.req_id = m.req_id;
  r.channel = ch->pol.id;
  r.remaining_ms = cur_remaining(*ch, MonoClock::now());
  if (!fresh) r.text = "duplicate event id: already counted";
  c->send(r);
}

// A checkpoint carries the epoch's totals so far: booked in the group
// commit (one fsync for every channel's checkpoint of the second), acked
// after it. The high-water mark makes a re-send, a reordering after a
// reconnect or a replay after a master restart change nothing.
void Server::Impl::on_checkpoint(const std::shared_ptr<Conn>& c, const Message& m) {
  if (!require(c, m, {Role::Sender}) || !require_master(c, m)) return;
  if (!m.usages.empty()) return on_checkpoints(c, m);
  Chan* ch = channel_for(c, m);
  if (!ch) return;
  note_sender(c, ch->pol.id);
  Message r;
  r.type = MsgType::Ack;
  r.req_id = m.req_id;
  r.channel = ch->pol.id;
  r.remaining_ms = cur_remaining(*ch, MonoClock::now());
  pb.checkpoints.push_back({c->peer.identity, *m.instance, ch->pol.id, *m.spi, *m.bytes, *m.packets,
                            pb.replies.size()});
  pb.replies.emplace_back(c, std::move(r));
  schedule_commit(true);
}

// A sender's checkpoint of all its channels at once (one frame per tick,
// however many channels). Epochs of channels this sender may not report
// are left out and named in the ack's T_CHANNEL_LIST; the rest are booked.
void Server::Impl::on_checkpoints(const std::shared_ptr<Conn>& c, const Message& m) {
  Message r;
  r.type = MsgType::Ack;
  r.req_id = m.req_id;
  std::set<uint32_t> refused;
  for (const auto& u : m.usages) {
    auto it = chans.find(u.channel);
    if (!c->peer.allows(u.channel) || !ents.allows(c->peer.identity, u.channel) || it == chans.end() ||
        (!it->second.configured && it->second.keys.empty())) {
      refused.insert(u.channel);
      continue;
    }
    note_sender(c, u.channel);
    pb.checkpoints.push_back({c->peer.identity, *m.instance, u.channel, u.spi, u.bytes, u.packets,
                              pb.replies.size()});
  }
  r.channel_list.assign(refused.begin(), refused.end());
  if (!refused.empty()) ++err_by_code[std::string(error_name(ErrorCode::ChannelDenied))];
  pb.replies.emplace_back(c, std::move(r));
  schedule_commit(true);
}

}  // namespace keycast::kp
