// Every channel's key source, built and driven in one place for both
// binaries: one source a channel (its key-file lines, or the key servers), the
// key servers reached through one client shared by all channels, every
// change published as one table (KeyPublisher).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "common/key_record.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/control_events.hpp"
#include "dataplane/key_source.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/kms_key_source.hpp"

namespace keycast::dp {

struct ChannelKeySourcesOptions {
  bool sender = false;
  bool use_kms = false;
  KmsOptions kms;                             // with use_kms; channel and suite are set per channel
  std::vector<std::vector<KeyRecord>> keys;   // without: each channel's key-file keys
  uint32_t rotate_ms = 0, notice_lead_ms = 0;  // static sender
  bool rotate_stagger = false;                 // static sender: spread the channels' switches
  bool key_window = false;                     // static receiver
  uint32_t grace_ms = 2000;                    // static receiver
};

// Sums over the channels' key-server sources (final figures).
struct KmsTotals {
  uint64_t requests = 0, ok = 0, errors = 0, unanswered = 0, event_fetches = 0, refused = 0,
           usage_reports = 0, usage_acked = 0, late_switches = 0, evictions = 0, short_notices = 0,
           keys_late = 0;
};

class ChannelKeySources {
 public:
  // tags[i]: what packets name channel i by in the key table (see KeyTable).
  ChannelKeySources(KeyPublisher& pub, const std::vector<ChannelConfig>& chans,
              const std::vector<uint32_t>& tags, SlotParams slot, ChannelKeySourcesOptions o);

  // The first keys of every channel, published as one table. Key servers get
  // every channel's request before any answer is awaited; static keys count
  // their lifetimes from static_start (the start of sending).
  void start(MonoClock::time_point static_start);
  void poll(MonoClock::time_point now);  // every channel; changes due together publish once
  void on_event(const ControlEvent& e);  // e.channel: the channel index

  std::size_t size() const { return sources_.size(); }
  bool uses_kms() const { return !kms_.empty(); }
  KmsKeySource& kms(std::size_t i) { return *kms_[i]; }
  const KmsKeySource& kms(std::size_t i) const { return *kms_[i]; }
  const StaticKeySource& key_file(std::size_t i) const { return *statics_[i]; }
  KmsTotals kms_totals() const;
  // Milliseconds from the first start request to each channel's answer,
  // sorted (channels that got keys at start; key servers only).
  std::vector<double> start_answer_ms() const;
  // Open epochs' checkpoints of every channel that has one due, in one frame
  // (index = channel index).
  void send_checkpoints(const std::vector<std::pair<std::size_t, EpochUsage>>& due);
  // At exit: wait (until the deadline) for answers still on their way, so
  // the counters match what the key servers counted.
  void settle(MonoClock::time_point until);
  ~ChannelKeySources();

 private:
  KeyPublisher& pub_;
  std::vector<std::unique_ptr<KeySource>> sources_;  // index = channel index
  std::vector<KmsKeySource*> kms_;
  std::shared_ptr<kp::Client> client_;  // shared by the key-server sources
  std::vector<StaticKeySource*> statics_;
  std::chrono::milliseconds start_timeout_{10000};
  // Routes the master's key pushes to the channel's source; emptied first
  // thing at destruction, under its lock, so no push reaches a source gone.
  struct PushRoute {
    std::mutex mu;
    std::map<uint32_t, KmsKeySource*> by_channel;
  };
  std::shared_ptr<PushRoute> route_ = std::make_shared<PushRoute>();
  MonoClock::time_point start_begun_{};
};

}  // namespace keycast::dp
