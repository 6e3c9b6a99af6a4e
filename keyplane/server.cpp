#include "keyplane/server.hpp"

#include <openssl/rand.h>

#include <utility>  // before Boost.Asio (Boost 1.74, GCC 12, C++20)
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iomanip>
#include <iostream>
#include <future>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "common/hex.hpp"
#include "common/secure.hpp"
#include "keycast_version.hpp"
#include "keyplane/audit_log.hpp"
#include "keyplane/billing_render.hpp"
#include "keyplane/client/client.hpp"
#include "keyplane/entitlements.hpp"
#include "keyplane/escape.hpp"
#include "keyplane/hostport.hpp"
#include "keyplane/json.hpp"
#include "keyplane/store.hpp"
#include "keyplane/wall_time.hpp"

namespace keycast::kp {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

namespace {

int64_t ms_between(MonoClock::time_point a, MonoClock::time_point b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}


}  // namespace

struct MemKey {
  uint64_t seq = 0;
  uint32_t spi = 0;
  KeyMaterial material;
  MonoClock::time_point expires;
  int64_t lifetime_ms = 0;
};

struct Chan {
  ChannelPolicy pol;
  bool configured = false;
  std::map<uint32_t, MemKey> keys;                       // by SPI
  std::multimap<MonoClock::time_point, uint32_t> by_exp;  // expiry index
  uint32_t hwm = 255;  // SPIs 1..255 are reserved (RFC 4303); first key gets 256
  std::unique_ptr<asio::steady_timer> timer;
};

struct View {
  const MemKey* prev = nullptr;
  const MemKey* cur = nullptr;
  const MemKey* next = nullptr;
};

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  struct Conn;
  ServerConfig cfg;
  std::shared_ptr<ssl::context> ctx;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  tcp::acceptor metrics_acceptor{io};
  asio::steady_timer maint{io};
  asio::steady_timer commit_timer{io};
  std::unique_ptr<Store> store;
  std::map<uint32_t, Chan> chans;
  std::set<Conn*> conns;
  std::vector<std::weak_ptr<Conn>> subscribers;
  std::thread th;
  std::once_flag stop_once;
  bool stopping = false;
  MonoClock::time_point started = MonoClock::now();

  // group commit of billing events
  struct PendingBill {
    std::map<std::string, uint64_t> requests;  // requests without an event id
    std::vector<std::pair<std::string, uint64_t>> request_events;  // (identity, event id)
    std::set<std::tuple<std::string, uint32_t, uint32_t>> holders;
    struct Checkpoint {
      std::string sender;
      uint64_t instance;
      uint32_t channel, spi;
      uint64_t bytes, packets;
      std::size_t reply;  // index in replies
    };
    std::vector<Checkpoint> checkpoints;
    std::vector<std::pair<std::weak_ptr<Conn>, Message>> replies;
    bool scheduled = false, lazy = false;
  } pb;
  std::size_t last_batch = 0;
  // Re-sent billed requests recognised by event id (not billed again).
  uint64_t duplicate_requests = 0;
  // Request event ids are kept a day: far beyond any client's re-send horizon.
  static constexpr int64_t kRequestEventRetentionS = 86400;
  // Checkpoint high-water marks: a week after their epoch's last report.
  static constexpr int64_t kCheckpointRetentionMs = 7 * 86400 * 1000LL;
  uint64_t checkpoints_counted = 0, checkpoints_unchanged = 0;
  MonoClock::time_point last_event_prune{};

  // slave
  std::unique_ptr<Client> upstream;
  std::atomic<uint64_t> repl_seq{0};
  bool forward_inflight = false;
  std::string instance_id;

  // entitlements and the admin audit trail
  Entitlements ents;
  std::unique_ptr<AuditLog> audit;
  AuditEntry* audit_pending = nullptr;  // the admin action being handled (its errors are its result)
  // A grant/revoke waiting for every subscribed slave to confirm it.
  struct Confirm {
    std::weak_ptr<Conn> admin;
    Message reply;
    uint64_t seq;
    std::vector<std::pair<std::string, std::weak_ptr<Conn>>> slaves;
    std::unique_ptr<asio::steady_timer> timer;
    AuditEntry entry;
  };
  std::list<Confirm> confirms;
  // Master: the sessions of each channel's senders (eviction pushes).
  std::map<uint32_t, std::vector<std::weak_ptr<Conn>>> chan_senders;
  uint64_t evictions = 0;

  // metrics
  std::map<std::string, uint64_t> req_by_type, err_by_code;
  uint64_t handshakes_ok = 0, handshakes_failed = 0, peers_dropped = 0, frames_bad = 0;
  uint64_t keys_made = 0, keys_replicated = 0;
  CertExpiry tls_expiry;  // of the TLS files in force (set again by each reload)
  // Slave: the upstream connection (Client::connects() numbering, 0: none)
  // whose subscription the master acknowledged, and when the slave was last
  // seen in step with the master.
  uint64_t repl_synced_connect = 0;
  MonoClock::time_point repl_current_at = started;

  explicit Impl(ServerConfig c) : cfg(std::move(c)) {}

  // ---------------------------------------------------------------- logging
  void log(LogLevel l, const std::string& s) {
    if (l > level()) return;
    std::cerr << log_line(cfg.log_format, l, role_name(cfg.role), s, wall_now_ms()) << std::endl;
  }
  void log(const std::string& s) { log(LogLevel::Info, s); }
  void vlog(const std::string& s) { log(LogLevel::Debug, s); }
  LogLevel level() const { return cfg.verbose ? LogLevel::Debug : cfg.log_level; }

  bool master() const { return cfg.role == Role::Master; }

