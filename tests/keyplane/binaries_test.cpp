// keycast-keyd and keycast-ctl as processes: config file, option errors,
// the ctl commands, clean stop on SIGTERM.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <cstdio>

#include <algorithm>
#include <iterator>
#include <regex>
#include <sstream>

#include "keyplane/json.hpp"
#include "kp_test_util.hpp"
#include "pg_cluster.hpp"

using namespace kptest;
using keycast::kp::Json;

namespace {

struct Proc {
  pid_t pid = -1;
  int out = -1;
  ~Proc() { stop(); }
  int stop(int sig = SIGTERM) {
    if (pid <= 0) return -1;
    kill(pid, SIGCONT);  // a stopped process must run to handle the signal
    kill(pid, sig);
    int st = 0;
    for (int i = 0; i < 500; ++i) {  // up to 10 s, then SIGKILL
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        if (out >= 0) close(out);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    pid = -1;
    if (out >= 0) close(out);
    return -1;
  }
};

// Starts argv with stdout on a pipe; stderr goes to the test's stderr, or with
// stdout when stderr_too. With nofile, the process gets that open-file limit
// (soft and hard).
void spawn(Proc& p, std::vector<std::string> args, rlim_t nofile = 0, bool stderr_too = false) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    if (stderr_too) dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    if (nofile) {
      rlimit rl{nofile, nofile};
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
    }
    std::vector<char*> av;
    for (auto& a : args) av.push_back(a.data());
    av.push_back(nullptr);
    execv(av[0], av.data());
    _exit(127);
  }
  close(fds[1]);
  p.pid = pid;
  p.out = fds[0];
}

// A process's state letter from /proc (R, S, T...), or 0 when it is gone.
char proc_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(f, stat);
  const auto close = stat.rfind(')');  // the command name may hold spaces and parentheses
  return close != std::string::npos && close + 2 < stat.size() ? stat[close + 2] : 0;
}

std::string read_line(int fd, int timeout_ms) {
  std::string line;
  char c;
  while (true) {
    pollfd pf{fd, POLLIN, 0};
    if (poll(&pf, 1, timeout_ms) <= 0) return line;
    if (read(fd, &c, 1) != 1) return line;
    if (c == '\n') return line;
    line += c;
  }
}

std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return {-1, ""};
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  int st = pclose(f);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace

TEST(Binaries, KeydRejectsBadOptionsNamingThem) {
  std::string keyd = KEYCAST_KEYD_BIN;
  auto [rc1, out1] = run(keyd + " --no-such-option");
  EXPECT_EQ(rc1, 2);
  EXPECT_NE(out1.find("no-such-option"), std::string::npos) << out1;
  auto [rc2, out2] = run(keyd + " --role emperor --db x --master-key-file y");
  EXPECT_EQ(rc2, 2);
  EXPECT_NE(out2.find("--role"), std::string::npos) << out2;
  auto [rc3, out3] = run(keyd + " --channel 1:p1=5000,p2=9000 --db x");
  EXPECT_EQ(rc3, 2);
  EXPECT_NE(out3.find("--channel"), std::string::npos) << out3;
  auto [rc4, out4] = run(keyd + " --lifetime-ms abc");
  EXPECT_EQ(rc4, 2);
  EXPECT_NE(out4.find("lifetime-ms"), std::string::npos) << out4;
  auto [rc7, out7] = run(keyd + " --role slave --db x --master-key-file y");
  EXPECT_EQ(rc7, 2);
  EXPECT_NE(out7.find("--master"), std::string::npos) << out7;
  for (const char* bad : {" --log-level chatty", " --log-format xml"}) {
    auto [rc, out] = run(keyd + bad);
    EXPECT_EQ(rc, 2) << bad;
    EXPECT_NE(out.find(std::string(bad).substr(1, 12)), std::string::npos) << out;
  }
  auto [rc5, out5] = run(keyd + " --config /nonexistent/keyd.conf");
  EXPECT_EQ(rc5, 2);
  EXPECT_NE(out5.find("--config"), std::string::npos) << out5;
  TempDir d;
  auto [rc6, out6] = run(keyd + " --db " + (d / "k.db") + " --master-key-file /nonexistent --tls-cert " +
                         (pki() / "master.crt") + " --tls-key " + (pki() / "master.key") + " --tls-ca " +
                         (pki() / "ca.crt") + " --listen 127.0.0.1:0");
  EXPECT_NE(rc6, 0);
  EXPECT_NE(out6.find("--master-key-file"), std::string::npos) << out6;
}

