// The key server: billing events and their group commit.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

// Billing events are made durable in one transaction per batch (group
// commit); the replies they belong to are released only after the commit.
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
    commit_timer.cancel();  // its handler commits now
    return;
  }
  if (!pb.scheduled && lazy) {
    pb.scheduled = pb.lazy = true;
    commit_timer.expires_after(kLazyCommit);
    commit_timer.async_wait([this](boost::system::error_code) { commit_billing(); });
    return;
  }
  if (!pb.scheduled) {
    // Commit after the event loop has had a moment to read more requests,
    // so one fsync covers a whole burst (e.g. a rekey storm).
    // Adaptive: a lone request (the last batch had one reply) commits at
    // once; under load the batch window applies.
    pb.scheduled = true;
    if (last_batch > 1 && cfg.group_commit_us > 0) {
      commit_timer.expires_after(std::chrono::microseconds(cfg.group_commit_us));
      commit_timer.async_wait([this](boost::system::error_code) { commit_billing(); });
    } else {
      asio::post(io, [this] { commit_billing(); });
    }
  }
}

void Server::Impl::commit_billing() {
  PendingBill b = std::move(pb);
  pb = PendingBill{};
  last_batch = b.replies.size();
  if (b.replies.empty() && b.requests.empty() && b.request_events.empty()) return;
  bool ok = true, fenced = false;
  const int64_t at = wall_now_ms();
  uint64_t counted = 0, unchanged = 0;
  std::map<std::size_t, uint64_t> unchanged_in;  // by reply
  try {
    store->begin();
    for (auto& [id, n] : b.requests) {
      if (master())
        store->add_requests(id, n, at);
      else
        store->outbox_add(id, n, 0, 0, 0, at);
    }
    if (master()) {
      // One statement each on PostgreSQL, however many events the batch holds.
      duplicate_requests += store->add_request_events(b.request_events, at);
      store->add_holders({b.holders.begin(), b.holders.end()});
    } else {
      for (auto& [id, ev] : b.request_events) store->outbox_add(id, 1, 0, 0, ev, at);
      for (auto& [id, ch, spi] : b.holders) store->outbox_add(id, 0, ch, spi, 0, at);
    }
    for (auto& cp : b.checkpoints) {
      if (store->add_checkpoint(cp.sender, cp.instance, cp.channel, cp.spi, cp.bytes, cp.packets, at)) {
        ++counted;
      } else {
        ++unchanged;
        ++unchanged_in[cp.reply];
      }
    }
    store->commit();
    checkpoints_counted += counted;
    checkpoints_unchanged += unchanged;
    for (auto& [i, n] : unchanged_in)
      b.replies[i].second.text = (n > 1 ? std::to_string(n) + " epochs " : std::string()) +
                                 "unchanged: at or below the high-water mark";
  } catch (const Fenced& e) {
    // Another master leads now: none of this batch was booked here, and its
    // requests are re-sent there.
    store->rollback();
    ok = false;
    fenced = true;
    step_down(e.what());
  } catch (const std::exception& e) {
    store->rollback();
    log(LogLevel::Error, std::string("billing commit failed: ") + e.what());
    ok = false;
  }
  for (auto& [w, r] : b.replies) {
    auto c = w.lock();
    if (!c) continue;
    if (ok)
      c->send(r);
    else if (fenced)
      reply_not_active(c, r);
    else
      reply_error(c, r, ErrorCode::Internal, "billing store unavailable");
  }
}

}  // namespace keycast::kp
