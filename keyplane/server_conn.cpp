// The key server: one peer's TLS connection (handshake, framing, timers,
// write queue) and accepting them.
#include <sys/resource.h>

#include <filesystem>

#include "keyplane/server_impl.hpp"

namespace keycast::kp {

Server::Impl::Conn::~Conn() {
  for (auto& f : wq) secure_zero(f.data(), f.size());
}

void Server::Impl::Conn::arm(int64_t ms) {
  timer.expires_after(milliseconds(ms));
  std::weak_ptr<Conn> w = shared_from_this();
  timer.async_wait([w, ms](boost::system::error_code ec) {
    auto self = w.lock();
    if (!ec && self) self->close("timeout after " + std::to_string(ms) + " ms");
  });
}

void Server::Impl::Conn::start() {
  boost::system::error_code ec;
  auto ep = s.lowest_layer().remote_endpoint(ec);
  remote = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
  s.lowest_layer().set_option(tcp::no_delay(true), ec);
  arm(srv.cfg.handshake_timeout_ms);
  auto self = shared_from_this();
  s.async_handshake(ssl::stream_base::server, [self](boost::system::error_code ec) {
    if (self->closed) return;
    if (ec) {
      ++self->srv.handshakes_failed;
      return self->close("TLS handshake failed: " + ec.message());
    }
    auto p = peer_info(self->s.native_handle());
    if (!p || p->role == Role::None) {
      ++self->srv.handshakes_failed;
      return self->close("certificate carries no keycast role");
    }
    // Handshake begun before a TLS reload: the new CA/CRL decide too.
    if (self->ctx != self->srv.ctx && !peer_still_valid(self->s.native_handle(), self->srv.ctx->native_handle())) {
      ++self->srv.handshakes_failed;
      return self->close("certificate not valid under the reloaded CA/CRL");
    }
    ++self->srv.handshakes_ok;
    self->peer = *p;
    self->srv.apply_acl(self->peer);
    self->authed = true;
    self->srv.vlog("peer " + self->remote + " is " + self->peer.identity + " (" +
                   std::string(role_name(self->peer.role)) + ", channels " +
                   self->peer.channels_text() + ")");
    self->read_header();
  });
}

void Server::Impl::Conn::read_header() {
  if (closed) return;
  if (subscribed)
    timer.cancel();
  else
    arm(srv.cfg.idle_timeout_ms);
  auto self = shared_from_this();
  asio::async_read(s, asio::buffer(hdr), [self](boost::system::error_code ec, std::size_t) {
    if (self->closed) return;
    if (ec) return self->close("read: " + ec.message());
    Header h;
    DecodeStatus st = decode_header(self->hdr.data(), self->hdr.size(), h);
    if (st != DecodeStatus::Ok) return self->protocol_error(h.req_id, st);
    self->arm(self->srv.cfg.frame_timeout_ms);
    self->body.resize(h.length);
    asio::async_read(self->s, asio::buffer(self->body),
                     [self, h](boost::system::error_code ec, std::size_t) {
      if (self->closed) return;
      if (ec) return self->close("read: " + ec.message());
      Message m;
      DecodeStatus st = decode_body(h, self->body.data(), self->body.size(), m);
      secure_zero(self->body.data(), self->body.size());
      self->body.clear();
      self->body.shrink_to_fit();
      if (st != DecodeStatus::Ok) return self->protocol_error(h.req_id, st);
      self->srv.handle(self, std::move(m));
      self->read_header();
    });
  });
}

void Server::Impl::Conn::protocol_error(uint32_t req_id, DecodeStatus st) {
  ++srv.frames_bad;
  ++srv.err_by_code[std::string(error_name(ErrorCode::BadRequest))];
  ErrorCode code = st == DecodeStatus::BadVersion ? ErrorCode::UnsupportedVersion
                   : st == DecodeStatus::TooLong  ? ErrorCode::TooLarge
                                                  : ErrorCode::BadRequest;
  send(make_error(req_id, code, "malformed frame: " + std::string(decode_status_name(st))));
  srv.vlog("peer " + remote + ": malformed frame (" + std::string(decode_status_name(st)) +
           "), closing");
  close_after = true;
  if (!writing) close("malformed frame");
}

void Server::Impl::Conn::send(const Message& m) {
  if (closed) return;
  auto f = encode(m);
  if (wq_bytes + f.size() > srv.cfg.max_write_queue) {
    secure_zero(f.data(), f.size());
    ++srv.peers_dropped;
    return close("write queue over " + std::to_string(srv.cfg.max_write_queue) + " bytes");
  }
  wq_bytes += f.size();
  wq.push_back(std::move(f));
  if (!writing) do_write();
}

void Server::Impl::Conn::do_write() {
  if (closed) return;
  if (wq.empty()) {
    writing = false;
    if (close_after) close("closing after error reply");
    return;
  }
  writing = true;
  auto self = shared_from_this();
  asio::async_write(s, asio::buffer(wq.front()), [self](boost::system::error_code ec, std::size_t) {
    self->writing = false;
    if (self->wq.empty()) return;  // (not expected: close() keeps the frame being written)
    auto& f = self->wq.front();
    self->wq_bytes -= std::min(self->wq_bytes, f.size());
    secure_zero(f.data(), f.size());
    self->wq.pop_front();
    if (self->closed) {
      self->drop_queue();
      return;
    }
    if (ec) return self->close("write: " + ec.message());
    self->do_write();
  });
}

void Server::Impl::Conn::close(const std::string& why) {
  if (closed) return;
  closed = true;
  srv.vlog("peer " + remote + (authed ? " (" + peer.identity + ")" : "") + " closed: " + why);
  boost::system::error_code ec;
  timer.cancel();
  s.lowest_layer().shutdown(tcp::socket::shutdown_both, ec);
  s.lowest_layer().close(ec);
  // The frame being written stays alive until its completion handler
  // runs (the write op still points at it); the rest go now.
  if (!writing) drop_queue();
  srv.conns.erase(this);
}

void Server::Impl::Conn::drop_queue() {
  for (auto& f : wq) secure_zero(f.data(), f.size());
  wq.clear();
  wq_bytes = 0;
}

void Server::Impl::apply_acl(PeerInfo& p) {
  auto it = cfg.acl.find(p.identity);
  if (it == cfg.acl.end()) return;
  if (cfg.acl_all[p.identity]) return;  // config allows all: the certificate decides
  if (p.all_channels) {
    p.all_channels = false;
    p.channels = it->second;
  } else {
    std::set<uint32_t> both;
    for (auto c : p.channels)
      if (it->second.count(c)) both.insert(c);
    p.channels = both;
  }
}

void Server::Impl::set_conn_limit() {
  conn_limit = cfg.max_connections;
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  // Every connection is a descriptor: use all the hard limit grants (the soft
  // one is often 1024 whatever the hard one says).
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit up = rl;
    up.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
  }
  if (rl.rlim_cur == RLIM_INFINITY) return;
  long open = 0;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) ++open;
  if (ec) return;
  const long room = std::max(0L, long(rl.rlim_cur) - open - kReservedFds);
  if (std::size_t(room) >= conn_limit) return;
  conn_limit = std::size_t(room);
  log(LogLevel::Warning, "--max-connections " + std::to_string(cfg.max_connections) + " exceeds what the open-file limit " +
                          std::to_string(rl.rlim_cur) + " allows: connections beyond " + std::to_string(conn_limit) +
                          " are refused (raise LimitNOFILE / ulimit -n)");
}

