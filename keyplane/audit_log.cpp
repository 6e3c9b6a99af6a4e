#include "keyplane/audit_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "keyplane/escape.hpp"
#include "keyplane/wall_time.hpp"

namespace keycast::kp {

AuditLog::AuditLog(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd_ < 0) throw std::runtime_error("--audit-log " + path + ": " + std::strerror(errno));
}

AuditLog::~AuditLog() {
  if (fd_ >= 0) ::close(fd_);
}

std::string AuditLog::line(const AuditEntry& e, int64_t wall_ms) {
  std::string o = "{\"time\":" + json_str(format_rfc3339(wall_ms)) + ",\"who\":" + json_str(e.who) +
                  ",\"role\":" + json_str(e.role) + ",\"from\":" + json_str(e.from) +
                  ",\"action\":" + json_str(e.action) + ",\"channels\":[";
  for (std::size_t i = 0; i < e.channels.size(); ++i) o += (i ? "," : "") + std::to_string(e.channels[i]);
  o += "],\"result\":" + json_str(e.result);
  if (!e.detail.empty()) o += ",\"detail\":" + json_str(e.detail);
  return o + "}\n";
}

bool AuditLog::write(const AuditEntry& e) {
  if (fd_ < 0) return true;
  const std::string l = line(e, wall_now_ms());
  // One write of a whole line on O_APPEND: never interleaved with another.
  ssize_t n;
  do n = ::write(fd_, l.data(), l.size());
  while (n < 0 && errno == EINTR);
  if (n != ssize_t(l.size())) return false;
  return ::fdatasync(fd_) == 0;
}

}  // namespace keycast::kp
