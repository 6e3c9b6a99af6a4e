#include "keyplane/config.hpp"

#include <sstream>
#include <stdexcept>

#include "keyplane/hostport.hpp"

namespace keycast::kp {

namespace {
int64_t parse_ms(const std::string& v, const std::string& what) {
  if (v.empty() || v.size() > 12 || v.find_first_not_of("0123456789") != std::string::npos)
    throw std::runtime_error(what + ": expected a number of milliseconds, got '" + v + "'");
  return std::stoll(v);
}
}  // namespace

ChannelPolicy parse_channel_policy(const std::string& spec, const ChannelPolicy& defaults) {
  const std::string opt = "--channel " + spec;
  ChannelPolicy p = defaults;
  auto colon = spec.find(':');
  std::string id = spec.substr(0, colon);
  if (id.empty() || id.size() > 10 || id.find_first_not_of("0123456789") != std::string::npos ||
      std::stoull(id) > 0xffffffffULL)
    throw std::runtime_error(opt + ": channel id must be an integer 0..4294967295");
  p.id = uint32_t(std::stoull(id));
  if (colon != std::string::npos) {
    for (const auto& kv : split_list(spec.substr(colon + 1))) {
      auto eq = kv.find('=');
      if (eq == std::string::npos) throw std::runtime_error(opt + ": expected key=value, got '" + kv + "'");
      std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
      if (k == "lifetime") p.lifetime_ms = parse_ms(v, opt + " lifetime");
      else if (k == "p1") p.p1_ms = parse_ms(v, opt + " p1");
      else if (k == "p2") p.p2_ms = parse_ms(v, opt + " p2");
      else if (k == "grace") p.grace_ms = parse_ms(v, opt + " grace");
      else if (k == "evict") p.evict_ms = parse_ms(v, opt + " evict");
      else if (k == "suite") {
        auto s = parse_suite(v);
        if (!s) throw std::runtime_error(opt + ": suite must be aes128gcm or aes256gcm");
        p.suite = *s;
      } else if (k == "origin") {
        if (v == "kms") p.origin = KeyOrigin::Kms;
        else if (v == "sender") p.origin = KeyOrigin::Sender;
        else throw std::runtime_error(opt + ": origin must be kms or sender");
      } else {
        throw std::runtime_error(opt + ": unknown key '" + k +
                                 "' (lifetime, p1, p2, grace, evict, suite, origin)");
      }
    }
  }
  if (p.lifetime_ms < 100) throw std::runtime_error(opt + ": lifetime must be >= 100 ms");
  if (!(p.p1_ms < p.lifetime_ms)) throw std::runtime_error(opt + ": p1 must be < lifetime");
  if (!(p.p2_ms < p.p1_ms)) throw std::runtime_error(opt + ": p2 must be < p1");
  if (p.p2_ms <= 0) throw std::runtime_error(opt + ": p2 must be > 0");
  if (p.evict_ms < 100) throw std::runtime_error(opt + ": evict must be >= 100 ms");
  return p;
}

std::string describe(const ChannelPolicy& p) {
  std::ostringstream o;
  o << p.id << ":lifetime=" << p.lifetime_ms << ",p1=" << p.p1_ms << ",p2=" << p.p2_ms
    << ",grace=" << p.grace_ms << ",evict=" << p.evict_ms << ",suite=" << suite_name(p.suite)
    << ",origin=" << (p.origin == KeyOrigin::Kms ? "kms" : "sender");
  return o.str();
}

void parse_acl(const std::string& spec, ServerConfig& cfg) {
  auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0)
    throw std::runtime_error("--acl " + spec + ": expected CN=CHANNELS (e.g. client1=1,2 or admin=*)");
  auto list = parse_channel_list(spec.substr(eq + 1));
  if (!list) throw std::runtime_error("--acl " + spec + ": channels must be * or a list of integers");
  std::string cn = spec.substr(0, eq);
  cfg.acl_all[cn] = list->first;
  cfg.acl[cn] = list->second;
}

}  // namespace keycast::kp
