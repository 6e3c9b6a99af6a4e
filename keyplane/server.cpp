#include "keyplane/server_impl.hpp"

namespace keycast::kp {

void Server::Impl::log(LogLevel l, const std::string& s) {
  if (l > level()) return;
  std::cerr << log_line(cfg.log_format, l, role_name(cfg.role), s, wall_now_ms()) << std::endl;
}

void Server::Impl::init() {
  if (cfg.role != Role::Master && cfg.role != Role::Slave)
    throw std::runtime_error("--role: must be master or slave");
  if (cfg.role == Role::Slave && cfg.masters.empty())
    throw std::runtime_error("--master: a slave needs the master's HOST:PORT");
  ctx = make_server_context(cfg.tls);
  tls_expiry = cert_expiry(ctx->native_handle());
  if (!cfg.audit_log.empty()) audit = std::make_unique<AuditLog>(cfg.audit_log);
  store = open_store(cfg.db, cfg.master_key_file);
  if (auto r = store->keys().meta("role"); r && *r != std::string(role_name(cfg.role)))
    throw std::runtime_error("--role " + std::string(role_name(cfg.role)) + ": database " +
                             shown_db(cfg.db) + " belongs to a " + *r);
  store->keys().set_meta("role", std::string(role_name(cfg.role)));
  worker = std::make_unique<StoreWorker>(open_store(cfg.db, cfg.master_key_file), io);
  if (master()) {
    lease_worker = std::make_unique<StoreWorker>(open_store(cfg.db, cfg.master_key_file), io);
    key_worker = std::make_unique<StoreWorker>(open_store(cfg.db, cfg.master_key_file), io);
  }
  if (auto id = store->keys().meta("instance_id")) {
    instance_id = *id;
  } else {
    uint8_t r[8];
    RAND_bytes(r, sizeof r);
    instance_id = hex_encode(r, sizeof r);
    store->keys().set_meta("instance_id", instance_id);
  }
  if (cfg.max_key_requests_per_s) shed = std::make_unique<LoadShedder>(cfg.max_key_requests_per_s);
  for (auto& [id, pol] : cfg.channels) {
    Chan& c = chans[id];
    c.pol = pol;
    c.configured = true;
    c.timer = std::make_unique<asio::steady_timer>(io);
  }
  // Read at start on every role, so a database this master key cannot
  // unwrap stops the process here; an active master reads it again when it
  // takes the lead.
  load_state();
  auto hp = parse_host_port(cfg.listen, "--listen");
  tcp::resolver res(io);
  boost::system::error_code ec;
  auto eps = res.resolve(hp.host, hp.port, ec);
  if (ec || eps.empty()) throw std::runtime_error("--listen " + cfg.listen + ": " + ec.message());
  open_acceptor(acceptor, eps.begin()->endpoint(), "--listen " + cfg.listen);
  bound_port = acceptor.local_endpoint().port();
  if (master()) advertised = advertised_address();
  if (!cfg.metrics.empty()) {
    auto mp = parse_host_port(cfg.metrics, "--metrics");
    auto meps = res.resolve(mp.host, mp.port, ec);
    if (ec || meps.empty()) throw std::runtime_error("--metrics " + cfg.metrics + ": " + ec.message());
    open_acceptor(metrics_acceptor, meps.begin()->endpoint(), "--metrics " + cfg.metrics);
    bound_metrics_port = metrics_acceptor.local_endpoint().port();
  }
}

void Server::Impl::open_acceptor(tcp::acceptor& a, const tcp::endpoint& ep, const std::string& what) {
  boost::system::error_code ec;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(1024, ec);
  if (ec) throw std::runtime_error(what + ": " + ec.message());
}

void Server::Impl::begin_serving() {
  set_conn_limit();
  accept();
  if (metrics_acceptor.is_open()) metrics_accept();
  log("listening on " + cfg.listen + " (" + std::to_string(port()) + "), " +
      std::to_string(chans.size()) + " channel(s), key seq " + std::to_string(repl_seq.load()) +
      (master() ? ", advertised as " + advertised : std::string()));
  if (master())
    lead_start();  // active at once when no other master leads
  else
    start_upstream();
  maintenance();
}

Chan& Server::Impl::chan_for(uint32_t id) {
  auto it = chans.find(id);
  if (it != chans.end()) return it->second;
  Chan& c = chans[id];
  c.pol = cfg.defaults;
  c.pol.id = id;
  c.timer = std::make_unique<asio::steady_timer>(io);
  return c;
}

void Server::Impl::do_stop() {
  if (stopping) return;
  // Everything accepted is committed and answered before the lead goes.
  try {
    drain_billing();
  } catch (const std::exception& e) {
    log(LogLevel::Error, std::string("billing commit at stop: ") + e.what());
  }
  if (active) {
    // A clean stop hands the lead over now instead of after the lease.
    try {
      store->lease().release_lead(epoch);
      log("released the lead (epoch " + std::to_string(epoch) + ")");
    } catch (const std::exception& e) {
      log(LogLevel::Warning, std::string("could not release the lead: ") + e.what());
    }
    active = false;
  }
  stopping = true;
  lead_timer.cancel();
  boost::system::error_code ec;
  acceptor.close(ec);
  metrics_acceptor.close(ec);
  accept_retry.cancel();
  metrics_accept_retry.cancel();
  maint.cancel();
  for (auto& [id, c] : chans)
    if (c.timer) c.timer->cancel();
  std::vector<Conn*> all(conns.begin(), conns.end());
  for (auto* c : all) c->close("server stopping");
  upstream.reset();
  worker->stop();
  if (lease_worker) lease_worker->stop();
  if (key_worker) key_worker->stop();
  io.stop();
}

Server::Server(ServerConfig cfg) : impl_(std::make_shared<Impl>(std::move(cfg))) { impl_->init(); }

Server::~Server() {
  stop();
  if (impl_->th.joinable()) impl_->th.join();
}

// A handler that throws must not take the key server down: log and go on.
static void run_loop(Server::Impl& impl);

void Server::run() {
  impl_->begin_serving();
  run_loop(*impl_);
}

void Server::start() {
  impl_->th = std::thread([impl = impl_] {
    impl->begin_serving();
    run_loop(*impl);
  });
}

static void run_loop(Server::Impl& impl) {
  for (;;) {
    try {
      impl.io.run();
      return;
    } catch (const std::exception& e) {
      impl.log(LogLevel::Error, std::string("unexpected error in event loop (continuing): ") + e.what());
    }
  }
}

std::string Server::reload_tls() {
  auto impl = impl_;
  auto done = std::make_shared<std::promise<std::string>>();
  auto fut = done->get_future();
  asio::post(impl->io, [impl, done] {
    try {
      impl->ctx = make_server_context(impl->cfg.tls);  // new connections
      impl->tls_expiry = cert_expiry(impl->ctx->native_handle());
      // Open sessions whose certificate the new files no longer accept (a
      // revoked or expired peer) end now rather than at their idle timeout.
      std::vector<Impl::Conn*> gone;
      for (auto* c : impl->conns)
        if (c->authed && !peer_still_valid(c->s.native_handle(), impl->ctx->native_handle())) gone.push_back(c);
      // A client whose certificate is no longer valid loses every channel it
      // was handed keys for in that session: evicted like a revoke.
      std::map<uint32_t, std::string> lost;
      for (auto* c : gone)
        if (c->peer.role == Role::Client)
          for (uint32_t ch : c->served) lost[ch] += (lost[ch].empty() ? "" : ",") + c->peer.identity;
      for (auto* c : gone) c->close("certificate not valid under the reloaded CA/CRL");
      // Only the active master rekeys; a standby holds no channel's keys.
      if (impl->master() && impl->active)
        for (auto& [id, who] : lost) {
          auto it = impl->chans.find(id);
          if (it == impl->chans.end() || !it->second.configured) continue;
          const std::string d = impl->evict(it->second, "certificate of " + who + " no longer valid");
          impl->write_audit(AuditEntry{"keyd", "local", "SIGHUP", "eviction", {id}, "ok", who + ": " + d});
        }
      impl->log("TLS files reloaded (certificate, key, CA" +
                std::string(impl->cfg.tls.crl.empty() ? "" : ", CRL " + impl->cfg.tls.crl) + "); " +
                std::to_string(gone.size()) + " open session(s) ended");
      AuditEntry a{"keyd", "local", "SIGHUP", "tls_reload", {}, "ok",
                   std::to_string(gone.size()) + " open session(s) ended"};
      impl->write_audit(a);
      done->set_value("");
    } catch (const std::exception& e) {
      impl->log(LogLevel::Error, std::string("TLS reload failed, previous files stay in force: ") + e.what());
      impl->write_audit(AuditEntry{"keyd", "local", "SIGHUP", "tls_reload", {}, "failed", e.what()});
      done->set_value(e.what());
    }
  });
  if (fut.wait_for(std::chrono::seconds(30)) != std::future_status::ready) return "server not running";
  return fut.get();
}

void Server::stop() {
  auto impl = impl_;
  if (impl->io.stopped()) return;
  std::weak_ptr<Impl> w = impl;
  asio::post(impl->io, [w] {
    if (auto self = w.lock()) self->do_stop();
  });
  if (impl->th.joinable() && impl->th.get_id() != std::this_thread::get_id()) impl->th.join();
}

uint16_t Server::port() const { return impl_->port(); }
uint16_t Server::metrics_port() const { return impl_->bound_metrics_port; }

}  // namespace keycast::kp
