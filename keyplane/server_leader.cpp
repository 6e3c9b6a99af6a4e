// The key server, masters sharing one database: which one leads.
//
// Every master runs the same loop on its event-loop thread; the database
// calls themselves run on the lease worker (keyplane/store_worker.hpp), so a
// database that is slow to answer never holds up the loop. A standby asks
// the store for the lease every failover/6; the active renews it as often.
// The lease is 2/3 of --failover-ms, so after the active dies its lease runs
// out at most 2/3 later and a standby notices within another 1/6: the lead
// moves within 5/6 of --failover-ms.
//
// The active also times its lease on its own monotonic clock, from before it
// asked: the database extended the lease from a later instant, so the local
// bound runs out first and an active that cannot reach the database stops
// writing before any standby may start. That is the liveness side; safety
// does not rest on it: every write of the store carries the fencing epoch
// (LeaseStore::fence), and the database refuses the writes of a superseded one.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

// A wildcard listen address names no machine: peers are told this host's name.
std::string Server::Impl::advertised_address() const {
  if (!cfg.advertise.empty()) return cfg.advertise;
  std::string host = parse_host_port(cfg.listen, "--listen").host;
  if (host.empty() || host == "0.0.0.0" || host == "::") {
    char name[256] = {};
    if (gethostname(name, sizeof name - 1) == 0 && name[0]) host = name;
  }
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return host + ":" + std::to_string(port());
}

bool Server::Impl::lease_valid(MonoClock::time_point now) const { return active && now < lease_until; }

// A write needs a lease that has not run out on our clock. Renewals run on
// the lease worker, never here: a write cannot wait for the database. A
// lease run out on our clock holds every write back until a renewal asked
// from then on comes back: the loop may merely have been late to ask (busy,
// or the process paused), and if the database still has us as the leader
// nobody took over and we go on. lead_tick stands us down if no renewal
// comes back within a lease.
bool Server::Impl::ensure_lease() {
  if (!active) return false;
  if (MonoClock::now() < lease_until) return true;
  writes_held = true;
  if (!lead_job) lead_attempt(true);
  return false;
}

// At start, before anyone is served: the loop has nothing else to do, so
// the first attempt runs here and a lone master leads at once.
void Server::Impl::lead_start() {
  const auto asked = MonoClock::now();
  // Once, at start: a lease still held under our own name is our previous
  // process's, which is gone (we hold its address).
  reclaim_tried = true;
  try {
    if (auto e = store->lease().try_lead(advertised, advertised, lease().count(), true)) {
      take_lead(*e, asked);
    } else {
      seen = store->lease().leadership();
      seen_at = asked;
    }
  } catch (const std::exception& e) {
    ++lead_errors;
    log(LogLevel::Warning, std::string("leadership: ") + e.what());
  }
  arm_lead_timer();
}

// Every lead_period, and at the lease's end: the next renewal or takeover
// attempt goes to the lease worker unless one is still waiting there (a
// stalled database gets one attempt, not a queue). An active whose lease
// ran out with a renewal unanswered for a whole lease stands down here, on
// the loop's clock, whatever the database is doing. One answered but not
// yet handled (queued behind this timer) decides by itself.
void Server::Impl::lead_tick() {
  if (stopping) return;
  const auto now = MonoClock::now();
  if (active && now >= lease_until) {
    writes_held = true;
    if (lead_job && !lead_job->finished && now >= lead_job->asked + lease())
      step_down("the database did not answer a lease renewal within the lease");
  }
  if (!lead_job) lead_attempt(active && now >= lease_until);
  arm_lead_timer();
}

void Server::Impl::arm_lead_timer() {
  // Never later than the lease's end, or than a lease after the renewal
  // waiting since it ran out: an active that cannot renew is stopped by
  // this timer even when nothing else happens.
  const auto now = MonoClock::now();
  auto next = now + lead_period();
  if (active) {
    if (now < lease_until)
      next = std::min(next, lease_until);
    else if (lead_job)
      next = std::min(next, lead_job->asked + lease());
  }
  lead_timer.expires_at(std::max(next, now + milliseconds(1)));
  lead_timer.async_wait([this](boost::system::error_code ec) {
    if (!ec) lead_tick();
  });
}

