// Key records: what a key is, independent of where it is used.
//
// Key bytes live only in KeyMaterial, which zeroises itself on destruction
// and has no operator<< or to_string: printing a key takes a deliberate call
// to reveal_hex(), which only `keycast-ctl key --reveal` and the Wireshark
// export make.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/suite.hpp"

namespace keycast {

struct KeyMaterial {
  Suite suite = Suite::Aes128Gcm;
  uint8_t key[kMaxKeyLen] = {};
  uint8_t salt[kSaltLen] = {};

  KeyMaterial() = default;
  KeyMaterial(const KeyMaterial&) = default;
  KeyMaterial& operator=(const KeyMaterial&) = default;
  ~KeyMaterial();

  // Fresh key and salt from the OS CSPRNG (OpenSSL RAND_priv_bytes).
  static KeyMaterial generate(Suite s);
  // key || salt as one byte string (the RFC 4106 "keymat"), e.g. for a key file.
  static bool from_keymat(std::string_view hex, KeyMaterial& out);
  std::string reveal_hex() const;  // key || salt in hex: deliberate disclosure only
  std::size_t keymat_len() const noexcept { return key_len(suite) + kSaltLen; }
  bool operator==(const KeyMaterial& o) const noexcept;
};

using MonoClock = std::chrono::steady_clock;

// A key as the key plane hands it out. The remaining effective time is
// relative: each party converts it to a deadline on its own monotonic clock
// on receipt, so no party needs a synchronised wall clock.
struct KeyRecord {
  uint32_t channel = 0;
  uint32_t spi = 0;  // key identifier; never reused on a channel
  KeyMaterial material;
  MonoClock::time_point expires_at{};  // current-use key reaches remaining time 0

  int64_t remaining_ms(MonoClock::time_point now = MonoClock::now()) const noexcept {
    return std::chrono::duration_cast<std::chrono::milliseconds>(expires_at - now).count();
  }
  void set_remaining_ms(int64_t ms, MonoClock::time_point now = MonoClock::now()) noexcept {
    expires_at = now + std::chrono::milliseconds(ms);
  }
};

// Static key file (labs and tests): one key per line, "SPI HEXKEY" (a key of
// `channel`) or "CHANNEL SPI HEXKEY", where HEXKEY is key || 4-byte salt (40
// hex digits for AES-128-GCM, 72 for AES-256-GCM). An SPI appears once in a
// file, whatever its channel: a capture's keys then never need the channel to
// be told apart. '#' starts a comment. Throws std::runtime_error naming the
// file and line.
std::vector<KeyRecord> load_key_file(const std::string& path, uint32_t channel = 0);
std::vector<KeyRecord> parse_key_file(std::string_view text, const std::string& name,
                                      uint32_t channel = 0);

}  // namespace keycast
