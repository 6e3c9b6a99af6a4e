// A program of someone else's, built only against an installed keycast
// (pkg-config keycast-client): asks a key server to make the current key of
// a channel, then fetches it back, and prints its SPI.
//   client_consumer HOST:PORT CERT KEY CA CHANNEL
#include <keyplane/client/client.hpp>

#include <cstdio>
#include <cstdlib>
#include <future>

namespace kp = keycast::kp;

static kp::Result wait_for(kp::Client& c, void (kp::Client::*op)(uint32_t, kp::Which, kp::Callback),
                           uint32_t channel) {
  std::promise<kp::Result> done;
  (c.*op)(channel, kp::Which::Current, [&done](kp::Result r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: client_consumer HOST:PORT CERT KEY CA CHANNEL\n");
    return 2;
  }
  kp::ClientOptions o;
  o.servers = {argv[1]};
  o.tls = {argv[2], argv[3], argv[4]};
  const auto channel = static_cast<uint32_t>(std::strtoul(argv[5], nullptr, 10));
  kp::Client c(o);
  kp::Result made = wait_for(c, &kp::Client::generate, channel);
  if (!made.ok() || made.keys.empty()) {
    std::fprintf(stderr, "generate: %s %s\n", std::string(kp::error_name(made.error)).c_str(), made.message.c_str());
    return 1;
  }
  kp::Result got = wait_for(c, &kp::Client::fetch, channel);
  if (!got.ok() || got.keys.empty() || got.keys[0].spi != made.keys[0].spi) {
    std::fprintf(stderr, "fetch: %s %s\n", std::string(kp::error_name(got.error)).c_str(), got.message.c_str());
    return 1;
  }
  std::printf("channel %u current spi 0x%08x from %s\n", channel, got.keys[0].spi, got.server.c_str());
  return 0;
}
