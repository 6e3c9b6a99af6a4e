// Protocol codec: round trips of every message type and rejection of every
// kind of malformed frame. decode() must never crash on any input.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "keyplane/protocol.hpp"

using namespace keycast;
using namespace keycast::kp;

namespace {

WireKey sample_key(uint32_t ch, uint32_t spi, Suite s = Suite::Aes128Gcm) {
  WireKey k;
  k.channel = ch;
  k.spi = spi;
  k.material = KeyMaterial::generate(s);
  k.remaining_ms = -250;  // previous keys carry negative remaining time
  k.lifetime_ms = 1500;
  k.slot = Slot::Next;
  return k;
}

Message roundtrip(const Message& m) {
  auto f = encode(m);
  Message out;
  EXPECT_EQ(decode(f.data(), f.size(), out), DecodeStatus::Ok);
  return out;
}

// Frame helpers for hand-built bodies.
void put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}
void put32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}
void tlv(std::vector<uint8_t>& b, uint16_t tag, std::vector<uint8_t> v) {
  put16(b, tag);
  put32(b, uint32_t(v.size()));
  b.insert(b.end(), v.begin(), v.end());
}
std::vector<uint8_t> be32(uint32_t v) { return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)}; }
std::vector<uint8_t> frame(uint8_t type, const std::vector<uint8_t>& body, uint32_t req = 7) {
  std::vector<uint8_t> f;
  put16(f, kMagic);
  f.push_back(kVersion);
  f.push_back(type);
  put32(f, req);
  put32(f, uint32_t(body.size()));
  f.insert(f.end(), body.begin(), body.end());
  return f;
}
DecodeStatus dec(const std::vector<uint8_t>& f) {
  Message m;
  return decode(f.data(), f.size(), m);
}

}  // namespace

TEST(Codec, KeyRequestRoundTrip) {
  Message m;
  m.type = MsgType::KeyRequest;
  m.req_id = 42;
  m.channel = 9;
  m.which = Which::BySpi;
  m.spi = 0x1234;
  m.event_id = 0xabcdef0000000001ull;
  Message r = roundtrip(m);
  EXPECT_EQ(r.type, MsgType::KeyRequest);
  EXPECT_EQ(r.event_id, m.event_id);
  EXPECT_EQ(r.req_id, 42u);
  EXPECT_EQ(r.channel, 9u);
  EXPECT_EQ(r.which, Which::BySpi);
  EXPECT_EQ(r.spi, 0x1234u);
}

TEST(Codec, KeyReplyRoundTripBothSuites) {
  Message m;
  m.type = MsgType::KeyReply;
  m.req_id = 1;
  m.channel = 3;
  m.remaining_ms = 1234;
  m.keys.push_back(sample_key(3, 256));
  m.keys.push_back(sample_key(3, 257, Suite::Aes256Gcm));
  Message r = roundtrip(m);
  ASSERT_EQ(r.keys.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(r.keys[i].channel, m.keys[i].channel);
    EXPECT_EQ(r.keys[i].spi, m.keys[i].spi);
    EXPECT_TRUE(r.keys[i].material == m.keys[i].material);
    EXPECT_EQ(r.keys[i].remaining_ms, -250);
    EXPECT_EQ(r.keys[i].lifetime_ms, 1500);
    EXPECT_EQ(r.keys[i].slot, Slot::Next);
  }
  EXPECT_EQ(r.keys[1].material.suite, Suite::Aes256Gcm);
  EXPECT_EQ(r.remaining_ms, 1234);
}

