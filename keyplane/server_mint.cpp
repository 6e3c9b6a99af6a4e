// The key server, masters: keys made on the key worker, off the event loop.
//
// A kms-origin channel's keys are made when its timer falls due (P1, or no
// current key) and when a request finds the key it asks for not made yet.
// The store call runs on the key worker's own connection: a database slow
// to answer (a lock, a stalled server) delays that channel's key, never the
// loop, so sessions, status and other channels' keys are served meanwhile,
// and the lease is judged on the loop's clock whatever the mint is doing.
//
// One mint per channel at a time. The loop decides everything: a request
// that needs the key waits in the channel's list and is handled again when
// the key is in; the answer is applied only under the lead it was asked
// under; a fenced mint stands the master down as a fenced write on the loop
// does. Eviction and forced rotation, which rewrite a channel's keys on the
// loop's connection, first settle the mint in flight (settle_mint).
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

namespace {
// A mint that failed (not fenced) is tried again this much later, and the
// requests waiting for it are told to come back then.
constexpr int64_t kMintRetryMs = 1000;
}  // namespace

void Server::Impl::MintJob::run(Store& s) {
  try {
    got = s.keys().mint_key(want);
  } catch (const Fenced& e) {
    fenced = true;
    error = e.what();
  } catch (const std::exception& e) {
    error = e.what();
  }
}

void Server::Impl::mint(Chan& c, MonoClock::time_point expires) {
  if (minting(c)) return;
  auto j = std::make_shared<MintJob>();
  j->channel = c.pol.id;
  j->epoch = epoch;
  j->expires = expires;
  j->asked = MonoClock::now();
  j->wall_asked = wall_now_ms();
  j->want = key_wanted(c, expires, j->asked, j->wall_asked);
  mints[c.pol.id] = j;
  key_worker->post([j](Store& s) { j->run(s); }, [this, j](std::exception_ptr) { mint_done(*j); });
}

void Server::Impl::wait_for_mint(const Chan& c, const std::shared_ptr<Conn>& conn, const Message& m) {
  mint_waiters[c.pol.id].push_back(MintWaiter{conn, m});
}

// On the loop, once the key worker is done with j (or from settle_mint,
// which got there first).
void Server::Impl::mint_done(MintJob& j) {
  if (j.done) return;
  j.done = true;
  if (auto it = mints.find(j.channel); it != mints.end() && it->second.get() == &j) mints.erase(it);
  if (stopping) return;
  Chan& c = chans.at(j.channel);
  if (!active) {
    // Stood down: every session that waited was closed with it.
    mint_waiters.erase(j.channel);
    return;
  }
  if (j.epoch == epoch) {
    if (j.fenced) {
      step_down(j.error);
      return;
    }
    if (!j.got) {
      log(LogLevel::Error, "channel " + std::to_string(c.pol.id) + ": cannot make key: " + j.error);
      auto waiters = std::move(mint_waiters[j.channel]);
      mint_waiters.erase(j.channel);
      for (auto& w : waiters)
        if (auto conn = w.conn.lock(); conn && !conn->closed)
          reply_busy(conn, w.m, kMintRetryMs, "cannot make the key now");
      c.timer->expires_after(milliseconds(kMintRetryMs));
      const uint32_t id = c.pol.id;
      c.timer->async_wait([this, id](boost::system::error_code ec) {
        if (!ec) schedule(chans.at(id));
      });
      return;
    }
    key_minted(c, j.want, *j.got, j.expires, j.asked, j.wall_asked);
  }
  // Asked under an earlier lead of ours: what it made (if anything) is in
  // the database, where this lead's next mint of that generation finds it.
  schedule(c);
  if (minting(c)) return;  // the waiters want the key now being made too, or are answered by it
  auto waiters = std::move(mint_waiters[j.channel]);
  mint_waiters.erase(j.channel);
  for (auto& w : waiters) {
    auto conn = w.conn.lock();
    if (!conn || conn->closed) continue;
    if (w.m.type == MsgType::GenerateRequest)
      on_generate(conn, w.m);
    else
      on_key_request(conn, w.m);
  }
}

// Before the loop rewrites a channel's keys itself: the mint in flight is
// waited for and applied, so the rewrite sees every key made and no answer
// lands after it. The wait is on the database, on the loop: only for the
// admin's rare writes.
void Server::Impl::settle_mint(Chan& c) {
  for (int i = 0; i < 4 && minting(c); ++i) {
    auto j = mints.at(c.pol.id);
    key_worker->run([](Store&) {});  // every job posted before has run
    mint_done(*j);  // its own completion, queued on the loop, finds it done
  }
}

}  // namespace keycast::kp
