#include "common/options_file.hpp"

#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

namespace po = boost::program_options;

namespace keycast {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

}  // namespace

void store_options_file(const std::string& path, const po::options_description& desc, po::variables_map& vm) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("--config " + path + ": cannot open");
  // Options the command line set are left alone; boost would otherwise
  // refuse the file's line as a second occurrence of a single-valued option.
  std::set<std::string> from_command_line;
  for (const auto& [name, v] : vm)
    if (!v.defaulted()) from_command_line.insert(name);
  std::map<std::string, unsigned> first_line;  // single-valued options seen in the file
  std::string line;
  for (unsigned n = 1; std::getline(f, line); ++n) {
    const std::string where = path + ":" + std::to_string(n) + ": ";
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) throw std::runtime_error(where + "expected 'name = value', got '" + line + "'");
    const std::string name = trim(line.substr(0, eq));
    const std::string value = trim(line.substr(eq + 1));
    const po::option_description* d = desc.find_nothrow(name, false);
    if (!d || name == "config" || name == "help" || name == "version")
      throw std::runtime_error(where + "unknown option '" + name + "'");
    if (!d->semantic()->is_composing()) {
      auto [it, fresh] = first_line.emplace(d->long_name(), n);
      if (!fresh)
        throw std::runtime_error(where + name + " given twice (first on line " + std::to_string(it->second) + ")");
      if (from_command_line.count(d->long_name())) continue;
    }
    po::parsed_options one(&desc);
    po::option o;
    o.string_key = d->long_name();
    // A switch (no value on the command line) takes true/false here.
    if (d->semantic()->max_tokens() == 0) {
      if (value == "true" || value == "yes" || value == "on" || value == "1") {
        // zero tokens: present means set
      } else if (value == "false" || value == "no" || value == "off" || value == "0") {
        continue;
      } else {
        throw std::runtime_error(where + name + ": expected true or false, got '" + value + "'");
      }
    } else {
      o.value.push_back(value);
    }
    o.original_tokens = {name, value};
    one.options.push_back(std::move(o));
    try {
      po::store(one, vm);
    } catch (const po::error& e) {
      throw std::runtime_error(where + e.what());
    }
  }
}

}  // namespace keycast