TEST(Codec, EveryRequestTypeRoundTrips) {
  std::vector<Message> ms;
  Message m;
  m.type = MsgType::Hello; m.text = "keycast-recv"; ms.push_back(m);
  m = {}; m.type = MsgType::Ping; ms.push_back(m);
  m = {}; m.type = MsgType::GenerateRequest; m.channel = 1; m.which = Which::Both; ms.push_back(m);
  m = {}; m.type = MsgType::KeyUpload; m.channel = 4; m.keys.push_back(sample_key(4, 0)); ms.push_back(m);
  m = {}; m.type = MsgType::UsageReport; m.channel = 1; m.spi = 300; m.bytes = 1ull << 40; m.packets = 99; m.event_id = ~0ull; ms.push_back(m);
  m = {}; m.type = MsgType::AdminStatus; ms.push_back(m);
  m = {}; m.type = MsgType::AdminChannels; ms.push_back(m);
  m = {}; m.type = MsgType::AdminRotate; m.channel = 2; ms.push_back(m);
  m = {}; m.type = MsgType::AdminBilling; m.text = "csv"; ms.push_back(m);
  m = {}; m.type = MsgType::UsageCheckpoint; m.channel = 1; m.spi = 301; m.bytes = 1ull << 41; m.packets = 7; m.instance = 0xfedcba9876543210ull; ms.push_back(m);
  m = {}; m.type = MsgType::AdminBilling; m.text = "json"; m.since_ms = 1796083200000; m.until_ms = 1798761600000; ms.push_back(m);
  m = {}; m.type = MsgType::AdminBilling; m.since_ms = -5; ms.push_back(m);  // before 1970: allowed
  m = {}; m.type = MsgType::AdminBillingClose; m.until_ms = 1796083200000; ms.push_back(m);
  m = {}; m.type = MsgType::AdminInvoices; m.text = "table"; ms.push_back(m);
  m = {}; m.type = MsgType::UsageCheckpoint; m.instance = 3; m.usages = {{1, 300, 5, 1}, {4000000000u, 2, ~0ull, 9}}; ms.push_back(m);
  m = {}; m.type = MsgType::AdminGrant; m.text = "client1"; m.channel_list = {1, 2, 4000000000u}; ms.push_back(m);
  m = {}; m.type = MsgType::AdminRevoke; m.text = "client1"; m.all = true; ms.push_back(m);
  m = {}; m.type = MsgType::AdminEntitlements; m.text = "client1"; ms.push_back(m);
  m = {}; m.type = MsgType::ReplAck; m.seq = 12; ms.push_back(m);
  m = {}; m.type = MsgType::ReplEntitlement; m.seq = 12; m.text = "c"; m.mode = EntitlementMode::AllExcept; m.channel_list = {7}; ms.push_back(m);
  m = {}; m.type = MsgType::ReplEntitlement; m.seq = 13; m.text = "c"; m.mode = EntitlementMode::Only; ms.push_back(m);
  m = {}; m.type = MsgType::ReplSubscribe; m.seq = 0; ms.push_back(m);
  m = {}; m.type = MsgType::ReplKey; m.seq = 77; m.keys.push_back(sample_key(1, 999)); ms.push_back(m);
  m = {}; m.type = MsgType::BillingForward; m.text = "abcd";
  m.bills.push_back({1, "client", 3, 0, 0, 0x1234567800000009ull}); m.bills.push_back({2, "client", 0, 1, 256});
  m.bills.push_back({3, "client", 1, 0, 0, 0, 86400000}); ms.push_back(m);
  m = {}; m.type = MsgType::HelloOk; m.role = Role::Slave; ms.push_back(m);
  m = {}; m.type = MsgType::Ack; m.seq = 5; ms.push_back(m);
  m = {}; m.type = MsgType::AdminReply; m.text = std::string(100000, 'x'); ms.push_back(m);
  m = make_error(9, ErrorCode::ChannelDenied, "no", 55); ms.push_back(m);
  for (const auto& x : ms) {
    Message r = roundtrip(x);
    EXPECT_EQ(r.type, x.type) << type_name(x.type);
    EXPECT_EQ(r.text, x.text);
    EXPECT_EQ(r.channel, x.channel);
    EXPECT_EQ(r.spi, x.spi);
    EXPECT_EQ(r.which, x.which);
    EXPECT_EQ(r.bytes, x.bytes);
    EXPECT_EQ(r.packets, x.packets);
    EXPECT_EQ(r.event_id, x.event_id);
    EXPECT_EQ(r.seq, x.seq);
    EXPECT_EQ(r.error, x.error);
    EXPECT_EQ(r.role, x.role);
    EXPECT_EQ(r.remaining_ms, x.remaining_ms);
    EXPECT_EQ(r.instance, x.instance);
    EXPECT_EQ(r.since_ms, x.since_ms);
    EXPECT_EQ(r.until_ms, x.until_ms);
    EXPECT_EQ(r.channel_list, x.channel_list);
    EXPECT_EQ(r.usages, x.usages);
    EXPECT_EQ(r.all, x.all);
    EXPECT_EQ(r.mode, x.mode);
    EXPECT_EQ(r.bills, x.bills);
    ASSERT_EQ(r.keys.size(), x.keys.size());
    for (std::size_t i = 0; i < r.keys.size(); ++i) EXPECT_TRUE(r.keys[i].material == x.keys[i].material);
  }
}

