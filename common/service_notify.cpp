#include "common/service_notify.hpp"

#include <systemd/sd-daemon.h>

namespace keycast {
namespace {

// A status line is one line: a newline would start a new assignment.
std::string one_line(const std::string& s) {
  std::string r = s;
  for (char& c : r)
    if (c == '\n' || c == '\r') c = ' ';
  while (!r.empty() && r.back() == ' ') r.pop_back();
  return r;
}

// Failures are ignored on purpose: a lost status message must not stop
// the service, and systemd notices a missing READY by its start timeout.
void send(const std::string& msg) { sd_notify(0, msg.c_str()); }

}  // namespace

void notify_ready(const std::string& status) { send("READY=1\nSTATUS=" + one_line(status)); }
void notify_status(const std::string& status) { send("STATUS=" + one_line(status)); }
void notify_reloading() { send("RELOADING=1\nSTATUS=reloading"); }
void notify_stopping() { send("STOPPING=1\nSTATUS=stopping"); }

}  // namespace keycast
