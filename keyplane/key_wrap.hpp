// Keys at rest: every stored key is wrapped with AES-256-GCM under a 256-bit
// master key read from a file (--master-key-file), AAD = "keycast-key" |
// channel | spi | suite, blob = nonce(12) | ciphertext | tag(16). The channel
// and SPI in the AAD bind a blob to its row, so a blob copied onto another
// key's row does not unwrap. Shared by every store backend.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "keyplane/store_records.hpp"

namespace keycast::kp {

class KeyWrapper {
 public:
  // Reads 32 raw bytes or 64 hex digits; throws naming --master-key-file.
  explicit KeyWrapper(const std::string& master_key_file);
  ~KeyWrapper();  // zeroises the master key
  KeyWrapper(const KeyWrapper&) = delete;
  KeyWrapper& operator=(const KeyWrapper&) = delete;

  std::vector<uint8_t> wrap(const StoredKey& k) const;
  // Fills k.material from blob; false when the blob does not authenticate
  // for (k.channel, k.spi, suite) under this master key.
  bool unwrap(const uint8_t* blob, std::size_t n, StoredKey& k, uint8_t suite) const;

  // A database keeps check_value() of its master key, so a wrong key file
  // fails at start rather than producing garbage keys.
  std::string check_value() const;
  bool matches(const std::string& check) const;

 private:
  uint8_t mk_[32] = {};
};

}  // namespace keycast::kp