TEST(Codec, BillingAndCheckpointFieldsAreChecked) {
  Message m;
  m.type = MsgType::UsageCheckpoint;
  m.channel = 1;
  m.spi = 2;
  m.bytes = 3;
  m.packets = 4;
  EXPECT_EQ(dec(encode(m)), DecodeStatus::MissingField);  // no instance: it would not be idempotent
  m.instance = 9;
  EXPECT_EQ(dec(encode(m)), DecodeStatus::Ok);
  m.usages = {{1, 2, 3, 4}};
  EXPECT_EQ(dec(encode(m)), DecodeStatus::BadValue);  // the single form and a batch at once
  m.channel.reset();
  m.spi.reset();
  m.bytes.reset();
  m.packets.reset();
  EXPECT_EQ(dec(encode(m)), DecodeStatus::Ok);
  m.usages = {{1, 0, 3, 4}};
  EXPECT_EQ(dec(encode(m)), DecodeStatus::BadValue);  // SPI 0
  m = {};
  m.type = MsgType::AdminBillingClose;
  EXPECT_EQ(dec(encode(m)), DecodeStatus::MissingField);
  m = {};
  m.type = MsgType::AdminBilling;
  m.since_ms = 2000;
  m.until_ms = 2000;
  EXPECT_EQ(dec(encode(m)), DecodeStatus::BadValue);  // an empty period
  m = {};
  m.type = MsgType::BillingForward;
  m.bills.push_back({1, "client", 1, 0, 0, 0, -1});
  EXPECT_EQ(dec(encode(m)), DecodeStatus::BadValue);  // an event from the future
}

TEST(Codec, EntitlementFieldsAreChecked) {
  Message m;
  m.type = MsgType::AdminGrant;
  m.channel_list = {1};
  EXPECT_EQ(dec(encode(m)), DecodeStatus::MissingField);  // whose?
  m.text = "c";
  m.channel_list.clear();
  EXPECT_EQ(dec(encode(m)), DecodeStatus::MissingField);  // which channels?
  m.channel_list = {2, 1};
  EXPECT_EQ(dec(encode(m)), DecodeStatus::BadValue);  // not ascending
  m.channel_list = {1, 1};
  EXPECT_EQ(dec(encode(m)), DecodeStatus::BadValue);  // repeated
  m.channel_list = {1};
  m.all = true;
  EXPECT_EQ(dec(encode(m)), DecodeStatus::BadValue);  // both "*" and a list
  std::vector<uint8_t> b;
  tlv(b, T_TEXT, {'c'});
  tlv(b, T_CHANNEL_LIST, {0, 0, 1});
  EXPECT_EQ(dec(frame(0x16, b)), DecodeStatus::BadValue);  // not whole u32s
  b.clear();
  tlv(b, T_TEXT, {'c'});
  tlv(b, T_ALL, {2});
  EXPECT_EQ(dec(frame(0x16, b)), DecodeStatus::BadValue);
  b.clear();
  tlv(b, T_TEXT, {'c'});
  tlv(b, T_SEQ, {0, 0, 0, 0, 0, 0, 0, 1});
  tlv(b, T_MODE, {3});
  EXPECT_EQ(dec(frame(0xA2, b)), DecodeStatus::BadValue);  // no such mode
}

