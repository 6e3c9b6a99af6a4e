#include "keyplane/hostport.hpp"

#include <stdexcept>

namespace keycast::kp {

HostPort parse_host_port(const std::string& s, const std::string& option) {
  auto bad = [&] { return std::runtime_error(option + " " + s + ": expected HOST:PORT"); };
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= s.size()) throw bad();
  HostPort hp;
  hp.host = s.substr(0, colon);
  hp.port = s.substr(colon + 1);
  hp.text = s;
  if (hp.host.front() == '[') {
    if (hp.host.back() != ']' || hp.host.size() < 3) throw bad();
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  if (hp.port.find_first_not_of("0123456789") != std::string::npos || hp.port.size() > 5 ||
      std::stoul(hp.port) > 65535)
    throw bad();
  return hp;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    auto c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    if (c > pos) out.push_back(s.substr(pos, c - pos));
    pos = c + 1;
  }
  return out;
}

}  // namespace keycast::kp
