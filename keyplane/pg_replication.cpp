#include "keyplane/pg_replication.hpp"

#include <algorithm>
#include <sstream>

#include "keyplane/pg_conn.hpp"

namespace keycast::kp {

std::vector<std::pair<std::string, Entitlement>> PgReplication::load_entitlements() {
  std::vector<std::pair<std::string, Entitlement>> out;
  PgResult r = db_.run("SELECT identity, mode, channels, seq FROM entitlements ORDER BY seq");
  for (int i = 0; i < r.rows(); ++i) {
    Entitlement e;
    const int64_t mode = r.i64(i, 1);
    if (mode < 0 || mode > int64_t(EntitlementMode::AllExcept))
      db_.fail("entitlement with unknown mode " + std::to_string(mode));
    e.mode = EntitlementMode(mode);
    std::stringstream list(r.text(i, 2));
    for (std::string c; std::getline(list, c, ',');)
      if (!c.empty()) e.channels.insert(uint32_t(std::stoul(c)));
    e.seq = r.u64(i, 3);
    out.emplace_back(r.text(i, 0), std::move(e));
  }
  return out;
}

void PgReplication::put_entitlement(const std::string& identity, const Entitlement& e) {
  std::string list;
  for (uint32_t c : e.channels) list += (list.empty() ? "" : ",") + std::to_string(c);
  PgParams p;
  p.text(identity).i64(int64_t(e.mode)).text(list).u64(e.seq);
  db_.run(
      "INSERT INTO entitlements(identity, mode, channels, seq) VALUES($1, $2, $3, $4) ON CONFLICT(identity) "
      "DO UPDATE SET mode = excluded.mode, channels = excluded.channels, seq = excluded.seq",
      p);
}

uint64_t PgReplication::forward_applied(const std::string& slave) {
  PgParams p;
  p.text(slave);
  PgResult r = db_.run("SELECT seq FROM forward_applied WHERE slave = $1", p);
  return r.rows() ? r.u64(0, 0) : 0;
}

void PgReplication::set_forward_applied(const std::string& slave, uint64_t seq) {
  PgParams p;
  p.text(slave).u64(seq);
  db_.run(
      "INSERT INTO forward_applied(slave, seq) VALUES($1, $2) ON CONFLICT(slave) DO UPDATE SET "
      "seq = excluded.seq",
      p);
}

void PgReplication::outbox_add(const std::string& identity, uint64_t requests, uint32_t channel, uint32_t spi,
                         uint64_t event_id, int64_t at_ms) {
  PgParams p;
  p.text(identity).u64(requests).i64(channel).i64(spi).u64(event_id).i64(at_ms);
  db_.run(
      "INSERT INTO outbox(identity, requests, channel, spi, event_id, at_ms) VALUES($1, $2, $3, $4, $5, $6)", p);
}

std::vector<BillEntry> PgReplication::outbox_peek(std::size_t limit, int64_t now_ms) {
  std::vector<BillEntry> out;
  PgParams p;
  p.u64(std::min<uint64_t>(limit, uint64_t(INT64_MAX)));  // LIMIT refuses negatives
  PgResult r =
      db_.run("SELECT seq, identity, requests, channel, spi, event_id, at_ms FROM outbox ORDER BY seq LIMIT $1", p);
  for (int i = 0; i < r.rows(); ++i) {
    BillEntry e;
    e.seq = r.u64(i, 0);
    e.identity = r.text(i, 1);
    e.requests = r.u64(i, 2);
    e.channel = uint32_t(r.i64(i, 3));
    e.spi = uint32_t(r.i64(i, 4));
    e.event_id = r.u64(i, 5);
    if (const int64_t at = r.i64(i, 6); at > 0 && now_ms > at) e.age_ms = now_ms - at;
    out.push_back(std::move(e));
  }
  return out;
}

void PgReplication::outbox_delete_upto(uint64_t seq) {
  PgParams p;
  p.u64(seq);
  db_.run("DELETE FROM outbox WHERE seq <= $1", p);
}

uint64_t PgReplication::outbox_size() { return db_.run("SELECT COUNT(*) FROM outbox").u64(0, 0); }

}  // namespace keycast::kp
