// Keys from the key management server: the KeySource that
// keycast-send and keycast-recv use with --kms.
//
// All key-plane traffic goes through keycast_keyplane_client on its own io
// thread; replies come back through a small queue this class drains in
// poll(), so the control loop never waits on the network and the workers
// never see anything but published key tables. One source serves one
// channel; the channels of a process share one client (one TLS connection,
// requests pipelined on it), and their start requests are all sent before
// any answer is awaited (begin_start / finish_start), so a process with 1,024
// channels starts in about one round trip, not 1,024.
//
// A channel the key server refuses to this certificate (channel_denied,
// not_authorised, unknown_channel) is reported once and never asked for
// again: refused() is set and the channel stays without keys.
//
// Sender (one sender per channel: two senders sharing a key would share its
// IV space):
//   kms-origin    start: generate(current+next); at P1 before the switch:
//                 generate(next)
//   sender-origin start: make a key, upload it; at P1: make and upload the
//                 next key
//   notice_lead before the switch: publish the in-band previous notice;
//   at remaining time 0: switch to the next key, then report the finished
//   epoch's bytes and packets (billing). Meanwhile, every usage interval,
//   a checkpoint of the open epoch's totals so far: a sender killed
//   mid-epoch leaves at most an interval unbilled.
//   Sequence numbers of every key start from the wall clock in nanoseconds:
//   a restarted kms-origin sender may be handed the key it used before its
//   restart, and must still never repeat an IV under it.
// Receiver:
//   start: fetch(current+next); at P2 before the switch: fetch(next); an
//   unknown SPI in a packet or a previous notice: fetch that key at once,
//   rate limited; at remaining time 0 the next key becomes current and the
//   old one is kept for the grace time.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/key_source.hpp"
#include "keyplane/client/client.hpp"

namespace keycast::dp {

struct KmsOptions {
  std::vector<std::string> servers;  // HOST:PORT, in failover order
  kp::TlsFiles tls;
  uint32_t channel = 0;
  bool sender = false;
  bool sender_origin = false;  // --key-origin sender
  Suite suite = Suite::Aes128Gcm;
  int64_t lifetime_ms = 60000;  // sender-origin: lifetime of each key made here
  int64_t p1_ms = 0;            // sender: obtain the next key this long before the switch (0: lifetime/3)
  int64_t p2_ms = 0;            // receiver: fetch the next key this long before the switch (0: lifetime/6)
  int64_t p2_spread_ms = -1;    // receiver: ... up to this much later, uniformly (-1: P2/4, 0: exactly at P2)
  int64_t grace_ms = 2000;      // receiver: keep the previous key this long after the switch
  int64_t notice_lead_ms = 200; // sender: previous notice this long before the switch (0: none)
  int64_t fetch_min_interval_ms = 100;  // receiver: at most one event-driven fetch per SPI this often (see retry_gap_ms)
  std::chrono::milliseconds start_timeout{10000};
};

// An epoch's usage so far, read by the caller from the key slot's counters
// (final once the epoch is over and an RCU grace period has passed).
struct EpochUsage {
  uint32_t spi = 0;
  uint64_t bytes = 0, packets = 0;
};

// Validates the --kms option group shared by keycast-send and keycast-recv;
// throws UsageError naming the offending option.
KmsOptions kms_options(const std::vector<std::string>& kms, const std::string& tls_cert,
                       const std::string& tls_key, const std::string& tls_ca, const std::string& tls_crl,
                       const std::string& key_file, uint32_t channel, bool sender);

// The client a process's key sources share (senders ask the master only).
std::shared_ptr<kp::Client> make_kms_client(const KmsOptions& o);

// How much earlier than P2 a receiver's fetch of the next key waits this
// epoch, from a random draw: uniform over [0, spread] where spread is
// spread_ms (-1: P2/4), never P2 or more (the fetch stays ahead of the switch).
int64_t p2_spread_offset(int64_t p2_ms, int64_t spread_ms, uint64_t draw);

// How long after an unanswered or refused request for a key to ask again, left_ms before the
// switch that needs it: interval_ms while the switch is far off or past, a quarter of what is
// left (at least 10 ms) as it nears. A key that reached the key servers late (a master that
// restarted at P1, a slave whose replication had to reconnect) is then still fetched before it
// is used; past the switch the current key is kept, and a key server that cannot answer is
// not asked a hundred times a second.
int64_t retry_gap_ms(int64_t left_ms, int64_t interval_ms);

class KmsKeySource : public KeySource {
 public:
  explicit KmsKeySource(KmsOptions o);  // with a client of its own
  KmsKeySource(KmsOptions o, std::shared_ptr<kp::Client> client);
  ~KmsKeySource() override;