TEST(Codec, RejectsBadHeaders) {
  Message m;
  m.type = MsgType::Ping;
  auto good = encode(m);
  ASSERT_EQ(dec(good), DecodeStatus::Ok);
  for (std::size_t n = 0; n < kHeaderLen; ++n) EXPECT_EQ(decode(good.data(), n, m), DecodeStatus::Short);
  auto f = good;
  f[0] = 'X';
  EXPECT_EQ(dec(f), DecodeStatus::BadMagic);
  f = good;
  f[2] = 2;
  EXPECT_EQ(dec(f), DecodeStatus::BadVersion);
  f = good;
  f[3] = 0x55;
  EXPECT_EQ(dec(f), DecodeStatus::UnknownType);
  f = frame(0x06, {});
  f[8] = 0x7f;  // length far over the cap
  EXPECT_EQ(dec(f), DecodeStatus::TooLong);
  f = frame(0x06, {});
  f.push_back(0);  // trailing byte
  EXPECT_EQ(dec(f), DecodeStatus::LengthMismatch);
  f = frame(0x02, std::vector<uint8_t>(4, 0));
  f.pop_back();  // body shorter than header says
  EXPECT_EQ(dec(f), DecodeStatus::LengthMismatch);
}

TEST(Codec, RejectsBadTlvs) {
  std::vector<uint8_t> b;
  // TLV header cut short
  b = {0, 1, 0, 0};
  EXPECT_EQ(dec(frame(0x06, b)), DecodeStatus::BadTlv);
  // TLV length beyond the body
  b.clear();
  put16(b, T_CHANNEL);
  put32(b, 100);
  b.insert(b.end(), {0, 0, 0, 1});
  EXPECT_EQ(dec(frame(0x02, b)), DecodeStatus::BadTlv);
  // wrong integer width
  b.clear();
  tlv(b, T_CHANNEL, {0, 0, 1});
  tlv(b, T_WHICH, {0});
  EXPECT_EQ(dec(frame(0x02, b)), DecodeStatus::BadValue);
  // duplicate field
  b.clear();
  tlv(b, T_CHANNEL, be32(1));
  tlv(b, T_CHANNEL, be32(2));
  tlv(b, T_WHICH, {0});
  EXPECT_EQ(dec(frame(0x02, b)), DecodeStatus::DuplicateTag);
  // unknown mandatory field
  b.clear();
  tlv(b, T_CHANNEL, be32(1));
  tlv(b, T_WHICH, {0});
  tlv(b, 0x0777, {1});
  EXPECT_EQ(dec(frame(0x02, b)), DecodeStatus::UnknownTag);
  // unknown optional field (top bit) is skipped
  b.clear();
  tlv(b, T_CHANNEL, be32(1));
  tlv(b, T_WHICH, {0});
  tlv(b, 0x8777, {1, 2, 3});
  EXPECT_EQ(dec(frame(0x02, b)), DecodeStatus::Ok);
  // which out of range
  b.clear();
  tlv(b, T_CHANNEL, be32(1));
  tlv(b, T_WHICH, {9});
  EXPECT_EQ(dec(frame(0x02, b)), DecodeStatus::BadValue);
  // role out of range
  b.clear();
  tlv(b, T_ROLE, {77});
  EXPECT_EQ(dec(frame(0x81, b)), DecodeStatus::BadValue);
  // SPI 0 is not an SPI
  b.clear();
  tlv(b, T_CHANNEL, be32(1));
  tlv(b, T_WHICH, {3});
  tlv(b, T_SPI, be32(0));
  EXPECT_EQ(dec(frame(0x02, b)), DecodeStatus::BadValue);
}

TEST(Codec, RejectsMissingFieldsPerType) {
  std::vector<uint8_t> b;
  EXPECT_EQ(dec(frame(0x02, {})), DecodeStatus::MissingField);  // key request: channel, which
  b.clear();
  tlv(b, T_CHANNEL, be32(1));
  tlv(b, T_WHICH, {3});  // by SPI without SPI
  EXPECT_EQ(dec(frame(0x02, b)), DecodeStatus::MissingField);
  b.clear();
  tlv(b, T_CHANNEL, be32(1));
  tlv(b, T_WHICH, {3});
  EXPECT_EQ(dec(frame(0x03, b)), DecodeStatus::BadValue);  // generate by SPI makes no sense
  EXPECT_EQ(dec(frame(0x04, {})), DecodeStatus::MissingField);  // upload without key
  EXPECT_EQ(dec(frame(0x05, {})), DecodeStatus::MissingField);  // usage
  EXPECT_EQ(dec(frame(0x12, {})), DecodeStatus::MissingField);  // rotate
  EXPECT_EQ(dec(frame(0x20, {})), DecodeStatus::MissingField);  // subscribe
  EXPECT_EQ(dec(frame(0x22, {})), DecodeStatus::MissingField);  // forward
  EXPECT_EQ(dec(frame(0xA1, {})), DecodeStatus::MissingField);  // repl key
  EXPECT_EQ(dec(frame(0x82, {})), DecodeStatus::MissingField);  // key reply without key
  EXPECT_EQ(dec(frame(0xFF, {})), DecodeStatus::MissingField);  // error without code
  EXPECT_EQ(dec(frame(0x81, {})), DecodeStatus::MissingField);  // hello ok without role
}