  // ---------------------------------------------------------------- setup
  void init() {
    if (cfg.role != Role::Master && cfg.role != Role::Slave)
      throw std::runtime_error("--role: must be master or slave");
    if (cfg.role == Role::Slave && cfg.masters.empty())
      throw std::runtime_error("--master: a slave needs the master's HOST:PORT");
    ctx = make_server_context(cfg.tls);
    tls_expiry = cert_expiry(ctx->native_handle());
    if (!cfg.audit_log.empty()) audit = std::make_unique<AuditLog>(cfg.audit_log);
    store = open_store(cfg.db, cfg.master_key_file);
    for (auto& [id, e] : store->load_entitlements()) ents.set(id, std::move(e));
    if (auto r = store->meta("role"); r && *r != std::string(role_name(cfg.role)))
      throw std::runtime_error("--role " + std::string(role_name(cfg.role)) + ": database " +
                               shown_db(cfg.db) + " belongs to a " + *r);
    store->set_meta("role", std::string(role_name(cfg.role)));
    if (auto id = store->meta("instance_id")) {
      instance_id = *id;
    } else {
      uint8_t r[8];
      RAND_bytes(r, sizeof r);
      instance_id = hex_encode(r, sizeof r);
      store->set_meta("instance_id", instance_id);
    }
    for (auto& [id, pol] : cfg.channels) {
      Chan& c = chans[id];
      c.pol = pol;
      c.configured = true;
      c.timer = std::make_unique<asio::steady_timer>(io);
    }
    // Keys: recompute monotonic deadlines from the stored wall-clock deadline.
    auto now = MonoClock::now();
    int64_t wnow = wall_now_ms();
    for (auto& sk : store->load_keys()) {
      Chan& c = chan_for(sk.channel);
      if (sk.expires_wall_ms - wnow < -(c.pol.grace_ms + cfg.retention_ms)) {
        repl_seq = std::max<uint64_t>(repl_seq, sk.seq);
        continue;
      }
      MemKey k;
      k.seq = sk.seq;
      k.spi = sk.spi;
      k.material = sk.material;
      k.expires = now + milliseconds(sk.expires_wall_ms - wnow);
      k.lifetime_ms = sk.lifetime_ms;
      insert_mem(c, std::move(k));
      repl_seq = std::max<uint64_t>(repl_seq, sk.seq);
    }
    for (auto& [ch, hwm] : store->load_spi_hwm()) {
      Chan& c = chan_for(ch);
      c.hwm = std::max(c.hwm, hwm);
    }
    auto hp = parse_host_port(cfg.listen, "--listen");
    tcp::resolver res(io);
    boost::system::error_code ec;
    auto eps = res.resolve(hp.host, hp.port, ec);
    if (ec || eps.empty()) throw std::runtime_error("--listen " + cfg.listen + ": " + ec.message());
    open_acceptor(acceptor, eps.begin()->endpoint(), "--listen " + cfg.listen);
    bound_port = acceptor.local_endpoint().port();
    if (!cfg.metrics.empty()) {
      auto mp = parse_host_port(cfg.metrics, "--metrics");
      auto meps = res.resolve(mp.host, mp.port, ec);
      if (ec || meps.empty()) throw std::runtime_error("--metrics " + cfg.metrics + ": " + ec.message());
      open_acceptor(metrics_acceptor, meps.begin()->endpoint(), "--metrics " + cfg.metrics);
      bound_metrics_port = metrics_acceptor.local_endpoint().port();
    }
  }

  void open_acceptor(tcp::acceptor& a, const tcp::endpoint& ep, const std::string& what) {
    boost::system::error_code ec;
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(1024, ec);
    if (ec) throw std::runtime_error(what + ": " + ec.message());
  }

  void begin_serving() {
    accept();
    if (metrics_acceptor.is_open()) metrics_accept();
    if (master()) {
      for (auto& [id, c] : chans) schedule(c);
    } else {
      start_upstream();
    }
    maintenance();
    log("listening on " + cfg.listen + " (" + std::to_string(port()) + "), " +
        std::to_string(chans.size()) + " channel(s), key seq " + std::to_string(repl_seq.load()));
  }

  uint16_t bound_port = 0, bound_metrics_port = 0;
  uint16_t port() const { return bound_port; }

  Chan& chan_for(uint32_t id) {
    auto it = chans.find(id);
    if (it != chans.end()) return it->second;
    Chan& c = chans[id];
    c.pol = cfg.defaults;
    c.pol.id = id;
    c.timer = std::make_unique<asio::steady_timer>(io);
    return c;
  }

