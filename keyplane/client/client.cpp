#include "keyplane/client/client.hpp"

#include <openssl/rand.h>

#include <utility>  // before Boost.Asio (Boost 1.74, GCC 12, C++20)
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/secure.hpp"
#include "keyplane/hostport.hpp"

namespace keycast::kp {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

struct Client::Impl : std::enable_shared_from_this<Client::Impl> {
  struct Pending {
    uint32_t id = 0;
    Message msg;
    Callback cb;
    MonoClock::time_point deadline;
    std::size_t redirects = 0;
  };
  struct Conn {
    Conn(asio::io_context& io, ssl::context& ctx) : s(io, ctx) {}
    ~Conn() {
      for (auto& f : wq) secure_zero(f.data(), f.size());
    }
    ssl::stream<tcp::socket> s;
    std::array<uint8_t, kHeaderLen> hdr{};
    std::vector<uint8_t> body;
    std::deque<std::vector<uint8_t>> wq;
    bool writing = false;
    std::string server;
  };
  enum class State { Idle, Connecting, Ready };

  ClientOptions o;
  std::shared_ptr<ssl::context> ctx;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  tcp::resolver resolver{io};
  asio::steady_timer retry_timer{io}, tick_timer{io}, connect_timer{io};
  std::vector<HostPort> hosts;
  std::thread th;
  Client* owner = nullptr;

  // io-thread state
  std::deque<Pending> queue;
  // Requests a busy server asked to come back later, by when.
  std::multimap<MonoClock::time_point, Pending> delayed;
  std::map<uint32_t, Pending> inflight;
  uint32_t next_id = 1;
  std::shared_ptr<Conn> conn;
  State state = State::Idle;
  std::size_t idx = 0, failures_in_round = 0, not_active_in_row = 0;
  std::chrono::milliseconds backoff;
  bool retry_scheduled = false, stopping = false, persistent = false;
  std::string last_error = "not connected yet";
  std::function<void(Message)> push_handler;
  std::function<void(Client&)> on_connect;
  uint64_t event_prefix = 0;
  uint32_t event_counter = 0;
  uint64_t instance = 0;  // set once in the constructor, read from any thread

  // shared with other threads
  std::mutex mu;
  std::deque<Result> results;
  std::string server_name;
  std::atomic<bool> is_connected{false};
  std::atomic<uint64_t> n_connects{0};
  std::atomic<uint64_t> busy_waits{0};

  explicit Impl(ClientOptions opts) : o(std::move(opts)), backoff(o.backoff_min) {
    if (o.servers.empty()) throw std::runtime_error("--kms/--server: at least one HOST:PORT is required");
    for (const auto& s : o.servers) hosts.push_back(parse_host_port(s, "--server"));
    ctx = make_client_context(o.tls);
    new_event_prefix();
    uint8_t r[8];
    if (RAND_bytes(r, sizeof r) != 1) throw std::runtime_error("RAND_bytes failed");
    for (uint8_t b : r) instance = instance << 8 | b;
  }

  // Event ids are a random 32-bit prefix per client instance and a counter:
  // unique across restarts of the same identity (the server de-duplicates per
  // identity) with probability 1 - n/2^32 for n instances within the retention.
  void new_event_prefix() {
    uint8_t r[4];
    if (RAND_bytes(r, sizeof r) != 1) throw std::runtime_error("RAND_bytes failed");
    event_prefix = uint64_t(r[0]) << 56 | uint64_t(r[1]) << 48 | uint64_t(r[2]) << 40 | uint64_t(r[3]) << 32;
  }

  bool on_io() { return io.get_executor().running_in_this_thread(); }

  void start() {
    th = std::thread([this] {
      for (;;) {
        try {
          io.run();
          return;
        } catch (...) {
          // an internal handler threw (e.g. bad_alloc): keep the io thread alive
        }
      }
    });
    asio::post(io, [this] { tick(); });
  }

  void stop() {
    asio::post(io, [this] {
      stopping = true;
      retry_timer.cancel();
      tick_timer.cancel();
      connect_timer.cancel();
      resolver.cancel();
      if (conn) {
        boost::system::error_code ec;
        conn->s.lowest_layer().close(ec);
        conn.reset();
      }
      is_connected = false;
      std::vector<Pending> all;
      for (auto& p : queue) all.push_back(std::move(p));
      for (auto& [id, p] : inflight) all.push_back(std::move(p));
      for (auto& [t, p] : delayed) all.push_back(std::move(p));
      queue.clear();
      inflight.clear();
      delayed.clear();
      for (auto& p : all) fail_request(p, ErrorCode::Shutdown, "client stopped");
      io.stop();
    });
    if (th.joinable()) th.join();
    // Run whatever was posted after the stop (late requests get Shutdown).
    io.restart();
    io.poll();
  }