TEST(Codec, RejectsBadKeys) {
  Message m;
  m.type = MsgType::KeyReply;
  m.keys.push_back(sample_key(1, 300));
  auto good = encode(m);
  // Find the keymat TLV and corrupt its length / the suite.
  auto find = [&](const std::vector<uint8_t>& f, uint16_t tag) -> std::size_t {
    for (std::size_t i = kHeaderLen + 6; i + 6 <= f.size(); ++i)
      if (f[i] == (tag >> 8) && f[i + 1] == (tag & 0xff) && f[i + 2] == 0 && f[i + 3] == 0 && f[i + 4] == 0)
        return i;
    return 0;
  };
  auto f = good;
  std::size_t s = find(f, TK_SUITE);
  ASSERT_NE(s, 0u);
  f[s + 6] = 3;  // no such suite
  EXPECT_EQ(dec(f), DecodeStatus::BadValue);
  f = good;
  f[s + 6] = 2;  // AES-256 suite with a 20-byte keymat
  EXPECT_EQ(dec(f), DecodeStatus::BadValue);
  f = good;
  std::size_t sl = find(f, TK_SLOT);
  ASSERT_NE(sl, 0u);
  f[sl + 6] = 9;
  EXPECT_EQ(dec(f), DecodeStatus::BadValue);
  // SPI 0 in a key outside an upload
  Message z;
  z.type = MsgType::KeyReply;
  z.keys.push_back(sample_key(1, 0));
  auto zf = encode(z);
  EXPECT_EQ(dec(zf), DecodeStatus::BadValue);
  // channel mismatch in an upload
  Message u;
  u.type = MsgType::KeyUpload;
  u.channel = 2;
  u.keys.push_back(sample_key(1, 0));
  EXPECT_EQ(dec(encode(u)), DecodeStatus::BadValue);
  // too many keys
  Message many;
  many.type = MsgType::KeyReply;
  for (uint32_t i = 0; i < kMaxKeysPerFrame + 1; ++i) many.keys.push_back(sample_key(1, 256 + i));
  EXPECT_EQ(dec(encode(many)), DecodeStatus::BadValue);
  // key TLV missing a field
  std::vector<uint8_t> kb, b;
  tlv(kb, TK_CHANNEL, be32(1));
  tlv(kb, TK_SPI, be32(300));
  tlv(b, T_KEY, kb);
  EXPECT_EQ(dec(frame(0x82, b)), DecodeStatus::MissingField);
}

TEST(Codec, TruncationsAndMutationsNeverCrash) {
  Message m;
  m.type = MsgType::KeyReply;
  m.req_id = 3;
  m.channel = 1;
  m.remaining_ms = 10;
  m.keys.push_back(sample_key(1, 300));
  m.keys.push_back(sample_key(1, 301, Suite::Aes256Gcm));
  auto good = encode(m);
  Message out;
  // Every strict prefix is rejected (the header's length no longer matches).
  for (std::size_t n = 0; n < good.size(); ++n)
    EXPECT_NE(decode(good.data(), n, out), DecodeStatus::Ok) << n;
  // Random byte flips: any status is fine, a crash or a hang is not; a frame
  // that still decodes must re-encode to a frame that decodes the same way.
  std::mt19937 rng(12345);
  int ok = 0;
  for (int i = 0; i < 20000; ++i) {
    auto f = good;
    int flips = 1 + int(rng() % 4);
    for (int j = 0; j < flips; ++j) f[rng() % f.size()] ^= uint8_t(1 + rng() % 255);
    Message x;
    if (decode(f.data(), f.size(), x) == DecodeStatus::Ok) {
      ++ok;
      auto again = encode(x);
      Message y;
      ASSERT_EQ(decode(again.data(), again.size(), y), DecodeStatus::Ok);
      EXPECT_EQ(y.keys.size(), x.keys.size());
    }
  }
  // Random garbage with a valid header
  for (int i = 0; i < 5000; ++i) {
    std::vector<uint8_t> body(rng() % 200);
    for (auto& c : body) c = uint8_t(rng());
    auto f = frame(uint8_t(rng()), body);
    Message x;
    (void)decode(f.data(), f.size(), x);
  }
  SUCCEED() << ok << " mutated frames still decoded";
}