// On the lease worker: one renewal, or one takeover attempt and, failing
// it, who leads. Touches nothing of the loop's.
void Server::Impl::LeadJob::run(Store& s) {
  if (renew) {
    renewed = s.lease().renew_lead(epoch, ttl_ms);
    return;
  }
  took = s.lease().try_lead(holder, holder, ttl_ms, reclaim);
  if (!took) seen = s.lease().leadership();
}

void Server::Impl::lead_attempt(bool late) {
  auto j = std::make_shared<LeadJob>();
  j->renew = active;
  j->late = late;
  j->epoch = epoch;
  j->holder = advertised;
  j->ttl_ms = lease().count();
  j->reclaim = !reclaim_tried;
  reclaim_tried = true;
  // Before the job is even queued: the database extends the lease from a
  // later instant, so the bound counted from here runs out first.
  j->asked = MonoClock::now();
  lead_job = j;
  lease_worker->post(
      [j](Store& s) {
        try {
          j->run(s);
        } catch (...) {
          j->finished = true;
          throw;
        }
        j->finished = true;
      },
      [this, j](std::exception_ptr err) { lead_done(*j, err); });
}

// On the loop, once the lease worker is done with j.
void Server::Impl::lead_done(const LeadJob& j, std::exception_ptr err) {
  if (lead_job.get() == &j) lead_job.reset();
  if (stopping) return;
  if (err) {
    ++lead_errors;
    std::string why;
    try {
      std::rethrow_exception(err);
    } catch (const std::exception& e) {
      why = e.what();
    } catch (...) {
      why = "unknown error";
    }
    // The database refused or was lost: with the lease run out, no later
    // renewal can be trusted to come in time.
    if (active && MonoClock::now() >= lease_until)
      step_down("the lease ran out and cannot be renewed: " + why);
    else
      log(LogLevel::Warning, "leadership: " + why);
    return;
  }
  if (j.renew) {
    // Stood down meanwhile (the lease ran out first, a write was fenced):
    // the answer is about a lead we no longer hold.
    if (!active || epoch != j.epoch) return;
    if (!j.renewed) {
      step_down("another master took the lead");
      return;
    }
    lease_until = std::max(lease_until, j.asked + lease());
    if (MonoClock::now() < lease_until) {
      // Key timers that found the lease run out did not re-arm.
      if (writes_held) {
        writes_held = false;
        for (auto& [id, c] : chans) schedule(c);
      }
      return;
    }
    // A renewal slower than the lease (or whose answer waited behind a
    // paused process) leaves our bound run out though the database
    // extended it: one more renewal, asked now, decides.
    writes_held = true;
    if (j.late)
      step_down("the lease ran out before the database renewed it");
    else
      lead_attempt(true);
    return;
  }
  if (active) return;
  if (j.took) {
    try {
      take_lead(*j.took, j.asked);
    } catch (const std::exception& e) {
      ++lead_errors;
      log(LogLevel::Warning, std::string("leadership: ") + e.what());
    }
  } else if (j.seen) {
    seen = *j.seen;
    seen_at = j.asked;
  }
}