  // start() = begin_start() + finish_start(now + start_timeout).
  void start(KeyControl& ctl, MonoClock::time_point now) override;
  void begin_start(KeyControl& ctl);
  // Waits (until the deadline) for the answer to begin_start's request and
  // installs its keys; throws when a sender cannot start (no answer, refused).
  void finish_start(KeyControl& ctl, MonoClock::time_point deadline);
  bool refused() const { return refused_; }
  // When the answer to the start request was read (time_point{} if none came).
  MonoClock::time_point start_answered_at() const { return start_answered_; }
  void poll(KeyControl& ctl, MonoClock::time_point now) override;
  void on_event(KeyControl& ctl, const ControlEvent& e) override;
  // A key_push from the master for this channel (any thread): applied at
  // the next poll().
  void on_push(kp::Message m);
  const char* name() const override { return "kms"; }

  // Sender usage, all as checkpoints (the epoch's totals so far; the master
  // keeps the high-water mark per instance, channel and SPI, so nothing is
  // billed twice however often a figure is sent).
  // checkpoint_due(): the open epoch at a checkpoint tick: the entry to send
  // (then counted as sent and in flight), or nothing while the previous one
  // is unanswered or when nothing was sent since. The caller sends every
  // channel's entries in one frame and hands each its answer with
  // checkpoint_answered() (from any thread).
  std::optional<kp::UsageEntry> checkpoint_due(const EpochUsage& u);
  void checkpoint_answered(const kp::Result& r, const EpochUsage& u);
  uint32_t channel() const { return o_.channel; }
  // report_usage(): an epoch's final figures (at the switch, at exit); sent
  // again by resend_usage() until acknowledged.
  void report_usage(const EpochUsage& u);
  void resend_usage();
  // Waits (until the deadline) for every usage report's answer; true if
  // every epoch's last figures were acknowledged.
  bool wait_usage(MonoClock::time_point deadline);
  // At exit, after the workers stopped: wait (bounded) for the answers to
  // key requests still in flight and count them, installing nothing, so that
  // fetch_ok is what the key server billed. Whatever is still unanswered at
  // the deadline is unanswered(); the server may or may not have billed it.
  void settle(std::chrono::milliseconds timeout);
  void settle_until(MonoClock::time_point deadline);
  uint64_t unanswered() const {
    // Saturates so that an answer counted twice shows as ok + errors > requests.
    return fetches > fetch_ok + fetch_errors ? fetches - fetch_ok - fetch_errors : 0;
  }
  // Sender: key slots whose epoch ended since the last call. Their counters
  // are final once the caller has waited out an RCU grace period.
  std::vector<std::shared_ptr<KeySlot>> take_finished_epochs();

  // Figures for stats.
  // fetches = fetch_ok + fetch_errors + unanswered(): requests sent, answered
  // with keys, answered with an error.
  uint64_t fetches = 0, fetch_ok = 0, fetch_errors = 0, event_fetches = 0, usage_reports = 0,
           usage_acked = 0, usage_failed = 0, late_switches = 0, evictions = 0;
  // Sender: switches announced less than nine tenths of --notice-lead-ms ahead (or not at
  // all) because the next key came late: receivers that rely on notices may meet its SPI unheld.
  uint64_t short_notices = 0;
  // Receiver: switches its current key reached with no next key held (it keeps the
  // current one and fetches what the packets name). Both: failed requests by error.
  uint64_t keys_late = 0;
  std::map<kp::ErrorCode, uint64_t> errors_by_code;

