// The key server: Prometheus metrics and /healthz over HTTP.
#include "keyplane/server_impl.hpp"

namespace keycast::kp {

// Slave: how far behind the master its keys may be. In step while the
// session whose subscription the master acknowledged is up (the master
// pushes every key down it as it makes it), so 0; otherwise the time since
// it last was in step, to within a maintenance tick.
double Server::Impl::replication_lag_s(MonoClock::time_point now) {
  if (upstream && upstream->connected() && repl_synced_connect != 0 &&
      repl_synced_connect == upstream->connects()) {
    repl_current_at = now;
    return 0;
  }
  return double(ms_between(repl_current_at, now)) / 1000.0;
}

// /healthz: empty when serving, else why not. A slave without an
// acknowledged session to the master still answers clients, but from keys
// that may be stale and without forwarding their billing: not healthy.
std::string Server::Impl::unhealthy_reason() {
  if (stopping) return "stopping";
  if (master()) return "";
  if (!upstream || !upstream->connected()) return "no session with the master";
  if (replication_lag_s(MonoClock::now()) > 0) return "subscribing to the master";
  return "";
}

std::string Server::Impl::metrics_text() {
  std::ostringstream o;
  o << "# HELP keycast_build_info The running keyd: version, protocol version, role.\n"
       "# TYPE keycast_build_info gauge\n"
    << "keycast_build_info{version=\"" << kSoftwareVersion << "\",protocol=\"" << int(kVersion)
    << "\",role=\"" << role_name(cfg.role) << "\"} 1\n";
  // A standby's keys are as it last read them, not the channels' keys.
  if (!master() || active) {
    const auto now = MonoClock::now();
    o << "# HELP keycast_key_remaining_seconds Remaining effective time of each channel's current and "
         "next key (absent: no such key).\n# TYPE keycast_key_remaining_seconds gauge\n";
    for (auto& [id, c] : chans) {
      View v = view(c, now);
      if (v.cur)
        o << "keycast_key_remaining_seconds{channel=\"" << id << "\",role=\"current\"} "
          << double(ms_between(now, v.cur->expires)) / 1000.0 << "\n";
      if (v.next)
        o << "keycast_key_remaining_seconds{channel=\"" << id << "\",role=\"next\"} "
          << double(ms_between(now, v.next->expires)) / 1000.0 << "\n";
    }
  }
  o << "# HELP keycast_requests_total Key-plane requests by message type.\n"
       "# TYPE keycast_requests_total counter\n";
  for (auto& [t, n] : req_by_type) o << "keycast_requests_total{type=\"" << t << "\"} " << n << "\n";
  o << "# HELP keycast_errors_total Error replies by code.\n# TYPE keycast_errors_total counter\n";
  for (auto& [t, n] : err_by_code) o << "keycast_errors_total{code=\"" << t << "\"} " << n << "\n";
  std::map<std::string, int> peers;
  for (auto* c : conns) peers[c->authed ? std::string(role_name(c->peer.role)) : "unauthenticated"]++;
  o << "# HELP keycast_connected_peers Open connections by peer role.\n"
       "# TYPE keycast_connected_peers gauge\n";
  for (const char* r : {"master", "slave", "sender", "client", "admin", "unauthenticated"})
    o << "keycast_connected_peers{role=\"" << r << "\"} " << peers[r] << "\n";
  o << "# HELP keycast_keys Keys held in memory by channel.\n# TYPE keycast_keys gauge\n";
  for (auto& [id, c] : chans) o << "keycast_keys{channel=\"" << id << "\"} " << c.keys.size() << "\n";
  o << "# HELP keycast_spi_high_water Highest SPI issued by channel.\n# TYPE keycast_spi_high_water gauge\n";
  for (auto& [id, c] : chans) o << "keycast_spi_high_water{channel=\"" << id << "\"} " << c.hwm << "\n";
  o << "# HELP keycast_handshakes_total TLS handshakes by result.\n# TYPE keycast_handshakes_total counter\n"
    << "keycast_handshakes_total{result=\"ok\"} " << handshakes_ok << "\n"
    << "keycast_handshakes_total{result=\"failed\"} " << handshakes_failed << "\n"
    << "# HELP keycast_peers_dropped_total Peers disconnected for misbehaving (bad frames, timeouts, "
       "write queue over its limit) or refused over the connection limit.\n"
    << "# TYPE keycast_peers_dropped_total counter\nkeycast_peers_dropped_total " << peers_dropped << "\n"
    << "# HELP keycast_accept_errors_total Accepts that failed for want of descriptors or memory (retried).\n"
    << "# TYPE keycast_accept_errors_total counter\nkeycast_accept_errors_total " << accept_errors << "\n"
    << "# HELP keycast_bad_frames_total Frames refused by the codec.\n"
    << "# TYPE keycast_bad_frames_total counter\nkeycast_bad_frames_total " << frames_bad << "\n"
    << "# HELP keycast_keys_made_total Keys this server made (kms-origin).\n"
    << "# TYPE keycast_keys_made_total counter\nkeycast_keys_made_total " << keys_made << "\n"
    << "# HELP keycast_keys_replicated_total Key pushes sent to slaves.\n"
    << "# TYPE keycast_keys_replicated_total counter\nkeycast_keys_replicated_total " << keys_replicated << "\n"
    << "# HELP keycast_key_seq Highest key replication sequence number held.\n"
    << "# TYPE keycast_key_seq gauge\nkeycast_key_seq " << repl_seq.load() << "\n"
    << "# HELP keycast_entitlement_seq Highest entitlement change held.\n"
    << "# TYPE keycast_entitlement_seq gauge\nkeycast_entitlement_seq " << ents.seq() << "\n"
    << "# HELP keycast_evictions_total Channels rekeyed because a client lost them.\n"
    << "# TYPE keycast_evictions_total counter\nkeycast_evictions_total " << evictions << "\n"
    << "# HELP keycast_usage_checkpoints_total Usage checkpoints booked, and those at or below the "
       "high-water mark.\n# TYPE keycast_usage_checkpoints_total counter\n"
    << "keycast_usage_checkpoints_total{result=\"booked\"} " << checkpoints_counted << "\n"
    << "keycast_usage_checkpoints_total{result=\"unchanged\"} " << checkpoints_unchanged << "\n"
    << "# HELP keycast_billing_duplicate_requests_total Re-sent billed key requests recognised by event id and not billed again.\n"
    << "# TYPE keycast_billing_duplicate_requests_total counter\nkeycast_billing_duplicate_requests_total "
    << duplicate_requests << "\n";
  o << "# HELP keycast_tls_cert_expiry_timestamp_seconds When the TLS certificate in force stops being valid "
       "(notAfter, Unix time): server = --tls-cert, ca = the earliest in --tls-ca.\n"
       "# TYPE keycast_tls_cert_expiry_timestamp_seconds gauge\n";
  if (tls_expiry.cert) o << "keycast_tls_cert_expiry_timestamp_seconds{cert=\"server\"} " << *tls_expiry.cert << "\n";
  if (tls_expiry.ca) o << "keycast_tls_cert_expiry_timestamp_seconds{cert=\"ca\"} " << *tls_expiry.ca << "\n";
  if (master()) {
    o << "# HELP keycast_master_active 1 while this master leads the masters sharing its database.\n"
         "# TYPE keycast_master_active gauge\nkeycast_master_active " << (active ? 1 : 0) << "\n"
      << "# HELP keycast_master_epoch Fencing epoch of the lead: this master's while active, else the "
         "leader's as last read.\n# TYPE keycast_master_epoch gauge\nkeycast_master_epoch "
      << (active ? epoch : seen.epoch) << "\n"
      << "# HELP keycast_master_lead_changes_total Times this master took the lead and stood down.\n"
         "# TYPE keycast_master_lead_changes_total counter\n"
      << "keycast_master_lead_changes_total{change=\"took\"} " << takeovers << "\n"
      << "keycast_master_lead_changes_total{change=\"stood_down\"} " << stepdowns << "\n"
      << "# HELP keycast_master_lead_errors_total Lease renewals and takeover attempts that failed on "
         "the database.\n# TYPE keycast_master_lead_errors_total counter\nkeycast_master_lead_errors_total "
      << lead_errors << "\n";
    // Per slave identity (one certificate may serve several slaves): what
    // this master has written to their sessions that TCP has not yet taken,
    // and the entitlement changes they have not yet confirmed.
    std::map<std::string, std::pair<uint64_t, uint64_t>> slaves;
    for (auto& w : subscribers)
      if (auto sl = w.lock(); sl && !sl->closed) {
        auto& [queued, behind] = slaves[sl->peer.identity];
        queued += sl->wq_bytes;
        behind = std::max<uint64_t>(behind, ents.seq() > sl->entitlements_acked ? ents.seq() - sl->entitlements_acked : 0);
      }
    o << "# HELP keycast_replication_slave_queued_bytes Replication pushes queued for a subscribed slave's "
         "session and not yet sent.\n# TYPE keycast_replication_slave_queued_bytes gauge\n";
    for (auto& [id, v] : slaves)
      o << "keycast_replication_slave_queued_bytes{slave=\"" << prom_label(id) << "\"} " << v.first << "\n";
    o << "# HELP keycast_replication_slave_entitlement_lag Entitlement changes a subscribed slave has not yet "
         "confirmed.\n# TYPE keycast_replication_slave_entitlement_lag gauge\n";
    for (auto& [id, v] : slaves)
      o << "keycast_replication_slave_entitlement_lag{slave=\"" << prom_label(id) << "\"} " << v.second << "\n";
    o << "# HELP keycast_billing_requests_total Billed key data requests by client.\n"
         "# TYPE keycast_billing_requests_total counter\n";
    auto rows = store->ledger().billing();
    for (auto& b : rows)
      o << "keycast_billing_requests_total{client=\"" << prom_label(b.identity) << "\"} " << b.requests << "\n";
    o << "# HELP keycast_billing_bytes_total Decipherable bytes billed by client.\n"
         "# TYPE keycast_billing_bytes_total counter\n";
    for (auto& b : rows)
      o << "keycast_billing_bytes_total{client=\"" << prom_label(b.identity) << "\"} " << b.bytes << "\n";
  } else {
    o << "# HELP keycast_billing_outbox Billing events waiting to be forwarded to the master.\n"
      << "# TYPE keycast_billing_outbox gauge\nkeycast_billing_outbox " << store->replication().outbox_size() << "\n"
      << "# HELP keycast_master_connected 1 while the replication link to the master is up.\n"
      << "# TYPE keycast_master_connected gauge\nkeycast_master_connected "
      << (upstream && upstream->connected() ? 1 : 0) << "\n"
      << "# HELP keycast_replication_lag_seconds How long this slave has not been in step with the master "
         "(0 while its acknowledged replication session is up).\n"
      << "# TYPE keycast_replication_lag_seconds gauge\nkeycast_replication_lag_seconds "
      << replication_lag_s(MonoClock::now()) << "\n";
  }
  return o.str();
}

namespace {

struct MetricsConn {
  explicit MetricsConn(asio::io_context& io) : sock(io), timer(io) {}
  tcp::socket sock;
  asio::steady_timer timer;
  asio::streambuf buf{8192};
  std::string out;
};

}  // namespace

void Server::Impl::metrics_accept() {
  metrics_acceptor.async_accept([this](boost::system::error_code ec, tcp::socket sock) {
    if (stopping) return;
    if (ec && accept_later(ec, metrics_accept_retry, &Impl::metrics_accept)) return;
    if (!ec) {
      auto m = std::make_shared<MetricsConn>(io);
      m->sock = std::move(sock);
      m->timer.expires_after(milliseconds(5000));
      m->timer.async_wait([m](boost::system::error_code ec) {
        if (!ec) {
          boost::system::error_code ig;
          m->sock.close(ig);
        }
      });
      asio::async_read_until(m->sock, m->buf, "\r\n\r\n", [this, m](boost::system::error_code ec, std::size_t) {
        if (ec) {
          m->timer.cancel();
          return;
        }
        // GET /healthz (a query string aside): health; any other path: the metrics.
        std::string line(asio::buffers_begin(m->buf.data()), asio::buffers_end(m->buf.data()));
        line = line.substr(0, line.find_first_of("\r\n"));
        const bool health = line.rfind("GET /healthz", 0) == 0 && (line.size() == 12 || line.find_first_of(" ?", 4) == 12);
        std::string status = "200 OK", type = "text/plain; version=0.0.4", body;
        if (health) {
          const std::string why = unhealthy_reason();
          if (!why.empty()) status = "503 Service Unavailable";
          body = (why.empty() ? "ok" : why) + "\n";
          type = "text/plain";
        } else {
          body = metrics_text();
        }
        m->out = "HTTP/1.0 " + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        asio::async_write(m->sock, asio::buffer(m->out), [m](boost::system::error_code, std::size_t) {
          boost::system::error_code ig;
          m->sock.shutdown(tcp::socket::shutdown_both, ig);
          m->sock.close(ig);
          m->timer.cancel();
        });
      });
    }
    metrics_accept();
  });
}

}  // namespace keycast::kp
