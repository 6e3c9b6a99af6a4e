// Option groups keycast-send and keycast-recv share, so both spell and check
// them the same way.
#pragma once
#include <boost/program_options.hpp>

#include "dataplane/channel.hpp"
#include "dataplane/vlan.hpp"

namespace keycast::dp {

// --channel (repeatable), --group, --channels.
void add_channel_options(boost::program_options::options_description& d, ChannelOptions& o);
// After notify(): records whether --group was given (not just its default).
void finish_channel_options(const boost::program_options::variables_map& vm, ChannelOptions& o);

// --config FILE: the file's options into vm (after the command line, which
// wins); a bad line is a UsageError naming FILE:LINE.
void store_config_file(const std::string& path, const boost::program_options::options_description& d,
                       boost::program_options::variables_map& vm);

// --metrics HOST:PORT (both): Prometheus text and /healthz over HTTP, from
// the control lcore (dataplane/metrics_http.hpp).
void add_metrics_option(boost::program_options::options_description& d, std::string& o);

// --vlan ID (both) and, on the sender, --vlan-pcp N.
struct VlanOptions {
  uint32_t id = 0;  // 0: untagged
  uint32_t pcp = 0;
};
void add_vlan_options(boost::program_options::options_description& d, VlanOptions& o, bool sender);
// UsageError naming the option for an id outside 1..4094 or a priority above 7.
VlanConfig vlan_config(const VlanOptions& o);

}  // namespace keycast::dp
