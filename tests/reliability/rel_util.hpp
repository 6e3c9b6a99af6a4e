// Helpers for the reliability / access tests: keyd and ctl as real processes,
// a per-process test PKI (scripts/make-certs.sh plus bad certificates from
// tests/reliability/make-bad-certs.sh), billing figures from
// `keycast-ctl billing --format json`.
#pragma once
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "keyplane/client/client.hpp"
#include "keyplane/json.hpp"

#if !defined(KEYCAST_SOURCE_DIR) || !defined(KEYCAST_KEYD_BIN) || !defined(KEYCAST_CTL_BIN)
#error "KEYCAST_SOURCE_DIR, KEYCAST_KEYD_BIN and KEYCAST_CTL_BIN must be defined"
#endif

namespace rel {

using namespace keycast;
using namespace keycast::kp;

struct TempDir {
  std::string path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "keycast-rel-XXXXXX").string();
    if (!mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& f) const { return path + "/" + f; }
};

inline std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return {-1, ""};
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  int st = pclose(f);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// One PKI per test process: the make-certs.sh set plus expired.crt,
// revoked.crt (client certificates) and crl.pem revoking revoked.crt.
inline const TempDir& pki() {
  static TempDir d;
  static bool made = [] {
    std::string src = KEYCAST_SOURCE_DIR;
    auto r1 = run("bash " + src + "/scripts/make-certs.sh " + d.path);
    if (r1.first != 0) throw std::runtime_error("make-certs.sh failed: " + r1.second);
    auto r2 = run("bash " + src + "/tests/reliability/make-bad-certs.sh " + d.path);
    if (r2.first != 0) throw std::runtime_error("make-bad-certs.sh failed: " + r2.second);
    return true;
  }();
  (void)made;
  return d;
}

inline TlsFiles tls_for(const std::string& name) {
  return {pki() / (name + ".crt"), pki() / (name + ".key"), pki() / "ca.crt", ""};
}

inline std::string addr(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

inline ClientOptions client_options(const std::string& cert, std::vector<uint16_t> ports) {
  ClientOptions o;
  for (auto p : ports) o.servers.push_back(addr(p));
  o.tls = tls_for(cert);
  o.request_timeout = std::chrono::milliseconds(20000);
  o.connect_timeout = std::chrono::milliseconds(10000);
  o.backoff_min = std::chrono::milliseconds(20);
  o.backoff_max = std::chrono::milliseconds(200);
  return o;
}

// Liveness bound, not a timing assertion.
template <class F>
bool wait_until(F f, int timeout_ms = 60000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
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

// A keycast-keyd process. stdout is read for the "listening on port" line;
// stderr goes to LOG (appended), so tests can grep what keyd logged.
struct Keyd {
  pid_t pid = -1;
  uint16_t port = 0;
  std::string log;
  std::string netns;  // non-empty: run inside this network namespace (`ip netns exec`)
  Keyd() = default;
  Keyd(const Keyd&) = delete;
  ~Keyd() { stop(SIGKILL); }

  // Returns false (and the reason in *why) if keyd did not start listening.
  bool start(std::vector<std::string> args, const std::string& log_path, std::string* why = nullptr) {
    log = log_path;
    int fds[2];
    if (pipe(fds) != 0) return false;
    pid_t p = fork();
    if (p < 0) return false;
    if (p == 0) {
      dup2(fds[1], 1);
      int lf = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (lf >= 0) dup2(lf, 2);
      close(fds[0]);
      close(fds[1]);
      std::vector<std::string> pre;
      if (!netns.empty()) pre = {"ip", "netns", "exec", netns};  // execs keyd: same pid
      pre.push_back(KEYCAST_KEYD_BIN);
      std::vector<char*> av;
      for (auto& a : pre) av.push_back(a.data());
      for (auto& a : args) av.push_back(a.data());
      av.push_back(nullptr);
      execvp(av[0], av.data());
      _exit(127);
    }
    close(fds[1]);
    pid = p;
    std::string line;
    char c;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < end) {
      pollfd pf{fds[0], POLLIN, 0};
      if (poll(&pf, 1, 1000) <= 0) continue;
      if (read(fds[0], &c, 1) != 1) break;
      if (c == '\n') break;
      line += c;
    }
    close(fds[0]);
    auto pos = line.find("listening on port ");
    if (pos == std::string::npos) {
      if (why) *why = "no listening line: '" + line + "'";
      stop(SIGKILL);
      return false;
    }
    port = uint16_t(std::stoi(line.substr(pos + 18)));
    return true;
  }
  // Exit status, or 128+signal; -1 if not running.
  int stop(int sig = SIGTERM) {
    if (pid <= 0) return -1;
    kill(pid, SIGCONT);
    kill(pid, sig);
    int st = 0;
    for (int i = 0; i < 1500; ++i) {  // up to 30 s, then SIGKILL
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    pid = -1;
    return -1;
  }
};

inline std::string master_key(const TempDir& d, const std::string& name) {
  std::string mk = d / (name + ".mk");
  if (!std::filesystem::exists(mk)) {
    std::ofstream f(mk);
    f << "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n";
    f.close();
    std::filesystem::permissions(mk, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  return mk;
}

inline std::vector<std::string> keyd_args(const TempDir& d, const std::string& name, const std::string& role,
                                          uint16_t master_port, std::vector<std::string> extra = {}) {
  std::string cert = role == "master" ? "master" : name;
  std::vector<std::string> a = {"--listen", "127.0.0.1:0", "--role", role, "--db", d / (name + ".db"),
                                "--master-key-file", master_key(d, name), "--tls-cert", pki() / (cert + ".crt"),
                                "--tls-key", pki() / (cert + ".key"), "--tls-ca", pki() / "ca.crt"};
  if (role == "slave") {
    a.push_back("--master");
    a.push_back(addr(master_port));
  }
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

inline std::string ctl(uint16_t port, const std::string& cert, const std::string& cmd) {
  return std::string(KEYCAST_CTL_BIN) + " --server " + addr(port) + " --tls-ca " + (pki() / "ca.crt") +
         " --tls-cert " + (pki() / (cert + ".crt")) + " --tls-key " + (pki() / (cert + ".key")) + " " + cmd;
}

struct Bill {
  bool found = false;
  uint64_t requests = 0, bytes = 0, packets = 0;
};

// Billing of IDENTITY from `keycast-ctl billing --format json` (admin).
inline Bill billing_json(uint16_t port, const std::string& identity, std::string* raw = nullptr) {
  auto [rc, out] = run(ctl(port, "admin", "billing --format json"));
  if (raw) *raw = out;
  Bill b;
  if (rc != 0) return b;
  const auto j = keycast::kp::Json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.contains("clients")) return b;
  for (const auto& c : j["clients"])
    if (c.value("identity", "") == identity) {
      b.found = true;
      b.requests = c.value("requests", uint64_t(0));
      b.bytes = c.value("bytes", uint64_t(0));
      b.packets = c.value("packets", uint64_t(0));
    }
  return b;
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace rel
