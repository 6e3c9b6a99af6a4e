// keycast key-plane protocol: versioned, length-bounded binary frames.
// Normative description: docs/protocol.md. This file is the only codec; the
// server, the client library and the fuzz/round-trip tests all use it.
//
// Frame = 12-byte header + body.
//   u16 magic 0x4B43 ("KC") | u8 version (1) | u8 type | u32 request id | u32 body length
// Body = TLVs: u16 tag | u32 length | value. All integers big-endian.
// Body length <= kMaxBody; a frame that breaks any rule is rejected whole.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/key_record.hpp"
#include "common/suite.hpp"

namespace keycast::kp {

constexpr uint16_t kMagic = 0x4B43;
constexpr uint8_t kVersion = 1;
constexpr std::size_t kHeaderLen = 12;
constexpr std::size_t kMaxBody = 1u << 20;  // 1 MiB
constexpr std::size_t kMaxText = 512u << 10;
constexpr std::size_t kMaxAddress = 260;
constexpr int64_t kMaxRetryAfterMs = 3600 * 1000;  // T_ACTIVE: a 253-byte DNS name, ':' and a port
constexpr std::size_t kMaxKeysPerFrame = 64;
constexpr std::size_t kMaxBillsPerFrame = 4096;
constexpr std::size_t kMaxChannelList = 65536;

enum class MsgType : uint8_t {
  Hello = 0x01,
  KeyRequest = 0x02,       // client: current/next/by-SPI decipherment key data
  GenerateRequest = 0x03,  // sender, kms-origin: KMS makes current/next key data
  KeyUpload = 0x04,        // sender, sender-origin: sender made the key, uploads it
  UsageReport = 0x05,      // sender: bytes/packets sent under one key epoch
  Ping = 0x06,
  UsageCheckpoint = 0x07,  // sender: cumulative bytes/packets of one key epoch so far
  AdminStatus = 0x10,
  AdminChannels = 0x11,
  AdminRotate = 0x12,
  AdminBilling = 0x13,       // counts and fees, all time or [since, until)
  AdminBillingClose = 0x14,  // close the period ending at T_UNTIL_MS: one invoice per client
  AdminInvoices = 0x15,      // the invoices written so far
  AdminGrant = 0x16,         // entitle identity T_TEXT to channels (T_CHANNEL_LIST or T_ALL)
  AdminRevoke = 0x17,        // take channels away from identity T_TEXT
  AdminEntitlements = 0x18,  // the stored entitlements (of identity T_TEXT, if given)
  ReplSubscribe = 0x20,    // slave -> master: stream keys with seq > T_SEQ
  BillingForward = 0x22,   // slave -> master: billing events with unique seqs
  ReplAck = 0x23,          // slave -> master: entitlements applied up to T_SEQ
  // replies: request type | 0x80
  HelloOk = 0x81,
  KeyReply = 0x82,         // reply to KeyRequest, GenerateRequest, KeyUpload, AdminRotate
  Ack = 0x85,              // reply to UsageReport, UsageCheckpoint, Ping, ReplSubscribe, BillingForward
  AdminReply = 0x90,       // JSON text in T_TEXT
  ReplKey = 0xA1,          // master -> slave push (request id 0)
  ReplEntitlement = 0xA2,  // master -> slave push: one identity's entitlement (request id 0)
  KeyPush = 0xA3,          // master -> a channel's senders: switch early to a fresh key (request id 0)
  Error = 0xFF,
};

// How a client identity's stored entitlement reads (keyplane/entitlements.hpp).
enum class EntitlementMode : uint8_t { Unmanaged = 0, Only = 1, AllExcept = 2 };

enum class Which : uint8_t { Current = 0, Next = 1, Both = 2, BySpi = 3, All = 4 };
enum class Slot : uint8_t { Previous = 0, Current = 1, Next = 2, Other = 3 };
enum class Role : uint8_t { None = 0, Master = 1, Slave = 2, Sender = 3, Client = 4, Admin = 5 };

enum class ErrorCode : uint16_t {
  Ok = 0,
  BadRequest = 1,
  UnsupportedVersion = 2,
  NotAuthorised = 3,   // role may not use this message type
  ChannelDenied = 4,   // certificate/config does not allow this channel
  UnknownChannel = 5,
  NotFound = 6,        // no key with that SPI / no current key
  NoNextKey = 7,       // next key not made yet
  SpiReused = 8,       // SPI at or below the channel's high-water mark
  WrongOrigin = 9,     // generate on a sender-origin channel or upload on kms-origin
  NotMaster = 10,      // a write that only the master accepts
  Internal = 11,
  TooLarge = 12,
  Busy = 13,           // overloaded: T_RETRY_AFTER_MS says when to ask again
  NotConfirmed = 14,  // applied on the master, not yet confirmed by every slave
  NotActive = 15,     // a standby master: the write goes to the active one (T_ACTIVE names it)
  // produced by the client library, never on the wire
  Timeout = 100,
  Unavailable = 101,
  Shutdown = 102,
};

std::string_view type_name(MsgType t);
std::string_view error_name(ErrorCode e);
std::string_view role_name(Role r);
std::optional<Role> parse_role(std::string_view s);
std::string_view which_name(Which w);
std::string_view slot_name(Slot s);

// TLV tags
enum Tag : uint16_t {
  T_CHANNEL = 1, T_SPI = 2, T_WHICH = 3, T_REMAINING_MS = 4, T_BYTES = 5, T_PACKETS = 6,
  T_EVENT_ID = 7, T_SEQ = 8, T_ERROR = 9, T_TEXT = 10, T_ROLE = 11, T_KEY = 12, T_BILL = 13,
  T_INSTANCE = 14,  // u64: the sending process's random instance id (usage checkpoints)
  T_SINCE_MS = 15,  // i64: billing period start, UTC wall-clock ms (inclusive)
  T_UNTIL_MS = 16,  // i64: billing period end, UTC wall-clock ms (exclusive)
  T_CHANNEL_LIST = 17,  // bytes: n x u32 channel ids, ascending, no repeats
  T_ALL = 18,           // u8 1: every channel ("*")
  T_MODE = 19,          // u8: an entitlement's mode (EntitlementMode)
  T_USAGE = 20,         // nested: one epoch's usage in a batched checkpoint
  // inside T_KEY
  TK_CHANNEL = 0x101, TK_SPI = 0x102, TK_SUITE = 0x103, TK_KEYMAT = 0x104,
  TK_REMAINING_MS = 0x105, TK_LIFETIME_MS = 0x106, TK_SLOT = 0x107,
  // inside T_BILL
  TB_SEQ = 0x201, TB_IDENTITY = 0x202, TB_REQUESTS = 0x203, TB_CHANNEL = 0x204, TB_SPI = 0x205,
  TB_EVENT_ID = 0x206,  // optional: the client's request event id (de-duplication)
  TB_AGE_MS = 0x207,    // optional: how long ago the event happened, on the slave's clock
  // inside T_USAGE (all required)
  TU_CHANNEL = 0x301, TU_SPI = 0x302, TU_BYTES = 0x303, TU_PACKETS = 0x304,
  // Optional extensions (top bit set: a decoder that does not know them skips them)
  T_ACTIVE = 0x8001,  // bytes: HOST:PORT of the active master (a not_active error)
  T_RETRY_AFTER_MS = 0x8002,  // u64: a busy error: ask again no sooner than this (<= kMaxRetryAfterMs)
};

// A key as carried on the wire: decipherment (or encipherment, same bytes for
// AES-GCM) key data with its remaining effective time.
struct WireKey {
  uint32_t channel = 0;
  uint32_t spi = 0;
  KeyMaterial material;      // suite, key, salt
  int64_t remaining_ms = 0;  // until this key's use ends (0 = sender switches away)
  int64_t lifetime_ms = 0;   // full use period; becomes current at remaining-lifetime
  Slot slot = Slot::Current;

