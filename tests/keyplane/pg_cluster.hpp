// A private PostgreSQL 15 cluster for one test process: its own temp
// directory (data and Unix socket), its own TCP port on 127.0.0.1, trust
// authentication, fsync off (Durability::Durable: the server's defaults,
// fsync and synchronous commit on, as a benchmark must measure it). Needs root (initdb and postgres run as the
// `postgres` user through runuser) and Debian's postgresql-15; without either
// the constructor throws and the tests that need it fail, saying why.
//
// Cleanup does not depend on this process ending well: a watchdog shell
// holds the read end of a pipe only this process writes to; when the pipe
// closes (the destructor, or the process dying by any signal, SIGKILL
// included) it stops the cluster (-m immediate) and removes the directory.
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>

namespace kptest {

class PgCluster {
 public:
  static constexpr const char* kBin = "/usr/lib/postgresql/15/bin";

  enum class Durability { Test, Durable };

  explicit PgCluster(Durability d = Durability::Test) : durable_(d == Durability::Durable) {
    if (geteuid() != 0)
      throw std::runtime_error("PostgreSQL tests need root: initdb and postgres run as the postgres user (runuser)");
    if (!std::filesystem::exists(std::string(kBin) + "/initdb") || !getpwnam("postgres") ||
        !std::filesystem::exists("/usr/sbin/runuser"))
      throw std::runtime_error(std::string("PostgreSQL 15 is not installed (") + kBin +
                               "/initdb, user postgres, /usr/sbin/runuser): run scripts/setup.sh");
    std::string t = (std::filesystem::temp_directory_path() / "keycast-pg-XXXXXX").string();
    if (!mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = t;
    try {
      start_watchdog();
      const passwd* pw = getpwnam("postgres");
      if (chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) throw std::runtime_error("chown " + dir_ + " failed");
      if (sh(as_postgres(std::string(kBin) + "/initdb -D " + data() + " -A trust -U postgres --no-sync -E UTF8 "
                         "--no-locale") + " >" + dir_ + "/initdb.log 2>&1") != 0)
        throw std::runtime_error("initdb failed: " + tail(dir_ + "/initdb.log"));
      start_on_free_port();
    } catch (...) {
      cleanup();
      throw;
    }
  }
  ~PgCluster() { cleanup(); }
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  std::string uri(const std::string& db = "postgres") const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
  }

  // Stops the server, keeping its data directory and port: clients lose
  // their connections and cannot connect until start(). Mode as pg_ctl's -m:
  // "fast" (sessions are told and ended, as at a clean shutdown) or
  // "immediate" (every server process killed at once, as in a crash).
  void stop(const std::string& mode = "fast") {
    if (sh(as_postgres(std::string(kBin) + "/pg_ctl -D " + data() + " -m " + mode + " -w -t 60 stop") +
           " >>" + dir_ + "/pg_ctl.log 2>&1") != 0)
      throw std::runtime_error("pg_ctl stop failed: " + tail(dir_ + "/pg_ctl.log"));
  }
  // Starts the stopped server again, on the same port (uri() stays valid).
  // Another process may have bound the port meanwhile: tried a few times,
  // then this throws.
  void start() {
    for (int attempt = 0; attempt < 10; ++attempt) {
      if (launch()) return;
      usleep(200 * 1000);
    }
    throw std::runtime_error("postgres did not start again on port " + std::to_string(port_) + ": " +
                             tail(dir_ + "/server.log"));
  }

  // A fresh, empty database: one per test, so tests never see each other's
  // rows. Its collation is ICU en-US, not bytewise, so any output the store
  // orders by text without COLLATE "C" would come out in another order than
  // SQLite's.
  std::string create_database() {
    const std::string name = "t" + std::to_string(++databases_);
    std::unique_ptr<PGconn, void (*)(PGconn*)> c(PQconnectdb(uri().c_str()), PQfinish);
    if (PQstatus(c.get()) != CONNECTION_OK) throw std::runtime_error(std::string("connect: ") + PQerrorMessage(c.get()));
    char* id = PQescapeIdentifier(c.get(), name.c_str(), name.size());
    const std::string sql = "CREATE DATABASE " + std::string(id) +
                            " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'";
    PQfreemem(id);
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(c.get(), sql.c_str()), PQclear);
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK)
      throw std::runtime_error(std::string("CREATE DATABASE: ") + PQerrorMessage(c.get()));
    return name;
  }

 private:
  std::string data() const { return dir_ + "/data"; }

  static int sh(const std::string& cmd) {
    const int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  // From / so the postgres user is never left in a directory it cannot read.
  static std::string as_postgres(const std::string& cmd) { return "cd / && /usr/sbin/runuser -u postgres -- " + cmd; }
  static std::string tail(const std::string& file) {
    std::ifstream f(file);
    std::stringstream s;
    s << f.rdbuf();
    std::string t = s.str();
    return t.size() > 2000 ? t.substr(t.size() - 2000) : t;
  }

  static int free_port() {
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    int port = -1;
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        getsockname(s, reinterpret_cast<sockaddr*>(&a), &n) == 0)
      port = ntohs(a.sin_port);
    close(s);
    if (port <= 0) throw std::runtime_error("no free port on 127.0.0.1");
    return port;
  }

  // The port found free may be taken again before postgres binds it (another
  // test process does the same): try again with another one.
  void start_on_free_port() {
    for (int attempt = 0; attempt < 8; ++attempt) {
      port_ = free_port();
      if (launch()) return;
    }
    throw std::runtime_error("postgres did not start: " + tail(dir_ + "/server.log"));
  }

  // pg_ctl start on port_; false when the server did not come up.
  bool launch() {
    const std::string opts = "-p " + std::to_string(port_) + " -k " + dir_ +
                             " -c listen_addresses=127.0.0.1 -c max_connections=40" +
                             (durable_ ? " -c shared_buffers=128MB"
                                       : " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
                                         " -c shared_buffers=16MB");
    return sh(as_postgres(std::string(kBin) + "/pg_ctl -D " + data() + " -l " + dir_ + "/server.log -w -t 60 -o '" +
                          opts + "' start") + " >/dev/null 2>&1") == 0;
  }

  void start_watchdog() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    // Everything the child needs is built before fork (the test process may
    // have threads); the child only dups and execs.
    const std::string script =
        "exec >/dev/null 2>&1; trap '' INT TERM HUP; read -r _; cd / ; "
        "/usr/sbin/runuser -u postgres -- " + std::string(kBin) + "/pg_ctl -D " + data() +
        " -m immediate -w stop >/dev/null 2>&1; rm -rf " + dir_;
    const pid_t pid = fork();
    if (pid < 0) {
      close(fds[0]);
      close(fds[1]);
      throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
      dup2(fds[0], 0);  // dup2 clears close-on-exec on the copy
      execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[0]);
    watchdog_ = pid;
    pipe_ = fds[1];
  }

  void cleanup() {
    if (watchdog_ <= 0 && !dir_.empty()) {  // no watchdog started: nothing runs in the dir yet
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
    if (pipe_ >= 0) {
      close(pipe_);
      pipe_ = -1;
    }
    if (watchdog_ > 0) {
      int st = 0;
      waitpid(watchdog_, &st, 0);
      watchdog_ = -1;
    }
  }

  bool durable_ = false;
  std::string dir_;
  int port_ = 0;
  int databases_ = 0;
  pid_t watchdog_ = -1;
  int pipe_ = -1;
};

}  // namespace kptest
