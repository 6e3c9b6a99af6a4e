#include "keyplane/client/client.hpp"

#include <openssl/rand.h>

#include <future>
#include <stdexcept>

#include "keyplane/client/client_impl.hpp"

namespace keycast::kp {

Client::Impl::Impl(ClientOptions opts) : o(std::move(opts)), backoff(o.backoff_min) {
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
void Client::Impl::new_event_prefix() {
  uint8_t r[4];
  if (RAND_bytes(r, sizeof r) != 1) throw std::runtime_error("RAND_bytes failed");
  event_prefix = uint64_t(r[0]) << 56 | uint64_t(r[1]) << 48 | uint64_t(r[2]) << 40 | uint64_t(r[3]) << 32;
}

void Client::Impl::start() {
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

void Client::Impl::stop() {
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
void Client::Impl::submit(Message m, Callback cb) {
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

void Client::Impl::deliver(Pending& p, Result r) {
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

void Client::Impl::fail_request(Pending& p, ErrorCode code, std::string why) {
  Result r;
  r.error = code;
  r.message = std::move(why);
  r.received_at = MonoClock::now();
  r.reply = make_error(p.id, code, r.message);
  deliver(p, std::move(r));
}

void Client::Impl::tick() {
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

uint64_t Client::Impl::next_event_id() {
  if (++event_counter == 0) {  // 2^32 ids used: a fresh prefix, never a repeat
    new_event_prefix();
    event_counter = 1;
  }
  return event_prefix | event_counter;
}

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

namespace {
Message next_after(MsgType t, uint32_t channel, uint32_t held_spi) {
  Message m;
  m.type = t;
  m.channel = channel;
  m.which = Which::Next;
  if (held_spi) m.spi = held_spi;
  return m;
}
}  // namespace

void Client::fetch_next(uint32_t channel, uint32_t held_spi, Callback cb) {
  request(next_after(MsgType::KeyRequest, channel, held_spi), std::move(cb));
}

void Client::generate_next(uint32_t channel, uint32_t held_spi, Callback cb) {
  request(next_after(MsgType::GenerateRequest, channel, held_spi), std::move(cb));
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
