// Minimal pcap reading and writing over libpcap, for tools and tests that
// exchange frames with Scapy and tshark. Not used on the fast path.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace keycast {

using Frame = std::vector<uint8_t>;

// Throws std::runtime_error naming the path on failure.
std::vector<Frame> pcap_read(const std::string& path);
void pcap_write(const std::string& path, const std::vector<Frame>& frames);

}  // namespace keycast
