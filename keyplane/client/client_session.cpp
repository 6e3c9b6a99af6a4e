// The client's session with one key server: connecting (TLS, mutual
// authentication) down its list of servers, framing, writing the queue,
// reading replies and pushes, and failing over when a session ends.
#include <stdexcept>

#include "keyplane/client/client_impl.hpp"

namespace keycast::kp {

// ---------------------------------------------------------------- connection
void Client::Impl::ensure_connecting() {
  if (stopping || state != State::Idle || retry_scheduled || !wanted()) return;
  connect();
}

void Client::Impl::connect() {
  state = State::Connecting;
  auto c = std::make_shared<Conn>(io, *ctx);
  conn = c;
  const HostPort& hp = hosts[idx % hosts.size()];
  c->server = hp.text;
  connect_timer.expires_after(o.connect_timeout);
  connect_timer.async_wait([this, c](boost::system::error_code ec) {
    if (!ec && conn == c && state == State::Connecting) fail(c, "connect/handshake timeout");
  });
  resolver.async_resolve(hp.host, hp.port, [this, c](boost::system::error_code ec,
                                                     tcp::resolver::results_type res) {
    if (conn != c) return;
    if (ec) return fail(c, "resolve: " + ec.message());
    asio::async_connect(c->s.lowest_layer(), res,
                        [this, c](boost::system::error_code ec, const tcp::endpoint&) {
      if (conn != c) return;
      if (ec) return fail(c, "connect: " + ec.message());
      boost::system::error_code ig;
      c->s.lowest_layer().set_option(tcp::no_delay(true), ig);
      c->s.async_handshake(ssl::stream_base::client, [this, c](boost::system::error_code ec) {
        if (conn != c) return;
        if (ec) return fail(c, "TLS handshake: " + ec.message());
        auto peer = peer_info(c->s.native_handle());
        if (!peer || (peer->role != Role::Master && peer->role != Role::Slave) ||
            (o.require_master && peer->role != Role::Master))
          return fail(c, "server certificate does not carry a key-server role");
        connect_timer.cancel();
        ready(c);
      });
    });
  });
}

void Client::Impl::ready(const std::shared_ptr<Conn>& c) {
  state = State::Ready;
  backoff = o.backoff_min;
  failures_in_round = 0;
  is_connected = true;
  ++n_connects;
  {
    std::lock_guard<std::mutex> g(mu);
    server_name = c->server;
  }
  read_loop(c);
  if (on_connect) {
    try {
      on_connect(*owner);
    } catch (...) {
    }
  }
  flush();
}

void Client::Impl::fail(const std::shared_ptr<Conn>& c, std::string why, std::chrono::milliseconds pause) {
  if (conn != c) return;
  // A subscription is bound to its session: the next one subscribes anew
  // from on_connect. Carried over as well, it would arrive twice, and the
  // carried ones pile up over every session that fails before they are
  // answered (a standby refusing what was queued ahead of them), reaching
  // the next active master as a burst.
  std::vector<Pending> lost;
  for (auto it = inflight.begin(); it != inflight.end();) {
    if (it->second.msg.type == MsgType::ReplSubscribe) {
      lost.push_back(std::move(it->second));
      it = inflight.erase(it);
    } else {
      ++it;
    }
  }
  end_session(c, why, pause);
  // After the session is wound up: a callback may submit again.
  for (auto& p : lost)
    fail_request(p, ErrorCode::Unavailable, c->server + ": session lost before the subscription was answered");
}

void Client::Impl::end_session(const std::shared_ptr<Conn>& c, const std::string& why, std::chrono::milliseconds pause) {
  bool was_ready = state == State::Ready;
  last_error = c->server + ": " + why;
  boost::system::error_code ig;
  c->s.lowest_layer().close(ig);
  conn.reset();
  state = State::Idle;
  is_connected = false;
  connect_timer.cancel();
  // Re-send unanswered requests (in their original order) on the next server.
  std::vector<Pending> back;
  for (auto& [id, p] : inflight) back.push_back(std::move(p));
  inflight.clear();
  for (auto it = back.rbegin(); it != back.rend(); ++it) queue.push_front(std::move(*it));
  idx = (idx + 1) % hosts.size();
  if (was_ready && pause.count() > 0) {
    failures_in_round = 0;
    return retry_after(pause);
  }
  if (was_ready) {
    failures_in_round = 0;
  } else if (++failures_in_round >= hosts.size()) {
    failures_in_round = 0;
    const auto wait = backoff;
    backoff = std::min(backoff * 2, o.backoff_max);
    return retry_after(wait);
  }
  ensure_connecting();
}

void Client::Impl::retry_after(std::chrono::milliseconds wait) {
  retry_scheduled = true;
  retry_timer.expires_after(wait);
  retry_timer.async_wait([this](boost::system::error_code ec) {
    retry_scheduled = false;
    if (!ec) ensure_connecting();
  });
}

void Client::Impl::flush() {
  if (state != State::Ready || !conn) return;
  auto c = conn;
  while (!queue.empty()) {
    Pending p = std::move(queue.front());
    queue.pop_front();
    auto frame = encode(p.msg);
    inflight.emplace(p.id, std::move(p));
    c->wq.push_back(std::move(frame));
  }
  if (!c->writing) do_write(c);
}

void Client::Impl::do_write(const std::shared_ptr<Conn>& c) {
  if (c->wq.empty()) {
    c->writing = false;
    return;
  }
  c->writing = true;
  asio::async_write(c->s, asio::buffer(c->wq.front()),
                    [this, c](boost::system::error_code ec, std::size_t) {
    secure_zero(c->wq.front().data(), c->wq.front().size());
    c->wq.pop_front();
    if (ec) {
      c->writing = false;
      return fail(c, "write: " + ec.message());
    }
    do_write(c);
  });
}

void Client::Impl::read_loop(const std::shared_ptr<Conn>& c) {
  asio::async_read(c->s, asio::buffer(c->hdr), [this, c](boost::system::error_code ec, std::size_t) {
    if (conn != c) return;
    if (ec) return fail(c, "read: " + ec.message());
    Header h;
    DecodeStatus st = decode_header(c->hdr.data(), c->hdr.size(), h);
    if (st != DecodeStatus::Ok) return fail(c, std::string("bad frame: ") + std::string(decode_status_name(st)));
    c->body.resize(h.length);
    asio::async_read(c->s, asio::buffer(c->body), [this, c, h](boost::system::error_code ec, std::size_t) {
      if (conn != c) return;
      if (ec) return fail(c, "read: " + ec.message());
      auto now = MonoClock::now();
      Message m;
      DecodeStatus st = decode_body(h, c->body.data(), c->body.size(), m);
      secure_zero(c->body.data(), c->body.size());
      if (st != DecodeStatus::Ok) return fail(c, std::string("bad frame: ") + std::string(decode_status_name(st)));
      dispatch(c, std::move(m), now);
      if (conn == c) read_loop(c);
    });
  });
}

void Client::Impl::dispatch(const std::shared_ptr<Conn>& c, Message m, MonoClock::time_point now) {
  if (m.req_id == 0) {
    if (push_handler) {
      try {
        push_handler(std::move(m));
      } catch (...) {
      }
    }
    return;
  }
  auto it = inflight.find(m.req_id);
  if (it == inflight.end()) return;  // timed out already
  Pending p = std::move(it->second);
  inflight.erase(it);
  if (m.type == MsgType::Error && m.error == ErrorCode::Busy && m.retry_after_ms &&
      now + std::chrono::milliseconds(*m.retry_after_ms) < p.deadline) {
    // The server sheds load and said when to come back: the request waits
    // that long (tick() re-queues it), then goes out again.
    not_active_in_row = 0;
    ++busy_waits;
    delayed.emplace(now + std::chrono::milliseconds(*m.retry_after_ms), std::move(p));
    return;
  }
  // With one server that names another master as active, retrying there
  // cannot help: the caller learns it at once. Without a name (a takeover
  // under way, or a lone master between losing and retaking its lease)
  // the request waits for the lead to settle, bounded by its timeout.
  if (m.type == MsgType::Error && m.error == ErrorCode::NotActive && (hosts.size() > 1 || m.active.empty())) {
    // A standby master: go to the active one it names, else on round the
    // list. A subscription is not re-sent: on_connect subscribes anew.
    const bool resend = p.msg.type != MsgType::ReplSubscribe;
    if (resend) queue.push_front(std::move(p));
    std::optional<std::size_t> named;
    for (std::size_t i = 0; i < hosts.size(); ++i)
      if (!m.active.empty() && hosts[i].text == m.active) named = i;
    // A round of "not me" (the one named did not answer either, or none
    // was named): a takeover is under way. Pause before the next round
    // rather than spin through handshakes with the standbys.
    const bool pause = ++not_active_in_row >= hosts.size();
    if (pause) not_active_in_row = 0;
    if (named) idx = (*named + hosts.size() - 1) % hosts.size();  // fail() moves on by one
    fail(c, "not the active master" + (m.active.empty() ? std::string() : ", " + m.active + " is"),
         pause ? o.backoff_min : std::chrono::milliseconds(0));
    if (!resend) {
      Result r;
      r.error = ErrorCode::NotActive;
      r.message = m.text;
      r.received_at = now;
      r.server = c->server;
      r.reply = std::move(m);
      deliver(p, std::move(r));
    }
    return;
  }
  if (m.type == MsgType::Error && m.error == ErrorCode::NotMaster && hosts.size() > 1 &&
      p.redirects < hosts.size()) {
    // A master-only request reached a slave: try the next server in the list.
    ++p.redirects;
    queue.push_front(std::move(p));
    fail(c, "not the master");
    return;
  }
  not_active_in_row = 0;
  Result r;
  r.received_at = now;
  r.server = c->server;
  if (m.type == MsgType::Error) {
    r.error = m.error.value_or(ErrorCode::Internal);
    if (r.error == ErrorCode::Ok) r.error = ErrorCode::Internal;
  }
  r.message = m.text;
  r.remaining_ms = m.remaining_ms;
  r.keys = m.keys;
  r.reply = std::move(m);
  deliver(p, std::move(r));
}

}  // namespace keycast::kp
