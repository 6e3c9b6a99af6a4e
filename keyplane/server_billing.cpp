// The key server: billing events and their group commit.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

// Billing events are made durable in one transaction per batch (group
// commit); the replies they belong to are released only after the commit.
// The transaction runs on the store worker (its own connection and thread):
// a commit waiting on the disk or the network holds back only the replies
// of its own batch, never the event loop. One commit is in flight at a
// time; what arrives meanwhile forms the next batch.
// A request with an event id counts once however often it is re-sent (its
// reply lost to a crash or a cut): the master keeps the ids it has counted,
// a slave forwards the id with the event so the master decides.
void Server::Impl::bill_and_reply(const std::shared_ptr<Conn>& c, Message r, std::optional<uint64_t> event_id) {
  if (event_id)
    pb.request_events.emplace_back(c->peer.identity, *event_id);
  else
    pb.requests[c->peer.identity] += 1;
  for (const auto& k : r.keys) pb.holders.emplace(c->peer.identity, k.channel, k.spi);
  pb.replies.emplace_back(c, std::move(r));
  schedule_commit();
}

void Server::Impl::schedule_commit(bool lazy) {
  if (pb.scheduled && pb.lazy && !lazy) {
    pb.lazy = false;
    commit_timer.cancel();  // its handler commits now (or after the commit in flight)
    return;
  }
  if (!pb.scheduled && lazy) {
    pb.scheduled = pb.lazy = true;
    commit_timer.expires_after(kLazyCommit);
    commit_timer.async_wait([this](boost::system::error_code) { commit_billing(); });
    return;
  }
  if (!pb.scheduled) {
    pb.scheduled = true;
    if (billing_inflight) {
      // The commit in flight is this batch's window: it goes as soon as
      // that one is done.
      commit_again = true;
      return;
    }
    // Commit after the event loop has had a moment to read more requests,
    // so one fsync covers a whole burst (e.g. a rekey storm).
    // Adaptive: a lone request (the last batch had one reply) commits at
    // once; under load the batch window applies.
    if (last_batch > 1 && cfg.group_commit_us > 0) {
      commit_timer.expires_after(std::chrono::microseconds(cfg.group_commit_us));
      commit_timer.async_wait([this](boost::system::error_code) { commit_billing(); });
    } else {
      asio::post(io, [this] { commit_billing(); });
    }
  }
}

void Server::Impl::commit_billing() {
  if (billing_inflight) {
    commit_again = true;
    return;
  }
  PendingBill b = std::move(pb);
  pb = PendingBill{};
  last_batch = b.replies.size();
  if (b.replies.empty() && b.requests.empty() && b.request_events.empty()) return;
  auto job = std::make_shared<BillingJob>();
  job->master = master();
  job->at = wall_now_ms();
  job->requests = std::move(b.requests);
  job->request_events = std::move(b.request_events);
  job->holders.assign(b.holders.begin(), b.holders.end());
  job->checkpoints = std::move(b.checkpoints);
  auto bc = std::make_shared<BillingCommit>();
  bc->job = job;
  bc->replies = std::move(b.replies);
  billing_inflight = bc;
  // The job holds only its batch: no connection, no loop state.
  worker->post([job](Store& s) { job->run(s); },
               [this, bc](std::exception_ptr err) {
                 if (err && bc->job->outcome != BillingJob::Outcome::Fenced) {
                   bc->job->outcome = BillingJob::Outcome::Failed;
                   try {
                     std::rethrow_exception(err);
                   } catch (const std::exception& e) {
                     bc->job->error = e.what();
                   } catch (...) {
                     bc->job->error = "unknown error";
                   }
                 }
                 finish_billing(bc);
               });
}

// On the store worker: one transaction for the whole batch.
void Server::Impl::BillingJob::run(Store& s) {
  try {
    s.begin();
    for (auto& [id, n] : requests) {
      if (master)
        s.ledger().add_requests(id, n, at);
      else
        s.replication().outbox_add(id, n, 0, 0, 0, at);
    }
    if (master) {
      // One statement each on PostgreSQL, however many events the batch holds.
      duplicates = s.ledger().add_request_events(request_events, at);
      s.ledger().add_holders(holders);
    } else {
      for (auto& [id, ev] : request_events) s.replication().outbox_add(id, 1, 0, 0, ev, at);
      for (auto& [id, ch, spi] : holders) s.replication().outbox_add(id, 0, ch, spi, 0, at);
    }
    for (auto& cp : checkpoints) {
      if (s.ledger().add_checkpoint(cp.sender, cp.instance, cp.channel, cp.spi, cp.bytes, cp.packets, at)) {
        ++counted;
      } else {
        ++unchanged;
        ++unchanged_in[cp.reply];
      }
    }
    s.commit();
    outcome = Outcome::Committed;
  } catch (const Fenced& e) {
    outcome = Outcome::Fenced;
    error = e.what();
    s.rollback();
  } catch (const std::exception& e) {
    outcome = Outcome::Failed;
    error = e.what();
    s.rollback();
  }
}

// On the loop, once the worker is done with bc's job.
void Server::Impl::finish_billing(const std::shared_ptr<BillingCommit>& bc) {
  if (bc->finished) return;
  bc->finished = true;
  if (billing_inflight == bc) billing_inflight.reset();
  BillingJob& j = *bc->job;
  const bool ok = j.outcome == BillingJob::Outcome::Committed;
  const bool fenced = j.outcome == BillingJob::Outcome::Fenced;
  if (ok) {
    duplicate_requests += j.duplicates;
    checkpoints_counted += j.counted;
    checkpoints_unchanged += j.unchanged;
    for (auto& [i, n] : j.unchanged_in)
      bc->replies[i].second.text = (n > 1 ? std::to_string(n) + " epochs " : std::string()) +
                                   "unchanged: at or below the high-water mark";
  } else if (fenced) {
    // Another master leads now: none of this batch was booked here, and its
    // requests are re-sent there.
    step_down(j.error);
  } else {
    log(LogLevel::Error, "billing commit failed: " + j.error);
  }
  for (auto& [w, r] : bc->replies) {
    auto c = w.lock();
    if (!c) continue;
    if (ok)
      c->send(r);
    else if (fenced)
      reply_not_active(c, r);
    else
      reply_busy(c, r, kStoreRetryMs, "billing store unavailable");
  }
  if (commit_again) {
    commit_again = false;
    commit_billing();
  }
}

void Server::Impl::drain_billing() {
  for (;;) {
    if (!billing_inflight) {
      commit_billing();
      if (!billing_inflight) return;
    }
    auto bc = billing_inflight;
    // Every job queued before this one has run, bc's among them; its
    // posted completion then finds it finished.
    worker->run([](Store&) {});
    finish_billing(bc);
  }
}

}  // namespace keycast::kp
