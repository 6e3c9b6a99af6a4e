#include "dataplane/cli_options.hpp"

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

}  // namespace keycast::dp
