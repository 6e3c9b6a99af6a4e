// The command-line checks made before DPDK's EAL starts (dataplane/eal_args).
#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "dataplane/eal_args.hpp"

using namespace keycast::dp;

namespace {
struct Argv {
  std::vector<std::string> s;
  std::vector<char*> p;
  explicit Argv(std::vector<std::string> a) : s(std::move(a)) {
    for (auto& x : s) p.push_back(x.data());
    p.push_back(nullptr);
  }
  int argc() const { return int(s.size()); }
  char** argv() { return p.data(); }
};
const std::vector<std::string> kNames = {"help", "port", "key-file", "vlan", "file"};
}  // namespace

TEST(EalArgs, ApplicationOptionsBeforeTheSeparatorAreNamed) {
  Argv a({"keycast-send", "--key-file", "k"});
  EXPECT_EQ(eal_end(a.argc(), a.argv()), 3);
  EXPECT_EQ(misplaced_option(a.argc(), a.argv(), kNames), "--key-file");
  Argv b({"keycast-send", "-l", "0,1", "--vlan=10", "--", "--port", "0"});
  EXPECT_EQ(eal_end(b.argc(), b.argv()), 4);
  EXPECT_EQ(misplaced_option(b.argc(), b.argv(), kNames), "--vlan");
  // After the separator, or EAL's own: fine. --file-prefix is not --file.
  Argv c({"keycast-send", "-l", "0,1", "--file-prefix", "x", "--no-huge", "--", "--key-file", "k", "--help"});
  EXPECT_FALSE(misplaced_option(c.argc(), c.argv(), kNames).has_value());
  Argv d({"keycast-send", "--help"});  // EAL has --help too: not "misplaced"
  EXPECT_FALSE(misplaced_option(d.argc(), d.argv(), kNames).has_value());
  EXPECT_TRUE(has_flag(d.argc(), d.argv(), "--help"));
  EXPECT_FALSE(has_flag(c.argc(), c.argv(), "--version"));
}

TEST(EalArgs, EveryLikelyFailureHasItsFix) {
  EXPECT_NE(eal_failure_hint(ENOMEM).find("--no-huge"), std::string::npos);
  EXPECT_NE(eal_failure_hint(ENOMEM).find("dpdk-hugepages.py"), std::string::npos);
  EXPECT_NE(eal_failure_hint(EACCES).find("root"), std::string::npos);
  EXPECT_NE(eal_failure_hint(EALREADY).find("--file-prefix"), std::string::npos);
  EXPECT_NE(eal_failure_hint(EINVAL).find("after --"), std::string::npos);
  EXPECT_EQ(eal_failure_hint(EPIPE), "");
}