  // ---------------------------------------------------------------- requests
  void submit(Message m, Callback cb) {
    Pending p;
    p.id = next_id++;
    if (next_id == 0) next_id = 1;  // 0 is reserved for pushes
    m.req_id = p.id;
    // A key request's event id is set once here and kept across re-sends (to
    // this or another server), so a request whose reply was lost is billed once.
    if (m.type == MsgType::KeyRequest && !m.event_id) m.event_id = next_event_id();
    p.msg = std::move(m);
    p.cb = std::move(cb);
    p.deadline = MonoClock::now() + o.request_timeout;
    if (stopping) {
      fail_request(p, ErrorCode::Shutdown, "client stopped");
      return;
    }
    queue.push_back(std::move(p));
    if (state == State::Ready)
      flush();
    else
      ensure_connecting();
  }

  void deliver(Pending& p, Result r) {
    if (p.cb) {
      try {
        p.cb(std::move(r));
      } catch (...) {
      }
    } else {
      std::lock_guard<std::mutex> g(mu);
      results.push_back(std::move(r));
    }
  }

  void fail_request(Pending& p, ErrorCode code, std::string why) {
    Result r;
    r.error = code;
    r.message = std::move(why);
    r.received_at = MonoClock::now();
    r.reply = make_error(p.id, code, r.message);
    deliver(p, std::move(r));
  }

  bool wanted() const { return persistent || !queue.empty() || !inflight.empty() || !delayed.empty(); }

  void tick() {
    if (stopping) return;
    auto now = MonoClock::now();
    bool due = false;
    while (!delayed.empty() && delayed.begin()->first <= now) {
      queue.push_back(std::move(delayed.begin()->second));
      delayed.erase(delayed.begin());
      due = true;
    }
    if (due) {
      if (state == State::Ready)
        flush();
      else
        ensure_connecting();
    }
    for (auto it = queue.begin(); it != queue.end();) {
      if (it->deadline <= now) {
        Pending p = std::move(*it);
        it = queue.erase(it);
        fail_request(p, ErrorCode::Unavailable, "no key server reachable: " + last_error);
      } else {
        ++it;
      }
    }
    bool timed_out = false;
    for (auto it = inflight.begin(); it != inflight.end();) {
      if (it->second.deadline <= now) {
        Pending p = std::move(it->second);
        it = inflight.erase(it);
        timed_out = true;
        fail_request(p, ErrorCode::Timeout, "no reply within the request timeout");
      } else {
        ++it;
      }
    }
    // A server that stopped answering is treated as dead: later requests
    // (and the unanswered ones still in flight) go to the next server.
    if (timed_out && conn && state == State::Ready) fail(conn, "request timeout");
    tick_timer.expires_after(std::chrono::milliseconds(50));
    tick_timer.async_wait([this](boost::system::error_code ec) {
      if (!ec) tick();
    });
  }

  // ---------------------------------------------------------------- connection
  void ensure_connecting() {
    if (stopping || state != State::Idle || retry_scheduled || !wanted()) return;
    connect();
  }

