// Where the control thread gets keys from. The data plane's control loop
// (main lcore of keycast-send / keycast-recv) owns one KeySource and calls it:
//   start()    once, before workers run: install the first keys and publish;
//   poll()     about every millisecond: rotate, fetch, drop expired keys;
//   on_event() for each worker event (unknown SPI, key change notice).
// Every change goes through KeyControl (dataplane/key_table.hpp): add()
// the key with its remaining effective time, set roles, publish(). The
// static key file source lives here; the KMS client (kms_key_source.hpp) implements the
// same interface.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/key_record.hpp"
#include "dataplane/control_events.hpp"
#include "dataplane/key_table.hpp"

namespace keycast::dp {

class KeySource {
 public:
  virtual ~KeySource() = default;
  virtual void start(KeyControl& ctl, MonoClock::time_point now) = 0;
  virtual void poll(KeyControl& ctl, MonoClock::time_point now) = 0;
  virtual void on_event(KeyControl& ctl, const ControlEvent& e) = 0;
  // Sender: the pending next key and when it becomes current (for the notice).
  virtual const char* name() const = 0;
};

// Static keys from --key-file (labs and tests only).
// Sender: line i is current; with rotate_ms > 0 the next line becomes current
// every rotate_ms (the last line stays current when the file runs out, never
// wrapping: an SPI is never reused). A previous notice is published
// notice_lead_ms before each switch.
// Receiver, default: holds every key of the file.
// Receiver, key window (--key-window): behaves like a KMS-fed client, holding
// only previous / current / next. It starts with the first two lines; a key
// change notice installs the announced next key (if not held) and schedules
// the switch; an unknown SPI that the file holds is "fetched" (installed)
// as a KMS client would; the previous key is dropped grace_ms after a switch.
// Loads --key-file for a static key source: checks each key against --suite
// (if given), warns that static keys are for labs only. Throws UsageError
// naming the option.
std::vector<KeyRecord> load_static_keys(const std::string& path, uint32_t channel,
                                        const std::string& suite, const char* prog);

struct ChannelConfig;
// --key-file for the channels of a process: the keys of each channel, in
// channel order. "SPI HEXKEY" lines belong to the process's channel when it
// has one, else to channel 1. Every channel needs a key; each key must be of
// its channel's suite= (else --suite, if given). Keys of channels the process
// does not carry are ignored. Throws UsageError naming the option or channel.
std::vector<std::vector<KeyRecord>> static_keys_by_channel(const std::string& path,
                                                           const std::vector<ChannelConfig>& chans,
                                                           const std::string& suite,
                                                           const char* prog);

class StaticKeySource : public KeySource {
 public:
  enum class Role { Sender, Receiver };
  StaticKeySource(std::vector<KeyRecord> keys, Role role, uint32_t rotate_ms,
                  uint32_t notice_lead_ms, bool key_window = false, uint32_t grace_ms = 2000);
  void start(KeyControl& ctl, MonoClock::time_point now) override;
  void poll(KeyControl& ctl, MonoClock::time_point now) override;
  void on_event(KeyControl& ctl, const ControlEvent& e) override;
  const char* name() const override { return "key-file"; }
  // Sender: the first key lasts ms (1..rotate_ms) instead of rotate_ms, so
  // that channels started together switch at different times.
  void set_first_switch_ms(uint32_t ms) { first_ms_ = ms; }

  uint64_t unknown_spi_events = 0, notice_events = 0, fetched = 0;

 private:
  const KeyRecord* in_file(uint32_t spi) const;
  std::size_t index_of(uint32_t spi) const;
  void rx_switch(KeyControl& ctl, uint32_t spi, MonoClock::time_point now);

  std::vector<KeyRecord> keys_;
  Role role_;
  uint32_t rotate_ms_, lead_ms_;
  uint32_t first_ms_ = 0;  // 0: rotate_ms_
  bool window_;
  uint32_t grace_ms_;
  std::size_t cur_ = 0;
  MonoClock::time_point next_switch_{};
  bool notice_sent_ = false;
  std::vector<uint32_t> reported_;
  // Receiver window mode.
  uint32_t pending_spi_ = 0;
  MonoClock::time_point pending_at_{};
  uint32_t last_notice_spi_ = 0;
  struct Retiring {
    uint32_t spi;
    MonoClock::time_point at;
  };
  std::vector<Retiring> retiring_;
};

}  // namespace keycast::dp
