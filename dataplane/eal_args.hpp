// What keycast-send and keycast-recv decide about their command line before
// DPDK's EAL sees it: the first mistakes a new operator makes must get one
// clear line, not EAL's page of usage or a "Permission denied" from a
// hugepage probe. Pure functions of argv (tested without EAL).
//
// The command line is `NAME [EAL args] -- [app options]`.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace keycast::dp {

// Index of the first "--" (the end of the EAL arguments), or argc if none.
int eal_end(int argc, char** argv);
// Whether FLAG (e.g. "--help") appears among the application options, or
// among the EAL arguments when it is one EAL does not have.
bool has_flag(int argc, char** argv, const std::string& flag);
// An application option (one of NAMES, given as "--name" or "--name=v")
// found among the EAL arguments, e.g. "--key-file".
std::optional<std::string> misplaced_option(int argc, char** argv, const std::vector<std::string>& names);
// One line saying how to fix an rte_eal_init failure with this rte_errno.
std::string eal_failure_hint(int err);

}  // namespace keycast::dp