  void connect() {
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

  void ready(const std::shared_ptr<Conn>& c) {
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

  // pause: wait this long before connecting again even after a session
  // that was up (a server that answered "not me").
  void fail(const std::shared_ptr<Conn>& c, std::string why,
            std::chrono::milliseconds pause = std::chrono::milliseconds(0)) {
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

  void end_session(const std::shared_ptr<Conn>& c, const std::string& why, std::chrono::milliseconds pause) {
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

  void retry_after(std::chrono::milliseconds wait) {
    retry_scheduled = true;
    retry_timer.expires_after(wait);
    retry_timer.async_wait([this](boost::system::error_code ec) {
      retry_scheduled = false;
      if (!ec) ensure_connecting();
    });
  }

  void flush() {
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

  void do_write(const std::shared_ptr<Conn>& c) {
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

  void read_loop(const std::shared_ptr<Conn>& c) {
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

  void dispatch(const std::shared_ptr<Conn>& c, Message m, MonoClock::time_point now) {
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

  uint64_t next_event_id() {
    if (++event_counter == 0) {  // 2^32 ids used: a fresh prefix, never a repeat
      new_event_prefix();
      event_counter = 1;
    }
    return event_prefix | event_counter;
  }
};

Client::Client(ClientOptions opts) : impl_(std::make_shared<Impl>(std::move(opts))) {
  impl_->owner = this;
  impl_->start();
}

Client::~Client() { impl_->stop(); }

void Client::request(Message m, Callback cb) {
  if (impl_->on_io()) {
    impl_->submit(std::move(m), std::move(cb));
    return;
  }
  auto impl = impl_;
  asio::post(impl->io, [impl, m = std::move(m), cb = std::move(cb)]() mutable {
    impl->submit(std::move(m), std::move(cb));
  });
}

void Client::fetch(uint32_t channel, Which which, Callback cb) {
  Message m;
  m.type = MsgType::KeyRequest;
  m.channel = channel;
  m.which = which;
  request(std::move(m), std::move(cb));
}

void Client::fetch_spi(uint32_t channel, uint32_t spi, Callback cb) {
  Message m;
  m.type = MsgType::KeyRequest;
  m.channel = channel;
  m.which = Which::BySpi;
  m.spi = spi;
  request(std::move(m), std::move(cb));
}

void Client::generate(uint32_t channel, Which which, Callback cb) {
  Message m;
  m.type = MsgType::GenerateRequest;
  m.channel = channel;
  m.which = which;
  request(std::move(m), std::move(cb));
}

void Client::upload(const WireKey& key, Callback cb) {
  Message m;
  m.type = MsgType::KeyUpload;
  m.channel = key.channel;
  m.keys.push_back(key);
  request(std::move(m), std::move(cb));
}

namespace {
Message usage_message(MsgType t, uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets) {
  Message m;
  m.type = t;
  m.channel = channel;
  m.spi = spi;
  m.bytes = bytes;
  m.packets = packets;
  return m;
}
}  // namespace

void Client::report_usage(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets,
                          Callback cb) {
  post_usage(usage_message(MsgType::UsageReport, channel, spi, bytes, packets), std::move(cb));
}

void Client::report_checkpoint(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets,
                               Callback cb) {
  Message m = usage_message(MsgType::UsageCheckpoint, channel, spi, bytes, packets);
  m.instance = impl_->instance;
  post_usage(std::move(m), std::move(cb));
}

void Client::post_usage(Message m, Callback cb) {
  auto impl = impl_;
  auto fn = [impl, m = std::move(m), cb = std::move(cb)]() mutable {
    // Event ids are drawn on the io thread, like every other request's.
    if (m.type == MsgType::UsageReport) m.event_id = impl->next_event_id();
    impl->submit(std::move(m), std::move(cb));
  };
  if (impl->on_io())
    fn();
  else
    asio::post(impl->io, std::move(fn));
}

void Client::report_checkpoints(std::vector<UsageEntry> entries, Callback cb) {
  Message m;
  m.type = MsgType::UsageCheckpoint;
  m.usages = std::move(entries);
  m.instance = impl_->instance;
  post_usage(std::move(m), std::move(cb));
}

uint64_t Client::instance_id() const { return impl_->instance; }

bool Client::poll(Result& out) {
  std::lock_guard<std::mutex> g(impl_->mu);
  if (impl_->results.empty()) return false;
  out = std::move(impl_->results.front());
  impl_->results.pop_front();
  return true;
}

Result Client::call(Message m) {
  auto pr = std::make_shared<std::promise<Result>>();
  auto fut = pr->get_future();
  request(std::move(m), [pr](Result r) { pr->set_value(std::move(r)); });
  return fut.get();
}

void Client::set_push_handler(std::function<void(Message)> fn) {
  auto impl = impl_;
  asio::post(impl->io, [impl, fn = std::move(fn)]() mutable { impl->push_handler = std::move(fn); });
}

void Client::set_on_connect(std::function<void(Client&)> fn) {
  auto impl = impl_;
  asio::post(impl->io, [impl, fn = std::move(fn)]() mutable { impl->on_connect = std::move(fn); });
}

void Client::set_persistent(bool on) {
  auto impl = impl_;
  asio::post(impl->io, [impl, on] {
    impl->persistent = on;
    impl->ensure_connecting();
  });
}

bool Client::connected() const { return impl_->is_connected.load(); }

std::string Client::current_server() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->server_name;
}

uint64_t Client::connects() const { return impl_->n_connects.load(); }
uint64_t Client::busy_waits() const { return impl_->busy_waits.load(); }

}  // namespace keycast::kp
