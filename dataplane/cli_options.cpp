#include "dataplane/cli_options.hpp"

#include "dataplane/app.hpp"
#include "common/options_file.hpp"

namespace po = boost::program_options;

namespace keycast::dp {

void add_channel_options(po::options_description& d, ChannelOptions& o) {
  o.group = "239.1.1.1:5000";
  d.add_options()
      ("channel", po::value<std::vector<std::string>>(&o.channel)->composing(),
       "ID (with --group: one channel) or ID=A.B.C.D:PORT (repeatable: many channels)")
      ("group", po::value<std::string>(&o.group)->default_value(o.group),
       "the one channel's group A.B.C.D:PORT")
      ("channels", po::value<std::string>(&o.channels_file),
       "channels file: 'ID GROUP:PORT [key=value ...]' a line (up to 1024 channels)");
}

void finish_channel_options(const po::variables_map& vm, ChannelOptions& o) {
  o.group_given = vm.count("group") && !vm["group"].defaulted();
}

void store_config_file(const std::string& path, const po::options_description& d, po::variables_map& vm) {
  try {
    store_options_file(path, d, vm);
  } catch (const std::runtime_error& e) {
    throw UsageError(e.what());
  }
}

void add_metrics_option(po::options_description& d, std::string& o) {
  d.add_options()("metrics", po::value<std::string>(&o),
                  "HOST:PORT: serve Prometheus metrics (any path) and /healthz over HTTP (PORT 0: a free port; "
                  "'metrics listening on HOST:PORT' is printed at start)");
}

void add_vlan_options(po::options_description& d, VlanOptions& o, bool sender) {
  d.add_options()
      ("vlan", po::value<uint32_t>(&o.id)->default_value(0),
       sender ? "802.1Q VLAN ID 1..4094 to tag every frame with (0: untagged)"
              : "802.1Q VLAN ID 1..4094: take only this VLAN's tagged frames, strip the tag, tag the IGMP "
                "reports (0: untagged frames, and priority-tagged ones)");
  if (sender)
    d.add_options()("vlan-pcp", po::value<uint32_t>(&o.pcp)->default_value(0),
                    "802.1p priority 0..7 in the tag (with --vlan; e.g. 4 for video)");
}

VlanConfig vlan_config(const VlanOptions& o) {
  VlanConfig v;
  if (o.id == 0) {
    if (o.pcp) throw UsageError("--vlan-pcp: needs --vlan (an untagged frame has no priority field)");
    return v;
  }
  // 0 means no VLAN in a tag and 4095 is reserved (802.1Q table 9-2).
  if (o.id > 4094) throw UsageError("--vlan: " + std::to_string(o.id) + " is not a VLAN ID (1..4094)");
  if (o.pcp > 7) throw UsageError("--vlan-pcp: " + std::to_string(o.pcp) + " is not a priority (0..7)");
  v.on = true;
  v.id = static_cast<uint16_t>(o.id);
  v.pcp = static_cast<uint8_t>(o.pcp);
  return v;
}

}  // namespace keycast::dp
