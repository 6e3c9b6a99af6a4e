#include "keyplane/ctl_settings.hpp"

#include <sys/stat.h>

#include "common/options_file.hpp"

namespace keycast::kp {

namespace po = boost::program_options;

namespace {
const std::pair<const char*, const char*> kEnv[] = {
      {"KEYCAST_SERVER", "server"},     {"KEYCAST_TLS_CERT", "tls-cert"},     {"KEYCAST_TLS_KEY", "tls-key"},
      {"KEYCAST_TLS_CA", "tls-ca"},     {"KEYCAST_TLS_CRL", "tls-crl"},       {"KEYCAST_TIMEOUT_MS", "timeout-ms"},
      {"KEYCAST_OUTPUT", "output"},
};
}  // namespace

std::string ctl_env_option(const std::string& v) {
  for (auto& [var, opt] : kEnv)
    if (v == var) return opt;
  return "";
}

std::string expand_home(const std::string& path, const EnvLookup& env) {
  if (path.rfind("~/", 0) != 0) return path;
  auto home = env("HOME");
  return home ? *home + path.substr(1) : path;
}

std::optional<std::string> ctl_config_path(const std::string& explicit_path, const EnvLookup& env) {
  if (!explicit_path.empty()) return expand_home(explicit_path, env);
  if (auto p = env("KEYCAST_CTL_CONFIG"); p && !p->empty()) return expand_home(*p, env);
  std::string dir;
  if (auto x = env("XDG_CONFIG_HOME"); x && !x->empty()) dir = *x;
  else if (auto h = env("HOME"); h && !h->empty()) dir = *h + "/.config";
  else return std::nullopt;
  const std::string f = dir + "/keycast/ctl.conf";
  struct stat st {};
  // The default file is optional: only an explicit one must exist.
  if (::stat(f.c_str(), &st) != 0) return std::nullopt;
  return f;
}

void store_ctl_settings(const po::options_description& conn, po::variables_map& vm,
                        const std::string& explicit_config, const EnvLookup& env) {
  // Boost's environment parser walks environ; ours asks for each variable we
  // know, so tests and embedders can pass their own lookup.
  po::parsed_options from_env(&conn);
  for (auto& [var, opt] : kEnv) {
    auto v = env(var);
    if (!v || v->empty() || !conn.find_nothrow(opt, false)) continue;
    po::option o;
    o.string_key = opt;
    o.value.push_back(*v);
    from_env.options.push_back(std::move(o));
  }
  try {
    po::store(from_env, vm);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("environment: ") + e.what());
  }
  if (auto f = ctl_config_path(explicit_config, env)) store_options_file(*f, conn, vm);
}

}  // namespace keycast::kp
