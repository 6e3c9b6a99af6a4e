// The key server's state and the declarations of its parts: one Server::Impl
// (the event loop's single owner of keys, connections, billing and
// replication), its member functions defined by topic in keyplane/server*.cpp.
// Private to keyplane/server*.cpp.
#pragma once

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
#include "keyplane/load_shed.hpp"
#include "keyplane/store.hpp"
#include "keyplane/store_worker.hpp"
#include "keyplane/wall_time.hpp"

namespace keycast::kp {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

inline int64_t ms_between(MonoClock::time_point a, MonoClock::time_point b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}

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
  uint64_t gen = 0;  // the highest key generation made for the channel (see KeyStore::mint_key)
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
  // Accepting again after the process ran out of descriptors waits this long:
  // the failed accept leaves the connection queued, so retrying at once spins.
  asio::steady_timer accept_retry{io}, metrics_accept_retry{io};
  static constexpr int64_t kAcceptRetryMs = 100;
  // Descriptors kept free of peers for the store, logs, replication, metrics
  // and reloads: connections beyond the descriptor limit less these are refused.
  static constexpr long kReservedFds = 32;
  std::size_t conn_limit = 0;  // --max-connections, or fewer when descriptors allow fewer
  uint64_t accept_errors = 0;
  bool accept_starved = false;  // logged once per spell without descriptors
  asio::steady_timer maint{io};
  asio::steady_timer commit_timer{io};
  std::unique_ptr<Store> store;
  // A second connection to --db on a thread of its own: the billing group
  // commit (keyplane/server_billing.cpp). Declared after io and store, so
  // its thread is joined before either goes.
  std::unique_ptr<StoreWorker> worker;
  // Masters: a third connection and thread, for the lease alone. Not the
  // billing worker's: a renewal queued behind a commit waiting on a lock
  // would let the lease run out under a master the database is merely slow
  // for, and a renewal must come back within the lease (2F/3) while a
  // billing commit may wait as long as the database makes it. Declared
  // after worker: joined first, its completions still find the loop.
  std::unique_ptr<StoreWorker> lease_worker;
  // Masters: a fourth, for the keys the channels' timers and requests make
  // (keyplane/server_mint.cpp). A mint waiting on a lock holds up neither
  // the loop nor a renewal; billing commits do not queue ahead of it.
  std::unique_ptr<StoreWorker> key_worker;
  std::map<uint32_t, Chan> chans;
  std::set<Conn*> conns;
  std::unique_ptr<LoadShedder> shed;  // --max-key-requests-per-s
  // A refused client comes back within this, however long the storm.
  static constexpr int64_t kMaxBusyWaitMs = 30000;
  // A billing commit that failed (the database lost, or a statement refused)
  // is answered busy with this retry-after: the peer re-sends the same event
  // ids, so a commit that landed though its COMMIT reported a failure is not
  // counted twice, and one that did not land is counted when it is re-sent.
  // Long enough for the store's reconnection on its next call.
  static constexpr int64_t kStoreRetryMs = 500;
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
  // What the store worker writes of one batch, and what it found. The loop
  // reads the outcome only once the worker is done with it.
  struct BillingJob {
    bool master = true;
    int64_t at = 0;
    std::map<std::string, uint64_t> requests;
    std::vector<std::pair<std::string, uint64_t>> request_events;
    std::vector<std::tuple<std::string, uint32_t, uint32_t>> holders;
    std::vector<PendingBill::Checkpoint> checkpoints;
    enum class Outcome { NotRun, Committed, Fenced, Failed } outcome = Outcome::NotRun;
    std::string error;
    uint64_t duplicates = 0, counted = 0, unchanged = 0;
    std::map<std::size_t, uint64_t> unchanged_in;  // by reply
    void run(Store& s);  // on the worker
  };
  // The one billing commit on the worker (none: nullptr) and the replies it
  // holds back. finished: its outcome was handled (by its completion or by
  // drain_billing, whichever came first).
  struct BillingCommit {
    std::shared_ptr<BillingJob> job;
    std::vector<std::pair<std::weak_ptr<Conn>, Message>> replies;
    bool finished = false;
  };
  std::shared_ptr<BillingCommit> billing_inflight;
  bool commit_again = false;  // a commit was asked for while one was in flight
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
  void log(LogLevel l, const std::string& s);
  void log(const std::string& s) { log(LogLevel::Info, s); }
  void vlog(const std::string& s) { log(LogLevel::Debug, s); }
  LogLevel level() const { return cfg.verbose ? LogLevel::Debug : cfg.log_level; }

  bool master() const { return cfg.role == Role::Master; }