  // Convert to a local record: deadline on this process's monotonic clock.
  KeyRecord to_record(MonoClock::time_point received_at = MonoClock::now()) const;
  // From a local record (sender-origin upload): remaining time measured now.
  static WireKey from_record(const KeyRecord& r, int64_t lifetime_ms, Slot slot = Slot::Next,
                             MonoClock::time_point now = MonoClock::now());
};

// One billing event forwarded by a slave (requests > 0 and/or a key holding).
struct BillEntry {
  uint64_t seq = 0;
  std::string identity;
  uint64_t requests = 0;
  uint32_t channel = 0;
  uint32_t spi = 0;  // 0: no key held by this event
  uint64_t event_id = 0;  // client's request event id; 0: none (counted as is)
  int64_t age_ms = 0;     // time since the event, when forwarded (billing period)
  bool operator==(const BillEntry&) const = default;
};

// One key epoch's usage so far (a batched usage checkpoint).
struct UsageEntry {
  uint32_t channel = 0, spi = 0;
  uint64_t bytes = 0, packets = 0;
  bool operator==(const UsageEntry&) const = default;
};

struct Message {
  MsgType type = MsgType::Ping;
  uint32_t req_id = 0;
  std::optional<uint32_t> channel, spi;
  std::optional<Which> which;
  std::optional<int64_t> remaining_ms;  // channel's current key remaining time
  // event_id: a usage report's id (required), or a key request's (optional, set
  // once by the client and kept across re-sends so a billed request counts once).
  std::optional<uint64_t> bytes, packets, event_id, seq;
  // instance: a usage checkpoint's sender process (bytes/packets are then
  // totals of the epoch so far, kept as a high-water mark per instance).
  std::optional<uint64_t> instance;
  std::optional<int64_t> since_ms, until_ms;  // billing period bounds (wall clock)
  std::vector<uint32_t> channel_list;          // T_CHANNEL_LIST
  bool all = false;                            // T_ALL
  std::optional<EntitlementMode> mode;
  std::optional<ErrorCode> error;
  std::optional<Role> role;
  std::string text;  // error text, admin JSON, identity, software name
  std::string active;  // T_ACTIVE: where the active master serves (not_active), empty: unknown
  std::optional<int64_t> retry_after_ms;  // T_RETRY_AFTER_MS (busy)
  std::vector<WireKey> keys;
  std::vector<BillEntry> bills;
  std::vector<UsageEntry> usages;  // T_USAGE: a checkpoint of many epochs (one frame per tick)
};

enum class DecodeStatus {
  Ok, Short, BadMagic, BadVersion, TooLong, LengthMismatch, UnknownType, BadTlv,
  DuplicateTag, UnknownTag, BadValue, MissingField,
};
std::string_view decode_status_name(DecodeStatus s);

struct Header {
  uint8_t version = 0;
  uint8_t type = 0;
  uint32_t req_id = 0;
  uint32_t length = 0;
};

// Validates magic, version and the length cap. n must be >= kHeaderLen.
DecodeStatus decode_header(const uint8_t* p, std::size_t n, Header& h);
// Decodes exactly one whole frame of n bytes (header + body, nothing more).
// Pure function: no allocation beyond `out`, no I/O, never throws. Fuzz target.
DecodeStatus decode(const uint8_t* p, std::size_t n, Message& out);
// Body only, after decode_header.
DecodeStatus decode_body(const Header& h, const uint8_t* body, std::size_t n, Message& out);

// Encodes a frame. The result may hold key bytes: callers zero it after use
// (the server and the client do, after the write completes).
std::vector<uint8_t> encode(const Message& m);

// Helpers for replies
Message make_error(uint32_t req_id, ErrorCode code, std::string text,
                   std::optional<int64_t> remaining_ms = std::nullopt);

}  // namespace keycast::kp
