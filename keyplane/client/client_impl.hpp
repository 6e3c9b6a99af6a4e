// The client library's state, on its io thread (keyplane/client/client.cpp:
// requests, results, timers; keyplane/client/client_session.cpp: the session
// with one key server, its TLS, framing and failing over to the next).
#pragma once
#include <utility>  // before Boost.Asio (Boost 1.74, GCC 12, C++20)
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <array>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/secure.hpp"
#include "keyplane/client/client.hpp"
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

  bool on_io() { return io.get_executor().running_in_this_thread(); }
  bool wanted() const { return persistent || !queue.empty() || !inflight.empty() || !delayed.empty(); }

  explicit Impl(ClientOptions opts);
  void new_event_prefix();
  void start();
  void stop();
  // ---------------------------------------------------------------- requests
  void submit(Message m, Callback cb);
  void deliver(Pending& p, Result r);
  void fail_request(Pending& p, ErrorCode code, std::string why);
  void tick();
  // ---------------------------------------------------------------- connection
  void ensure_connecting();
  void connect();
  void ready(const std::shared_ptr<Conn>& c);
  // pause: wait this long before connecting again even after a session
  // that was up (a server that answered "not me").
  void fail(const std::shared_ptr<Conn>& c, std::string why,
            std::chrono::milliseconds pause = std::chrono::milliseconds(0));
  void end_session(const std::shared_ptr<Conn>& c, const std::string& why, std::chrono::milliseconds pause);
  void retry_after(std::chrono::milliseconds wait);
  void flush();
  void do_write(const std::shared_ptr<Conn>& c);
  void read_loop(const std::shared_ptr<Conn>& c);
  void dispatch(const std::shared_ptr<Conn>& c, Message m, MonoClock::time_point now);
  uint64_t next_event_id();
};

}  // namespace keycast::kp
