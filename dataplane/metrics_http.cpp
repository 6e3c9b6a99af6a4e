#include "dataplane/metrics_http.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "dataplane/app.hpp"
#include "keyplane/hostport.hpp"

namespace keycast::dp {

namespace {

addrinfo* resolve(const MetricsAddress& a, std::string* err) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(a.host.c_str(), a.port.c_str(), &hints, &res); rc != 0) {
    *err = gai_strerror(rc);
    return nullptr;
  }
  return res;
}

std::string reply(const char* status, const char* type, const std::string& body) {
  return std::string("HTTP/1.0 ") + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

MetricsAddress parse_metrics_address(const std::string& s) {
  kp::HostPort hp;
  try {
    hp = kp::parse_host_port(s, "--metrics");
  } catch (const std::runtime_error& e) {
    throw UsageError(e.what());
  }
  MetricsAddress a{hp.host, hp.port};
  std::string err;
  addrinfo* res = resolve(a, &err);
  if (!res) throw UsageError("--metrics " + s + ": " + err);
  freeaddrinfo(res);
  return a;
}

MetricsHttp::MetricsHttp(const MetricsAddress& a) {
  const std::string what = "--metrics " + a.host + ":" + a.port;
  std::string err;
  addrinfo* res = resolve(a, &err);
  if (!res) throw std::runtime_error(what + ": " + err);
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || ::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    freeaddrinfo(res);
    throw std::runtime_error(what + ": " + std::strerror(e));
  }
  freeaddrinfo(res);
  fd_ = fd;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  const uint16_t port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                       : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  address_ = (a.host.find(':') == std::string::npos ? a.host : "[" + a.host + "]") + ":" + std::to_string(port);
}

MetricsHttp::~MetricsHttp() {
  for (Conn& c : conns_) ::close(c.fd);
  if (fd_ >= 0) ::close(fd_);
}

std::string MetricsHttp::address() const { return address_; }

void MetricsHttp::poll(const std::function<std::string()>& metrics, const std::function<std::string()>& unhealthy) {
  const auto now = std::chrono::steady_clock::now();
  // Nothing pending is the usual case: one accept() that says EAGAIN.
  for (int fd; (fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
    if (conns_.size() >= kMaxConns) {
      ::close(fd);
      continue;
    }
    conns_.push_back(Conn{fd, {}, {}, 0, now + kTimeout});
  }
  for (std::size_t i = 0; i < conns_.size();) {
    if (serve(conns_[i], metrics, unhealthy) && now < conns_[i].deadline) {
      ++i;
      continue;
    }
    ::close(conns_[i].fd);
    conns_[i] = std::move(conns_.back());
    conns_.pop_back();
  }
}

// false: done with this connection (answered, closed by the peer, or broken).
bool MetricsHttp::serve(Conn& c, const std::function<std::string()>& metrics,
                        const std::function<std::string()>& unhealthy) {
  if (c.out.empty()) {
    char buf[2048];
    for (;;) {
      const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n > 0) {
        c.in.append(buf, std::size_t(n));
        if (c.in.size() > kMaxRequest) return false;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return false;  // closed before a whole request, or an error
    }
    if (c.in.find("\r\n\r\n") == std::string::npos && c.in.find("\n\n") == std::string::npos) return true;
    const std::string line = c.in.substr(0, c.in.find_first_of("\r\n"));
    const std::size_t sp = line.find(' ');
    const std::string method = line.substr(0, sp);
    std::string path = sp == std::string::npos ? "" : line.substr(sp + 1);
    path = path.substr(0, path.find_first_of(" ?"));
    if (method != "GET") {
      c.out = reply("405 Method Not Allowed", "text/plain", "GET only\n");
    } else if (path == "/healthz") {
      const std::string why = unhealthy();
      c.out = why.empty() ? reply("200 OK", "text/plain", "ok\n")
                          : reply("503 Service Unavailable", "text/plain", why + "\n");
    } else {
      c.out = reply("200 OK", "text/plain; version=0.0.4", metrics());
    }
  }
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += std::size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);  // the rest next tick
  }
  return false;  // answered
}

}  // namespace keycast::dp
