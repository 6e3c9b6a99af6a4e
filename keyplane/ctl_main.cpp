// keycast-ctl: admin and inspection CLI for keycast-keyd.
#include <boost/program_options.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "keycast_version.hpp"
#include "keyplane/client/client.hpp"
#include "keyplane/ctl_render.hpp"
#include "keyplane/ctl_settings.hpp"
#include "keyplane/hostport.hpp"
#include "keyplane/tls.hpp"
#include "keyplane/wall_time.hpp"

namespace po = boost::program_options;
using namespace keycast;
using namespace keycast::kp;

namespace {

uint32_t parse_channel(const std::string& s) {
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string::npos ||
      std::stoull(s) > 0xffffffffULL)
    throw std::runtime_error("CHANNEL " + s + ": expected an integer");
  return uint32_t(std::stoull(s));
}

int fail(const Result& r) {
  std::cerr << "keycast-ctl: " << error_name(r.error) << ": " << r.message << "\n";
  return r.error == ErrorCode::Unavailable || r.error == ErrorCode::Timeout ? 3 : 1;
}

std::string spi_hex(uint32_t spi) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", spi);
  return b;
}

Json key_rows(const std::vector<WireKey>& keys, bool reveal) {
  Json rows = Json::array();
  for (const auto& k : keys)
    rows.push_back({{"channel", k.channel},
                    {"role", slot_name(k.slot)},
                    {"spi", k.spi},
                    {"spi_hex", spi_hex(k.spi)},
                    {"suite", suite_name(k.material.suite)},
                    {"remaining_ms", k.remaining_ms},
                    {"lifetime_ms", k.lifetime_ms},
                    {"key", reveal ? k.material.reveal_hex() : std::string("(hidden: --reveal)")}});
  return rows;
}

