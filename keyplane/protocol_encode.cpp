// The protocol's encoder: messages to bytes (the decoder, which checks what peers send, is in
// protocol.cpp).
#include <cstring>

#include "common/secure.hpp"
#include "keyplane/protocol.hpp"

namespace keycast::kp {

// ---------------------------------------------------------------- encoding
namespace {

void put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}
void put32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}
void put64(std::vector<uint8_t>& b, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}
void tlv_hdr(std::vector<uint8_t>& b, uint16_t tag, uint32_t len) {
  put16(b, tag);
  put32(b, len);
}
void tlv_u8(std::vector<uint8_t>& b, uint16_t tag, uint8_t v) {
  tlv_hdr(b, tag, 1);
  b.push_back(v);
}
void tlv_u16(std::vector<uint8_t>& b, uint16_t tag, uint16_t v) {
  tlv_hdr(b, tag, 2);
  put16(b, v);
}
void tlv_u32(std::vector<uint8_t>& b, uint16_t tag, uint32_t v) {
  tlv_hdr(b, tag, 4);
  put32(b, v);
}
void tlv_u64(std::vector<uint8_t>& b, uint16_t tag, uint64_t v) {
  tlv_hdr(b, tag, 8);
  put64(b, v);
}
void tlv_bytes(std::vector<uint8_t>& b, uint16_t tag, const void* p, std::size_t n) {
  tlv_hdr(b, tag, uint32_t(n));
  auto* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
}

void encode_key(std::vector<uint8_t>& b, const WireKey& k) {
  std::vector<uint8_t> in;
  in.reserve(96);
  tlv_u32(in, TK_CHANNEL, k.channel);
  tlv_u32(in, TK_SPI, k.spi);
  tlv_u8(in, TK_SUITE, uint8_t(k.material.suite));
  uint8_t km[kMaxKeyLen + kSaltLen];
  std::size_t kl = key_len(k.material.suite);
  std::memcpy(km, k.material.key, kl);
  std::memcpy(km + kl, k.material.salt, kSaltLen);
  tlv_bytes(in, TK_KEYMAT, km, kl + kSaltLen);
  secure_zero(km, sizeof km);
  tlv_u64(in, TK_REMAINING_MS, uint64_t(k.remaining_ms));
  tlv_u64(in, TK_LIFETIME_MS, uint64_t(k.lifetime_ms));
  tlv_u8(in, TK_SLOT, uint8_t(k.slot));
  tlv_bytes(b, T_KEY, in.data(), in.size());
  secure_zero(in.data(), in.size());
}

void encode_bill(std::vector<uint8_t>& b, const BillEntry& e) {
  std::vector<uint8_t> in;
  tlv_u64(in, TB_SEQ, e.seq);
  tlv_bytes(in, TB_IDENTITY, e.identity.data(), e.identity.size());
  tlv_u64(in, TB_REQUESTS, e.requests);
  tlv_u32(in, TB_CHANNEL, e.channel);
  tlv_u32(in, TB_SPI, e.spi);
  if (e.event_id) tlv_u64(in, TB_EVENT_ID, e.event_id);
  if (e.age_ms) tlv_u64(in, TB_AGE_MS, uint64_t(e.age_ms));
  tlv_bytes(b, T_BILL, in.data(), in.size());
}

void encode_usage(std::vector<uint8_t>& b, const UsageEntry& u) {
  std::vector<uint8_t> in;
  in.reserve(48);
  tlv_u32(in, TU_CHANNEL, u.channel);
  tlv_u32(in, TU_SPI, u.spi);
  tlv_u64(in, TU_BYTES, u.bytes);
  tlv_u64(in, TU_PACKETS, u.packets);
  tlv_bytes(b, T_USAGE, in.data(), in.size());
}

}  // namespace

std::vector<uint8_t> encode(const Message& m) {
  std::vector<uint8_t> b;
  b.reserve(64 + m.keys.size() * 90 + m.text.size());
  put16(b, kMagic);
  b.push_back(kVersion);
  b.push_back(uint8_t(m.type));
  put32(b, m.req_id);
  put32(b, 0);  // length, patched below
  if (m.channel) tlv_u32(b, T_CHANNEL, *m.channel);
  if (m.spi) tlv_u32(b, T_SPI, *m.spi);
  if (m.which) tlv_u8(b, T_WHICH, uint8_t(*m.which));
  if (m.remaining_ms) tlv_u64(b, T_REMAINING_MS, uint64_t(*m.remaining_ms));
  if (m.bytes) tlv_u64(b, T_BYTES, *m.bytes);
  if (m.packets) tlv_u64(b, T_PACKETS, *m.packets);
  if (m.event_id) tlv_u64(b, T_EVENT_ID, *m.event_id);
  if (m.seq) tlv_u64(b, T_SEQ, *m.seq);
  if (m.instance) tlv_u64(b, T_INSTANCE, *m.instance);
  if (m.since_ms) tlv_u64(b, T_SINCE_MS, uint64_t(*m.since_ms));
  if (m.until_ms) tlv_u64(b, T_UNTIL_MS, uint64_t(*m.until_ms));
  if (!m.channel_list.empty()) {
    tlv_hdr(b, T_CHANNEL_LIST, uint32_t(m.channel_list.size() * 4));
    for (uint32_t c : m.channel_list) put32(b, c);
  }
  if (m.all) tlv_u8(b, T_ALL, 1);
  if (m.mode) tlv_u8(b, T_MODE, uint8_t(*m.mode));
  if (m.error) tlv_u16(b, T_ERROR, uint16_t(*m.error));
  if (m.role) tlv_u8(b, T_ROLE, uint8_t(*m.role));
  if (!m.text.empty()) tlv_bytes(b, T_TEXT, m.text.data(), m.text.size());
  if (!m.active.empty()) tlv_bytes(b, T_ACTIVE, m.active.data(), m.active.size());
  if (m.retry_after_ms) tlv_u64(b, T_RETRY_AFTER_MS, uint64_t(*m.retry_after_ms));
  for (const auto& k : m.keys) encode_key(b, k);
  for (const auto& e : m.bills) encode_bill(b, e);
  for (const auto& u : m.usages) encode_usage(b, u);
  uint32_t len = uint32_t(b.size() - kHeaderLen);
  b[8] = uint8_t(len >> 24);
  b[9] = uint8_t(len >> 16);
  b[10] = uint8_t(len >> 8);
  b[11] = uint8_t(len);
  return b;
}

Message make_error(uint32_t req_id, ErrorCode code, std::string text,
                   std::optional<int64_t> remaining_ms) {
  Message m;
  m.type = MsgType::Error;
  m.req_id = req_id;
  m.error = code;
  m.text = std::move(text);
  m.remaining_ms = remaining_ms;
  return m;
}

}  // namespace keycast::kp
