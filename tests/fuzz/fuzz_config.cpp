// libFuzzer target for keycast-keyd's configuration: the input is a config
// file (Boost.Program_options INI syntax, as `keycast-keyd --config FILE`
// reads it), parsed against keyd's option names and then validated the way
// keyd_main.cpp does (channel policies, ACLs, HOST:PORT lists, roles,
// suites, channel lists). Any input must end in a value or a
// std::exception with a message, never a crash, a hang or undefined
// behaviour. Accepted values must also be consistent (p2 < p1 < lifetime).
#include <boost/program_options.hpp>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "keyplane/config.hpp"
#include "keyplane/hostport.hpp"
#include "keyplane/money.hpp"
#include "keyplane/tls.hpp"

namespace po = boost::program_options;
using namespace keycast;
using namespace keycast::kp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  std::string text(reinterpret_cast<const char*>(data), size);
  ServerConfig cfg;
  std::string role, masters, suite, origin, tariff_request, tariff_gib;
  std::vector<std::string> channels, acls;
  int64_t lifetime = 60000, p1 = 20000, p2 = 10000, grace = 5000;
  po::options_description desc;
  // clang-format off
  desc.add_options()
    ("listen", po::value(&cfg.listen))
    ("role", po::value(&role))
    ("master", po::value(&masters))
    ("db", po::value(&cfg.db))
    ("master-key-file", po::value(&cfg.master_key_file))
    ("tls-cert", po::value(&cfg.tls.cert))
    ("tls-key", po::value(&cfg.tls.key))
    ("tls-ca", po::value(&cfg.tls.ca))
    ("tls-crl", po::value(&cfg.tls.crl))
    ("channel", po::value(&channels)->composing())
    ("lifetime-ms", po::value(&lifetime))
    ("p1-ms", po::value(&p1))
    ("p2-ms", po::value(&p2))
    ("grace-ms", po::value(&grace))
    ("suite", po::value(&suite))
    ("key-origin", po::value(&origin))
    ("acl", po::value(&acls)->composing())
    ("tariff-per-request", po::value(&tariff_request))
    ("tariff-per-gib", po::value(&tariff_gib))
    ("currency", po::value(&cfg.tariffs.currency))
    ("metrics", po::value(&cfg.metrics))
    ("handshake-timeout-ms", po::value(&cfg.handshake_timeout_ms))
    ("max-connections", po::value(&cfg.max_connections))
    ("verbose,v", po::bool_switch(&cfg.verbose));
  // clang-format on
  try {
    po::variables_map vm;
    std::istringstream in(text);
    po::store(po::parse_config_file(in, desc), vm);
    po::notify(vm);
  } catch (const std::exception&) {
    return 0;
  }
  try {
    // Prices: exact decimal micro-units, and they print back as they parse.
    for (const auto* t : {&tariff_request, &tariff_gib})
      if (auto m = parse_micros(*t)) {
        if (*m < 0 || parse_micros(micros_text(*m)) != m) std::abort();
        (void)fee_micros(~0ull, ~0ull, Tariffs{*m, *m, "EUR", 2});
        (void)amount_text(*m, currency_decimals(cfg.tariffs.currency));
      }
    (void)parse_role(role);
    (void)parse_suite(suite);
    for (auto& m : split_list(masters)) (void)parse_host_port(m, "--master");
    (void)parse_host_port(cfg.listen, "--listen");
    if (!cfg.metrics.empty()) (void)parse_host_port(cfg.metrics, "--metrics");
  } catch (const std::exception&) {
  }
  ChannelPolicy defaults;
  defaults.lifetime_ms = lifetime;
  defaults.p1_ms = p1;
  defaults.p2_ms = p2;
  defaults.grace_ms = grace;
  for (auto& spec : channels) {
    try {
      ChannelPolicy p = parse_channel_policy(spec, defaults);
      if (!(p.p2_ms > 0 && p.p2_ms < p.p1_ms && p.p1_ms < p.lifetime_ms)) std::abort();
      (void)describe(p);
    } catch (const std::exception&) {
    }
  }
  for (auto& a : acls) {
    try {
      parse_acl(a, cfg);
    } catch (const std::exception&) {
    }
    auto eq = a.find('=');
    if (eq != std::string::npos) (void)parse_channel_list(a.substr(eq + 1));
  }
  return 0;
}