 private:
  struct Reply {
    int tag;
    kp::Result r;
    EpochUsage usage;  // kUsage: the figures this answer is for
  };
  static constexpr uint64_t kNone = ~uint64_t{0};
  struct UsageMark {
    EpochUsage sent;          // the latest figures sent
    uint64_t acked = 0;       // bytes of the highest acknowledged figures
    uint64_t in_flight = kNone;  // bytes of the unanswered checkpoint, if any
    bool final = false;       // the epoch is over: sent.bytes is its total
  };
  void send_checkpoint(UsageMark& m);
  void usage_answered(const Reply& rep);
  enum Tag { kStart = 1, kNext, kBySpi, kUsage, kPush };
  void apply_push(KeyControl& ctl, const kp::Result& r, MonoClock::time_point now);
  void submit_next(KeyControl& ctl, MonoClock::time_point now);
  void install(KeyControl& ctl, const kp::WireKey& k, MonoClock::time_point received_at,
               bool& changed);
  void handle(KeyControl& ctl, Reply& rep, MonoClock::time_point now);
  void count_only(const Reply& rep);  // at exit: the counters, no keys installed
  bool refuse_if_denied(const kp::Result& r);
  void count_error(const kp::Result& r);
  std::deque<Reply> take_replies();
  void switch_to_next(KeyControl& ctl, MonoClock::time_point now);
  void short_notice(uint32_t next_spi, int64_t lead_ms);
  kp::Callback enqueue(int tag, EpochUsage u = {});
  int64_t p1() const;
  int64_t p2() const;
  // This epoch's P2: P2 less a uniform draw from [0, spread], made anew at
  // every switch, so that the receivers of one channel (and the channels of
  // one receiver) do not all ask the key servers in the same millisecond.
  int64_t p2_due() const { return p2() - p2_offset_; }
  void draw_p2_offset();

  KmsOptions o_;
  std::mt19937_64 rng_{std::random_device{}()};
  int64_t p2_offset_ = 0;
  std::shared_ptr<kp::Client> client_;
  // Where answers land, from the client's io thread. The client's callbacks
  // hold the inbox, never the source: the channels of a process share one
  // client, which outlives all but the last of their sources (that one joins
  // its io thread, which first fails every request still queued), so an
  // answer may come for a source already destroyed, e.g. when a failed start
  // unwinds with other channels' requests in flight.
  struct Inbox {
    std::mutex mu;
    std::condition_variable cv;  // a reply arrived (finish_start waits on it)
    std::deque<Reply> replies;   // drained by poll()
    void post(Reply r);
  };
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();
  bool refused_ = false;
  MonoClock::time_point start_answered_{};

  MonoClock::time_point cur_end_{};   // current key's remaining time reaches 0
  MonoClock::time_point next_end_{};  // next key's end of use
  int64_t lifetime_ms_ = 0;           // learnt from the KMS (kms-origin) or configured
  bool next_in_flight_ = false;
  // The last next-key request: when it was asked, when its answer reached the client (a late
  // notice's warning says which of them was late).
  MonoClock::time_point next_asked_{}, next_answered_{};
  kp::ErrorCode next_error_ = kp::ErrorCode::Ok;  // how the last next-key request was answered
  MonoClock::time_point next_retry_{};
  bool notice_set_ = false;
  bool notice_possible_ = false;  // the current key was held while its notice could still go out in time
  bool warned_late_ = false;
  // The last fetch by SPI, per SPI, for a notice and for packets apart: a notice's fetch
  // refused because the key had not reached this server yet does not hold back the one the
  // first packets under that SPI make.
  std::unordered_map<uint32_t, MonoClock::time_point> last_notice_fetch_, last_packet_fetch_;
  std::map<uint32_t, MonoClock::time_point> ends_;  // end of use of each held key
  struct Retiring {
    uint32_t spi;
    MonoClock::time_point at;
  };
  std::vector<Retiring> retiring_;
  std::vector<std::shared_ptr<KeySlot>> finished_;
  std::map<uint32_t, UsageMark> usage_;  // by SPI: epochs with figures not yet acknowledged
  bool warned_usage_ = false;
};

}  // namespace keycast::dp
