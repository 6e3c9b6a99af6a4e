// The admin audit trail: one JSON object per line, appended, for every
// action that changes who may decipher what or what is billed (rotate,
// billing close, grant, revoke, eviction, TLS/CRL reload), whether it
// succeeded or was refused. Each line is written with one write(2) on an
// O_APPEND descriptor and fsync'd before the action's reply goes out, so a
// line is never interleaved, never half-present after a crash, and never
// missing for an acknowledged action. The file is created 0600.
//
// {"time":"2026-12-02T10:00:00.120Z","who":"ops-alice","role":"admin",
//  "from":"10.0.0.7:51234","action":"revoke","channels":[5,6],
//  "result":"ok","detail":"..."}
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace keycast::kp {

struct AuditEntry {
  std::string who, role, from;  // certificate identity, its role, peer address ("local": signal)
  std::string action;
  std::vector<uint32_t> channels;
  std::string result = "ok";  // "ok" or the error's name
  std::string detail;         // never key bytes
};

class AuditLog {
 public:
  AuditLog() = default;
  // Throws std::runtime_error naming --audit-log when the file cannot be opened.
  explicit AuditLog(const std::string& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  bool enabled() const { return fd_ >= 0; }
  // false (and errno) when the line could not be written durably.
  bool write(const AuditEntry& e);
  static std::string line(const AuditEntry& e, int64_t wall_ms);

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace keycast::kp
