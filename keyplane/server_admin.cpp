// The key server: admin requests (rotate, status, channels, billing) and the
// audit trail.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

void Server::Impl::on_admin(const std::shared_ptr<Conn>& c, const Message& m) {
  // Audit: every admin request (and every refused attempt) is logged with
  // the peer's identity, always (not only with -v).
  log(c->peer.role == Role::Admin ? LogLevel::Info : LogLevel::Warning,
      std::string(c->peer.role == Role::Admin ? "admin " : "refused admin request from ") +
      c->peer.identity + " (" + std::string(role_name(c->peer.role)) + ", " + c->remote + "): " +
      std::string(type_name(m.type)) + (m.channel ? " channel " + std::to_string(*m.channel) : "") +
      (m.type == MsgType::AdminBilling && !m.text.empty() ? " format " + m.text.substr(0, 16) : "") +
      (m.since_ms ? " since " + format_rfc3339(*m.since_ms) : "") +
      (m.until_ms ? " until " + format_rfc3339(*m.until_ms) : ""));
  // Actions (not reads) go to the audit trail with their result, refused
  // attempts included; a grant/revoke writes its line when its slaves
  // have confirmed it (or not), just before its reply.
  const char* action = audit_action(m.type);
  AuditEntry entry;
  struct Pending {
    Impl& s;
    AuditEntry* e;
    ~Pending() {
      s.audit_pending = nullptr;
      if (e) s.write_audit(*e);
    }
  } pending{*this, action ? &entry : nullptr};
  if (action) {
    entry = audit_entry(c, action);
    if (m.channel) entry.channels.push_back(*m.channel);
    entry.channels.insert(entry.channels.end(), m.channel_list.begin(), m.channel_list.end());
    if (m.type == MsgType::AdminGrant || m.type == MsgType::AdminRevoke)
      entry.detail = "identity " + m.text + (m.all ? " channels *" : "");
    if (m.type == MsgType::AdminBillingClose) entry.detail = "period end " + format_rfc3339(*m.until_ms);
    audit_pending = &entry;
  }
  if (!require(c, m, {Role::Admin})) return;
  Message r;
  r.type = MsgType::AdminReply;
  r.req_id = m.req_id;
  auto now = MonoClock::now();
  switch (m.type) {
    case MsgType::AdminStatus: r.text = status_json(); break;
    case MsgType::AdminEntitlements: {
      if (!require_serving(c, m)) return;
      Json o = Json::array();
      for (auto& [id, e] : ents.all())
        if (m.text.empty() || m.text == id) o.push_back(entitlement_object(id, e));
      // An identity never granted or revoked anything: its certificate decides.
      if (!m.text.empty() && !ents.find(m.text)) o.push_back(entitlement_object(m.text, Entitlement{}));
      r.text = json_dump(o);
      break;
    }
    case MsgType::AdminGrant:
    case MsgType::AdminRevoke: {
      if (!require_master(c, m)) return;
      if (m.text.size() > 256) return reply_error(c, m, ErrorCode::BadRequest, "identity longer than 256 bytes");
      change_entitlement(c, m, std::move(entry));
      pending.e = nullptr;  // written when the slaves have answered
      return;
    }
    case MsgType::AdminChannels:
      if (!require_serving(c, m)) return;
      r.text = channels_json(now);
      break;
    case MsgType::AdminBilling:
    case MsgType::AdminInvoices:
    case MsgType::AdminBillingClose: {
      // The ledger is the database's: any master reads it, the active one closes periods.
      if (m.type == MsgType::AdminBillingClose ? !require_master(c, m) : !require_any_master(c, m)) return;
      TextFormat f = TextFormat::Table;
      if (!m.text.empty() && !parse_text_format(m.text, f))
        return reply_error(c, m, ErrorCode::BadRequest, "format must be table, json or csv");
      if (m.type == MsgType::AdminBilling) {
        const int64_t since = m.since_ms.value_or(INT64_MIN), until = m.until_ms.value_or(kAllTime);
        r.text = render_billing(store->ledger().billing(since, until), cfg.tariffs, since, until, f);
      } else if (m.type == MsgType::AdminInvoices) {
        r.text = render_invoices(store->ledger().invoices(), f);
      } else {
        // Everything accepted before the close is in the ledger first.
        drain_billing();
        std::vector<Invoice> inv;
        try {
          inv = store->ledger().close_period(*m.until_ms, wall_now_ms(), c->peer.identity, cfg.tariffs);
          // The store worker books the next events: after the close (late
          // ones flagged), before any billing commit posted from now on.
          worker->run([](Store& s) { s.ledger().reload_closed_until(); });
        } catch (const std::invalid_argument& e) {
          return reply_error(c, m, ErrorCode::BadRequest,
                             std::string(e.what()) + " (closed until " +
                                 (store->ledger().closed_until_ms() == INT64_MIN
                                      ? std::string("never")
                                      : format_rfc3339(store->ledger().closed_until_ms())) +
                                 ")");
        }
        log("billing period closed at " + format_rfc3339(*m.until_ms) + " by " + c->peer.identity + ": " +
            std::to_string(inv.size()) + " invoice(s)");
        entry.detail += ", " + std::to_string(inv.size()) + " invoice(s)";
        r.text = render_invoices(inv, f);
      }
      break;
    }
    case MsgType::AdminRotate: {
      if (!require_master(c, m)) return;
      auto it = chans.find(*m.channel);
      if (it == chans.end() || !it->second.configured)
        return reply_error(c, m, ErrorCode::UnknownChannel, "channel not served");
      Chan& ch = it->second;
      if (ch.pol.origin != KeyOrigin::Kms)
        return reply_error(c, m, ErrorCode::WrongOrigin, "sender-origin channel: the sender rotates");
      rotate(ch, now);
      View v = view(ch, now);
      if (!v.cur) return reply_error(c, m, ErrorCode::Internal, "cannot make the key now");
      r.type = MsgType::KeyReply;
      r.channel = ch.pol.id;
      r.remaining_ms = ms_between(now, v.cur->expires);
      r.keys.push_back(wire(ch, *v.cur, Slot::Current, now));
      if (v.next) r.keys.push_back(wire(ch, *v.next, Slot::Next, now));
      for (auto& k : r.keys) {  // admin sees SPIs and times only
        secure_zero(k.material.key, sizeof k.material.key);
        secure_zero(k.material.salt, sizeof k.material.salt);
      }
      break;
    }
    default: break;
  }
  c->send(r);
}

