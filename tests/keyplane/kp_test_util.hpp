// Shared helpers for the key-plane tests: temp dirs, a test PKI made with
// scripts/make-certs.sh, server/client configuration on loopback.
#pragma once
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "keyplane/client/client.hpp"
#include "keyplane/config.hpp"
#include "keyplane/server.hpp"

#ifndef KEYCAST_SOURCE_DIR
#error "KEYCAST_SOURCE_DIR must be defined"
#endif

namespace kptest {

using namespace keycast;
using namespace keycast::kp;

struct TempDir {
  std::string path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "keycast-kp-XXXXXX").string();
    if (!mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& f) const { return path + "/" + f; }
};

inline std::string make_pki(const std::string& dir) {
  std::string cmd = "bash " + std::string(KEYCAST_SOURCE_DIR) + "/scripts/make-certs.sh " + dir + " >/dev/null";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("make-certs.sh failed");
  return dir;
}

// One PKI per test process.
inline const TempDir& pki() {
  static TempDir d;
  static bool made = (make_pki(d.path), true);
  (void)made;
  return d;
}

inline TlsFiles tls_for(const std::string& name, const TempDir& p = pki()) {
  return {p / (name + ".crt"), p / (name + ".key"), pki() / "ca.crt", {}};
}

inline ServerConfig server_config(const TempDir& dir, Role role, const std::string& name) {
  ServerConfig c;
  c.listen = "127.0.0.1:0";
  c.role = role;
  c.db = dir / (name + ".db");
  c.master_key_file = dir / (name + ".mk");
  if (!std::filesystem::exists(c.master_key_file)) {
    std::ofstream f(c.master_key_file);
    f << "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
  }
  c.tls = tls_for(role == Role::Master ? "master" : name);
  c.handshake_timeout_ms = 10000;
  c.forward_interval_ms = 50;
  return c;
}

inline ChannelPolicy policy(uint32_t id, KeyOrigin origin, int64_t L = 60000, int64_t p1 = 20000,
                            int64_t p2 = 10000, int64_t grace = 5000) {
  ChannelPolicy p;
  p.id = id;
  p.origin = origin;
  p.lifetime_ms = L;
  p.p1_ms = p1;
  p.p2_ms = p2;
  p.grace_ms = grace;
  return p;
}

inline std::string addr(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

inline ClientOptions client_options(const std::string& cert, std::vector<uint16_t> ports) {
  ClientOptions o;
  for (auto p : ports) o.servers.push_back(addr(p));
  o.tls = tls_for(cert);
  o.request_timeout = std::chrono::milliseconds(15000);
  o.connect_timeout = std::chrono::milliseconds(10000);
  o.backoff_min = std::chrono::milliseconds(20);
  o.backoff_max = std::chrono::milliseconds(200);
  return o;
}

// Liveness bound, not a timing assertion: generous so a loaded CI box passes.
template <class F>
bool wait_until(F f, int timeout_ms = 30000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return f();
}

inline Result fetch(Client& c, uint32_t ch, Which w, uint32_t spi = 0) {
  Message m;
  m.type = MsgType::KeyRequest;
  m.channel = ch;
  m.which = w;
  if (w == Which::BySpi) m.spi = spi;
  return c.call(std::move(m));
}

inline Result admin(Client& c, MsgType t, std::string text = {}, std::optional<uint32_t> ch = {}) {
  Message m;
  m.type = t;
  m.text = std::move(text);
  m.channel = ch;
  return c.call(std::move(m));
}

// One HTTP/1.0 GET on 127.0.0.1:port (keyd's --metrics listener): the whole
// response, status line and headers included; "" if it cannot connect.
inline std::string http_get(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{30, 0};  // liveness bound only
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string resp;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: x\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) resp.append(buf, std::size_t(n));
    }
  }
  ::close(fd);
  return resp;
}

// The value of the first sample line starting with `series` ("name{labels}"
// as written), or nullopt.
inline std::optional<double> sample_value(const std::string& text, const std::string& series) {
  for (std::size_t at = text.find(series + " "); at != std::string::npos; at = text.find(series + " ", at + 1))
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
  return std::nullopt;
}

// One identity's row of the billing ledger (admin billing, CSV).
struct Ledger {
  uint64_t requests = 0, bytes = 0, packets = 0, epochs = 0;
  bool found = false;
};

inline Ledger ledger_of(Client& admin_client, const std::string& who) {
  Result r = admin(admin_client, MsgType::AdminBilling, "csv");
  EXPECT_TRUE(r.ok()) << r.message;
  std::istringstream in(r.message);
  std::string line;
  std::getline(in, line);  // header
  Ledger b;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string id, f;
    std::getline(l, id, ',');
    if (id != who) continue;
    b.found = true;
    std::getline(l, f, ',');
    b.requests = std::stoull(f);
    std::getline(l, f, ',');
    b.bytes = std::stoull(f);
    std::getline(l, f, ',');
    b.packets = std::stoull(f);
    std::getline(l, f, ',');
    b.epochs = std::stoull(f);
  }
  return b;
}

inline const WireKey* slot(const Result& r, Slot s) {
  for (auto& k : r.keys)
    if (k.slot == s) return &k;
  return nullptr;
}

}  // namespace kptest