TEST(Binaries, MasterKeyFileIsOwnerOnlyNeverOverwrittenAndCheckedAtStart) {
  TempDir d;
  std::string keyd = KEYCAST_KEYD_BIN;
  const std::string mk = d / "mk";
  // Under the usual umask (022) a plain create would be 0644.
  const mode_t old_mask = ::umask(022);
  auto [rc, out] = run(keyd + " --gen-master-key " + mk);
  ::umask(old_mask);
  ASSERT_EQ(rc, 0) << out;
  struct stat st {};
  ASSERT_EQ(::stat(mk.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string first;
  {
    std::ifstream f(mk);
    std::getline(f, first);
  }
  EXPECT_EQ(first.size(), 64u);
  // A second --gen-master-key on the same path is refused and the key stays.
  auto [rc2, out2] = run(keyd + " --gen-master-key " + mk);
  EXPECT_NE(rc2, 0);
  EXPECT_NE(out2.find("refusing to overwrite"), std::string::npos) << out2;
  std::string again;
  {
    std::ifstream f(mk);
    std::getline(f, again);
  }
  EXPECT_EQ(again, first);
  // A key file others can read: keyd does not start, and says how to fix it.
  const std::string tls = " --tls-cert " + (pki() / "master.crt") + " --tls-key " + (pki() / "master.key") +
                          " --tls-ca " + (pki() / "ca.crt") + " --listen 127.0.0.1:0 --db " + (d / "k.db");
  ASSERT_EQ(::chmod(mk.c_str(), 0644), 0);
  auto [rc3, out3] = run(keyd + " --master-key-file " + mk + tls);
  EXPECT_EQ(rc3, 2);
  EXPECT_NE(out3.find("--master-key-file"), std::string::npos) << out3;
  EXPECT_NE(out3.find("chmod 600"), std::string::npos) << out3;
  EXPECT_FALSE(std::filesystem::exists(d / "k.db")) << "a refused start must not create the database";
  // --allow-insecure-key-file lets it past that check (here it then stops on a CA that does not exist).
  auto [rc4, out4] = run(keyd + " --allow-insecure-key-file --master-key-file " + mk +
                         " --tls-cert " + (pki() / "master.crt") + " --tls-key " + (pki() / "master.key") +
                         " --tls-ca /nonexistent/ca.crt --listen 127.0.0.1:0 --db " + (d / "k.db"));
  EXPECT_NE(rc4, 0);
  EXPECT_EQ(out4.find("chmod 600"), std::string::npos) << out4;
}

// scripts/make-certs.sh revoke: the CA's CRL gains the certificate, keyd
// started with --tls-crl on it refuses that peer and serves the others.
TEST(Binaries, MakeCertsRevokeWritesTheCrlKeydEnforces) {
  TempDir d;
  const std::string p = d / "pki";
  std::filesystem::copy(pki().path, p, std::filesystem::copy_options::recursive);
  auto [rc, out] = run("bash " + std::string(KEYCAST_SOURCE_DIR) + "/scripts/make-certs.sh revoke " + p + " client");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("revoked client"), std::string::npos) << out;
  auto [rc2, again] = run("bash " + std::string(KEYCAST_SOURCE_DIR) + "/scripts/make-certs.sh revoke " + p + " client");
  EXPECT_EQ(rc2, 1) << again;
  ServerConfig c = server_config(d, Role::Master, "master");
  c.channels[1] = policy(1, KeyOrigin::Kms);
  c.tls = {p + "/master.crt", p + "/master.key", p + "/ca.crt", p + "/crl.pem"};
  Server srv(c);
  srv.start();
  auto opts = [&](const std::string& who) {
    ClientOptions o = client_options(who, {srv.port()});
    o.tls = {p + "/" + who + ".crt", p + "/" + who + ".key", p + "/ca.crt", {}};
    o.request_timeout = std::chrono::milliseconds(3000);
    o.connect_timeout = std::chrono::milliseconds(2000);
    return o;
  };
  Client revoked(opts("client")), fine(opts("client2"));
  Result r = fetch(revoked, 1, Which::Current);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error, ErrorCode::ChannelDenied) << "the revoked peer got past the handshake";
  // client2 gets through the handshake: refused only by its channels (2 only).
  EXPECT_EQ(fetch(fine, 1, Which::Current).error, ErrorCode::ChannelDenied);
  srv.stop();
}

