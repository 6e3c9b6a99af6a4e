// The key-server sources of a process share one client, whose io thread
// completes their requests. A start that fails (one channel unanswered or
// refused) unwinds with the other channels' requests still queued: the
// sources are destroyed one by one, and the last one stops the client, which
// completes every queued request with Shutdown. Those completions must not
// reach a destroyed source. Built with AddressSanitizer, like the key table
// test: a completion written into a freed source fails this test.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataplane/channel.hpp"
#include "dataplane/channel_key_sources.hpp"
#include "dataplane/key_table.hpp"

#ifndef KEYCAST_SOURCE_DIR
#error "KEYCAST_SOURCE_DIR must be defined"
#endif

using namespace keycast;
using namespace keycast::dp;

namespace {

struct Pki {
  std::string dir;
  Pki() {
    std::string t = (std::filesystem::temp_directory_path() / "keycast-kmsdown-XXXXXX").string();
    if (!mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    dir = t;
    const std::string cmd =
        "bash " + std::string(KEYCAST_SOURCE_DIR) + "/scripts/make-certs.sh " + dir + " >/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("make-certs.sh failed");
  }
  ~Pki() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

// A loopback port bound but not listening: every connection is refused, so
// every request stays queued in the client (until its request timeout).
struct RefusingPort {
  int fd = -1;
  uint16_t port = 0;
  RefusingPort() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("cannot bind a loopback port");
    port = ntohs(a.sin_port);
  }
  ~RefusingPort() { ::close(fd); }
};

}  // namespace

TEST(KmsTeardown, FailedStartOfManyChannelsUnwindsWithRequestsQueued) {
  Pki pki;
  RefusingPort srv;
  constexpr unsigned kChannels = 64;
  std::vector<ChannelConfig> chans(kChannels);
  std::vector<uint32_t> tags;
  for (unsigned i = 0; i < kChannels; ++i) {
    chans[i].id = i + 1;
    chans[i].group.ip = 0xef1e0000u + i + 1;  // 239.30.0.(i + 1)
    chans[i].group.port = 5000;
    tags.push_back(chans[i].id);
  }
  ChannelKeySourcesOptions o;
  o.sender = true;
  o.use_kms = true;
  o.kms.servers = {"127.0.0.1:" + std::to_string(srv.port)};
  o.kms.tls = {pki.dir + "/sender.crt", pki.dir + "/sender.key", pki.dir + "/ca.crt", {}};
  o.kms.sender = true;
  o.kms.start_timeout = std::chrono::milliseconds(300);

  SlotParams slot;
  slot.send_workers = 1;
  for (int round = 0; round < 3; ++round) {
    KeyTableHolder holder(1);
    KeyPublisher pub(holder);
    // As keycast-send does: the start throws, its scope unwinds.
    EXPECT_THROW(
        {
          ChannelKeySources keys(pub, chans, tags, slot, o);
          keys.start(MonoClock::now());
        },
        std::runtime_error);
  }
}
