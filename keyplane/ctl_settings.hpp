// Where keycast-ctl finds its server and certificates, so an operator does
// not type four flags on every call. First found wins, per option:
//   1. the command line;
//   2. the environment: KEYCAST_SERVER, KEYCAST_TLS_CERT, KEYCAST_TLS_KEY,
//      KEYCAST_TLS_CA, KEYCAST_TLS_CRL, KEYCAST_TIMEOUT_MS, KEYCAST_OUTPUT;
//   3. a config file: --config FILE, else KEYCAST_CTL_CONFIG, else
//      $XDG_CONFIG_HOME/keycast/ctl.conf (~/.config/keycast/ctl.conf) when it
//      exists. Same `name = value` lines as every keycast config file, limited
//      to the connection options, errors naming FILE:LINE.
// A leading "~/" in a path is the user's home, as a shell would expand it.
#pragma once
#include <boost/program_options.hpp>

#include <functional>
#include <optional>
#include <string>

namespace keycast::kp {

using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// The option a KEYCAST_* variable sets ("" when none: other variables are
// not ours and are ignored).
std::string ctl_env_option(const std::string& variable);

// The config file to read: explicit, else KEYCAST_CTL_CONFIG, else the XDG
// default when it exists; nullopt when there is none.
std::optional<std::string> ctl_config_path(const std::string& explicit_path, const EnvLookup& env);

// Adds the environment's and then the file's values of `conn` options to vm
// (values already there, from the command line, stay).
void store_ctl_settings(const boost::program_options::options_description& conn,
                        boost::program_options::variables_map& vm, const std::string& explicit_config,
                        const EnvLookup& env);

std::string expand_home(const std::string& path, const EnvLookup& env);

}  // namespace keycast::kp