  // ---------------------------------------------------------------- key state
  void insert_mem(Chan& c, MemKey k) {
    auto it = c.keys.find(k.spi);
    if (it != c.keys.end()) erase_index(c, it->second);
    c.by_exp.emplace(k.expires, k.spi);
    c.hwm = std::max(c.hwm, k.spi);
    c.keys[k.spi] = std::move(k);
  }
  void erase_index(Chan& c, const MemKey& k) {
    auto range = c.by_exp.equal_range(k.expires);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second == k.spi) {
        c.by_exp.erase(it);
        break;
      }
  }

  View view(const Chan& c, MonoClock::time_point now) const {
    View v;
    auto it = c.by_exp.upper_bound(now);
    if (it != c.by_exp.end()) {
      v.cur = &c.keys.at(it->second);
      auto n = std::next(it);
      if (n != c.by_exp.end()) v.next = &c.keys.at(n->second);
    }
    if (it != c.by_exp.begin()) {
      auto p = std::prev(it);
      if (p->first > now - milliseconds(c.pol.grace_ms)) v.prev = &c.keys.at(p->second);
    }
    return v;
  }

  WireKey wire(const Chan& c, const MemKey& k, Slot slot, MonoClock::time_point now) const {
    WireKey w;
    w.channel = c.pol.id;
    w.spi = k.spi;
    w.material = k.material;
    w.remaining_ms = ms_between(now, k.expires);
    w.lifetime_ms = k.lifetime_ms;
    w.slot = slot;
    return w;
  }

  std::optional<int64_t> cur_remaining(const Chan& c, MonoClock::time_point now) const {
    View v = view(c, now);
    if (!v.cur) return std::nullopt;
    return ms_between(now, v.cur->expires);
  }

  // Persist (keys are durable before anyone sees them), index, replicate.
  const MemKey& add_key(Chan& c, uint32_t spi, const KeyMaterial& m, MonoClock::time_point expires,
                        int64_t lifetime_ms, uint64_t seq) {
    auto now = MonoClock::now();
    StoredKey sk;
    sk.seq = seq;
    sk.channel = c.pol.id;
    sk.spi = spi;
    sk.material = m;
    sk.expires_wall_ms = wall_now_ms() + ms_between(now, expires);
    sk.lifetime_ms = lifetime_ms;
    store->begin();
    try {
      sk.seq = store->put_key(sk);
      store->set_spi_hwm(c.pol.id, std::max(c.hwm, spi));
      store->commit();
    } catch (...) {
      store->rollback();
      throw;
    }
    MemKey k;
    k.seq = sk.seq;
    k.spi = spi;
    k.material = m;
    k.expires = expires;
    k.lifetime_ms = lifetime_ms;
    insert_mem(c, std::move(k));
    repl_seq = std::max<uint64_t>(repl_seq, sk.seq);
    const MemKey& ref = c.keys.at(spi);
    if (master()) replicate(c, ref);
    return ref;
  }

  const MemKey& make_key(Chan& c, MonoClock::time_point expires) {
    if (c.hwm == 0xffffffffu) throw std::runtime_error("SPI space of the channel is exhausted");
    uint32_t spi = c.hwm + 1;
    KeyMaterial m = KeyMaterial::generate(c.pol.suite);
    ++keys_made;
    const MemKey& k = add_key(c, spi, m, expires, c.pol.lifetime_ms, 0);
    vlog("channel " + std::to_string(c.pol.id) + ": made key spi " + std::to_string(spi) +
         " remaining " + std::to_string(ms_between(MonoClock::now(), expires)) + " ms");
    return k;
  }

  // kms-origin on the master: keep a current key, and make the next one when
  // the current key's remaining time reaches P1.
  void schedule(Chan& c) {
    if (!master() || c.pol.origin != KeyOrigin::Kms || !c.configured || stopping) return;
    MonoClock::time_point when;
    try {
      for (;;) {
        auto now = MonoClock::now();
        View v = view(c, now);
        if (!v.cur) {
          make_key(c, now + milliseconds(c.pol.lifetime_ms));
          continue;
        }
        if (!v.next) {
          auto at_p1 = v.cur->expires - milliseconds(c.pol.p1_ms);
          if (at_p1 <= now) {
            make_key(c, v.cur->expires + milliseconds(c.pol.lifetime_ms));
            continue;
          }
          when = at_p1;
        } else {
          when = v.cur->expires;
        }
        break;
      }
    } catch (const std::exception& e) {
      log(LogLevel::Error, "channel " + std::to_string(c.pol.id) + ": cannot make key: " + e.what());
      when = MonoClock::now() + milliseconds(1000);
    }
    c.timer->expires_at(when + milliseconds(1));
    uint32_t id = c.pol.id;
    c.timer->async_wait([this, id](boost::system::error_code ec) {
      if (!ec) schedule(chans.at(id));
    });
  }

  void prune(Chan& c, MonoClock::time_point now) {
    auto limit = now - milliseconds(c.pol.grace_ms + cfg.retention_ms);
    while (!c.by_exp.empty() && c.by_exp.begin()->first < limit) {
      uint32_t spi = c.by_exp.begin()->second;
      c.by_exp.erase(c.by_exp.begin());
      c.keys.erase(spi);
    }
  }

  // ---------------------------------------------------------------- connections
  struct Conn : std::enable_shared_from_this<Conn> {
    Conn(Impl& s, tcp::socket sock) : srv(s), ctx(s.ctx), s(std::move(sock), *ctx), timer(s.io) {}
    ~Conn() {
      for (auto& f : wq) secure_zero(f.data(), f.size());
    }
    Impl& srv;
    std::shared_ptr<ssl::context> ctx;  // accepted under this one, even after a reload
    ssl::stream<tcp::socket> s;
    asio::steady_timer timer;
    std::array<uint8_t, kHeaderLen> hdr{};
    std::vector<uint8_t> body;
    std::deque<std::vector<uint8_t>> wq;
    std::size_t wq_bytes = 0;
    bool writing = false, closed = false, close_after = false, subscribed = false, authed = false;
    uint64_t entitlements_acked = 0;  // a subscribed slave: entitlement changes applied up to
    std::set<uint32_t> served;        // channels this session was handed keys for
    PeerInfo peer;
    std::string remote;

    void arm(int64_t ms) {
      timer.expires_after(milliseconds(ms));
      std::weak_ptr<Conn> w = shared_from_this();
      timer.async_wait([w, ms](boost::system::error_code ec) {
        auto self = w.lock();
        if (!ec && self) self->close("timeout after " + std::to_string(ms) + " ms");
      });
    }

    void start() {
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

    void read_header() {
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

    void protocol_error(uint32_t req_id, DecodeStatus st) {
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

    void send(const Message& m) {
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

    void do_write() {
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

    void close(const std::string& why) {
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

    void drop_queue() {
      for (auto& f : wq) secure_zero(f.data(), f.size());
      wq.clear();
      wq_bytes = 0;
    }
  };

  void apply_acl(PeerInfo& p) {
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

  void accept() {
    acceptor.async_accept([this](boost::system::error_code ec, tcp::socket sock) {
      if (stopping) return;
      if (!ec) {
        if (conns.size() >= cfg.max_connections) {
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

  // ---------------------------------------------------------------- requests
  void reply_error(const std::shared_ptr<Conn>& c, const Message& req, ErrorCode code,
                   const std::string& text, std::optional<int64_t> rem = std::nullopt) {
    ++err_by_code[std::string(error_name(code))];
    if (audit_pending) {
      audit_pending->result = std::string(error_name(code));
      audit_pending->detail = text;
    }
    c->send(make_error(req.req_id, code, text, rem));
  }

  bool require(const std::shared_ptr<Conn>& c, const Message& m, std::initializer_list<Role> roles) {
    for (Role r : roles)
      if (c->peer.role == r) return true;
    reply_error(c, m, ErrorCode::NotAuthorised,
                std::string(type_name(m.type)) + " is not allowed for role " +
                    std::string(role_name(c->peer.role)));
    return false;
  }

  bool require_master(const std::shared_ptr<Conn>& c, const Message& m) {
    if (master()) return true;
    reply_error(c, m, ErrorCode::NotMaster, std::string(type_name(m.type)) + " goes to the master");
    return false;
  }

  Chan* channel_for(const std::shared_ptr<Conn>& c, const Message& m) {
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

  void handle(const std::shared_ptr<Conn>& c, Message m) {
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
    } catch (const std::exception& e) {
      log(LogLevel::Error, std::string("internal error: ") + e.what());
      reply_error(c, m, ErrorCode::Internal, "internal error");
    }
  }

  void on_key_request(const std::shared_ptr<Conn>& c, const Message& m) {
    if (!require(c, m, {Role::Client, Role::Sender, Role::Admin})) return;
    Chan* ch = channel_for(c, m);
    if (!ch) return;
    auto now = MonoClock::now();
    prune(*ch, now);
    View v = view(*ch, now);
    if (master() && ch->pol.origin == KeyOrigin::Kms &&
        (!v.cur || (!v.next && v.cur->expires - milliseconds(ch->pol.p1_ms) <= now))) {
      schedule(*ch);  // the P1 timer has not run yet (busy loop): make the key now
      v = view(*ch, now);
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

  void on_generate(const std::shared_ptr<Conn>& c, const Message& m) {
    if (!require(c, m, {Role::Sender}) || !require_master(c, m)) return;
    Chan* ch = channel_for(c, m);
    if (!ch) return;
    note_sender(c, ch->pol.id);
    if (ch->pol.origin != KeyOrigin::Kms)
      return reply_error(c, m, ErrorCode::WrongOrigin,
                         "channel " + std::to_string(ch->pol.id) + " is sender-origin: upload keys");
    auto now = MonoClock::now();
    View v = view(*ch, now);
    if (!v.cur) {
      make_key(*ch, now + milliseconds(ch->pol.lifetime_ms));
      v = view(*ch, now);
    }
    if ((*m.which == Which::Next || *m.which == Which::Both) && !v.next) {
      make_key(*ch, v.cur->expires + milliseconds(ch->pol.lifetime_ms));
      v = view(*ch, now);
    }
    Message r;
    r.type = MsgType::KeyReply;
    r.req_id = m.req_id;
    r.channel = ch->pol.id;
    r.remaining_ms = ms_between(now, v.cur->expires);
    if (*m.which != Which::Next) r.keys.push_back(wire(*ch, *v.cur, Slot::Current, now));
    if (*m.which != Which::Current) r.keys.push_back(wire(*ch, *v.next, Slot::Next, now));
    schedule(*ch);
    c->send(r);
  }

  void on_upload(const std::shared_ptr<Conn>& c, const Message& m) {
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

  void on_usage(const std::shared_ptr<Conn>& c, const Message& m) {
    if (!require(c, m, {Role::Sender}) || !require_master(c, m)) return;
    Chan* ch = channel_for(c, m);
    if (!ch) return;
    store->begin();
    bool fresh;
    try {
      fresh = store->add_usage(c->peer.identity, *m.event_id, ch->pol.id, *m.spi, *m.bytes, *m.packets,
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
  void on_checkpoint(const std::shared_ptr<Conn>& c, const Message& m) {
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
  void on_checkpoints(const std::shared_ptr<Conn>& c, const Message& m) {
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

  // Billing events are made durable in one transaction per batch (group
  // commit); the replies they belong to are released only after the commit.
  // A request with an event id counts once however often it is re-sent (its
  // reply lost to a crash or a cut): the master keeps the ids it has counted,
  // a slave forwards the id with the event so the master decides.
  void bill_and_reply(const std::shared_ptr<Conn>& c, Message r, std::optional<uint64_t> event_id) {
    if (event_id)
      pb.request_events.emplace_back(c->peer.identity, *event_id);
    else
      pb.requests[c->peer.identity] += 1;
    for (const auto& k : r.keys) pb.holders.emplace(c->peer.identity, k.channel, k.spi);
    pb.replies.emplace_back(c, std::move(r));
    schedule_commit();
  }

  // lazy: nobody waits for this event's reply (a checkpoint): commit within
  // kLazyCommit, together with whatever else arrives meanwhile, so a
  // thousand channels' checkpoints cost one fsync, not a thousand in the
  // way of key requests. A key request arriving meanwhile commits them all
  // at once.
  static constexpr std::chrono::milliseconds kLazyCommit{20};
  void schedule_commit(bool lazy = false) {
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

  void commit_billing() {
    PendingBill b = std::move(pb);
    pb = PendingBill{};
    last_batch = b.replies.size();
    if (b.replies.empty() && b.requests.empty() && b.request_events.empty()) return;
    bool ok = true;
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
      for (auto& [id, ev] : b.request_events) {
        if (master()) {
          if (!store->add_request_event(id, ev, 1, at)) ++duplicate_requests;
        } else {
          store->outbox_add(id, 1, 0, 0, ev, at);
        }
      }
      for (auto& [id, ch, spi] : b.holders) {
        if (master())
          store->add_holder(id, ch, spi);
        else
          store->outbox_add(id, 0, ch, spi, 0, at);
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
      else
        reply_error(c, r, ErrorCode::Internal, "billing store unavailable");
    }
  }

  // ---------------------------------------------------------------- admin
  void on_admin(const std::shared_ptr<Conn>& c, const Message& m) {
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
      case MsgType::AdminChannels: r.text = channels_json(now); break;
      case MsgType::AdminBilling:
      case MsgType::AdminInvoices:
      case MsgType::AdminBillingClose: {
        if (!require_master(c, m)) return;
        TextFormat f = TextFormat::Table;
        if (!m.text.empty() && !parse_text_format(m.text, f))
          return reply_error(c, m, ErrorCode::BadRequest, "format must be table, json or csv");
        if (m.type == MsgType::AdminBilling) {
          const int64_t since = m.since_ms.value_or(INT64_MIN), until = m.until_ms.value_or(kAllTime);
          r.text = render_billing(store->billing(since, until), cfg.tariffs, since, until, f);
        } else if (m.type == MsgType::AdminInvoices) {
          r.text = render_invoices(store->invoices(), f);
        } else {
          // Everything accepted before the close is in the ledger first.
          commit_billing();
          std::vector<Invoice> inv;
          try {
            inv = store->close_period(*m.until_ms, wall_now_ms(), c->peer.identity, cfg.tariffs);
          } catch (const std::invalid_argument& e) {
            return reply_error(c, m, ErrorCode::BadRequest,
                               std::string(e.what()) + " (closed until " +
                                   (store->closed_until_ms() == INT64_MIN ? std::string("never")
                                                                           : format_rfc3339(store->closed_until_ms())) +
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

  static const char* audit_action(MsgType t) {
    switch (t) {
      case MsgType::AdminRotate: return "rotate";
      case MsgType::AdminBillingClose: return "billing_close";
      case MsgType::AdminGrant: return "grant";
      case MsgType::AdminRevoke: return "revoke";
      default: return nullptr;
    }
  }
  AuditEntry audit_entry(const std::shared_ptr<Conn>& c, const std::string& action) {
    AuditEntry e;
    e.who = c->peer.identity;
    e.role = std::string(role_name(c->peer.role));
    e.from = c->remote;
    e.action = action;
    return e;
  }
  void write_audit(const AuditEntry& e) {
    if (audit && !audit->write(e))
      log(LogLevel::Error, "AUDIT LOG WRITE FAILED (" + cfg.audit_log + "): " + e.action + " by " + e.who + ": " +
          std::strerror(errno));
  }

  // grant/revoke: applied and made durable on the master at once, pushed to
  // every subscribed slave, answered when each has confirmed it (or after
  // --entitlement-sync-ms with not_confirmed naming the silent ones: the
  // change stands, and a slave that reconnects gets every entitlement
  // before any key, so it can never hand a later key to a revoked client).
  void change_entitlement(const std::shared_ptr<Conn>& c, const Message& m, AuditEntry entry) {
    const std::set<uint32_t> list(m.channel_list.begin(), m.channel_list.end());
    const Entitlement none;
    const Entitlement* old = ents.find(m.text);
    Entitlement e = m.type == MsgType::AdminGrant ? granted(old ? *old : none, m.all, list)
                                                   : revoked(old ? *old : none, m.all, list);
    std::vector<uint32_t> lost;
    for (auto& [id, ch] : chans)
      if ((old ? *old : none).allows(id) && !e.allows(id)) lost.push_back(id);
    e.seq = ents.seq() + 1;
    try {
      store->begin();
      store->put_entitlement(m.text, e);
      store->set_meta("entitlement_seq", std::to_string(e.seq));
      store->commit();
    } catch (const std::exception& ex) {
      store->rollback();
      entry.result = "internal";
      entry.detail += ": " + std::string(ex.what());
      write_audit(entry);
      return reply_error(c, m, ErrorCode::Internal, "entitlement store unavailable");
    }
    ents.set(m.text, e);
    const Message push = entitlement_frame(m.text, e);
    Confirm cf;
    cf.admin = c;
    cf.seq = e.seq;
    cf.entry = std::move(entry);
    if (!lost.empty()) {
      std::string l;
      for (uint32_t id : lost) l += (l.empty() ? "" : ",") + std::to_string(id);
      cf.entry.detail += ", channels lost: " + l;
    }
    cf.reply.type = MsgType::AdminReply;
    cf.reply.req_id = m.req_id;
    cf.reply.text = entitlement_json(m.text, e);
    for (auto& w : subscribers)
      if (auto s = w.lock(); s && !s->closed) {
        s->send(push);
        cf.slaves.emplace_back(s->peer.identity + " " + s->remote, w);
      }
    log(std::string(m.type == MsgType::AdminGrant ? "grant" : "revoke") + " by " + c->peer.identity +
        ": " + cf.reply.text + ", pushed to " + std::to_string(cf.slaves.size()) + " slave(s)");
    // After the entitlement push: a slave stores the revocation before it
    // can see the fresh key.
    for (uint32_t id : lost) {
      auto it = chans.find(id);
      if (it == chans.end() || !it->second.configured) continue;
      const std::string d = evict(it->second, "revoke " + m.text);
      write_audit(AuditEntry{cf.entry.who, cf.entry.role, cf.entry.from, "eviction", {id}, "ok",
                             "identity " + m.text + ": " + d});
    }
    cf.timer = std::make_unique<asio::steady_timer>(io);
    confirms.push_back(std::move(cf));
    auto it = std::prev(confirms.end());
    it->timer->expires_after(milliseconds(cfg.entitlement_sync_ms));
    it->timer->async_wait([this, it](boost::system::error_code ec) {
      if (!ec) finish_confirm(it, true);
    });
    check_confirms();
  }

  void note_sender(const std::shared_ptr<Conn>& c, uint32_t ch) {
    auto& v = chan_senders[ch];
    for (auto it = v.begin(); it != v.end();) {
      auto s = it->lock();
      if (s.get() == c.get()) return;
      it = !s || s->closed ? v.erase(it) : std::next(it);
    }
    v.push_back(c);
  }

  // A client lost the channel: it may hold the current key and the next
  // one (fetched at P2, from this server or any slave; holdings reach the
  // master late, so every next key counts as handed out). The next key is
  // discarded everywhere (its end moved into the past and replicated, so
  // slaves drop it too), a fresh one made (kms-origin), the current key cut
  // to end within the channel's evict time, and the channel's senders told
  // at once on their open sessions. A sender-origin sender makes and uploads
  // the fresh key itself. From the switch on nothing is sent under a key
  // the client ever received.
  std::string evict(Chan& ch, const std::string& why) {
    const auto now = MonoClock::now();
    prune(ch, now);
    View v = view(ch, now);
    if (!v.cur) return "channel " + std::to_string(ch.pol.id) + ": no current key";
    const MemKey cur = *v.cur;
    std::optional<MemKey> old_next;
    if (v.next) old_next = *v.next;
    // The push takes a moment to reach the sender and the sender a moment
    // to act: aim a little early so the switch lands within evict_ms.
    const auto margin = milliseconds(std::min<int64_t>(250, ch.pol.evict_ms / 4));
    const auto target = std::min(cur.expires, now + milliseconds(ch.pol.evict_ms) - margin);
    if (old_next)
      add_key(ch, old_next->spi, old_next->material,
              now - milliseconds(ch.pol.grace_ms + cfg.retention_ms + 1000), old_next->lifetime_ms, 0);
    prune(ch, now);
    const MemKey& c2 = add_key(ch, cur.spi, cur.material, target, cur.lifetime_ms, 0);
    Message p;
    p.type = MsgType::KeyPush;
    p.req_id = 0;
    p.channel = ch.pol.id;
    p.remaining_ms = ms_between(now, target);
    p.text = why;
    p.keys.push_back(wire(ch, c2, Slot::Current, now));
    std::string fresh = "sender makes it";
    if (ch.pol.origin == KeyOrigin::Kms) {
      const MemKey& f = make_key(ch, target + milliseconds(ch.pol.lifetime_ms));
      p.keys.push_back(wire(ch, f, Slot::Next, now));
      fresh = "spi " + std::to_string(f.spi);
    }
    std::size_t told = 0;
    for (auto& w : chan_senders[ch.pol.id])
      if (auto s = w.lock(); s && !s->closed) {
        s->send(p);
        ++told;
      }
    for (auto& k : p.keys) secure_zero(k.material.key, sizeof k.material.key);
    ++evictions;
    schedule(ch);
    const std::string d = "channel " + std::to_string(ch.pol.id) + ": current spi " + std::to_string(cur.spi) +
                          " ends in " + std::to_string(*p.remaining_ms) + " ms, next " +
                          (old_next ? "spi " + std::to_string(old_next->spi) + " discarded" : "none") +
                          ", fresh " + fresh + ", " + std::to_string(told) + " sender session(s) told";
    log("eviction (" + why + "): " + d);
    return d;
  }

  Message entitlement_frame(const std::string& id, const Entitlement& e) {
    Message p;
    p.type = MsgType::ReplEntitlement;
    p.req_id = 0;
    p.seq = e.seq;
    p.text = id;
    p.mode = e.mode;
    p.channel_list.assign(e.channels.begin(), e.channels.end());
    return p;
  }

  void on_repl_ack(const std::shared_ptr<Conn>& c, const Message& m) {
    if (!require(c, m, {Role::Slave}) || !require_master(c, m)) return;
    c->entitlements_acked = std::max(c->entitlements_acked, *m.seq);
    Message r;
    r.type = MsgType::Ack;
    r.req_id = m.req_id;
    c->send(r);
    check_confirms();
  }

  void check_confirms() {
    for (auto it = confirms.begin(); it != confirms.end();) {
      auto next = std::next(it);
      bool all = true;
      for (auto& [name, w] : it->slaves) {
        auto s = w.lock();
        all &= s && s->entitlements_acked >= it->seq;
      }
      if (all) finish_confirm(it, false);
      it = next;
    }
  }

  void finish_confirm(std::list<Confirm>::iterator it, bool timed_out) {
    Confirm& cf = *it;
    std::string missing;
    std::size_t confirmed = 0;
    for (auto& [name, w] : cf.slaves) {
      auto s = w.lock();
      if (s && s->entitlements_acked >= cf.seq)
        ++confirmed;
      else
        missing += (missing.empty() ? "" : ", ") + name;
    }
    if (auto a = cf.admin.lock()) {
      if (missing.empty() || !timed_out) {
        a->send(cf.reply);
      } else {
        cf.entry.result = std::string(error_name(ErrorCode::NotConfirmed));
        ++err_by_code[cf.entry.result];
        a->send(make_error(cf.reply.req_id, ErrorCode::NotConfirmed,
                           "applied on the master, not confirmed within " +
                               std::to_string(cfg.entitlement_sync_ms) + " ms by: " + missing));
      }
    }
    cf.entry.detail += ", confirmed by " + std::to_string(confirmed) + " of " +
                       std::to_string(cf.slaves.size()) + " slave(s)";
    write_audit(cf.entry);
    cf.timer->cancel();
    confirms.erase(it);
  }

  // Forced rotation: the current key's remaining time is cut to P1 (if longer)
  // and the next key is made now; holders learn the new time from their next
  // reply (every reply carries the remaining time).
  void rotate(Chan& ch, MonoClock::time_point now) {
    View v = view(ch, now);
    if (!v.cur) {
      schedule(ch);
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
  }

  std::string status_json() {
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
      o["billing_duplicate_requests"] = duplicate_requests;
      o["usage_checkpoints"] = checkpoints_counted;
      o["usage_checkpoints_unchanged"] = checkpoints_unchanged;
      o["billing_closed_until"] =
          store->closed_until_ms() == INT64_MIN ? Json(nullptr) : Json(format_rfc3339(store->closed_until_ms()));
    } else {
      o["master_connected"] = upstream && upstream->connected();
      o["billing_outbox"] = store->outbox_size();
    }
    return json_dump(o);
  }

  // One entry per channel: its policy, the SPIs in use and, per held key,
  // its role and remaining time. On the master (which books the usage
  // reports) each key also carries the traffic reported under it and how
  // many client identities received it; those need the store, so the
  // billing batch in flight is committed first.
  std::string channels_json(MonoClock::time_point now) {
    if (master()) commit_billing();
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
          const KeyUsage u = store->key_usage(id, k->spi);
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

  // ---------------------------------------------------------------- replication (master)
  Message repl_frame(const Chan& c, const MemKey& k, MonoClock::time_point now) {
    Message p;
    p.type = MsgType::ReplKey;
    p.req_id = 0;
    p.seq = k.seq;
    p.keys.push_back(wire(c, k, Slot::Other, now));
    return p;
  }

  void replicate(const Chan& c, const MemKey& k) {
    auto now = MonoClock::now();
    Message p = repl_frame(c, k, now);
    for (auto it = subscribers.begin(); it != subscribers.end();) {
      auto s = it->lock();
      if (!s || s->closed) {
        it = subscribers.erase(it);
        continue;
      }
      s->send(p);
      ++keys_replicated;
      ++it;
    }
    for (auto& k2 : p.keys) secure_zero(k2.material.key, sizeof k2.material.key);
  }

  void on_subscribe(const std::shared_ptr<Conn>& c, const Message& m) {
    if (!require(c, m, {Role::Slave}) || !require_master(c, m)) return;
    auto now = MonoClock::now();
    // Entitlements before any key: a slave never holds a key it could hand
    // to a client it does not yet know is revoked.
    for (auto& [id, e] : ents.all()) c->send(entitlement_frame(id, e));
    std::vector<std::pair<uint64_t, std::pair<uint32_t, uint32_t>>> todo;
    for (auto& [id, ch] : chans)
      for (auto& [spi, k] : ch.keys)
        if (k.seq > *m.seq) todo.push_back({k.seq, {id, spi}});
    std::sort(todo.begin(), todo.end());
    for (auto& [seq, cs] : todo) {
      const Chan& ch = chans.at(cs.first);
      c->send(repl_frame(ch, ch.keys.at(cs.second), now));
      ++keys_replicated;
    }
    c->subscribed = true;
    subscribers.push_back(c);
    Message r;
    r.type = MsgType::Ack;
    r.req_id = m.req_id;
    r.seq = repl_seq.load();
    c->send(r);
    log("slave " + c->peer.identity + " subscribed from seq " + std::to_string(*m.seq) + ", sent " +
        std::to_string(todo.size()) + " key(s)");
  }

  void on_forward(const std::shared_ptr<Conn>& c, const Message& m) {
    if (!require(c, m, {Role::Slave}) || !require_master(c, m)) return;
    std::string key = c->peer.identity + "/" + m.text;
    auto bills = m.bills;
    std::sort(bills.begin(), bills.end(), [](auto& a, auto& b) { return a.seq < b.seq; });
    store->begin();
    uint64_t last;
    const int64_t now_ms = wall_now_ms();
    try {
      last = store->forward_applied(key);
      for (auto& e : bills) {
        if (e.seq <= last) continue;  // counted before: exactly once
        // The event's own time, measured on the slave as an age: a request
        // made before a close and forwarded after it is booked late.
        const int64_t at = now_ms - e.age_ms;
        if (e.requests && e.event_id) {
          if (!store->add_request_event(e.identity, e.event_id, e.requests, at)) ++duplicate_requests;
        } else if (e.requests) {
          store->add_requests(e.identity, e.requests, at);
        }
        if (e.spi) store->add_holder(e.identity, e.channel, e.spi);
        last = e.seq;
      }
      store->set_forward_applied(key, last);
      store->commit();
    } catch (...) {
      store->rollback();
      throw;
    }
    Message r;
    r.type = MsgType::Ack;
    r.req_id = m.req_id;
    r.seq = last;
    c->send(r);
  }

  // ---------------------------------------------------------------- replication (slave)
  void start_upstream() {
    ClientOptions o;
    o.servers = cfg.masters;
    o.tls = cfg.tls;
    o.require_master = true;
    o.request_timeout = milliseconds(10000);
    o.backoff_min = milliseconds(100);
    o.backoff_max = milliseconds(2000);
    upstream = std::make_unique<Client>(o);
    std::weak_ptr<Impl> w = shared_from_this();
    upstream->set_push_handler([w](Message m) {
      auto self = w.lock();
      if (!self) return;
      // Handlers queued on our io_context hold only weak references: one that
      // never runs (the loop already stopped) must not keep the server alive.
      asio::post(self->io, [w, m = std::move(m)]() mutable {
        if (auto self = w.lock()) self->apply_repl(std::move(m));
      });
    });
    upstream->set_on_connect([w](Client& cl) {
      auto self = w.lock();
      if (!self) return;
      Message s;
      s.type = MsgType::ReplSubscribe;
      s.seq = self->repl_seq.load();
      const uint64_t conn_no = cl.connects();
      cl.request(std::move(s), [w, conn_no](Result r) {
        auto self = w.lock();
        if (!self) return;
        if (!r.ok()) self->log(LogLevel::Warning, "subscribe to master failed: " + r.message);
        else self->log("subscribed to master " + r.server + ", master seq " + std::to_string(r.reply.seq.value_or(0)));
        // The catch-up keys came before this ack on the same session, and
        // their handlers were queued first: once this runs, they are applied.
        if (r.ok())
          asio::post(self->io, [w, conn_no] {
            if (auto self = w.lock()) self->repl_synced_connect = conn_no;
          });
      });
    });
    upstream->set_persistent(true);
  }

  void apply_repl(Message m) {
    if (stopping) return;
    if (m.type == MsgType::ReplEntitlement && m.seq && m.mode && !m.text.empty()) return apply_entitlement(m);
    if (m.type != MsgType::ReplKey || m.keys.size() != 1 || !m.seq) return;
    const WireKey& k = m.keys[0];
    Chan& c = chan_for(k.channel);
    auto now = MonoClock::now();
    try {
      add_key(c, k.spi, k.material, now + milliseconds(k.remaining_ms), k.lifetime_ms, *m.seq);
      vlog("replicated channel " + std::to_string(k.channel) + " spi " + std::to_string(k.spi) +
           " seq " + std::to_string(*m.seq));
    } catch (const std::exception& e) {
      log(LogLevel::Error, std::string("cannot store replicated key: ") + e.what());
    }
    for (auto& kk : m.keys) secure_zero(kk.material.key, sizeof kk.material.key);
  }

  void apply_entitlement(const Message& m) {
    Entitlement e;
    e.mode = *m.mode;
    e.channels.insert(m.channel_list.begin(), m.channel_list.end());
    e.seq = *m.seq;
    try {
      store->put_entitlement(m.text, e);
    } catch (const std::exception& ex) {
      // Not confirmed: the master's admin learns this slave is behind.
      log(LogLevel::Error, std::string("cannot store replicated entitlement: ") + ex.what());
      return;
    }
    ents.set(m.text, e);
    log("entitlement of " + entitlement_json(m.text, e));
    Message a;
    a.type = MsgType::ReplAck;
    a.seq = e.seq;
    upstream->request(std::move(a));
  }

  void forward_billing() {
    if (master() || !upstream || forward_inflight || !upstream->connected()) return;
    auto entries = store->outbox_peek(1000, wall_now_ms());
    if (entries.empty()) return;
    uint64_t last = entries.back().seq;
    Message m;
    m.type = MsgType::BillingForward;
    m.text = instance_id;
    m.bills = std::move(entries);
    forward_inflight = true;
    std::weak_ptr<Impl> w = shared_from_this();
    upstream->request(std::move(m), [w, last](Result r) {
      auto self = w.lock();
      if (!self) return;
      asio::post(self->io, [w, last, ok = r.ok(), msg = r.message] {
        auto self = w.lock();
        if (!self) return;
        self->forward_inflight = false;
        if (ok) {
          try {
            self->store->outbox_delete_upto(last);
          } catch (const std::exception& e) {
            self->log(LogLevel::Error, std::string("outbox: ") + e.what());
          }
        } else {
          self->vlog("billing forward failed (will retry): " + msg);
        }
      });
    });
  }

  void maintenance() {
    if (stopping) return;
    auto now = MonoClock::now();
    for (auto& [id, c] : chans) prune(c, now);
    if (!master()) replication_lag_s(now);  // notes when the slave falls behind
    forward_billing();
    if (master() && now - last_event_prune > std::chrono::minutes(10)) {
      last_event_prune = now;
      try {
        store->prune_request_events(kRequestEventRetentionS);
        store->prune_checkpoints(kCheckpointRetentionMs, wall_now_ms());
      } catch (const std::exception& e) {
        log(LogLevel::Warning, std::string("pruning request event ids failed: ") + e.what());
      }
    }
    maint.expires_after(milliseconds(cfg.forward_interval_ms));
    maint.async_wait([this](boost::system::error_code ec) {
      if (!ec) maintenance();
    });
  }

  // ---------------------------------------------------------------- metrics
  // Slave: how far behind the master its keys may be. In step while the
  // session whose subscription the master acknowledged is up (the master
  // pushes every key down it as it makes it), so 0; otherwise the time since
  // it last was in step, to within a maintenance tick.
  double replication_lag_s(MonoClock::time_point now) {
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
  std::string unhealthy_reason() {
    if (stopping) return "stopping";
    if (master()) return "";
    if (!upstream || !upstream->connected()) return "no session with the master";
    if (replication_lag_s(MonoClock::now()) > 0) return "subscribing to the master";
    return "";
  }

  std::string metrics_text() {
    std::ostringstream o;
    o << "# HELP keycast_build_info The running keyd: version, protocol version, role.\n"
         "# TYPE keycast_build_info gauge\n"
      << "keycast_build_info{version=\"" << kSoftwareVersion << "\",protocol=\"" << int(kVersion)
      << "\",role=\"" << role_name(cfg.role) << "\"} 1\n";
    {
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
         "write queue over its limit).\n"
      << "# TYPE keycast_peers_dropped_total counter\nkeycast_peers_dropped_total " << peers_dropped << "\n"
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
      auto rows = store->billing();
      for (auto& b : rows)
        o << "keycast_billing_requests_total{client=\"" << prom_label(b.identity) << "\"} " << b.requests << "\n";
      o << "# HELP keycast_billing_bytes_total Decipherable bytes billed by client.\n"
           "# TYPE keycast_billing_bytes_total counter\n";
      for (auto& b : rows)
        o << "keycast_billing_bytes_total{client=\"" << prom_label(b.identity) << "\"} " << b.bytes << "\n";
    } else {
      o << "# HELP keycast_billing_outbox Billing events waiting to be forwarded to the master.\n"
        << "# TYPE keycast_billing_outbox gauge\nkeycast_billing_outbox " << store->outbox_size() << "\n"
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

  struct MetricsConn {
    explicit MetricsConn(asio::io_context& io) : sock(io), timer(io) {}
    tcp::socket sock;
    asio::steady_timer timer;
    asio::streambuf buf{8192};
    std::string out;
  };

  void metrics_accept() {
    metrics_acceptor.async_accept([this](boost::system::error_code ec, tcp::socket sock) {
      if (stopping) return;
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

  // ---------------------------------------------------------------- stop
  void do_stop() {
    if (stopping) return;
    commit_billing();
    stopping = true;
    boost::system::error_code ec;
    acceptor.close(ec);
    metrics_acceptor.close(ec);
    maint.cancel();
    for (auto& [id, c] : chans)
      if (c.timer) c.timer->cancel();
    std::vector<Conn*> all(conns.begin(), conns.end());
    for (auto* c : all) c->close("server stopping");
    upstream.reset();
    io.stop();
  }
};

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
      if (impl->master())
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