void Server::Impl::take_lead(uint64_t e, MonoClock::time_point asked) {
  try {
    // The fence first: nothing below writes under an epoch not yet ours.
    store->lease().fence(e);
    // The store worker's connection too, through its queue, so every
    // billing commit posted from now on runs fenced at e. Waited for: a
    // worker that cannot fence must not book under this lead. Both read the
    // closed billing periods again: the previous active may have closed one.
    worker->run([e](Store& s) {
      s.lease().fence(e);
      s.ledger().reload_closed_until();
    });
    // And the key worker's, behind any mint of an earlier lead still there.
    key_worker->run([e](Store& s) { s.lease().fence(e); });
    store->ledger().reload_closed_until();
    // The previous active may have made keys, moved SPI marks and changed
    // entitlements since this process read the store.
    load_state();
  } catch (...) {
    // Not leading after all: hand the lease back rather than sit on it
    // without serving until it runs out.
    try {
      store->lease().release_lead(e);
    } catch (...) {
    }
    throw;
  }
  epoch = e;
  lease_until = asked + lease();
  active = true;
  writes_held = false;
  ++takeovers;
  seen = Leadership{e, advertised, advertised, lease().count()};
  log("active: leading the masters of " + shown_db(cfg.db) + " (epoch " + std::to_string(e) + ", " +
      std::to_string(chans.size()) + " channel(s), key seq " + std::to_string(repl_seq.load()) + ")");
  for (auto& [id, c] : chans) schedule(c);
}

void Server::Impl::step_down(const std::string& why) {
  if (!active) return;
  active = false;
  writes_held = false;
  ++stepdowns;
  for (auto& [id, c] : chans)
    if (c.timer) c.timer->cancel();
  log(LogLevel::Warning, "standby: " + why + " (was epoch " + std::to_string(epoch) + ")");
  // What was accepted is committed (by the store worker, after any commit
  // in flight) while the fence still admits it; once another master leads
  // the database refuses it. Either way its replies are never sent (every
  // session ends below), so the clients re-send it to the new active (event
  // ids keep it counted once).
  commit_billing();
  // Peers must find the new active: every session ends (clients re-send
  // their unanswered requests elsewhere, slaves subscribe again there).
  std::vector<Conn*> all(conns.begin(), conns.end());
  for (auto* c : all) c->close("this master is no longer active");
  // Our lease handed back (a no-op when another master's epoch replaced
  // ours), after the renewal that may be waiting: a standby need not wait
  // for the database to time out a lease nobody writes under. Then who
  // leads now, so the next not_active can name it; nobody is named until
  // the database answers.
  seen = Leadership{};
  seen_at = MonoClock::now();
  auto told = std::make_shared<std::optional<Leadership>>();
  const auto asked = seen_at;
  lease_worker->post(
      [e = epoch, told](Store& s) {
        try {
          s.lease().release_lead(e);
        } catch (const std::exception&) {
          // The database is what we lost: its lease runs out by itself.
        }
        *told = s.lease().leadership();
      },
      [this, told, asked](std::exception_ptr) {
        if (active || !*told) return;
        seen = **told;
        seen_at = asked;
      });
}

// Keys, generations, SPI marks and entitlements as the store holds them.
void Server::Impl::load_state() {
  for (auto& [id, c] : chans) {
    if (c.timer) c.timer->cancel();
    c.keys.clear();  // KeyMaterial zeroises itself
    c.by_exp.clear();
  }
  Entitlements fresh;
  for (auto& [id, e] : store->replication().load_entitlements()) fresh.set(id, std::move(e));
  fresh.set_seq(ents.seq());
  ents = std::move(fresh);
  // Recompute monotonic deadlines from the stored wall-clock deadline.
  auto now = MonoClock::now();
  int64_t wnow = wall_now_ms();
  for (auto& sk : store->keys().load_keys()) {
    Chan& c = chan_for(sk.channel);
    c.gen = std::max(c.gen, sk.gen);
    repl_seq = std::max<uint64_t>(repl_seq, sk.seq);
    if (sk.expires_wall_ms - wnow < -(c.pol.grace_ms + cfg.retention_ms)) continue;
    MemKey k;
    k.seq = sk.seq;
    k.spi = sk.spi;
    k.material = sk.material;
    k.expires = now + milliseconds(sk.expires_wall_ms - wnow);
    k.lifetime_ms = sk.lifetime_ms;
    insert_mem(c, std::move(k));
  }
  for (auto& [ch, hwm] : store->keys().load_spi_hwm()) {
    Chan& c = chan_for(ch);
    c.hwm = std::max(c.hwm, hwm);
  }
}

}  // namespace keycast::kp
