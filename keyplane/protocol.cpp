#include "keyplane/protocol.hpp"

#include <cstring>

namespace keycast::kp {

std::string_view type_name(MsgType t) {
  switch (t) {
    case MsgType::Hello: return "hello";
    case MsgType::KeyRequest: return "key_request";
    case MsgType::GenerateRequest: return "generate_request";
    case MsgType::KeyUpload: return "key_upload";
    case MsgType::UsageReport: return "usage_report";
    case MsgType::Ping: return "ping";
    case MsgType::UsageCheckpoint: return "usage_checkpoint";
    case MsgType::AdminStatus: return "admin_status";
    case MsgType::AdminChannels: return "admin_channels";
    case MsgType::AdminRotate: return "admin_rotate";
    case MsgType::AdminBilling: return "admin_billing";
    case MsgType::AdminBillingClose: return "admin_billing_close";
    case MsgType::AdminInvoices: return "admin_invoices";
    case MsgType::AdminGrant: return "admin_grant";
    case MsgType::AdminRevoke: return "admin_revoke";
    case MsgType::AdminEntitlements: return "admin_entitlements";
    case MsgType::ReplAck: return "repl_ack";
    case MsgType::ReplEntitlement: return "repl_entitlement";
    case MsgType::KeyPush: return "key_push";
    case MsgType::ReplSubscribe: return "repl_subscribe";
    case MsgType::BillingForward: return "billing_forward";
    case MsgType::HelloOk: return "hello_ok";
    case MsgType::KeyReply: return "key_reply";
    case MsgType::Ack: return "ack";
    case MsgType::AdminReply: return "admin_reply";
    case MsgType::ReplKey: return "repl_key";
    case MsgType::Error: return "error";
  }
  return "unknown";
}

static bool known_type(uint8_t t) {
  switch (static_cast<MsgType>(t)) {
    case MsgType::Hello: case MsgType::KeyRequest: case MsgType::GenerateRequest:
    case MsgType::KeyUpload: case MsgType::UsageReport: case MsgType::Ping:
    case MsgType::UsageCheckpoint:
    case MsgType::AdminStatus: case MsgType::AdminChannels: case MsgType::AdminRotate:
    case MsgType::AdminBilling: case MsgType::AdminBillingClose: case MsgType::AdminInvoices:
    case MsgType::ReplSubscribe: case MsgType::BillingForward:
    case MsgType::AdminGrant: case MsgType::AdminRevoke: case MsgType::AdminEntitlements:
    case MsgType::ReplAck: case MsgType::ReplEntitlement: case MsgType::KeyPush:
    case MsgType::HelloOk: case MsgType::KeyReply: case MsgType::Ack: case MsgType::AdminReply:
    case MsgType::ReplKey: case MsgType::Error:
      return true;
  }
  return false;
}

std::string_view error_name(ErrorCode e) {
  switch (e) {
    case ErrorCode::Ok: return "ok";
    case ErrorCode::BadRequest: return "bad_request";
    case ErrorCode::UnsupportedVersion: return "unsupported_version";
    case ErrorCode::NotAuthorised: return "not_authorised";
    case ErrorCode::ChannelDenied: return "channel_denied";
    case ErrorCode::UnknownChannel: return "unknown_channel";
    case ErrorCode::NotFound: return "not_found";
    case ErrorCode::NoNextKey: return "no_next_key";
    case ErrorCode::SpiReused: return "spi_reused";
    case ErrorCode::WrongOrigin: return "wrong_origin";
    case ErrorCode::NotMaster: return "not_master";
    case ErrorCode::Internal: return "internal";
    case ErrorCode::TooLarge: return "too_large";
    case ErrorCode::Busy: return "busy";
    case ErrorCode::NotConfirmed: return "not_confirmed";
    case ErrorCode::NotActive: return "not_active";
    case ErrorCode::Timeout: return "timeout";
    case ErrorCode::Unavailable: return "unavailable";
    case ErrorCode::Shutdown: return "shutdown";
  }
  return "unknown";
}

std::string_view role_name(Role r) {
  switch (r) {
    case Role::None: return "none";
    case Role::Master: return "master";
    case Role::Slave: return "slave";
    case Role::Sender: return "sender";
    case Role::Client: return "client";
    case Role::Admin: return "admin";
  }
  return "none";
}

std::optional<Role> parse_role(std::string_view s) {
  for (Role r : {Role::Master, Role::Slave, Role::Sender, Role::Client, Role::Admin})
    if (role_name(r) == s) return r;
  return std::nullopt;
}

std::string_view which_name(Which w) {
  switch (w) {
    case Which::Current: return "current";
    case Which::Next: return "next";
    case Which::Both: return "both";
    case Which::BySpi: return "spi";
    case Which::All: return "all";
  }
  return "?";
}

std::string_view slot_name(Slot s) {
  switch (s) {
    case Slot::Previous: return "previous";
    case Slot::Current: return "current";
    case Slot::Next: return "next";
    case Slot::Other: return "other";
  }
  return "?";
}

std::string_view decode_status_name(DecodeStatus s) {
  switch (s) {
    case DecodeStatus::Ok: return "ok";
    case DecodeStatus::Short: return "short frame";
    case DecodeStatus::BadMagic: return "bad magic";
    case DecodeStatus::BadVersion: return "unsupported version";
    case DecodeStatus::TooLong: return "frame too long";
    case DecodeStatus::LengthMismatch: return "length mismatch";
    case DecodeStatus::UnknownType: return "unknown message type";
    case DecodeStatus::BadTlv: return "malformed TLV";
    case DecodeStatus::DuplicateTag: return "duplicate field";
    case DecodeStatus::UnknownTag: return "unknown field";
    case DecodeStatus::BadValue: return "bad field value";
    case DecodeStatus::MissingField: return "missing field";
  }
  return "?";
}

KeyRecord WireKey::to_record(MonoClock::time_point received_at) const {
  KeyRecord r;
  r.channel = channel;
  r.spi = spi;
  r.material = material;
  r.set_remaining_ms(remaining_ms, received_at);
  return r;
}

WireKey WireKey::from_record(const KeyRecord& r, int64_t lifetime_ms, Slot slot,
                             MonoClock::time_point now) {
  WireKey w;
  w.channel = r.channel;
  w.spi = r.spi;
  w.material = r.material;
  w.remaining_ms = r.remaining_ms(now);
  w.lifetime_ms = lifetime_ms;
  w.slot = slot;
  return w;
}

// ---------------------------------------------------------------- decoding
namespace {

uint16_t get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
uint64_t get64(const uint8_t* p) { return uint64_t(get32(p)) << 32 | get32(p + 4); }


// Walks TLVs in [p, p+n). fn(tag, value, len) returns a status; Ok continues.
template <class Fn>
DecodeStatus walk(const uint8_t* p, std::size_t n, Fn&& fn) {
  std::size_t off = 0;
  while (off < n) {
    if (n - off < 6) return DecodeStatus::BadTlv;
    uint16_t tag = get16(p + off);
    uint32_t len = get32(p + off + 2);
    off += 6;
    if (len > n - off) return DecodeStatus::BadTlv;
    DecodeStatus s = fn(tag, p + off, std::size_t(len));
    if (s != DecodeStatus::Ok) return s;
    off += len;
  }
  return DecodeStatus::Ok;
}

template <class T>
DecodeStatus take_int(std::optional<T>& dst, const uint8_t* v, std::size_t len) {
  if (dst) return DecodeStatus::DuplicateTag;
  if (len != sizeof(T)) return DecodeStatus::BadValue;
  if constexpr (sizeof(T) == 1) dst = T(v[0]);
  else if constexpr (sizeof(T) == 2) dst = T(get16(v));
  else if constexpr (sizeof(T) == 4) dst = T(get32(v));
  else dst = T(get64(v));
  return DecodeStatus::Ok;
}

DecodeStatus decode_key(const uint8_t* p, std::size_t n, WireKey& k) {
  std::optional<uint32_t> ch, spi;
  std::optional<uint8_t> suite, slot;
  std::optional<uint64_t> rem, life;
  const uint8_t* km = nullptr;
  std::size_t kmlen = 0;
  bool have_km = false;
  DecodeStatus s = walk(p, n, [&](uint16_t tag, const uint8_t* v, std::size_t len) {
    switch (tag) {
      case TK_CHANNEL: return take_int(ch, v, len);
      case TK_SPI: return take_int(spi, v, len);
      case TK_SUITE: return take_int(suite, v, len);
      case TK_REMAINING_MS: return take_int(rem, v, len);
      case TK_LIFETIME_MS: return take_int(life, v, len);
      case TK_SLOT: return take_int(slot, v, len);
      case TK_KEYMAT:
        if (have_km) return DecodeStatus::DuplicateTag;
        have_km = true;
        km = v;
        kmlen = len;
        return DecodeStatus::Ok;
      default:
        return (tag & 0x8000) ? DecodeStatus::Ok : DecodeStatus::UnknownTag;
    }
  });
  if (s != DecodeStatus::Ok) return s;
  if (!ch || !spi || !suite || !rem || !life || !slot || !have_km) return DecodeStatus::MissingField;
  auto st = suite_from_wire(*suite);
  if (!st || *slot > uint8_t(Slot::Other)) return DecodeStatus::BadValue;
  if (kmlen != key_len(*st) + kSaltLen) return DecodeStatus::BadValue;
  int64_t life_ms = int64_t(*life);
  if (life_ms < 0) return DecodeStatus::BadValue;
  k.channel = *ch;
  k.spi = *spi;
  k.material.suite = *st;
  std::memcpy(k.material.key, km, key_len(*st));
  std::memcpy(k.material.salt, km + key_len(*st), kSaltLen);
  k.remaining_ms = int64_t(*rem);
  k.lifetime_ms = life_ms;
  k.slot = Slot(*slot);
  return DecodeStatus::Ok;
}

DecodeStatus decode_bill(const uint8_t* p, std::size_t n, BillEntry& e) {
  std::optional<uint64_t> seq, req, ev, age;
  std::optional<uint32_t> ch, spi;
  bool have_id = false;
  DecodeStatus s = walk(p, n, [&](uint16_t tag, const uint8_t* v, std::size_t len) {
    switch (tag) {
      case TB_SEQ: return take_int(seq, v, len);
      case TB_REQUESTS: return take_int(req, v, len);
      case TB_CHANNEL: return take_int(ch, v, len);
      case TB_SPI: return take_int(spi, v, len);
      case TB_EVENT_ID: return take_int(ev, v, len);
      case TB_AGE_MS: return take_int(age, v, len);
      case TB_IDENTITY:
        if (have_id) return DecodeStatus::DuplicateTag;
        if (len == 0 || len > 256) return DecodeStatus::BadValue;
        have_id = true;
        e.identity.assign(reinterpret_cast<const char*>(v), len);
        return DecodeStatus::Ok;
      default:
        return (tag & 0x8000) ? DecodeStatus::Ok : DecodeStatus::UnknownTag;
    }
  });
  if (s != DecodeStatus::Ok) return s;
  if (!seq || !req || !ch || !spi || !have_id) return DecodeStatus::MissingField;
  if (*seq == 0) return DecodeStatus::BadValue;
  if (age && int64_t(*age) < 0) return DecodeStatus::BadValue;
  e.seq = *seq;
  e.age_ms = int64_t(age.value_or(0));
  e.requests = *req;
  e.channel = *ch;
  e.spi = *spi;
  e.event_id = ev.value_or(0);
  return DecodeStatus::Ok;
}

DecodeStatus decode_usage(const uint8_t* p, std::size_t n, UsageEntry& u) {
  std::optional<uint32_t> ch, spi;
  std::optional<uint64_t> bytes, packets;
  DecodeStatus s = walk(p, n, [&](uint16_t tag, const uint8_t* v, std::size_t len) {
    switch (tag) {
      case TU_CHANNEL: return take_int(ch, v, len);
      case TU_SPI: return take_int(spi, v, len);
      case TU_BYTES: return take_int(bytes, v, len);
      case TU_PACKETS: return take_int(packets, v, len);
      default:
        return (tag & 0x8000) ? DecodeStatus::Ok : DecodeStatus::UnknownTag;
    }
  });
  if (s != DecodeStatus::Ok) return s;
  if (!ch || !spi || !bytes || !packets) return DecodeStatus::MissingField;
  if (*spi == 0) return DecodeStatus::BadValue;
  u = {*ch, *spi, *bytes, *packets};
  return DecodeStatus::Ok;
}

DecodeStatus validate(const Message& m) {
  auto need = [](bool ok) { return ok ? DecodeStatus::Ok : DecodeStatus::MissingField; };
  switch (m.type) {
    case MsgType::KeyRequest:
      if (!m.channel || !m.which) return DecodeStatus::MissingField;
      if (m.which == Which::BySpi && !m.spi) return DecodeStatus::MissingField;
      return DecodeStatus::Ok;
    case MsgType::GenerateRequest:
      if (!m.channel || !m.which) return DecodeStatus::MissingField;
      if (*m.which != Which::Current && *m.which != Which::Next && *m.which != Which::Both)
        return DecodeStatus::BadValue;
      return DecodeStatus::Ok;
    case MsgType::KeyUpload:
      if (!m.channel || m.keys.size() != 1) return DecodeStatus::MissingField;
      if (m.keys[0].channel != *m.channel) return DecodeStatus::BadValue;
      return DecodeStatus::Ok;
    case MsgType::UsageReport:
      return need(m.channel && m.spi && m.bytes && m.packets && m.event_id);
    case MsgType::UsageCheckpoint: {
      if (!m.instance) return DecodeStatus::MissingField;
      const bool single = m.channel || m.spi || m.bytes || m.packets;
      if (single && !m.usages.empty()) return DecodeStatus::BadValue;  // one form or the other
      return need(!m.usages.empty() || (m.channel && m.spi && m.bytes && m.packets));
    }
    case MsgType::AdminBilling:
      if (m.since_ms && m.until_ms && *m.since_ms >= *m.until_ms) return DecodeStatus::BadValue;
      return DecodeStatus::Ok;
    case MsgType::AdminBillingClose: return need(m.until_ms.has_value());
    case MsgType::AdminGrant:
    case MsgType::AdminRevoke:
      if (m.text.empty() || (m.channel_list.empty() && !m.all)) return DecodeStatus::MissingField;
      return m.all && !m.channel_list.empty() ? DecodeStatus::BadValue : DecodeStatus::Ok;
    case MsgType::ReplAck: return need(m.seq.has_value());
    case MsgType::ReplEntitlement: return need(m.seq && !m.text.empty() && m.mode);
    case MsgType::KeyPush:
      if (!m.channel || !m.remaining_ms) return DecodeStatus::MissingField;
      for (const auto& k : m.keys)
        if (k.channel != *m.channel) return DecodeStatus::BadValue;
      return DecodeStatus::Ok;
    case MsgType::AdminRotate: return need(m.channel.has_value());
    case MsgType::ReplSubscribe: return need(m.seq.has_value());
    case MsgType::BillingForward: return need(!m.bills.empty());
    case MsgType::ReplKey: return need(m.seq && m.keys.size() == 1);
    case MsgType::KeyReply: return need(!m.keys.empty());
    case MsgType::Error: return need(m.error.has_value());
    case MsgType::HelloOk: return need(m.role.has_value());
    default: return DecodeStatus::Ok;
  }
}

}  // namespace

DecodeStatus decode_header(const uint8_t* p, std::size_t n, Header& h) {
  if (n < kHeaderLen) return DecodeStatus::Short;
  if (get16(p) != kMagic) return DecodeStatus::BadMagic;
  h.version = p[2];
  h.type = p[3];
  h.req_id = get32(p + 4);
  h.length = get32(p + 8);
  if (h.version != kVersion) return DecodeStatus::BadVersion;
  if (h.length > kMaxBody) return DecodeStatus::TooLong;
  return DecodeStatus::Ok;
}

DecodeStatus decode_body(const Header& h, const uint8_t* body, std::size_t n, Message& out) {
  if (n != h.length) return DecodeStatus::LengthMismatch;
  if (!known_type(h.type)) return DecodeStatus::UnknownType;
  Message m;
  m.type = MsgType(h.type);
  m.req_id = h.req_id;
  std::optional<uint8_t> which, role, all, mode;
  bool have_list = false;
  std::optional<uint16_t> err;
  std::optional<uint64_t> rem, since, until, retry;
  bool have_text = false, have_active = false;
  DecodeStatus s = walk(body, n, [&](uint16_t tag, const uint8_t* v, std::size_t len) {
    switch (tag) {
      case T_CHANNEL: return take_int(m.channel, v, len);
      case T_SPI: return take_int(m.spi, v, len);
      case T_WHICH: return take_int(which, v, len);
      case T_REMAINING_MS: return take_int(rem, v, len);
      case T_BYTES: return take_int(m.bytes, v, len);
      case T_PACKETS: return take_int(m.packets, v, len);
      case T_EVENT_ID: return take_int(m.event_id, v, len);
      case T_SEQ: return take_int(m.seq, v, len);
      case T_INSTANCE: return take_int(m.instance, v, len);
      case T_SINCE_MS: return take_int(since, v, len);
      case T_UNTIL_MS: return take_int(until, v, len);
      case T_ALL: return take_int(all, v, len);
      case T_MODE: return take_int(mode, v, len);
      case T_CHANNEL_LIST: {
        if (have_list) return DecodeStatus::DuplicateTag;
        if (len == 0 || len % 4 || len / 4 > kMaxChannelList) return DecodeStatus::BadValue;
        have_list = true;
        m.channel_list.reserve(len / 4);
        for (std::size_t i = 0; i < len; i += 4) {
          const uint32_t c = get32(v + i);
          // Ascending without repeats: one encoding per set.
          if (!m.channel_list.empty() && c <= m.channel_list.back()) return DecodeStatus::BadValue;
          m.channel_list.push_back(c);
        }
        return DecodeStatus::Ok;
      }
      case T_ERROR: return take_int(err, v, len);
      case T_ROLE: return take_int(role, v, len);
      case T_TEXT:
        if (have_text) return DecodeStatus::DuplicateTag;
        if (len > kMaxText) return DecodeStatus::BadValue;
        have_text = true;
        m.text.assign(reinterpret_cast<const char*>(v), len);
        return DecodeStatus::Ok;
      case T_RETRY_AFTER_MS: return take_int(retry, v, len);
      case T_ACTIVE:
        // HOST:PORT: a DNS name (253) with a port fits; anything longer is not an address.
        if (have_active) return DecodeStatus::DuplicateTag;
        if (len == 0 || len > kMaxAddress) return DecodeStatus::BadValue;
        have_active = true;
        m.active.assign(reinterpret_cast<const char*>(v), len);
        return DecodeStatus::Ok;
      case T_KEY: {
        if (m.keys.size() >= kMaxKeysPerFrame) return DecodeStatus::BadValue;
        WireKey k;
        DecodeStatus ks = decode_key(v, len, k);
        if (ks == DecodeStatus::Ok) m.keys.push_back(std::move(k));
        return ks;
      }
      case T_USAGE: {
        if (m.usages.size() >= kMaxBillsPerFrame) return DecodeStatus::BadValue;
        UsageEntry u;
        DecodeStatus us = decode_usage(v, len, u);
        if (us == DecodeStatus::Ok) m.usages.push_back(u);
        return us;
      }
      case T_BILL: {
        if (m.bills.size() >= kMaxBillsPerFrame) return DecodeStatus::BadValue;
        BillEntry e;
        DecodeStatus bs = decode_bill(v, len, e);
        if (bs == DecodeStatus::Ok) m.bills.push_back(std::move(e));
        return bs;
      }
      default:
        // Tags with the top bit set are optional extensions: skipped.
        return (tag & 0x8000) ? DecodeStatus::Ok : DecodeStatus::UnknownTag;
    }
  });
  if (s != DecodeStatus::Ok) return s;
  if (which) {
    if (*which > uint8_t(Which::All)) return DecodeStatus::BadValue;
    m.which = Which(*which);
  }
  if (role) {
    if (*role > uint8_t(Role::Admin)) return DecodeStatus::BadValue;
    m.role = Role(*role);
  }
  if (err) m.error = ErrorCode(*err);
  if (rem) m.remaining_ms = int64_t(*rem);
  if (all) {
    if (*all != 1) return DecodeStatus::BadValue;
    m.all = true;
  }
  if (mode) {
    if (*mode > uint8_t(EntitlementMode::AllExcept)) return DecodeStatus::BadValue;
    m.mode = EntitlementMode(*mode);
  }
  if (retry) {
    if (*retry > uint64_t(kMaxRetryAfterMs)) return DecodeStatus::BadValue;
    m.retry_after_ms = int64_t(*retry);
  }
  if (since) m.since_ms = int64_t(*since);
  if (until) m.until_ms = int64_t(*until);
  if (m.spi && *m.spi == 0) return DecodeStatus::BadValue;
  // SPI 0 inside a key is only meaningful in an upload ("assign one for me").
  if (m.type != MsgType::KeyUpload)
    for (const auto& k : m.keys)
      if (k.spi == 0) return DecodeStatus::BadValue;
  s = validate(m);
  if (s != DecodeStatus::Ok) return s;
  out = std::move(m);
  return DecodeStatus::Ok;
}

DecodeStatus decode(const uint8_t* p, std::size_t n, Message& out) {
  Header h;
  DecodeStatus s = decode_header(p, n, h);
  if (s != DecodeStatus::Ok) return s;
  if (n - kHeaderLen != h.length) return DecodeStatus::LengthMismatch;
  return decode_body(h, p + kHeaderLen, n - kHeaderLen, out);
}

}  // namespace keycast::kp