const char* Server::Impl::audit_action(MsgType t) {
  switch (t) {
    case MsgType::AdminRotate: return "rotate";
    case MsgType::AdminBillingClose: return "billing_close";
    case MsgType::AdminGrant: return "grant";
    case MsgType::AdminRevoke: return "revoke";
    default: return nullptr;
  }
}

AuditEntry Server::Impl::audit_entry(const std::shared_ptr<Conn>& c, const std::string& action) {
  AuditEntry e;
  e.who = c->peer.identity;
  e.role = std::string(role_name(c->peer.role));
  e.from = c->remote;
  e.action = action;
  return e;
}

void Server::Impl::write_audit(const AuditEntry& e) {
  if (audit && !audit->write(e))
    log(LogLevel::Error, "AUDIT LOG WRITE FAILED (" + cfg.audit_log + "): " + e.action + " by " + e.who + ": " +
        std::strerror(errno));
}

// Forced rotation: the current key's remaining time is cut to P1 (if longer)
// and the next key is made now; holders learn the new time from their next
// reply (every reply carries the remaining time).
void Server::Impl::rotate(Chan& ch, MonoClock::time_point now) {
  settle_mint(ch);
  View v = view(ch, now);
  if (!v.cur) {
    schedule(ch);
    settle_mint(ch);  // the admin's answer names the key made
    return;
  }
  auto target = now + milliseconds(ch.pol.p1_ms);
  if (v.cur->expires > target) {
    MemKey cur = *v.cur;
    std::optional<MemKey> next;
    if (v.next) next = *v.next;
    add_key(ch, cur.spi, cur.material, target, cur.lifetime_ms, 0);
    if (next) add_key(ch, next->spi, next->material, target + milliseconds(next->lifetime_ms), next->lifetime_ms, 0);
  }
  log("channel " + std::to_string(ch.pol.id) + ": forced rotation");
  schedule(ch);
  settle_mint(ch);  // the admin's answer names the next key, made now
}

