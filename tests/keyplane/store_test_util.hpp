// Records and renderings shared by the store contract tests: keys with
// known material, a tariff, and one-line texts of billing rows and invoices
// (so two backends' answers compare as strings).
#pragma once
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "keyplane/config.hpp"
#include "keyplane/store.hpp"

namespace kptest {

using keycast::KeyMaterial;
using keycast::Suite;
using keycast::kp::BillingRow;
using keycast::kp::Invoice;
using keycast::kp::kLedgerBucketMs;
using keycast::kp::StoredKey;
using keycast::kp::Tariffs;

// A minute boundary well in the past, so periods can close.
inline constexpr int64_t kT0 = 1'700'000'040'000;  // 2023-11-14T22:14:00Z, a multiple of 60000
static_assert(kT0 % kLedgerBucketMs == 0);

inline StoredKey key(uint32_t ch, uint32_t spi, uint8_t fill, uint64_t seq = 0) {
  StoredKey k;
  k.seq = seq;
  k.channel = ch;
  k.spi = spi;
  k.material.suite = Suite::Aes128Gcm;
  std::memset(k.material.key, fill, 16);
  std::memset(k.material.salt, fill ^ 0x5a, 4);
  k.expires_wall_ms = kT0 + spi;
  k.lifetime_ms = 60000;
  return k;
}

inline bool same_material(const KeyMaterial& a, const KeyMaterial& b) {
  return a.suite == b.suite && std::memcmp(a.key, b.key, sizeof a.key) == 0 &&
         std::memcmp(a.salt, b.salt, sizeof a.salt) == 0;
}

inline Tariffs tariffs() {
  Tariffs t;
  t.per_request_micros = 10000;   // 0.01
  t.per_gib_micros = 2000000;     // 2 per GiB
  t.currency = "EUR";
  t.currency_decimals = 2;
  return t;
}

inline std::string str(const BillingRow& b) {
  std::ostringstream o;
  o << b.identity << " r" << b.requests << " b" << b.bytes << " p" << b.packets << " e" << b.epochs << " lr"
    << b.late_requests << " lb" << b.late_bytes << " lp" << b.late_packets;
  return o.str();
}
inline std::string str(const std::vector<BillingRow>& v) {
  std::string s;
  for (auto& b : v) s += str(b) + "; ";
  return s;
}
inline std::string str(const Invoice& i) {
  std::ostringstream o;
  o << "[" << i.start_ms << "," << i.end_ms << ") at " << i.closed_at_ms << " by " << i.closed_by << " " << str(i.row)
    << " t" << i.per_request_micros << "/" << i.per_gib_micros << " " << i.fee_micros << "=" << i.fee << " "
    << i.currency;
  return o.str();
}
inline std::string str(const std::vector<Invoice>& v) {
  std::string s;
  for (auto& i : v) s += str(i) + "; ";
  return s;
}

}  // namespace kptest