  // ---------------------------------------------------------------- leadership (masters)
  // Masters sharing one database: the active one mints keys, books billing
  // and feeds the slaves; the others stand by (keyplane/server_leader.cpp).
  asio::steady_timer lead_timer{io};
  std::string advertised;  // HOST:PORT: this master's holder name and address
  bool active = false;
  uint64_t epoch = 0;                   // our fencing epoch while active
  MonoClock::time_point lease_until{};  // our lease's end on our own clock
  bool reclaim_tried = false;
  Leadership seen;  // who leads, as the database last said (standby)
  MonoClock::time_point seen_at{};
  uint64_t takeovers = 0, stepdowns = 0, lead_errors = 0;
  // One renewal or takeover attempt on the lease worker (what it asked and
  // what it found: the loop reads them once the worker is done).
  struct LeadJob {
    bool renew = false;  // else a takeover attempt
    bool late = false;   // a renewal asked once our lease had run out
    std::atomic<bool> finished{false};  // its answer is queued for the loop
    uint64_t epoch = 0;
    std::string holder;
    int64_t ttl_ms = 0;
    bool reclaim = false;
    MonoClock::time_point asked{};
    bool renewed = false;
    std::optional<uint64_t> took;
    std::optional<Leadership> seen;
    void run(Store& s);  // on the lease worker
  };
  std::shared_ptr<LeadJob> lead_job;  // queued or running on the lease worker
  bool writes_held = false;  // active, but no write went out since the lease ran out on our clock
  milliseconds lease() const { return milliseconds(cfg.failover_ms * 2 / 3); }
  milliseconds lead_period() const { return milliseconds(std::max<int64_t>(cfg.failover_ms / 6, 1)); }
  std::string advertised_address() const;
  bool lease_valid(MonoClock::time_point now) const;
  bool ensure_lease();
  void lead_start();
  void lead_tick();
  void arm_lead_timer();
  void lead_attempt(bool late = false);
  void lead_done(const LeadJob& j, std::exception_ptr err);
  void take_lead(uint64_t e, MonoClock::time_point asked);
  void step_down(const std::string& why);
  void load_state();

  // ---------------------------------------------------------------- setup
  void init();
  void open_acceptor(tcp::acceptor& a, const tcp::endpoint& ep, const std::string& what);
  void begin_serving();

  uint16_t bound_port = 0, bound_metrics_port = 0;
  uint16_t port() const { return bound_port; }

  Chan& chan_for(uint32_t id);

  // ---------------------------------------------------------------- key state
  void insert_mem(Chan& c, MemKey k);
  void erase_index(Chan& c, const MemKey& k);
  View view(const Chan& c, MonoClock::time_point now) const;
  // Whether spi names a key of c that has ended by now.
  bool ended(const Chan& c, std::optional<uint32_t> spi, MonoClock::time_point now) const;
  WireKey wire(const Chan& c, const MemKey& k, Slot slot, MonoClock::time_point now) const;
  std::optional<int64_t> cur_remaining(const Chan& c, MonoClock::time_point now) const;

  const MemKey& add_key(Chan& c, uint32_t spi, const KeyMaterial& m, MonoClock::time_point expires,
                        int64_t lifetime_ms, uint64_t seq);

  const MemKey& make_key(Chan& c, MonoClock::time_point expires);
  void schedule(Chan& c);

  // ---------------------------------------------------------------- minting off the loop
  // One key being made for a channel on the key worker: what was asked
  // (under which lead, for which deadline) and what the store answered.
  struct MintJob {
    uint32_t channel = 0;
    uint64_t epoch = 0;
    StoredKey want;
    MonoClock::time_point expires{}, asked{};
    int64_t wall_asked = 0;
    std::optional<StoredKey> got;
    std::string error;
    bool fenced = false;
    bool done = false;  // handled on the loop (by its completion or by settle_mint)
    void run(Store& s);  // on the key worker
  };
  std::map<uint32_t, std::shared_ptr<MintJob>> mints;  // by channel: the one in flight
  // Key and generate requests waiting for a channel's mint: handled again once it is in.
  struct MintWaiter {
    std::weak_ptr<Conn> conn;
    Message m;
  };
  std::map<uint32_t, std::vector<MintWaiter>> mint_waiters;
  StoredKey key_wanted(const Chan& c, MonoClock::time_point expires, MonoClock::time_point now, int64_t wnow) const;
  const MemKey& key_minted(Chan& c, const StoredKey& want, const StoredKey& got, MonoClock::time_point expires,
                           MonoClock::time_point now, int64_t wnow);
  void mint(Chan& c, MonoClock::time_point expires);  // unless one is in flight
  bool minting(const Chan& c) const { return mints.count(c.pol.id) != 0; }
  void wait_for_mint(const Chan& c, const std::shared_ptr<Conn>& conn, const Message& m);
  void mint_done(MintJob& j);
  void settle_mint(Chan& c);
  void prune(Chan& c, MonoClock::time_point now);

  // ---------------------------------------------------------------- connections
  struct Conn : std::enable_shared_from_this<Conn> {
    Conn(Impl& s, tcp::socket sock) : srv(s), ctx(s.ctx), s(std::move(sock), *ctx), timer(s.io) {}
    ~Conn();
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