std::optional<std::string> getenv_opt(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v ? std::optional<std::string>(v) : std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::string servers, format, since, until;
  std::vector<std::string> words;
  bool next = false, reveal = false;
  int64_t timeout_ms = 5000;
  TlsFiles tls;
  po::options_description desc(
      "keycast-ctl: administer keycast-keyd\n"
      "Usage: keycast-ctl [--server HOST:PORT[,...] --tls-cert C --tls-key K --tls-ca CA] [-o FORMAT] COMMAND\n"
      "Server and certificates also come from KEYCAST_SERVER, KEYCAST_TLS_CERT, KEYCAST_TLS_KEY,\n"
      "KEYCAST_TLS_CA (and KEYCAST_TLS_CRL, KEYCAST_TIMEOUT_MS, KEYCAST_OUTPUT), or from a config\n"
      "file (--config, KEYCAST_CTL_CONFIG, ~/.config/keycast/ctl.conf: 'server = HOST:PORT' lines);\n"
      "the command line wins, then the environment, then the file.\n"
      "Commands (every one prints a table, or JSON or CSV with -o):\n"
      "  status                        server role, peers, counters\n"
      "  channels                      channel policies and previous/current/next SPIs\n"
      "  sas [CHANNEL]                 every key in use per channel: SPI, role, remaining time,\n"
      "                                traffic and holders (the last two from the master)\n"
      "  rotate CHANNEL                force a key change (admin, master)\n"
      "  billing [--since T] [--until T]\n"
      "                                per-client counts and fees of [T, T) (admin, master)\n"
      "  billing close PERIOD_END      close the period ending at PERIOD_END: one immutable\n"
      "                                invoice per client (admin, master)\n"
      "  billing invoices              the invoices written so far (admin, master)\n"
      "                                T: RFC 3339, e.g. 2026-12-01T00:00:00Z or 2026-12-01\n"
      "  grant CN CHANNELS             entitle client CN to CHANNELS (1,2,5 or *) (admin, master)\n"
      "  revoke CN CHANNELS            take CHANNELS (or *) away from CN; its open sessions are\n"
      "                                refused at their next request (admin, master)\n"
      "  entitlements [CN]             stored entitlements\n"
      "  key CHANNEL [--next] [--reveal]     current (or next) key as an authorised peer\n"
      "  wireshark-keys CHANNEL        Wireshark esp_sa UAT lines for previous/current/next keys\n"
      "                                (the UAT file format; -o json gives the key records)\n"
      "Options");
  std::string output, config;
  po::options_description conn("Connection (command line, environment or config file)");
  // clang-format off
  conn.add_options()
    ("server", po::value(&servers), "key server HOST:PORT[,HOST:PORT...] (failover order)")
    ("tls-cert", po::value(&tls.cert), "client certificate (PEM)")
    ("tls-key", po::value(&tls.key), "client private key (PEM)")
    ("tls-ca", po::value(&tls.ca), "CA certificate (PEM)")
    ("tls-crl", po::value(&tls.crl), "CA's PEM CRL: refuse a revoked server certificate")
    ("timeout-ms", po::value(&timeout_ms)->default_value(5000), "request timeout")
    ("output,o", po::value(&output), "output: table (default), json or csv");
  desc.add_options()
    ("help,h", "show this help")
    ("version", "print the version")
    ("config", po::value(&config), "config file of connection options (name = value lines)")
    ("format", po::value(&format), "same as --output (kept for scripts written before it)")
    ("since", po::value(&since), "billing: from this time (RFC 3339, inclusive)")
    ("until", po::value(&until), "billing: up to this time (RFC 3339, exclusive)")
    ("next", po::bool_switch(&next), "key: the next key instead of the current one")
    ("reveal", po::bool_switch(&reveal), "key: print the key bytes (key||salt hex)");
  // clang-format on
  desc.add(conn);
  // The command and its arguments: positional, so not listed under Options.
  po::options_description all;
  all.add(desc).add_options()("words", po::value(&words));
  po::positional_options_description pos;
  pos.add("words", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    if (!vm.count("help") && !vm.count("version"))
      store_ctl_settings(conn, vm, vm.count("config") ? vm["config"].as<std::string>() : "", getenv_opt);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "keycast-ctl: " << e.what() << "\n(try --help)\n";
    return 2;
  }
  if (vm.count("version")) {
    std::cout << "keycast-ctl " << kSoftwareVersion << " (protocol version " << int(kVersion) << ")\n";
    return 0;
  }
  if (vm.count("help") || words.empty()) {
    std::cout << desc << "\n";
    return words.empty() && !vm.count("help") ? 2 : 0;
  }
  const std::string cmd = words[0];
  TextFormat fmt = TextFormat::Table;
  // --format exists only on the command line, so it wins over an output
  // setting from the environment or the config file.
  if (!format.empty()) output = format;
  if (output.empty()) output = "table";
  if (!parse_text_format(output, fmt)) {
    std::cerr << "keycast-ctl: --output " << output << ": must be table, json or csv\n";
    return 2;
  }
  for (std::string* p : {&tls.cert, &tls.key, &tls.ca, &tls.crl}) *p = expand_home(*p, getenv_opt);
  Message m;
  uint32_t channel = 0;
  try {
    if (servers.empty())
      throw std::runtime_error("--server: required (or KEYCAST_SERVER, or 'server =' in ~/.config/keycast/ctl.conf)");
    if (tls.cert.empty() || tls.key.empty() || tls.ca.empty())
      throw std::runtime_error("--tls-cert, --tls-key and --tls-ca are required (or KEYCAST_TLS_CERT, "
                               "KEYCAST_TLS_KEY, KEYCAST_TLS_CA, or the config file)");
    auto need_channel = [&] {
      if (words.size() != 2) throw std::runtime_error(cmd + ": expected CHANNEL");
      channel = parse_channel(words[1]);
    };
    if (cmd == "status") {
      m.type = MsgType::AdminStatus;
    } else if (cmd == "channels") {
      m.type = MsgType::AdminChannels;
    } else if (cmd == "sas") {
      if (words.size() > 2) throw std::runtime_error("sas: expected at most CHANNEL");
      if (words.size() == 2) channel = parse_channel(words[1]);
      m.type = MsgType::AdminChannels;
    } else if (cmd == "rotate") {
      need_channel();
      m.type = MsgType::AdminRotate;
      m.channel = channel;
    } else if (cmd == "billing") {
      m.text = output;
      auto when = [](const std::string& opt, const std::string& v) {
        auto t = parse_rfc3339(v);
        if (!t) throw std::runtime_error(opt + " " + v + ": expected RFC 3339, e.g. 2026-12-01T00:00:00Z");
        return *t;
      };
      const std::string sub = words.size() > 1 ? words[1] : "";
      if (sub.empty()) {
        m.type = MsgType::AdminBilling;
        if (!since.empty()) m.since_ms = when("--since", since);
        if (!until.empty()) m.until_ms = when("--until", until);
        if (m.since_ms && m.until_ms && *m.since_ms >= *m.until_ms)
          throw std::runtime_error("--since " + since + " is not before --until " + until);
      } else if (sub == "close") {
        if (words.size() != 3) throw std::runtime_error("billing close: expected PERIOD_END (RFC 3339)");
        m.type = MsgType::AdminBillingClose;
        m.until_ms = when("PERIOD_END", words[2]);
      } else if (sub == "invoices") {
        if (words.size() != 2) throw std::runtime_error("billing invoices: too many arguments");
        m.type = MsgType::AdminInvoices;
      } else {
        throw std::runtime_error("billing " + sub + ": unknown (close, invoices, or none)");
      }
      if (m.type != MsgType::AdminBilling && (!since.empty() || !until.empty()))
        throw std::runtime_error("--since/--until: only with plain 'billing'");
    } else if (cmd == "grant" || cmd == "revoke") {
      if (words.size() != 3) throw std::runtime_error(cmd + ": expected CN CHANNELS (e.g. client1 1,2 or client1 '*')");
      auto list = parse_channel_list(words[2]);
      if (!list || (!list->first && list->second.empty()))
        throw std::runtime_error(cmd + " " + words[1] + " " + words[2] + ": CHANNELS must be * or a list of integers");
      m.type = cmd == "grant" ? MsgType::AdminGrant : MsgType::AdminRevoke;
      m.text = words[1];
      m.all = list->first;
      if (!m.all) m.channel_list.assign(list->second.begin(), list->second.end());
    } else if (cmd == "entitlements") {
      if (words.size() > 2) throw std::runtime_error("entitlements: expected at most CN");
      m.type = MsgType::AdminEntitlements;
      if (words.size() == 2) m.text = words[1];
    } else if (cmd == "key") {
      need_channel();
      m.type = MsgType::KeyRequest;
      m.channel = channel;
      m.which = next ? Which::Next : Which::Current;
    } else if (cmd == "wireshark-keys") {
      need_channel();
      m.type = MsgType::KeyRequest;
      m.channel = channel;
      m.which = Which::All;
    } else {
      throw std::runtime_error("unknown command '" + cmd + "' (try --help)");
    }
    if (cmd != "billing" && cmd != "grant" && cmd != "revoke" && words.size() > 2)
      throw std::runtime_error(cmd + ": too many arguments");
  } catch (const std::exception& e) {
    std::cerr << "keycast-ctl: " << e.what() << "\n";
    return 2;
  }

  try {
    ClientOptions o;
    o.servers = split_list(servers);
    o.tls = tls;
    o.request_timeout = std::chrono::milliseconds(timeout_ms);
    o.backoff_max = std::chrono::milliseconds(1000);
    Client c(o);
    Result r = c.call(std::move(m));
    if (!r.ok()) return fail(r);
    if (cmd == "billing") {
      // keyd renders billing itself (its table carries the period and the
      // tariffs); JSON is re-indented like every other command's.
      std::cout << (fmt == TextFormat::Json ? render(Json::parse(r.message), fmt) : r.message);
    } else if (cmd == "status" || cmd == "channels" || cmd == "entitlements" || cmd == "grant" ||
               cmd == "revoke") {
      Json j = Json::parse(r.message);
      if (j.is_object() && (cmd == "grant" || cmd == "revoke") && fmt != TextFormat::Json)
        j = Json::array({j});
      std::cout << render(j, fmt);
    } else if (cmd == "sas") {
      std::cout << render(sas_rows(Json::parse(r.message), channel), fmt);
    } else if (cmd == "rotate") {
      std::cout << render(key_rows(r.keys, false), fmt);
    } else if (cmd == "key") {
      std::cout << render(key_rows(r.keys, reveal), fmt);
    } else if (cmd == "wireshark-keys") {
      if (fmt == TextFormat::Json) {
        std::cout << render(key_rows(r.keys, true), fmt);
      } else {
        // Wireshark "esp_sa" UAT (Preferences > Protocols > ESP, or ~/.config/wireshark/esp_sa):
        // protocol, src, dst, SPI, encryption, key (key||salt), authentication, auth key.
        std::cout << "# keycast channel " << channel << ": ESP transport, AES-GCM, 16-byte ICV\n";
        for (auto& k : r.keys)
          std::cout << "\"IPv4\",\"*\",\"*\",\"" << spi_hex(k.spi)
                    << "\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x" << k.material.reveal_hex()
                    << "\",\"NULL\",\"\"\n";
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "keycast-ctl: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