TEST(Binaries, KeydFromConfigFileAndCtlCommands) {
  TempDir d;
  std::string keyd = KEYCAST_KEYD_BIN, ctl = KEYCAST_CTL_BIN;
  ASSERT_EQ(run(keyd + " --gen-master-key " + (d / "mk")).first, 0);
  {
    std::ofstream f(d / "keyd.conf");
    f << "# keycast-keyd test config\n"
      << "listen = 127.0.0.1:0\nrole = master\n"
      << "db = " << (d / "keys.db") << "\n"
      << "master-key-file = " << (d / "mk") << "\n"
      << "tls-cert = " << (pki() / "master.crt") << "\n"
      << "tls-key = " << (pki() / "master.key") << "\n"
      << "tls-ca = " << (pki() / "ca.crt") << "\n"
      << "channel = 1:lifetime=60000,p1=20000,p2=10000,grace=5000,suite=aes256gcm,origin=kms\n"
      << "channel = 2:origin=sender\n"
      << "tariff-per-request = 0.25\n"
      << "audit-log = " << (d / "audit.log") << "\n"
      << "metrics = 127.0.0.1:0\n";
  }
  Proc p;
  spawn(p, {keyd, "--config", d / "keyd.conf"});
  std::string line = read_line(p.out, 20000);
  auto pos = line.find("listening on port ");
  ASSERT_NE(pos, std::string::npos) << line;
  std::string port = line.substr(pos + 18);
  std::string base = ctl + " --server 127.0.0.1:" + port + " --tls-ca " + (pki() / "ca.crt");
  std::string as_admin = base + " --tls-cert " + (pki() / "admin.crt") + " --tls-key " + (pki() / "admin.key");
  std::string as_client = base + " --tls-cert " + (pki() / "client.crt") + " --tls-key " + (pki() / "client.key");

  // Tables for people, -o json for scripts.
  auto [rc, st] = run(as_admin + " status");
  EXPECT_EQ(rc, 0) << st;
  EXPECT_NE(st.find("FIELD"), std::string::npos) << st;
  EXPECT_TRUE(std::regex_search(st, std::regex("\nrole +master\n"))) << st;
  auto [rcj, stj] = run(as_admin + " -o json status");
  ASSERT_EQ(rcj, 0) << stj;
  EXPECT_EQ(Json::parse(stj).at("role"), "master") << stj;
  auto [rc2, chans] = run(as_admin + " --output json channels");
  ASSERT_EQ(rc2, 0) << chans;
  Json cj = Json::parse(chans);
  ASSERT_EQ(cj.size(), 2u) << chans;
  EXPECT_EQ(cj[0].at("suite"), "aes256gcm") << chans;
  EXPECT_EQ(cj[1].at("origin"), "sender") << chans;
  auto [rc2t, chant] = run(as_admin + " channels");
  EXPECT_EQ(rc2t, 0);
  EXPECT_TRUE(std::regex_search(chant, std::regex("^CHANNEL +ORIGIN +SUITE"))) << chant;
  auto [rc2c, chanc] = run(as_admin + " channels -o csv");
  EXPECT_EQ(rc2c, 0);
  EXPECT_EQ(chanc.rfind("channel,origin,suite,lifetime_ms,", 0), 0u) << chanc;
  EXPECT_EQ(std::count(chanc.begin(), chanc.end(), '\n'), 3) << chanc;

  auto [rc3, key] = run(as_client + " key 1");
  EXPECT_EQ(rc3, 0) << key;
  EXPECT_NE(key.find("hidden"), std::string::npos);
  auto [rc4, rev] = run(as_client + " key 1 --reveal -o json");
  EXPECT_EQ(rc4, 0) << rev;
  Json rj = Json::parse(rev);
  ASSERT_EQ(rj.size(), 1u) << rev;
  std::string hex = rj[0].at("key");
  EXPECT_EQ(hex.size(), 72u) << rev;  // 32+4 bytes
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << rev;

  auto [rc5, ws] = run(as_client + " wireshark-keys 1");
  EXPECT_EQ(rc5, 0) << ws;
  EXPECT_NE(ws.find("\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x" + hex + "\""), std::string::npos) << ws;
  EXPECT_NE(ws.find("\"IPv4\",\"*\",\"*\",\"0x00000100\""), std::string::npos) << ws;

  // sas: every key of each channel; the master adds its holders (the client
  // above received SPI 256) and the traffic booked under it (none yet).
  auto [rcs, sas] = run(as_admin + " sas 1 -o json");
  ASSERT_EQ(rcs, 0) << sas;
  Json sj = Json::parse(sas);
  ASSERT_GE(sj.size(), 1u) << sas;
  EXPECT_EQ(sj[0].at("channel"), 1);
  EXPECT_EQ(sj[0].at("role"), "current") << sas;
  EXPECT_EQ(sj[0].at("spi"), 256) << sas;
  EXPECT_EQ(sj[0].at("spi_hex"), "0x00000100") << sas;
  EXPECT_EQ(sj[0].at("holders"), 1) << sas;
  EXPECT_EQ(sj[0].at("bytes"), 0) << sas;
  EXPECT_GT(sj[0].at("remaining_s").get<double>(), 0.0) << sas;
  auto [rcst, sast] = run(as_admin + " sas");
  EXPECT_EQ(rcst, 0);
  EXPECT_TRUE(std::regex_search(sast, std::regex("^CHANNEL +SPI +SPI_HEX +ROLE"))) << sast;
  EXPECT_TRUE(std::regex_search(sast, std::regex("\n1 +256 +0x00000100 +current"))) << sast;

  // Settings from the environment and from ~/.config/keycast/ctl.conf; the
  // command line wins over the environment, which wins over the file.
  const std::string env_admin = "env -i HOME=" + std::string(d.path) + " KEYCAST_SERVER=127.0.0.1:" + port +
                                " KEYCAST_TLS_CERT=" + (pki() / "admin.crt") + " KEYCAST_TLS_KEY=" +
                                (pki() / "admin.key") + " KEYCAST_TLS_CA=" + (pki() / "ca.crt") + " " + ctl;
  auto [rce, ste] = run(env_admin + " -o json status");
  EXPECT_EQ(rce, 0) << ste;
  EXPECT_NE(ste.find("\"role\": \"master\""), std::string::npos) << ste;
  std::filesystem::create_directories(d / ".config/keycast");
  {
    std::ofstream f(d / ".config/keycast/ctl.conf");
    f << "# keycast-ctl\nserver = 127.0.0.1:" << port << "\ntls-cert = " << (pki() / "admin.crt")
      << "\ntls-key = " << (pki() / "admin.key") << "\ntls-ca = " << (pki() / "ca.crt") << "\noutput = csv\n";
  }
  const std::string home = "env -i HOME=" + std::string(d.path) + " ";
  auto [rcf, stf] = run(home + ctl + " status");
  EXPECT_EQ(rcf, 0) << stf;
  EXPECT_NE(stf.find("\nrole,master\n"), std::string::npos) << stf;  // output = csv from the file
  auto [rcw, stw] = run(home + "KEYCAST_SERVER=127.0.0.1:1 " + ctl + " --timeout-ms 500 status");
  EXPECT_EQ(rcw, 3) << "the environment's server wins over the file's: " << stw;
  auto [rcc, stc] = run(home + "KEYCAST_SERVER=127.0.0.1:1 " + ctl + " --server 127.0.0.1:" + port + " -o table status");
  EXPECT_EQ(rcc, 0) << "the command line wins over the environment: " << stc;
  {
    std::ofstream f(d / ".config/keycast/ctl.conf", std::ios::app);
    f << "reveal = true\n";
  }
  auto [rcb, stb] = run(home + ctl + " status");
  EXPECT_EQ(rcb, 2) << stb;
  EXPECT_NE(stb.find("ctl.conf:7:"), std::string::npos) << "a key option is not a connection setting: " << stb;
  auto [rco, sto] = run(as_admin + " -o yaml status");
  EXPECT_EQ(rco, 2) << sto;
  EXPECT_NE(sto.find("--output yaml"), std::string::npos) << sto;
  auto [rc6, bill] = run(as_admin + " billing --format csv");
  EXPECT_EQ(rc6, 0) << bill;
  EXPECT_NE(bill.find("client,3,0,0,0,0.75,EUR,750000,0,0,0,,"), std::string::npos) << bill;
  auto [rc7, billj] = run(as_admin + " billing --format json");
  EXPECT_EQ(rc7, 0);
  EXPECT_EQ(Json::parse(billj).at("clients").at(0).at("requests"), 3) << billj;
  auto [rc8, tab] = run(as_admin + " billing");
  EXPECT_EQ(rc8, 0);
  EXPECT_NE(tab.find("IDENTITY"), std::string::npos) << tab;

  auto [rc9, rot] = run(as_admin + " rotate 1 -o json");
  EXPECT_EQ(rc9, 0) << rot;
  EXPECT_EQ(Json::parse(rot).at(1).at("role"), "next") << rot;
  EXPECT_EQ(Json::parse(rot).at(1).at("spi"), 257) << rot;

  // Errors: a client may not see billing; bad command; unreachable server.
  auto [rc10, denied] = run(as_client + " billing");
  EXPECT_EQ(rc10, 1) << denied;
  EXPECT_NE(denied.find("not_authorised"), std::string::npos) << denied;
  auto [rc11, badcmd] = run(as_admin + " frobnicate");
  EXPECT_EQ(rc11, 2) << badcmd;

  // Entitlements and billing periods from the command line.
  auto [rg, grant] = run(as_admin + " revoke client 1 -o json");
  EXPECT_EQ(rg, 0) << grant;
  EXPECT_EQ(Json::parse(grant).at("mode"), "all_except") << grant;
  EXPECT_EQ(Json::parse(grant).at("channels"), Json::array({1})) << grant;
  EXPECT_EQ(run(as_client + " key 1").first, 1);  // channel_denied
  EXPECT_EQ(run(as_admin + " grant client '*'").first, 0);
  EXPECT_EQ(run(as_client + " key 1").first, 0);
  auto [re, ents] = run(as_admin + " entitlements client");
  EXPECT_EQ(re, 0);
  EXPECT_TRUE(std::regex_search(ents, std::regex("^IDENTITY +MODE +CHANNELS +SEQ\nclient +all_except +- +"))) << ents;
  for (const char* bad : {" grant client", " grant client 1,x", " revoke", " billing close",
                          " billing close yesterday", " billing --since 2026-13-01",
                          " billing --since 2026-12-02 --until 2026-12-01", " billing frobnicate"}) {
    auto [rb, out] = run(as_admin + bad);
    EXPECT_EQ(rb, 2) << bad << ": " << out;
  }
  auto [rcl, inv] = run(as_admin + " billing close 2026-01-01T00:00:00Z --format csv");
  EXPECT_EQ(rcl, 0) << inv;
  EXPECT_NE(inv.find("identity,requests,bytes,packets,epochs,fee,currency,fee_micros"), std::string::npos) << inv;
  auto [rcl2, inv2] = run(as_admin + " billing close 2026-01-01");
  EXPECT_EQ(rcl2, 1) << inv2;  // already closed
  EXPECT_NE(inv2.find("already closed"), std::string::npos) << inv2;
  auto [rpi, period] = run(as_admin + " billing --since 2026-01-01 --format json");
  EXPECT_EQ(rpi, 0) << period;
  Json pj = Json::parse(period);
  EXPECT_EQ(pj.at("since"), "2026-01-01T00:00:00Z") << period;
  EXPECT_TRUE(pj.at("until").is_null()) << period;
  // key, key --reveal, wireshark-keys, key after the grant: 4 at 0.25.
  EXPECT_EQ(pj.at("clients").at(0).at("identity"), "client") << period;
  EXPECT_EQ(pj.at("clients").at(0).at("requests"), 4) << period;
  EXPECT_EQ(pj.at("clients").at(0).at("fee_micros"), 1000000) << period;
  EXPECT_EQ(pj.at("clients").at(0).at("fee"), "1.00") << period;
  std::ifstream audit(d / "audit.log");
  int audited = 0;
  for (std::string l; std::getline(audit, l);) ++audited;
  EXPECT_EQ(audited, 6) << "rotate, revoke and its eviction, grant, close, the refused close; reads are not audited";

  EXPECT_EQ(p.stop(SIGTERM), 0);  // clean stop
  // Server gone: ctl reports it as unreachable (exit 3), quickly.
  auto [rc12, gone] = run(as_admin + " --timeout-ms 1000 status");
  EXPECT_EQ(rc12, 3) << gone;
  EXPECT_NE(gone.find("unavailable"), std::string::npos) << gone;
}