std::string Server::Impl::status_json() {
  std::map<std::string, int> peers;
  for (auto* c : conns)
    if (c->authed) ++peers[std::string(role_name(c->peer.role))];
  std::size_t subs = 0;
  for (auto& w : subscribers)
    if (!w.expired()) ++subs;
  Json o = {{"role", role_name(cfg.role)},
            {"version", kSoftwareVersion},
            {"uptime_s", ms_between(started, MonoClock::now()) / 1000},
            {"connections", conns.size()},
            {"peers", Json::object()}};
  for (auto& [r, n] : peers) o["peers"][r] = n;
  o["channels"] = chans.size();
  o["key_seq"] = repl_seq.load();
  o["entitlement_seq"] = ents.seq();
  o["identities_managed"] = ents.all().size();
  o["slaves_subscribed"] = subs;
  o["handshakes_ok"] = handshakes_ok;
  o["handshakes_failed"] = handshakes_failed;
  o["keys_made"] = keys_made;
  if (master()) {
    // Masters sharing one database: this one's part, and who leads.
    o["active"] = active;
    o["epoch"] = active ? epoch : seen.epoch;
    o["active_address"] = active ? Json(advertised) : seen.address.empty() ? Json(nullptr) : Json(seen.address);
    o["advertised"] = advertised;
    o["failover_ms"] = cfg.failover_ms;
    o["takeovers"] = takeovers;
    o["stepdowns"] = stepdowns;
    o["billing_duplicate_requests"] = duplicate_requests;
    o["usage_checkpoints"] = checkpoints_counted;
    o["usage_checkpoints_unchanged"] = checkpoints_unchanged;
    o["billing_closed_until"] =
        store->ledger().closed_until_ms() == INT64_MIN ? Json(nullptr)
                                                       : Json(format_rfc3339(store->ledger().closed_until_ms()));
  } else {
    o["master_connected"] = upstream && upstream->connected();
    o["billing_outbox"] = store->replication().outbox_size();
  }
  return json_dump(o);
}

// One entry per channel: its policy, the SPIs in use and, per held key,
// its role and remaining time. On the master (which books the usage
// reports) each key also carries the traffic reported under it and how
// many client identities received it; those need the store, so the
// billing accepted so far is committed first (the loop waits for it).
std::string Server::Impl::channels_json(MonoClock::time_point now) {
  if (master()) drain_billing();
  Json out = Json::array();
  for (auto& [id, ch] : chans) {
    View v = view(ch, now);
    Json o = {{"channel", id},
              {"origin", ch.pol.origin == KeyOrigin::Kms ? "kms" : "sender"},
              {"suite", suite_name(ch.pol.suite)},
              {"lifetime_ms", ch.pol.lifetime_ms},
              {"p1_ms", ch.pol.p1_ms},
              {"p2_ms", ch.pol.p2_ms},
              {"grace_ms", ch.pol.grace_ms},
              {"spi_high_water", ch.hwm},
              {"keys_held", ch.keys.size()}};
    if (v.cur) {
      o["current_spi"] = v.cur->spi;
      o["current_remaining_ms"] = ms_between(now, v.cur->expires);
    }
    if (v.next) {
      o["next_spi"] = v.next->spi;
      o["next_remaining_ms"] = ms_between(now, v.next->expires);
    }
    if (v.prev) o["previous_spi"] = v.prev->spi;
    Json keys = Json::array();
    for (auto [k, role] : {std::pair{v.prev, "previous"}, {v.cur, "current"}, {v.next, "next"}}) {
      if (!k) continue;
      Json e = {{"role", role},
                {"spi", k->spi},
                {"remaining_ms", ms_between(now, k->expires)},
                {"lifetime_ms", k->lifetime_ms}};
      if (master()) {
        const KeyUsage u = store->ledger().key_usage(id, k->spi);
        e["bytes"] = u.bytes;
        e["packets"] = u.packets;
        e["holders"] = u.holders;
      }
      keys.push_back(std::move(e));
    }
    o["keys"] = std::move(keys);
    out.push_back(std::move(o));
  }
  return json_dump(out);
}

}  // namespace keycast::kp
