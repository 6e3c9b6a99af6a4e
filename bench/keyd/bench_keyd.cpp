// bench_keyd: key-server throughput on loopback with real TLS 1.3 + mTLS.
//  1. key requests/s over kept-alive connections (client role: billed, so every
//     reply waits for its group-committed SQLite transaction; sender role: unbilled)
//  2. full TLS handshakes/s (connect, mutual-auth handshake, one ping, close)
// The server runs in this process on its own io thread; clients on others.
// Usage: bench_keyd [--seconds S] [--connections N] [--depth D]
#include <utility>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "keyplane/client/client.hpp"
#include "keyplane/server.hpp"

using namespace keycast;
using namespace keycast::kp;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using Clock = std::chrono::steady_clock;

namespace {

double key_requests(uint16_t port, const std::string& dir, const std::string& who, int conns, int depth,
                    double seconds) {
  std::vector<std::unique_ptr<Client>> cs;
  for (int i = 0; i < conns; ++i) {
    ClientOptions o;
    o.servers = {"127.0.0.1:" + std::to_string(port)};
    o.tls = {dir + "/" + who + ".crt", dir + "/" + who + ".key", dir + "/ca.crt"};
    o.request_timeout = std::chrono::milliseconds(30000);
    cs.push_back(std::make_unique<Client>(o));
  }
  // warm up: connect every client
  for (auto& c : cs) {
    Message m;
    m.type = MsgType::KeyRequest;
    m.channel = 1;
    m.which = Which::Current;
    if (!c->call(m).ok()) throw std::runtime_error("warm-up request failed");
  }
  std::atomic<uint64_t> done{0}, errors{0};
  std::atomic<bool> running{true};
  std::function<void(Client*)> issue = [&](Client* c) {
    Message m;
    m.type = MsgType::KeyRequest;
    m.channel = 1;
    m.which = Which::Both;
    c->request(std::move(m), [&, c](Result r) {
      if (r.ok()) ++done; else ++errors;
      if (running) issue(c);
    });
  };
  auto t0 = Clock::now();
  for (auto& c : cs)
    for (int d = 0; d < depth; ++d) issue(c.get());
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  uint64_t n = done.load();
  double el = std::chrono::duration<double>(Clock::now() - t0).count();
  running = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  cs.clear();
  if (errors) std::cerr << "  (" << errors << " errors)\n";
  return double(n) / el;
}

double handshakes(uint16_t port, const std::string& dir, int threads, double seconds) {
  std::atomic<uint64_t> done{0}, failed{0};
  std::atomic<bool> running{true};
  std::vector<std::thread> th;
  for (int t = 0; t < threads; ++t)
    th.emplace_back([&] {
      asio::io_context io;
      ssl::context ctx(ssl::context::tls_client);
      SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_3_VERSION);
      ctx.load_verify_file(dir + "/ca.crt");
      ctx.use_certificate_chain_file(dir + "/client.crt");
      ctx.use_private_key_file(dir + "/client.key", ssl::context::pem);
      ctx.set_verify_mode(ssl::verify_peer);
      Message ping;
      ping.type = MsgType::Ping;
      ping.req_id = 1;
      auto frame = encode(ping);
      while (running) {
        try {
          ssl::stream<asio::ip::tcp::socket> s(io, ctx);
          s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port});
          s.lowest_layer().set_option(asio::ip::tcp::no_delay(true));
          s.handshake(ssl::stream_base::client);
          asio::write(s, asio::buffer(frame));
          uint8_t hdr[kHeaderLen];
          asio::read(s, asio::buffer(hdr));  // the server verified us and answered
          ++done;
        } catch (const std::exception&) {
          ++failed;
        }
      }
    });
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  uint64_t n = done.load();
  double el = std::chrono::duration<double>(Clock::now() - t0).count();
  running = false;
  for (auto& t : th) t.join();
  if (failed) std::cerr << "  (" << failed << " failed handshakes)\n";
  return double(n) / el;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  int conns = 4, depth = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (a == "--connections") conns = std::atoi(argv[i + 1]);
    else if (a == "--depth") depth = std::atoi(argv[i + 1]);
    else {
      std::cerr << "usage: bench_keyd [--seconds S] [--connections N] [--depth D]\n";
      return 2;
    }
  }
  std::string dir = (std::filesystem::temp_directory_path() / ("keycast-bench-" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  std::string cmd = "bash " KEYCAST_SOURCE_DIR "/scripts/make-certs.sh " + dir + " >/dev/null";
  if (std::system(cmd.c_str()) != 0) {
    std::cerr << "make-certs.sh failed\n";
    return 1;
  }
  {
    std::ofstream f(dir + "/mk");
    f << std::string(64, '7') << "\n";
  }
  int rc = 0;
  try {
    ServerConfig c;
    c.listen = "127.0.0.1:0";
    c.db = dir + "/bench.db";
    c.master_key_file = dir + "/mk";
    c.tls = {dir + "/master.crt", dir + "/master.key", dir + "/ca.crt"};
    ChannelPolicy p;
    p.id = 1;
    c.channels[1] = p;
    Server srv(c);
    srv.start();
    std::printf("keycast-keyd loopback bench (TLS 1.3, mTLS, EC P-256), %d connection(s) x depth %d, %.1f s each\n",
                conns, depth, seconds);
    double r1 = key_requests(srv.port(), dir, "sender", conns, depth, seconds);
    std::printf("key requests/s, kept-alive, unbilled (sender role):        %10.0f\n", r1);
    double r2 = key_requests(srv.port(), dir, "client", conns, depth, seconds);
    std::printf("key requests/s, kept-alive, billed (client, group commit):  %10.0f\n", r2);
    double r0 = key_requests(srv.port(), dir, "sender", 1, 1, seconds);
    std::printf("key requests/s, one connection, one at a time, unbilled:   %10.0f\n", r0);
    double r3 = key_requests(srv.port(), dir, "client", 1, 1, seconds);
    std::printf("key requests/s, one connection, one at a time, billed:     %10.0f\n", r3);
    double h1 = handshakes(srv.port(), dir, 1, seconds);
    std::printf("TLS handshakes/s, 1 client thread:                         %10.0f\n", h1);
    double h4 = handshakes(srv.port(), dir, 4, seconds);
    std::printf("TLS handshakes/s, 4 client threads:                        %10.0f\n", h4);
    srv.stop();
  } catch (const std::exception& e) {
    std::cerr << "bench_keyd: " << e.what() << "\n";
    rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
