// HOST:PORT parsing shared by keyd, ctl and the client library.
#pragma once
#include <string>
#include <vector>

namespace keycast::kp {

struct HostPort {
  std::string host, port, text;
};

// "127.0.0.1:7400", "[::1]:7400", "kms.example:7400". Throws std::runtime_error
// naming `option` when malformed.
HostPort parse_host_port(const std::string& s, const std::string& option);
// Comma-separated list.
std::vector<std::string> split_list(const std::string& s);

}  // namespace keycast::kp
