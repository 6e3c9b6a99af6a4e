// Telling the service manager where a keycast process is: sd_notify(3)
// messages to systemd when it started the process as Type=notify
// (NOTIFY_SOCKET is set); without it every call does nothing. The status
// line is what `systemctl status` shows; it never carries key material.
#pragma once
#include <string>

namespace keycast {

void notify_ready(const std::string& status);  // started: accepting work
void notify_status(const std::string& status);
void notify_reloading();                        // SIGHUP seen, reload under way (notify_ready after)
void notify_stopping();

}  // namespace keycast
