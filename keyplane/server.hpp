// keycast-keyd: the key management server (master or slave).
// See docs/keyplane.md for behaviour and docs/protocol.md for the wire format.
#pragma once
#include <cstdint>
#include <memory>

#include "keyplane/config.hpp"

namespace keycast::kp {

class Server {
 public:
  // Opens the store, loads keys, binds the listeners. Throws std::runtime_error
  // with a message naming the offending option.
  explicit Server(ServerConfig cfg);
  ~Server();  // stops and joins
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void run();    // serve on the calling thread until stop()
  void start();  // serve on a background thread
  void stop();   // thread-safe, idempotent; flushes pending billing first
  // Re-reads --tls-cert/--tls-key/--tls-ca/--tls-crl (keyd: SIGHUP) for new
  // connections; open ones keep the context they were accepted with. On error
  // (message returned, naming the option) the old files stay in force.
  // Thread-safe; empty string on success.
  std::string reload_tls();

  uint16_t port() const;          // bound key-plane port (useful with port 0)
  uint16_t metrics_port() const;  // 0 without --metrics

 public:
  struct Impl;  // opaque; public only so file-local helpers can name it

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace keycast::kp
