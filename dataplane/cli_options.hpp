// Option groups keycast-send and keycast-recv share, so both spell and check
// them the same way.
#pragma once
#include <boost/program_options.hpp>

#include "dataplane/channel.hpp"

namespace keycast::dp {

// --channel (repeatable), --group, --channels.
void add_channel_options(boost::program_options::options_description& d, ChannelOptions& o);
// After notify(): records whether --group was given (not just its default).
void finish_channel_options(const boost::program_options::variables_map& vm, ChannelOptions& o);

}  // namespace keycast::dp