namespace {

struct KeydProc {
  Proc p;
  uint16_t port = 0;
  bool log_to_out = false;  // keyd's log (stderr) on the pipe too, in `before` up to the port line
  std::string before;
};

void start_keyd(KeydProc& k, const TempDir& d, const std::string& name, const std::string& role,
                uint16_t master_port, std::vector<std::string> extra = {}, rlim_t nofile = 0) {
  std::string mk = d / (name + ".mk");
  if (!std::filesystem::exists(mk)) {
    std::ofstream f(mk);
    f << std::string(64, 'c') << "\n";
    f.close();
    std::filesystem::permissions(mk, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  std::vector<std::string> args = {KEYCAST_KEYD_BIN, "--listen", "127.0.0.1:0", "--role", role,
                                   "--db", d / (name + ".db"), "--master-key-file", mk,
                                   "--tls-cert", pki() / (role == "master" ? "master.crt" : name + ".crt"),
                                   "--tls-key", pki() / (role == "master" ? "master.key" : name + ".key"),
                                   "--tls-ca", pki() / "ca.crt", "--channel", "1:origin=kms"};
  if (role == "slave") {
    args.push_back("--master");
    args.push_back(addr(master_port));
  }
  args.insert(args.end(), extra.begin(), extra.end());
  spawn(k.p, args, nofile, k.log_to_out);
  std::string line;
  for (int i = 0; i < 20 && (line = read_line(k.p.out, 20000)).find("listening on port ") == std::string::npos &&
                  !line.empty();
       ++i)
    k.before += line + "\n";
  auto pos = line.find("listening on port ");
  ASSERT_NE(pos, std::string::npos) << line;
  k.port = uint16_t(std::stoi(line.substr(pos + 18)));
}

}  // namespace

// Slaves as real processes: SIGKILL one, SIGSTOP (hang) the other; a client
// configured with both keeps getting keys.
TEST(Binaries, ClientFailsOverFromKilledAndHungSlaves) {
  TempDir d;
  KeydProc m, s1, s2;
  start_keyd(m, d, "master", "master", 0);
  start_keyd(s1, d, "slave", "slave", m.port);
  start_keyd(s2, d, "slave2", "slave", m.port);
  ClientOptions o = client_options("admin", {m.port});
  Client ad(o);
  Result truth = fetch(ad, 1, Which::Current);
  ASSERT_TRUE(truth.ok()) << truth.message;
  for (uint16_t port : {s1.port, s2.port}) {
    ClientOptions so = client_options("client", {port});
    so.request_timeout = std::chrono::milliseconds(3000);
    ASSERT_TRUE(wait_until([&] {
      Client c(so);
      Result r = fetch(c, 1, Which::BySpi, truth.keys[0].spi);
      return r.ok() && r.keys[0].material == truth.keys[0].material;
    })) << "slave on port " << port << " never got the key";
  }

  // Killed: the client moves on without an error reaching the caller.
  ClientOptions co = client_options("client", {s1.port, s2.port});
  Client cl(co);
  Result a = fetch(cl, 1, Which::Current);
  ASSERT_TRUE(a.ok()) << a.message;
  EXPECT_EQ(a.server, addr(s1.port));
  s1.p.stop(SIGKILL);
  Result b = fetch(cl, 1, Which::Current);
  ASSERT_TRUE(b.ok()) << b.message;
  EXPECT_EQ(b.server, addr(s2.port));
  EXPECT_TRUE(b.keys[0].material == truth.keys[0].material);

  // Hung (SIGSTOP): the request in flight times out, the next one is served
  // by another server.
  start_keyd(s1, d, "slave", "slave", m.port);
  ClientOptions ho = client_options("client", {s2.port, s1.port});
  ho.request_timeout = std::chrono::milliseconds(3000);
  ho.connect_timeout = std::chrono::milliseconds(2000);
  Client hc(ho);
  Result c1 = fetch(hc, 1, Which::Current);
  ASSERT_TRUE(c1.ok()) << c1.message;
  EXPECT_EQ(c1.server, addr(s2.port));
  kill(s2.p.pid, SIGSTOP);
  // kill() returns once the signal is queued, not once every thread has stopped.
  ASSERT_TRUE(wait_until([&] { return proc_state(s2.p.pid) == 'T'; })) << "slave 2 did not stop";
  Result c2 = fetch(hc, 1, Which::Current);
  EXPECT_EQ(c2.error, ErrorCode::Timeout) << "answered by " << c2.server << " (slaves: " << addr(s1.port)
                                          << " restarted, " << addr(s2.port) << " stopped)";
  Result c3;
  ASSERT_TRUE(wait_until([&] {
    c3 = fetch(hc, 1, Which::Current);
    return c3.ok();
  }));
  EXPECT_EQ(c3.server, addr(s1.port));
  EXPECT_TRUE(c3.keys[0].material == truth.keys[0].material);
  kill(s2.p.pid, SIGCONT);
}

// keyd on PostgreSQL, as an operator runs it: the key a client fetched is
// still the channel's current key after keyd restarts on the same database.
TEST(BinariesPg, KeydOnPostgresKeepsItsKeysAcrossARestart) {
  std::unique_ptr<PgCluster> pg;
  try {
    pg = std::make_unique<PgCluster>();
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  const std::string db = pg->uri(pg->create_database());
  TempDir d;
  std::string keyd = KEYCAST_KEYD_BIN, ctl = KEYCAST_CTL_BIN;
  ASSERT_EQ(run(keyd + " --gen-master-key " + (d / "mk")).first, 0);
  const std::vector<std::string> args = {keyd, "--db", db, "--master-key-file", d / "mk", "--listen", "127.0.0.1:0",
                                         "--tls-cert", pki() / "master.crt", "--tls-key", pki() / "master.key",
                                         "--tls-ca", pki() / "ca.crt", "--channel", "1:origin=kms"};
  auto fetch_key = [&](const std::string& port) {
    const std::string base = ctl + " --server 127.0.0.1:" + port + " --tls-ca " + (pki() / "ca.crt");
    auto [rc, out] = run(base + " --tls-cert " + (pki() / "client.crt") + " --tls-key " + (pki() / "client.key") +
                         " -o json key 1 --reveal");
    EXPECT_EQ(rc, 0) << out;
    Json j = Json::parse(out, nullptr, false);
    if (!j.is_array() || j.empty()) return std::pair<uint32_t, std::string>{0, out};
    return std::pair<uint32_t, std::string>{j[0].at("spi").get<uint32_t>(), j[0].at("key").get<std::string>()};
  };
  std::pair<uint32_t, std::string> first;
  for (int round = 0; round < 2; ++round) {
    Proc p;
    spawn(p, args);
    const std::string line = read_line(p.out, 20000);
    const auto pos = line.find("listening on port ");
    ASSERT_NE(pos, std::string::npos) << line;
    const std::string port = line.substr(pos + 18);
    auto k = fetch_key(port);
    ASSERT_EQ(k.second.size(), 40u) << k.second;  // AES-128 key and salt, hex
    if (round == 0) {
      first = k;
      const std::string base = ctl + " --server 127.0.0.1:" + port + " --tls-ca " + (pki() / "ca.crt");
      auto [rc, st] = run(base + " --tls-cert " + (pki() / "admin.crt") + " --tls-key " + (pki() / "admin.key") +
                          " -o json status");
      ASSERT_EQ(rc, 0) << st;
      EXPECT_EQ(Json::parse(st).at("role"), "master") << st;
    } else {
      EXPECT_EQ(k, first) << "keyd on the same database handed out another key after a restart";
    }
    EXPECT_EQ(p.stop(), 0);
  }
}

// Two keyd masters as processes on one database: SIGKILL the active one (no
// clean release: its lease has to run out) and the standby leads, serving
// the key the dead one made.
TEST(Binaries, StandbyMasterTakesOverFromAKilledActive) {
  TempDir d;
  const std::string keyd = KEYCAST_KEYD_BIN;
  ASSERT_EQ(run(keyd + " --gen-master-key " + (d / "mk")).first, 0);
  constexpr int kFailoverMs = 1500;
  const std::vector<std::string> args = {
      keyd, "--db", d / "shared.db", "--master-key-file", d / "mk", "--listen", "127.0.0.1:0",
      "--failover-ms", std::to_string(kFailoverMs), "--tls-cert", pki() / "master.crt", "--tls-key",
      pki() / "master.key", "--tls-ca", pki() / "ca.crt", "--channel", "1:origin=kms"};
  auto start = [&](Proc& p) -> uint16_t {
    spawn(p, args);
    const std::string line = read_line(p.out, 20000);
    const auto pos = line.find("listening on port ");
    if (pos == std::string::npos) {
      ADD_FAILURE() << line;
      return 0;
    }
    return uint16_t(std::stoi(line.substr(pos + 18)));
  };
  auto status = [](uint16_t port) {
    ClientOptions o = client_options("admin", {port});
    o.request_timeout = std::chrono::milliseconds(3000);
    Client c(o);
    Result r = admin(c, MsgType::AdminStatus);
    return r.ok() ? Json::parse(r.message) : Json();
  };
  Proc a, b;
  const uint16_t pa = start(a);
  ASSERT_NE(pa, 0);
  ASSERT_TRUE(wait_until([&] { return status(pa).value("active", false); }));
  const uint16_t pb = start(b);
  ASSERT_NE(pb, 0);
  ASSERT_TRUE(wait_until([&] { return status(pb).value("active_address", Json()) == addr(pa); }));
  const uint64_t epoch = status(pa)["epoch"].get<uint64_t>();

  Client cl(client_options("client", {pa, pb}));
  Result before = fetch(cl, 1, Which::Current);
  ASSERT_TRUE(before.ok()) << before.message;
  EXPECT_EQ(before.server, addr(pa));

  a.stop(SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return status(pb).value("active", false); }));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed);
  std::cout << "[ figures  ] takeover " << took.count() << " ms after SIGKILL (failover-ms " << kFailoverMs
            << ", bound 5/6 of it plus the status poll)\n";
  EXPECT_EQ(status(pb)["epoch"].get<uint64_t>(), epoch + 1);
  Result after = fetch(cl, 1, Which::Current);
  ASSERT_TRUE(after.ok()) << after.message;
  EXPECT_EQ(after.server, addr(pb));
  EXPECT_EQ(after.keys[0].spi, before.keys[0].spi);
  EXPECT_TRUE(after.keys[0].material == before.keys[0].material);
  EXPECT_EQ(b.stop(), 0);
}