bool Server::Impl::accept_later(const boost::system::error_code& ec, asio::steady_timer& t, void (Impl::*again)()) {
  namespace errc = boost::system::errc;
  if (ec != asio::error::no_descriptors && ec != errc::too_many_files_open_in_system &&
      ec != asio::error::no_buffer_space && ec != asio::error::no_memory)
    return false;
  ++accept_errors;
  if (!accept_starved) {
    accept_starved = true;
    log(LogLevel::Warning, "accept: " + ec.message() + " with " + std::to_string(conns.size()) +
                            " connection(s) open; retrying every " + std::to_string(kAcceptRetryMs) + " ms");
  }
  t.expires_after(milliseconds(kAcceptRetryMs));
  t.async_wait([this, again](boost::system::error_code e) {
    if (!e && !stopping) (this->*again)();
  });
  return true;
}

void Server::Impl::accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket sock) {
    if (stopping) return;
    if (ec && accept_later(ec, accept_retry, &Impl::accept)) return;
    if (!ec) {
      accept_starved = false;
      if (conns.size() >= conn_limit) {
        boost::system::error_code ig;
        sock.close(ig);
        ++peers_dropped;
      } else {
        auto c = std::make_shared<Conn>(*this, std::move(sock));
        conns.insert(c.get());
        c->start();
      }
    }
    accept();
  });
}

}  // namespace keycast::kp
