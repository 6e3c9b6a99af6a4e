// The data plane's log types, so an operator picks what to see with EAL's
// own option, e.g. --log-level=keycast.*:debug or --log-level=keycast.kms:warning:
//   keycast.send  the sender process: link, statistics lines, key switches
//   keycast.recv  the receiver process: the same, and IGMP
//   keycast.kms   key sources: the key server client (requests, refusals,
//                 pushes, usage reports) or a static key file
// Registered by constructors, so the levels given to EAL apply to them.
// Control lcore only: rte_log formats and writes, so a worker never calls it.
#pragma once
#include <rte_log.h>

extern int kc_logtype_send;
extern int kc_logtype_recv;
extern int kc_logtype_kms;
// The process's own type (keycast.send or keycast.recv), set by app_main.
extern int kc_logtype_app;

// KC_LOG(WARNING, kms, "fmt", ...): one line at RTE_LOG_WARNING of keycast.kms.
#define KC_LOG(level, type, ...) rte_log(RTE_LOG_##level, kc_logtype_##type, __VA_ARGS__)