TEST(Codec, WireKeyRecordConversion) {
  KeyRecord r;
  r.channel = 4;
  r.spi = 4000;
  r.material = KeyMaterial::generate(Suite::Aes256Gcm);
  auto now = MonoClock::now();
  r.set_remaining_ms(1234, now);
  WireKey w = WireKey::from_record(r, 5000, Slot::Current, now);
  EXPECT_EQ(w.remaining_ms, 1234);
  EXPECT_EQ(w.lifetime_ms, 5000);
  EXPECT_EQ(w.slot, Slot::Current);
  KeyRecord back = w.to_record(now + std::chrono::milliseconds(10));
  EXPECT_EQ(back.spi, 4000u);
  EXPECT_EQ(back.channel, 4u);
  EXPECT_TRUE(back.material == r.material);
  EXPECT_EQ(back.remaining_ms(now), 1244);  // anchored at receipt on the receiver's clock
}

// not_active names the active master in an optional tag: checked when
// present, and a decoder that does not know it would skip it (top bit).
TEST(Codec, NotActiveNamesTheActiveMaster) {
  Message e = make_error(9, ErrorCode::NotActive, "not the active master");
  e.active = "kms-b.example:7400";
  Message out = roundtrip(e);
  EXPECT_EQ(out.error, ErrorCode::NotActive);
  EXPECT_EQ(out.active, "kms-b.example:7400");
  EXPECT_EQ(error_name(ErrorCode::NotActive), "not_active");
  EXPECT_NE(T_ACTIVE & 0x8000, 0) << "an older decoder must be able to skip it";
  EXPECT_TRUE(roundtrip(make_error(9, ErrorCode::NotActive, "none leads")).active.empty());

  std::vector<uint8_t> b;
  tlv(b, T_ERROR, {0, 15});
  tlv(b, T_ACTIVE, {});
  EXPECT_EQ(dec(frame(0xFF, b)), DecodeStatus::BadValue) << "an empty address";
  b.clear();
  tlv(b, T_ERROR, {0, 15});
  tlv(b, T_ACTIVE, std::vector<uint8_t>(kMaxAddress + 1, 'a'));
  EXPECT_EQ(dec(frame(0xFF, b)), DecodeStatus::BadValue) << "longer than any HOST:PORT";
  b.clear();
  tlv(b, T_ERROR, {0, 15});
  tlv(b, T_ACTIVE, {'a', ':', '1'});
  tlv(b, T_ACTIVE, {'b', ':', '1'});
  EXPECT_EQ(dec(frame(0xFF, b)), DecodeStatus::DuplicateTag);
}

TEST(Codec, BusyCarriesARetryAfter) {
  Message e = make_error(3, ErrorCode::Busy, "busy");
  e.retry_after_ms = 1234;
  Message out = roundtrip(e);
  EXPECT_EQ(out.error, ErrorCode::Busy);
  EXPECT_EQ(out.retry_after_ms, 1234);
  EXPECT_NE(T_RETRY_AFTER_MS & 0x8000, 0);
  std::vector<uint8_t> b;
  tlv(b, T_ERROR, {0, 13});
  tlv(b, T_RETRY_AFTER_MS, {0, 0, 0, 0, 0, 0x36, 0xEE, 0x81});  // 3,600,001 ms: over an hour
  EXPECT_EQ(dec(frame(0xFF, b)), DecodeStatus::BadValue);
}
