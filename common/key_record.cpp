#include "common/key_record.hpp"

#include <openssl/rand.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/hex.hpp"
#include "common/secure.hpp"

namespace keycast {

KeyMaterial::~KeyMaterial() { secure_zero(key, sizeof key + sizeof salt); }

KeyMaterial KeyMaterial::generate(Suite s) {
  KeyMaterial m;
  m.suite = s;
  if (RAND_priv_bytes(m.key, static_cast<int>(key_len(s))) != 1 ||
      RAND_priv_bytes(m.salt, kSaltLen) != 1)
    throw std::runtime_error("RAND_priv_bytes failed: no entropy for key generation");
  return m;
}

bool KeyMaterial::from_keymat(std::string_view hex, KeyMaterial& out) {
  Suite s;
  if (hex.size() == 2 * (16 + kSaltLen))
    s = Suite::Aes128Gcm;
  else if (hex.size() == 2 * (32 + kSaltLen))
    s = Suite::Aes256Gcm;
  else
    return false;
  uint8_t buf[kMaxKeyLen + kSaltLen];
  if (!hex_decode(hex, buf, hex.size() / 2)) {
    secure_zero(buf, sizeof buf);
    return false;
  }
  out.suite = s;
  std::memcpy(out.key, buf, key_len(s));
  std::memcpy(out.salt, buf + key_len(s), kSaltLen);
  secure_zero(buf, sizeof buf);
  return true;
}

std::string KeyMaterial::reveal_hex() const {
  return hex_encode(key, key_len(suite)) + hex_encode(salt, kSaltLen);
}

bool KeyMaterial::operator==(const KeyMaterial& o) const noexcept {
  return suite == o.suite && secure_equal(key, o.key, sizeof key) &&
         secure_equal(salt, o.salt, sizeof salt);
}

std::vector<KeyRecord> parse_key_file(std::string_view text, const std::string& name,
                                      uint32_t channel) {
  std::vector<KeyRecord> out;
  std::size_t lineno = 0, pos = 0;
  while (pos <= text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineno;
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    std::istringstream in{std::string(line)};
    std::string f1, f2, f3, extra;
    if (!(in >> f1)) continue;  // blank or comment
    auto fail = [&](const char* why) {
      throw std::runtime_error(name + ":" + std::to_string(lineno) + ": " + why);
    };
    if (!(in >> f2)) fail("expected 'SPI HEXKEY' or 'CHANNEL SPI HEXKEY'");
    const bool with_channel = static_cast<bool>(in >> f3);
    if (in >> extra) fail("trailing text after HEXKEY");
    auto number = [&](const std::string& t, unsigned long long& v) {
      char* end = nullptr;
      v = std::strtoull(t.c_str(), &end, 0);
      return !t.empty() && *end == '\0' && t[0] != '-' && v <= 0xffffffffULL;
    };
    unsigned long long chan = channel, spi = 0;
    if (with_channel && (!number(f1, chan) || chan == 0))
      fail("CHANNEL must be an integer in 1..4294967295");
    const std::string& spi_s = with_channel ? f2 : f1;
    const std::string& hex = with_channel ? f3 : f2;
    if (!number(spi_s, spi) || spi == 0) fail("SPI must be an integer in 1..4294967295");
    if (spi < 256) fail("SPI values 1..255 are reserved by RFC 4303");
    KeyRecord r;
    r.channel = static_cast<uint32_t>(chan);
    r.spi = static_cast<uint32_t>(spi);
    if (!KeyMaterial::from_keymat(hex, r.material))
      fail("HEXKEY must be 40 (AES-128-GCM) or 72 (AES-256-GCM) hex digits: key || 4-byte salt");
    for (const auto& k : out)
      if (k.spi == r.spi)
        fail(k.channel == r.channel ? "SPI repeated: a key identifier is never reused"
                                    : "SPI already used by another channel: give each channel its own SPIs");
    out.push_back(std::move(r));
  }
  if (out.empty()) throw std::runtime_error(name + ": no keys");
  return out;
}

std::vector<KeyRecord> load_key_file(const std::string& path, uint32_t channel) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("--key-file " + path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  auto keys = parse_key_file(text, path, channel);
  secure_zero(text.data(), text.size());
  return keys;
}

}  // namespace keycast
