// Channels: what one keycast-send or keycast-recv process carries.
//
// A channel is one multicast group:port with its own key lifecycle and SPI
// space. A process carries up to kMaxChannels of them on one port, given as
//   --channel ID --group A.B.C.D:PORT      one channel (the original form)
//   --channel ID=A.B.C.D:PORT              repeatable
//   --channels FILE                        one channel a line:
//        ID GROUP:PORT [key=value ...]     '#' starts a comment
// Keys of a line: source=A.B.C.D (the sender's outer source; on a receiver
// the SSM source it expects), suite=aes128gcm|aes256gcm, and for the sender
// rate=PPS, payload-size=N, ttl=N, dscp=N. A receiver reads the same file and ignores
// the sender's keys, so one file can describe both ends of a channel.
//
// Groups are unique per process: a receiver looks keys up by (SPI, group), so
// the group address alone names the channel (the port is checked after the
// ICV). Every error names the option or FILE:LINE (UsageError, exit 2).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/suite.hpp"
#include "dataplane/app.hpp"

namespace keycast::dp {

constexpr unsigned kMaxChannels = 1024;

struct ChannelConfig {
  uint32_t id = 1;
  GroupAddr group{};
  std::optional<uint32_t> source;  // host byte order
  std::optional<Suite> suite;
  std::optional<uint64_t> rate;          // sender: packets per second (0: flat out)
  std::optional<uint32_t> payload_size;  // sender: generator UDP payload bytes
  std::optional<uint32_t> ttl;           // sender: outer IPv4 TTL
  std::optional<uint32_t> dscp;          // sender: outer DSCP
  std::string where;                     // "--channel" or "FILE:LINE", for messages
};

// The raw option values, as the command line gave them.
struct ChannelOptions {
  std::vector<std::string> channel;  // --channel: "ID" (with --group) or "ID=GROUP:PORT"
  std::string group;                 // --group (the one-channel form)
  bool group_given = false;          // --group was on the command line (not its default)
  std::string channels_file;         // --channels
};

// The channels of a process, in configuration order (that order is each
// channel's index). Throws UsageError for a bad, duplicate or conflicting
// channel, naming the option or file line.
std::vector<ChannelConfig> parse_channels(const ChannelOptions& o);

// One line of a channels file, without its comment; nullopt for a blank line.
std::optional<ChannelConfig> parse_channel_line(std::string_view line, const std::string& where);

// Group address -> channel index, immutable once built: what a worker asks
// when a packet's (group, SPI) is not in the key table (a group no channel
// has, or a key not held yet), and the sender's ingest for every datagram.
// Open addressing kept at most a quarter full: one or two probes.
class GroupIndex {
 public:
  static constexpr uint32_t kNone = 0xffffffff;
  GroupIndex() = default;
  explicit GroupIndex(const std::vector<ChannelConfig>& chans) {
    std::size_t cap = 16;
    while (cap < 4 * chans.size()) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    for (std::size_t i = 0; i < chans.size(); ++i) {
      std::size_t h = hash(chans[i].group.ip) & mask_;
      while (slots_[h].index != kNone) h = (h + 1) & mask_;
      slots_[h] = Slot{chans[i].group.ip, static_cast<uint32_t>(i)};
    }
  }
  uint32_t find(uint32_t group_ip) const noexcept {
    for (std::size_t h = hash(group_ip) & mask_;; h = (h + 1) & mask_) {
      const Slot& s = slots_[h];
      if (s.index == kNone || s.ip == group_ip) return s.index;
    }
  }

 private:
  struct Slot {
    uint32_t ip = 0;
    uint32_t index = kNone;
  };
  static std::size_t hash(uint32_t ip) noexcept {
    return static_cast<std::size_t>((uint64_t(ip) * 0x9e3779b97f4a7c15ull) >> 40);
  }
  std::vector<Slot> slots_ = std::vector<Slot>(1);  // empty: finds nothing
  std::size_t mask_ = 0;
};

}  // namespace keycast::dp
