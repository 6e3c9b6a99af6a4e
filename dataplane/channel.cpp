#include "dataplane/channel.hpp"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <unordered_map>

namespace keycast::dp {

namespace {

bool to_u64(const std::string& s, uint64_t& v) {
  if (s.empty() || s[0] == '-' || s[0] == '+') return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long x = std::strtoull(s.c_str(), &end, 10);
  if (*end || errno == ERANGE) return false;
  v = x;
  return true;
}

uint32_t channel_id(const std::string& s, const std::string& where) {
  uint64_t v = 0;
  if (!to_u64(s, v) || v == 0 || v > 0xffffffffULL)
    throw UsageError(where + ": channel id '" + s + "' is not an integer in 1..4294967295");
  return static_cast<uint32_t>(v);
}

void set_key(ChannelConfig& c, const std::string& kv, const std::string& where) {
  const auto eq = kv.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UsageError(where + ": expected key=value, got '" + kv + "'");
  const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
  const std::string at = where + ": " + k;
  uint64_t n = 0;
  if (k == "source") {
    c.source = parse_ipv4(v, at);
  } else if (k == "suite") {
    c.suite = parse_suite(v);
    if (!c.suite) throw UsageError(at + ": '" + v + "' is not aes128gcm or aes256gcm");
  } else if (k == "rate") {
    if (!to_u64(v, n)) throw UsageError(at + ": '" + v + "' is not a packet rate (0 = flat out)");
    c.rate = n;
  } else if (k == "payload-size") {
    if (!to_u64(v, n) || n > 65535) throw UsageError(at + ": '" + v + "' is not a byte count");
    c.payload_size = static_cast<uint32_t>(n);
  } else if (k == "ttl") {
    if (!to_u64(v, n) || n == 0 || n > 255) throw UsageError(at + ": must be in 1..255");
    c.ttl = static_cast<uint32_t>(n);
  } else if (k == "dscp") {
    if (!to_u64(v, n) || n > 63) throw UsageError(at + ": must be in 0..63");
    c.dscp = static_cast<uint32_t>(n);
  } else {
    throw UsageError(where + ": unknown key '" + k +
                     "' (source=, suite=, rate=, payload-size=, ttl=, dscp=)");
  }
}

}  // namespace

std::optional<ChannelConfig> parse_channel_line(std::string_view line, const std::string& where) {
  if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
  std::istringstream in{std::string(line)};
  std::string id, group, kv;
  if (!(in >> id)) return std::nullopt;
  if (!(in >> group)) throw UsageError(where + ": expected 'ID GROUP:PORT [key=value ...]'");
  ChannelConfig c;
  c.where = where;
  c.id = channel_id(id, where);
  c.group = parse_group(group, where);
  while (in >> kv) set_key(c, kv, where);
  return c;
}

std::vector<ChannelConfig> parse_channels(const ChannelOptions& o) {
  std::vector<ChannelConfig> out;
  bool one_channel_form = false;
  for (const auto& v : o.channel) {
    const auto eq = v.find('=');
    if (eq == std::string::npos) {
      // --channel ID [--group A:P]: the one-channel form.
      if (o.channel.size() > 1 || !o.channels_file.empty())
        throw UsageError("--channel " + v + ": with several channels, give each as --channel ID=GROUP:PORT");
      ChannelConfig c;
      c.where = "--channel";
      c.id = channel_id(v, "--channel");
      c.group = parse_group(o.group, "--group");
      out.push_back(c);
      one_channel_form = true;
      continue;
    }
    ChannelConfig c;
    c.where = "--channel " + v;
    c.id = channel_id(v.substr(0, eq), c.where);
    c.group = parse_group(v.substr(eq + 1), c.where);
    out.push_back(c);
  }
  if (!one_channel_form && o.group_given && (!o.channel.empty() || !o.channels_file.empty()))
    throw UsageError("--group: not with --channel ID=GROUP:PORT or --channels (each channel names its group)");
  if (!o.channels_file.empty()) {
    std::ifstream f(o.channels_file);
    if (!f) throw UsageError("--channels " + o.channels_file + ": cannot open");
    std::string line;
    unsigned lineno = 0;
    while (std::getline(f, line)) {
      ++lineno;
      if (auto c = parse_channel_line(line, o.channels_file + ":" + std::to_string(lineno)))
        out.push_back(*c);
    }
    if (f.bad()) throw UsageError("--channels " + o.channels_file + ": read error");
  }
  if (out.empty()) {
    // Neither form given: channel 1 on --group (its default).
    ChannelConfig c;
    c.where = "--group";
    c.id = 1;
    c.group = parse_group(o.group, "--group");
    out.push_back(c);
  }
  if (out.size() > kMaxChannels)
    throw UsageError(out[kMaxChannels].where + ": more than " + std::to_string(kMaxChannels) +
                     " channels in one process");
  std::unordered_map<uint32_t, std::size_t> ids, groups;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const ChannelConfig& c = out[i];
    if (auto [it, fresh] = ids.emplace(c.id, i); !fresh)
      throw UsageError(c.where + ": channel " + std::to_string(c.id) + " is already defined at " +
                       out[it->second].where);
    if (auto [it, fresh] = groups.emplace(c.group.ip, i); !fresh)
      throw UsageError(c.where + ": group " + ipv4_str(c.group.ip) + " is already channel " +
                       std::to_string(out[it->second].id) + "'s (" + out[it->second].where +
                       "); one group carries one channel");
  }
  return out;
}

}  // namespace keycast::dp