namespace {

// CPU seconds a process has used (utime + stime from /proc/PID/stat).
double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream rest(all.substr(all.rfind(')') + 2));
  std::string field;
  unsigned long long ut = 0, st = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) ut = std::stoull(field);
    if (i == 15) st = std::stoull(field);
  }
  return double(ut + st) / sysconf(_SC_CLK_TCK);
}

int tcp_connect(uint16_t port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (s >= 0 && connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
  if (s >= 0) close(s);
  return -1;
}

}  // namespace

// keyd with few descriptors and a --max-connections above what they allow:
// it says so at start, refuses the connections beyond at once (rather than
// leaving them queued while its accept loop spins on EMFILE), and serves
// again once connections close.
TEST(Binaries, KeydAtItsOpenFileLimitRefusesThenServesAgain) {
  TempDir d;
  KeydProc k;
  k.log_to_out = true;  // a few lines at info level: the pipe never fills
  // A long handshake timeout: the idle sockets below hold their slots for the whole test.
  start_keyd(k, d, "master", "master", 0, {"--max-connections", "1000", "--handshake-timeout-ms", "60000"}, 96);
  // Said at start (keyd begins serving just after its port line).
  std::string said = k.before;
  for (int i = 0; i < 10 && said.find("listening on 127.0.0.1") == std::string::npos; ++i)
    said += read_line(k.p.out, 5000) + "\n";
  EXPECT_NE(said.find("--max-connections 1000 exceeds what the open-file limit 96 allows"), std::string::npos)
      << said;
  std::vector<int> socks;
  for (int i = 0; i < 150; ++i) {
    int s = tcp_connect(k.port);
    ASSERT_GE(s, 0) << "connect " << i;
    socks.push_back(s);
  }
  // The ones over the limit are closed by keyd: EOF (or a reset) soon.
  int refused = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  std::vector<bool> gone(socks.size());
  while (std::chrono::steady_clock::now() < until && refused < int(socks.size())) {
    for (std::size_t i = 0; i < socks.size(); ++i) {
      if (gone[i]) continue;
      pollfd pf{socks[i], POLLIN, 0};
      char c;
      if (poll(&pf, 1, 0) == 1 && recv(socks[i], &c, 1, MSG_DONTWAIT) <= 0) {
        gone[i] = true;
        ++refused;
      }
    }
    usleep(20000);
  }
  EXPECT_GT(refused, 0) << "keyd left every connection over its limit queued";
  EXPECT_LT(refused, int(socks.size())) << "keyd held no connection at all";
  // Saturated, it idles: no accept loop spinning on EMFILE.
  const double cpu0 = cpu_seconds(k.p.pid);
  usleep(1000000);
  EXPECT_LT(cpu_seconds(k.p.pid) - cpu0, 0.3) << "keyd busy while at its descriptor limit";
  // More connections while full: refused too, not queued.
  int extra = tcp_connect(k.port);
  ASSERT_GE(extra, 0);
  pollfd pf{extra, POLLIN, 0};
  EXPECT_EQ(poll(&pf, 1, 3000), 1) << "a connection over the limit was left hanging";
  close(extra);
  for (int s : socks) close(s);
  // The slots come back: a real client gets its key.
  ClientOptions o = client_options("client", {k.port});
  o.request_timeout = std::chrono::milliseconds(3000);
  Result r;
  EXPECT_TRUE(wait_until([&] {
    Client c(o);
    r = fetch(c, 1, Which::Current);
    return r.ok();
  }, 10000)) << r.message;
}