    void arm(int64_t ms);
    void start();
    void read_header();
    void protocol_error(uint32_t req_id, DecodeStatus st);
    void send(const Message& m);
    void do_write();
    void close(const std::string& why);
    void drop_queue();
  };

  void apply_acl(PeerInfo& p);
  void accept();
  void set_conn_limit();
  // After a failed accept: when it was for want of descriptors or memory, in a while.
  bool accept_later(const boost::system::error_code& ec, asio::steady_timer& t, void (Impl::*again)());

  // ---------------------------------------------------------------- requests
  void reply_error(const std::shared_ptr<Conn>& c, const Message& req, ErrorCode code,
                   const std::string& text, std::optional<int64_t> rem = std::nullopt, std::string active = {});

  bool require(const std::shared_ptr<Conn>& c, const Message& m, std::initializer_list<Role> roles);
  // A write (or anything only the leader knows): slaves answer not_master,
  // standby masters not_active naming the active one.
  bool require_master(const std::shared_ptr<Conn>& c, const Message& m);
  // A read of the shared database: any master.
  bool require_any_master(const std::shared_ptr<Conn>& c, const Message& m);
  // A read of the in-memory keys: a slave, or the active master (a
  // standby's copy is not kept up to date).
  bool require_serving(const std::shared_ptr<Conn>& c, const Message& m);
  void reply_not_active(const std::shared_ptr<Conn>& c, const Message& m);
  // busy (error 13) with a retry-after the client library waits out before it
  // re-sends the same request.
  void reply_busy(const std::shared_ptr<Conn>& c, const Message& req, int64_t retry_after_ms, const std::string& why);
  Chan* channel_for(const std::shared_ptr<Conn>& c, const Message& m);
  void handle(const std::shared_ptr<Conn>& c, Message m);
  void on_key_request(const std::shared_ptr<Conn>& c, const Message& m);
  void on_generate(const std::shared_ptr<Conn>& c, const Message& m);
  void on_upload(const std::shared_ptr<Conn>& c, const Message& m);
  void on_usage(const std::shared_ptr<Conn>& c, const Message& m);
  void on_checkpoint(const std::shared_ptr<Conn>& c, const Message& m);
  void on_checkpoints(const std::shared_ptr<Conn>& c, const Message& m);
  void bill_and_reply(const std::shared_ptr<Conn>& c, Message r, std::optional<uint64_t> event_id);

  // lazy: nobody waits for this event's reply (a checkpoint): commit within
  // kLazyCommit, together with whatever else arrives meanwhile, so a
  // thousand channels' checkpoints cost one fsync, not a thousand in the
  // way of key requests. A key request arriving meanwhile commits them all
  // at once.
  static constexpr std::chrono::milliseconds kLazyCommit{20};
  void schedule_commit(bool lazy = false);
  // Hands the pending batch to the store worker (unless a commit is in
  // flight: then it follows that one); its replies go when it committed.
  void commit_billing();
  void finish_billing(const std::shared_ptr<BillingCommit>& bc);
  // Blocks the loop until everything accepted so far is committed and its
  // replies are sent: before a period closes, a per-key usage read, a stop.
  void drain_billing();

  // ---------------------------------------------------------------- admin
  void on_admin(const std::shared_ptr<Conn>& c, const Message& m);
  static const char* audit_action(MsgType t);
  AuditEntry audit_entry(const std::shared_ptr<Conn>& c, const std::string& action);
  void write_audit(const AuditEntry& e);
  void change_entitlement(const std::shared_ptr<Conn>& c, const Message& m, AuditEntry entry);
  void note_sender(const std::shared_ptr<Conn>& c, uint32_t ch);
  std::string evict(Chan& ch, const std::string& why);
  Message entitlement_frame(const std::string& id, const Entitlement& e);
  void on_repl_ack(const std::shared_ptr<Conn>& c, const Message& m);
  void check_confirms();
  void finish_confirm(std::list<Confirm>::iterator it, bool timed_out);
  void rotate(Chan& ch, MonoClock::time_point now);
  std::string status_json();
  std::string channels_json(MonoClock::time_point now);

  // ---------------------------------------------------------------- replication (master)
  Message repl_frame(const Chan& c, const MemKey& k, MonoClock::time_point now);
  void replicate(const Chan& c, const MemKey& k);
  void on_subscribe(const std::shared_ptr<Conn>& c, const Message& m);
  void on_forward(const std::shared_ptr<Conn>& c, const Message& m);

  // ---------------------------------------------------------------- replication (slave)
  void start_upstream();
  void apply_repl(Message m);
  void apply_entitlement(const Message& m);
  void forward_billing();
  void maintenance();

  // ---------------------------------------------------------------- metrics
  double replication_lag_s(MonoClock::time_point now);
  std::string unhealthy_reason();
  std::string metrics_text();
  void metrics_accept();

  // ---------------------------------------------------------------- stop
  void do_stop();
};

}  // namespace keycast::kp
