// keycast key-plane client library (target keycast_keyplane_client).
//
// An asynchronous client for keycast-keyd, meant for the data plane's control
// thread. It owns one io thread; no call blocks the caller (except call(),
// which is a convenience for CLIs and tests). TLS 1.3 with a client
// certificate; the server must present a certificate from the same CA with
// role master or slave.
//
//   kp::ClientOptions o;
//   o.servers = {"10.0.0.1:7400", "10.0.0.2:7400"};   // failover order
//   o.tls = {"client.crt", "client.key", "ca.crt"};
//   kp::Client c(o);
//   c.fetch(1, kp::Which::Both, [](kp::Result r) {     // runs on the client io thread
//     if (r.ok()) for (auto& k : r.keys) install(k.to_record(r.received_at));
//   });
//   // or leave the callback empty and drain results with c.poll(r) from a loop.
//
// Semantics:
//  * Requests are queued and sent over one kept-alive connection. If the
//    connection breaks, in-flight requests are re-sent on the next server
//    (every request type is safe to repeat: uploads are idempotent, usage
//    reports carry a unique event id, key requests are reads). A replication
//    subscription is the exception: it belongs to its session, on_connect
//    subscribes on the next, and the unanswered one completes with
//    ErrorCode::Unavailable.
//  * A master-only request (generate, upload, usage, rotate, billing) that
//    reaches a slave is retried on the next server, and the client stays there;
//    senders may also set require_master to skip slaves at connect time.
//  * Any request that reaches a standby master (not_active: several masters
//    share one database and another leads) goes to the active master the
//    reply names, when it is in the list as the master advertises itself,
//    else round the list; after as many not_active replies in a row as
//    there are servers (a takeover under way) it pauses backoff_min. With one
//    server, a not_active naming another master is the result at once; one
//    naming none (no master leads at the moment) is retried after
//    backoff_min. The request's timeout still bounds it all.
//  * Connection failures move to the next server in the list; after a whole
//    round fails, the client waits (backoff_min doubling up to backoff_max).
//  * A busy reply (the server sheds load) holds the request for the
//    retry-after it carries, then re-sends it; if that would pass the
//    request's timeout, the busy error is the result.
//  * A request not answered within request_timeout completes with
//    ErrorCode::Timeout (ErrorCode::Unavailable if no server was reachable),
//    and the connection to that (hung) server is dropped, so the following
//    requests go to the next server.
//  * Remaining effective times are relative: convert them with
//    WireKey::to_record(r.received_at), which anchors them on this host's
//    monotonic clock at the moment the reply was read.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keyplane/protocol.hpp"
#include "keyplane/tls.hpp"

namespace keycast::kp {

struct ClientOptions {
  std::vector<std::string> servers;  // "HOST:PORT", tried in order
  TlsFiles tls;                      // client cert/key and the CA
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds request_timeout{5000};
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{5000};
  bool require_master = false;  // server certificate must have role=master
};

struct Result {
  ErrorCode error = ErrorCode::Ok;
  std::string message;                  // error text, or admin reply text
  std::optional<int64_t> remaining_ms;  // channel's current key remaining time
  std::vector<WireKey> keys;
  MonoClock::time_point received_at{};  // anchor for remaining_ms of keys
  std::string server;                   // HOST:PORT that answered
  Message reply;                        // the whole decoded reply
  bool ok() const { return error == ErrorCode::Ok; }
};

using Callback = std::function<void(Result)>;

class Client {
 public:
  // Throws std::runtime_error (bad TLS files, empty server list, bad HOST:PORT).
  explicit Client(ClientOptions opts);
  ~Client();  // stops the io thread; unfinished requests complete with Shutdown
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Key data request: current, next, both, all.
  void fetch(uint32_t channel, Which which, Callback cb = {});
  // Key by identifier (a packet carried an SPI this host does not hold).
  void fetch_spi(uint32_t channel, uint32_t spi, Callback cb = {});
  // kms-origin sender: the KMS makes (or returns the existing) current/next key.
  void generate(uint32_t channel, Which which, Callback cb = {});
  // The key after held_spi, the one this host holds as current (0: none): the
  // server's next key, or its current one if held_spi has ended there (this
  // host read the switch late). fetch_next asks as a client, generate_next
  // as a kms-origin sender.
  void fetch_next(uint32_t channel, uint32_t held_spi, Callback cb = {});
  void generate_next(uint32_t channel, uint32_t held_spi, Callback cb = {});
  // sender-origin: upload the decipherment key data; key.spi == 0 asks the KMS
  // to assign an SPI (returned in Result::keys[0].spi).
  void upload(const WireKey& key, Callback cb = {});
  // Usage (billing): bytes/packets sent under one key epoch. Each call gets a
  // fresh unique event id, so the master counts it exactly once.
  void report_usage(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets,
                    Callback cb = {});
  // Usage checkpoint: the epoch's totals so far (not an increment). The
  // master books only what exceeds the high-water mark it keeps for
  // (this client's instance_id(), channel, spi), so any checkpoint may be
  // re-sent, lost or overtaken by a later one without a byte billed twice.
  void report_checkpoint(uint32_t channel, uint32_t spi, uint64_t bytes, uint64_t packets,
                         Callback cb = {});
  // Checkpoints of many epochs in one frame (a sender's channels at one
  // tick); the ack's reply.channel_list names channels refused.
  void report_checkpoints(std::vector<UsageEntry> entries, Callback cb = {});
  // Random per Client object, i.e. per process: a restarted sender starts
  // fresh marks for its new epochs.
  uint64_t instance_id() const;
  // Any request message (admin commands, replication). req_id is assigned here.
  void request(Message m, Callback cb = {});

  // Results of calls made without a callback, in completion order.
  bool poll(Result& out);
  // Blocking request; never call it from a callback or a fast path.
  Result call(Message m);

  // Unsolicited frames (request id 0, e.g. replication pushes). Runs on the io thread.
  void set_push_handler(std::function<void(Message)> fn);
  // Called on the io thread after every successful (re)connection, before
  // queued requests are sent; used by slaves to (re)subscribe.
  void set_on_connect(std::function<void(Client&)> fn);
  // Keep a connection open even when idle (replication link).
  void set_persistent(bool on);

  bool connected() const;
  std::string current_server() const;
  uint64_t connects() const;  // successful handshakes so far
  uint64_t busy_waits() const;  // requests held back because a server answered busy

 private:
  void post_usage(Message m, Callback cb);
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace keycast::kp
