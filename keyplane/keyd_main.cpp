// keycast-keyd: key management server (master or slave). See docs/keyplane.md.
#include <openssl/rand.h>

#include <boost/program_options.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <pthread.h>

#include "common/hex.hpp"
#include "common/secure.hpp"
#include "keycast_version.hpp"
#include "common/options_file.hpp"
#include "common/service_notify.hpp"
#include "keyplane/config.hpp"
#include "keyplane/hostport.hpp"
#include "keyplane/money.hpp"
#include "keyplane/secret_file.hpp"
#include "keyplane/server.hpp"
#include "keyplane/wall_time.hpp"

namespace po = boost::program_options;
using namespace keycast;
using namespace keycast::kp;

int main(int argc, char** argv) {
  po::options_description desc(
      "keycast-keyd: keycast key management server (TLS 1.3, mutual authentication)\n"
      "Usage: keycast-keyd [options] | --config FILE\n"
      "Every option may also be given in the config file as 'name = value'\n"
      "(repeat 'channel = ...' and 'acl = ...' lines as needed)");
  std::string config, role = "master", masters, suite = "aes128gcm", origin = "kms", genkey;
  std::string tariff_request, tariff_gib;
  int currency_decimals_opt = -1;
  std::vector<std::string> channels, acls;
  ServerConfig cfg;
  int64_t lifetime = 60000, p1 = 20000, p2 = 10000, grace = 5000, evict = 2000;
  bool allow_insecure_key_file = false;
  std::string log_level, log_format;
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("version", "print the version")
    ("config", po::value(&config), "read options from FILE (command line wins)")
    ("listen", po::value(&cfg.listen)->default_value("127.0.0.1:7400"), "HOST:PORT for the key plane (port 0: any)")
    ("role", po::value(&role)->default_value("master"), "master|slave")
    ("master", po::value(&masters), "slave: master HOST:PORT[,HOST:PORT...]")
    ("advertise", po::value(&cfg.advertise), "master: HOST:PORT the other masters name to peers (default: --listen, a wildcard host replaced by this machine's name)")
    ("failover-ms", po::value(&cfg.failover_ms)->default_value(3000), "master: masters sharing one --db hand over the lead within MS of the active one's death")
    ("db", po::value(&cfg.db), "SQLite database path (created if missing) or postgresql://USER@HOST:PORT/DB?... (libpq URI)")
    ("master-key-file", po::value(&cfg.master_key_file), "file with the 256-bit key-wrapping key (64 hex digits or 32 bytes)")
    ("gen-master-key", po::value(&genkey), "write a fresh master key file to PATH (mode 0600; never over an existing file) and exit")
    ("allow-insecure-key-file", po::bool_switch(&allow_insecure_key_file), "start even if the master key file is readable by group or others")
    ("tls-cert", po::value(&cfg.tls.cert), "server certificate (PEM, role master or slave)")
    ("tls-key", po::value(&cfg.tls.key), "server private key (PEM)")
    ("tls-ca", po::value(&cfg.tls.ca), "CA certificate that issues every peer (PEM)")
    ("tls-crl", po::value(&cfg.tls.crl), "CRL(s) of the CA (PEM): revoked peer certificates are refused (read at start)")
    ("channel", po::value(&channels)->composing(), "channel policy ID[:lifetime=MS,p1=MS,p2=MS,grace=MS,suite=S,origin=kms|sender] (repeatable)")
    ("lifetime-ms", po::value(&lifetime)->default_value(60000), "default key lifetime L")
    ("p1-ms", po::value(&p1)->default_value(20000), "default first preset P1 (next key made)")
    ("p2-ms", po::value(&p2)->default_value(10000), "default second preset P2 (clients fetch next key)")
    ("grace-ms", po::value(&grace)->default_value(5000), "default grace G for the previous key")
    ("evict-ms", po::value(&evict)->default_value(2000), "default: when a client loses a channel, the channel switches to a fresh key within MS")
    ("suite", po::value(&suite)->default_value("aes128gcm"), "default suite aes128gcm|aes256gcm")
    ("key-origin", po::value(&origin)->default_value("kms"), "default key origin kms|sender")
    ("acl", po::value(&acls)->composing(), "CN=CHANNELS: narrow what a certificate may touch, e.g. client1=1,2 (repeatable)")
    ("tariff-per-request", po::value(&tariff_request)->default_value("0"), "price per key data request, decimal (up to 6 places)")
    ("tariff-per-gib", po::value(&tariff_gib)->default_value("0"), "price per GiB of decipherable data, decimal (up to 6 places)")
    ("currency", po::value(&cfg.tariffs.currency)->default_value("EUR"), "currency code (ISO 4217) of fees")
    ("currency-decimals", po::value(&currency_decimals_opt), "decimals of the human fee amount (default: the currency's, e.g. 2 for EUR, 0 for JPY)")
    ("metrics", po::value(&cfg.metrics), "HOST:PORT for Prometheus text metrics (HTTP)")
    ("handshake-timeout-ms", po::value(&cfg.handshake_timeout_ms)->default_value(5000), "TLS handshake timeout")
    ("frame-timeout-ms", po::value(&cfg.frame_timeout_ms)->default_value(10000), "time to finish a started frame")
    ("idle-timeout-ms", po::value(&cfg.idle_timeout_ms)->default_value(300000), "close a connection idle this long")
    ("max-connections", po::value(&cfg.max_connections)->default_value(20000), "connection limit")
    ("max-key-requests-per-s", po::value(&cfg.max_key_requests_per_s)->default_value(0), "key requests answered per second; the rest get busy with a retry-after that spreads them at this rate (0: no limit)")
    ("retention-ms", po::value(&cfg.retention_ms)->default_value(600000), "keep expired keys for by-SPI lookups")
    ("audit-log", po::value(&cfg.audit_log), "append one JSON line per admin action (rotate, billing close, grant, revoke, TLS reload) to FILE (created 0600)")
    ("entitlement-sync-ms", po::value(&cfg.entitlement_sync_ms)->default_value(5000), "grant/revoke: wait this long for every subscribed slave to confirm")
    ("group-commit-us", po::value(&cfg.group_commit_us)->default_value(1000), "billing batch window under load (0: commit every event-loop turn)")
    ("log-level", po::value(&log_level)->default_value("info"), "error|warning|info|debug: the least severe lines written")
    ("log-format", po::value(&log_format)->default_value("text"), "text|json (one JSON object a line: ts, level, role, msg)")
    ("verbose,v", po::bool_switch(&cfg.verbose), "log connections and key events (never key bytes): --log-level debug");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("config")) {
      store_options_file(vm["config"].as<std::string>(), desc, vm);
    }
    po::notify(vm);
    if (!parse_log_level(log_level, cfg.log_level))
      throw std::runtime_error("--log-level " + log_level + ": must be error, warning, info or debug");
    if (!parse_log_format(log_format, cfg.log_format))
      throw std::runtime_error("--log-format " + log_format + ": must be text or json");
  } catch (const std::exception& e) {
    std::cerr << "keycast-keyd: " << e.what() << "\n(try --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "keycast-keyd " << kSoftwareVersion << " (protocol version " << int(kVersion) << ")\n";
    return 0;
  }
  try {
    if (!genkey.empty()) {
      uint8_t k[32];
      if (RAND_priv_bytes(k, sizeof k) != 1) throw std::runtime_error("RAND_priv_bytes failed");
      std::string hex = hex_encode(k, sizeof k);
      secure_zero(k, sizeof k);
      hex += "\n";
      try {
        create_secret_file(genkey, hex, "--gen-master-key");
      } catch (...) {
        secure_zero(hex.data(), hex.size());
        throw;
      }
      secure_zero(hex.data(), hex.size());
      std::cout << "master key written to " << genkey << "\n";
      return 0;
    }
    auto r = parse_role(role);
    if (!r || (*r != Role::Master && *r != Role::Slave))
      throw std::runtime_error("--role " + role + ": must be master or slave");
    cfg.role = *r;
    if (!masters.empty()) {
      cfg.masters = split_list(masters);
      for (auto& m : cfg.masters) parse_host_port(m, "--master");
    }
    if (cfg.role == Role::Slave && cfg.masters.empty())
      throw std::runtime_error("--master: a slave needs the master's HOST:PORT");
    if (cfg.role == Role::Master && !cfg.masters.empty())
      throw std::runtime_error("--master: only a slave names a master");
    auto s = parse_suite(suite);
    if (!s) throw std::runtime_error("--suite " + suite + ": must be aes128gcm or aes256gcm");
    if (origin != "kms" && origin != "sender")
      throw std::runtime_error("--key-origin " + origin + ": must be kms or sender");
    cfg.defaults.lifetime_ms = lifetime;
    cfg.defaults.p1_ms = p1;
    cfg.defaults.p2_ms = p2;
    cfg.defaults.grace_ms = grace;
    cfg.defaults.evict_ms = evict;
    cfg.defaults.suite = *s;
    cfg.defaults.origin = origin == "kms" ? KeyOrigin::Kms : KeyOrigin::Sender;
    // validate the defaults the same way as a channel spec
    parse_channel_policy("0", cfg.defaults);
    for (auto& spec : channels) {
      auto p = parse_channel_policy(spec, cfg.defaults);
      if (cfg.channels.count(p.id))
        throw std::runtime_error("--channel " + spec + ": channel " + std::to_string(p.id) + " given twice");
      cfg.channels[p.id] = p;
    }
    for (auto& a : acls) parse_acl(a, cfg);
    auto price = [](const std::string& opt, const std::string& v) {
      auto m = parse_micros(v);
      if (!m) throw std::runtime_error(opt + " " + v + ": expected a decimal price >= 0 with at most 6 decimals");
      return *m;
    };
    cfg.tariffs.per_request_micros = price("--tariff-per-request", tariff_request);
    cfg.tariffs.per_gib_micros = price("--tariff-per-gib", tariff_gib);
    if (cfg.tariffs.currency.empty() || cfg.tariffs.currency.size() > 8 ||
        cfg.tariffs.currency.find_first_of(" ,\"\n") != std::string::npos)
      throw std::runtime_error("--currency " + cfg.tariffs.currency + ": expected a currency code such as EUR");
    cfg.tariffs.currency_decimals = currency_decimals(cfg.tariffs.currency);
    if (vm.count("currency-decimals")) {
      if (currency_decimals_opt < 0 || currency_decimals_opt > 6)
        throw std::runtime_error("--currency-decimals " + std::to_string(currency_decimals_opt) + ": must be 0..6");
      cfg.tariffs.currency_decimals = currency_decimals_opt;
    }
    if (cfg.failover_ms < 300 || cfg.failover_ms > 600000)
      throw std::runtime_error("--failover-ms " + std::to_string(cfg.failover_ms) + ": must be 300..600000");
    if (!cfg.advertise.empty()) {
      if (cfg.role != Role::Master) throw std::runtime_error("--advertise: only a master advertises an address");
      if (cfg.advertise.size() > kMaxAddress)
        throw std::runtime_error("--advertise " + cfg.advertise + ": longer than " + std::to_string(kMaxAddress) + " bytes");
      const auto hp = parse_host_port(cfg.advertise, "--advertise");
      if (hp.port == "0") throw std::runtime_error("--advertise " + cfg.advertise + ": port 0 is not an address peers can reach");
    }
    if (cfg.entitlement_sync_ms <= 0) throw std::runtime_error("--entitlement-sync-ms: must be > 0");
    if (cfg.handshake_timeout_ms <= 0 || cfg.frame_timeout_ms <= 0 || cfg.idle_timeout_ms <= 0)
      throw std::runtime_error("--*-timeout-ms: must be > 0");
    if (cfg.tls.cert.empty()) throw std::runtime_error("--tls-cert: required");
    if (cfg.tls.key.empty()) throw std::runtime_error("--tls-key: required");
    if (cfg.tls.ca.empty()) throw std::runtime_error("--tls-ca: required");
    if (cfg.db.empty()) throw std::runtime_error("--db: required");
    if (cfg.master_key_file.empty()) throw std::runtime_error("--master-key-file: required");
    if (!allow_insecure_key_file) check_secret_file_mode(cfg.master_key_file, "--master-key-file");
  } catch (const std::exception& e) {
    std::cerr << "keycast-keyd: " << e.what() << "\n";
    return 2;
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);  // reload the TLS files (a new CRL, a renewed certificate)
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // Lines of the process itself (not of the server) in the same form.
  auto say = [&](LogLevel l, const std::string& msg) {
    if (l <= (cfg.verbose ? LogLevel::Debug : cfg.log_level))
      std::cerr << log_line(cfg.log_format, l, role, msg, wall_now_ms()) << std::endl;
  };
  try {
    Server srv(cfg);
    for (auto& [id, p] : cfg.channels) say(LogLevel::Info, "channel " + describe(p));
    srv.start();
    const std::string listening = role + " listening on port " + std::to_string(srv.port());
    std::cout << "keycast-keyd: " << listening << std::endl;
    if (srv.metrics_port()) {  // the port chosen for --metrics HOST:0
      const std::string h = parse_host_port(cfg.metrics, "--metrics").host;
      std::cout << "keycast-keyd: metrics listening on " << (h.find(':') == h.npos ? h : "[" + h + "]") << ":"
                << srv.metrics_port() << std::endl;
    }
    notify_ready(listening);
    int sig = 0;
    while (sigwait(&set, &sig) == 0 && sig == SIGHUP) {
      notify_reloading();
      // The server logs the reload's outcome.
      std::string err = srv.reload_tls();
      // A failed reload keeps the files in use, so the service is still ready.
      notify_ready(err.empty() ? listening : listening + "; last reload failed: " + err);
    }
    say(LogLevel::Info, "signal " + std::to_string(sig) + ", stopping");
    notify_stopping();
    srv.stop();
  } catch (const std::exception& e) {
    say(LogLevel::Error, e.what());
    return 1;
  }
  return 0;
}
