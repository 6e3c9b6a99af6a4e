// The keys a master made and a slave replicated, the channels' SPI
// counters, and the store's small settings (meta): one concern of the
// key-plane store (keyplane/store.hpp).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "keyplane/store_records.hpp"

namespace keycast::kp {

class KeyStore {
 public:
  virtual ~KeyStore() = default;

  // Makes key k.gen (> 0) of k.channel unless that generation exists, in
  // which case the stored key is returned instead: two masters that both
  // believe they lead still cannot make two different keys of one
  // generation. The SPI comes from the channel's counter in the database
  // (k.spi is ignored), so it is never reused and grows with every key
  // made, from 256 (1..255 are reserved, RFC 4303); the seq is assigned as
  // by put_key. Throws when the channel's SPI
  // space is exhausted.
  virtual StoredKey mint_key(const StoredKey& k) = 0;

  // Keys. put_key inserts or updates (same channel+spi) and returns the seq used:
  // seq 0 means "assign the next master sequence number". An update replaces
  // the material too: the row always holds the key the caller now serves. A
  // master's upload whose commit landed though its COMMIT reported a failure
  // (the database lost mid-reply) left a row under an SPI the master then
  // hands out again with the sender's next key: kept, the old material would
  // be what the next master loads under an SPI the sender uses for another.
  // That row's key was never handed out (its reply was an error).
  virtual uint64_t put_key(const StoredKey& k) = 0;
  virtual std::vector<StoredKey> load_keys() = 0;
  virtual uint64_t max_seq() = 0;
  virtual std::map<uint32_t, uint32_t> load_spi_hwm() = 0;
  virtual void set_spi_hwm(uint32_t channel, uint32_t hwm) = 0;

  virtual std::optional<std::string> meta(const std::string& k) = 0;
  virtual void set_meta(const std::string& k, const std::string& v) = 0;
};

}  // namespace keycast::kp
