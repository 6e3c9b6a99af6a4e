#include "dataplane/eal_args.hpp"

#include <algorithm>
#include <cerrno>

namespace keycast::dp {

int eal_end(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--") return i;
  return argc;
}

bool has_flag(int argc, char** argv, const std::string& flag) {
  for (int i = 1; i < argc; ++i)
    if (argv[i] == flag) return true;
  return false;
}

std::optional<std::string> misplaced_option(int argc, char** argv, const std::vector<std::string>& names) {
  const int end = eal_end(argc, argv);
  for (int i = 1; i < end; ++i) {
    const std::string a = argv[i];
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) continue;
    const std::string name = a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
    // --help is EAL's too; everything else of ours is unknown to EAL.
    if (name != "help" && std::find(names.begin(), names.end(), name) != names.end()) return "--" + name;
  }
  return std::nullopt;
}

std::string eal_failure_hint(int err) {
  switch (err) {
    case EACCES:
      return "permission denied (hugepages, /dev/vfio or /var/run/dpdk): run as root or with the DPDK "
             "capabilities, or without hugepages for a test: --no-huge -m 256 --file-prefix NAME";
    case ENOMEM:
      return "no memory for DPDK: reserve and mount hugepages (dpdk-hugepages.py -p 1G --setup 2G, or "
             "-p 2M --setup 1G), or for a test run with --no-huge -m 256";
    case EALREADY:
      return "another DPDK process uses the same runtime directory: give each process its own "
             "--file-prefix NAME";
    case EINVAL:
      return "invalid EAL arguments (see above); keycast's own options go after --";
    default:
      return "";
  }
}

}  // namespace keycast::dp
