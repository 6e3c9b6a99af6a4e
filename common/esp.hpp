// ESP (RFC 4303) transport mode over IPv4 multicast with AES-GCM (RFC 4106).
//
// Frame: Ethernet | IPv4 (proto 50, DF) | SPI | Seq(low 32) | IV(8) |
//        enc{ inner | pad | pad len | next header } | ICV(16)
// The inner data is a UDP header + payload (next header 17) or an in-band
// control message (next header 253).
//
// The 64-bit sequence number is the explicit IV (big-endian), so an IV never
// repeats under a key. AAD is SPI || Seq high || Seq low (RFC 4106 §5, ESN).
// Because the IV carries the full counter, a receiver that joins mid-stream
// knows the high word without inferring it; the IV low word must equal the
// wire sequence number, and the ICV covers both through the AAD and nonce.
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/aead.hpp"
#include "common/drop_reason.hpp"

namespace keycast::esp {

static_assert(std::endian::native == std::endian::little,
              "prepare() stores and finish() compares little-endian words");

constexpr std::size_t kEthLen = 14;
constexpr std::size_t kIpv4Len = 20;
constexpr std::size_t kEspHdrLen = 8;
constexpr std::size_t kUdpLen = 8;
constexpr std::size_t kCipherOffset = kEthLen + kIpv4Len + kEspHdrLen + kIvLen;  // 50
constexpr std::size_t kPayloadOffset = kCipherOffset + kUdpLen;                  // 58
constexpr std::size_t kAadLen = 12;
constexpr uint8_t kProtoEsp = 50;
constexpr uint8_t kNextUdp = 17;
constexpr uint8_t kNextControl = 253;  // RFC 3692 experimental: in-band control
constexpr uint16_t kEtherIpv4 = 0x0800;

// Bytes after the inner data: pad to a 4-byte boundary, pad length, next
// header, ICV.
constexpr std::size_t trailer_len(std::size_t inner_len) noexcept {
  return (4 - (inner_len + 2) % 4) % 4 + 2 + kIcvLen;
}
// Frame length for a UDP payload of n bytes.
constexpr std::size_t frame_len(std::size_t payload_len) noexcept {
  return kCipherOffset + kUdpLen + payload_len + trailer_len(kUdpLen + payload_len);
}
// Largest UDP payload that keeps the IPv4 packet within mtu.
constexpr std::size_t max_payload(std::size_t mtu) noexcept {
  std::size_t n = mtu - kIpv4Len - kEspHdrLen - kIvLen - kIcvLen - 2 - kUdpLen;
  return n - (n + kUdpLen + 2) % 4;
}

struct Flow {
  uint8_t src_mac[6] = {0x02, 0, 0, 0, 0, 1};
  uint32_t src_ip = 0;    // host byte order
  uint32_t group_ip = 0;  // host byte order, 224.0.0.0/4
  uint16_t src_port = 5000;
  uint16_t dst_port = 5000;
  uint8_t ttl = 16;
  uint8_t dscp = 0;  // outer DiffServ code point (RFC 2474), 0..63; ECN stays 0
};

// RFC 1112 §6.4: 01:00:5e + low 23 bits of the group.
void group_mac(uint32_t group_ip, uint8_t mac[6]) noexcept;

// Pre-built Ethernet + IPv4 header; per packet only lengths, ID and checksum
// change, so building a header is a copy and three stores.
struct Template {
  uint8_t l2l3[kEthLen + kIpv4Len];
  uint16_t src_port_be, dst_port_be;
  // One's complement sum (unfolded) of the IPv4 header words with the total
  // length and checksum fields zero: per packet only the length is added.
  uint32_t ip_sum;
};
Template make_template(const Flow& f) noexcept;

// Writes all headers and the trailer around inner data the caller already
// placed at frame + kCipherOffset (for UDP: the payload at kPayloadOffset; the
// UDP header is written here), and returns the AEAD operation that enciphers
// it. Nothing is enciphered yet, so a burst can be sealed in one call.
// aad must point to kAadLen bytes of caller storage that lives until sealing.
// Returns the frame length, or 0 if cap is too small.
std::size_t prepare(const Template& t, uint32_t spi, uint64_t seq, uint8_t next_header,
                    uint8_t* frame, std::size_t inner_len, std::size_t cap,
                    uint8_t* aad, AeadOp& op) noexcept;

// Only the outer part of prepare (Ethernet, IPv4, ESP header and IV, AAD,
// op) for an enciphered region of cipher_len bytes (a multiple of 4) whose
// plaintext, trailer included, the caller supplies (e.g. sealed out of place
// with Aead::seal_from). Returns the frame length, or 0 if cap is too small.
std::size_t prepare_outer(const Template& t, uint32_t spi, uint64_t seq, uint8_t* frame,
                          std::size_t cipher_len, std::size_t cap, uint8_t* aad,
                          AeadOp& op) noexcept;

// prepare for a UDP datagram whose header the caller placed at
// frame + kCipherOffset and keeps (ingest: the application's own ports and
// length travel unchanged).
std::size_t prepare_datagram(const Template& t, uint32_t spi, uint64_t seq, uint8_t* frame,
                             std::size_t udp_len, std::size_t cap, uint8_t* aad,
                             AeadOp& op) noexcept;

// A plaintext IPv4/UDP datagram offered for encipherment (the sender's ingest
// port): Ethernet, IPv4 (options allowed, not a fragment), UDP whose length
// fits the frame. Ethernet padding past the UDP length is not part of it.
struct Datagram {
  uint32_t src_ip;    // host byte order
  uint32_t dst_ip;    // host byte order
  uint16_t dst_port;
  uint32_t udp_offset;  // from the frame start
  uint32_t udp_len;     // UDP header + payload
};
bool parse_datagram(const uint8_t* frame, std::size_t len, Datagram& d) noexcept;

// RFC 1624 incremental update of a UDP checksum for a new IPv4 source address
// (part of the pseudo-header): a datagram that leaves under the channel's
// source stays valid for the kernel that finally receives it. A zero
// checksum (none, allowed on IPv4) stays zero.
void udp_checksum_new_source(uint8_t* udp, uint32_t old_src, uint32_t new_src) noexcept;
uint32_t template_source(const Template& t) noexcept;  // host byte order

// prepare + seal, for one packet.
std::size_t encap(Aead& aead, const AeadKey& key, const Template& t, uint32_t spi,
                  uint64_t seq, uint8_t next_header, uint8_t* frame, std::size_t inner_len,
                  std::size_t cap) noexcept;
// Convenience for a UDP datagram: copies payload to its place first.
std::size_t encap_udp(Aead& aead, const AeadKey& key, const Template& t, uint32_t spi,
                      uint64_t seq, const uint8_t* payload, std::size_t len, uint8_t* frame,
                      std::size_t cap) noexcept;

// Result of the header pass: enough to look up the key and check replay
// before paying for any crypto.
struct Parsed {
  uint32_t spi;
  uint64_t seq;          // full 64-bit sequence, from the explicit IV
  uint32_t dst_ip;       // host byte order
  uint8_t* cipher;       // ciphertext start
  uint32_t cipher_len;   // inner + pad + 2
  uint8_t* icv;
  uint16_t ip_offset;
  uint8_t aad[kAadLen];
};

// Bounds-checked; never reads outside [frame, frame + len).
inline Drop parse(uint8_t* frame, std::size_t len, Parsed& p) noexcept;

// After parse: inner data deciphered in place.
struct Opened {
  uint8_t* inner;
  uint32_t inner_len;
  uint8_t next_header;
  // For UDP: ports and payload.
  uint16_t src_port, dst_port;
  uint8_t* payload;
  uint32_t payload_len;
};

// The AEAD operation that deciphers p in place (for burst opening).
inline AeadOp open_op(Parsed& p) noexcept {
  return AeadOp{p.cipher, p.cipher_len, p.seq, p.aad, kAadLen, p.icv};
}
// Checks padding and next header after a successful ICV check.
inline Drop finish(const Parsed& p, Opened& o) noexcept;
// open_op + open + finish, for one packet.
Drop decap(Aead& aead, const AeadKey& key, Parsed& p, Opened& o) noexcept;

// After a successful finish() of a UDP packet: turns the frame into the
// plaintext Ethernet/IPv4/UDP frame in place. The L2/L3 headers move forward
// over the ESP header and IV; the IPv4 header gets protocol UDP, the new total
// length and its checksum. Returns how many bytes the frame now starts after
// `frame`; len is set to the plaintext frame's length.
std::size_t to_plain(uint8_t* frame, const Parsed& p, const Opened& o, std::size_t& len) noexcept;

// parse and finish run once per received packet: defined here so that the receiver's loop
// inlines them and keeps most of Parsed and Opened in registers (the two calls, and the stores and
// reloads of both structs, were about 45 instructions a packet, measured with callgrind). GCC's
// heuristics leave parse out of line in a loop that size, hence always_inline.
namespace detail {
inline uint16_t get16(const uint8_t* p) noexcept { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t get32(const uint8_t* p) noexcept {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
}  // namespace detail

[[gnu::always_inline]] inline Drop parse(uint8_t* frame, std::size_t len, Parsed& p) noexcept {
  if (len < kEthLen + kIpv4Len || detail::get16(frame + 12) != kEtherIpv4) return Drop::NotIpv4;
  const uint8_t* ip = frame + kEthLen;
  if ((ip[0] >> 4) != 4) return Drop::NotIpv4;
  const std::size_t ihl = (ip[0] & 0x0f) * 4u;
  const std::size_t ip_total = detail::get16(ip + 2);
  if (ihl < kIpv4Len || ip_total < ihl || kEthLen + ihl > len) return Drop::BadIpHeader;
  if (kEthLen + ip_total > len) return Drop::Truncated;  // frame cut short in flight
  if (ip[9] != kProtoEsp) return Drop::NotEsp;
  if ((detail::get16(ip + 6) & 0x3fff) != 0) return Drop::Fragment;  // MF set or offset != 0
  // Ethernet pads short frames: trust the IP total length, not the frame length.
  const std::size_t esp_len = ip_total - ihl;
  if (esp_len < kEspHdrLen + kIvLen) return Drop::Truncated;
  if (esp_len < kEspHdrLen + kIvLen + 4 + kIcvLen) return Drop::ShortIcv;
  uint8_t* esp = frame + kEthLen + ihl;
  const std::size_t cipher_len = esp_len - kEspHdrLen - kIvLen - kIcvLen;
  if (cipher_len % 4 != 0) return Drop::BadLength;

  p.spi = detail::get32(esp);
  const uint32_t seq_lo = detail::get32(esp + 4);
  const uint32_t iv_hi = detail::get32(esp + 8), iv_lo = detail::get32(esp + 12);
  if (iv_lo != seq_lo) return Drop::IvMismatch;
  p.seq = uint64_t(iv_hi) << 32 | iv_lo;
  p.dst_ip = detail::get32(ip + 16);
  p.cipher = esp + kEspHdrLen + kIvLen;
  p.cipher_len = static_cast<uint32_t>(cipher_len);
  p.icv = p.cipher + cipher_len;
  p.ip_offset = kEthLen;
  // AAD = SPI || seq high || seq low: the wire's SPI, then its IV (high || low, the low word
  // checked equal to the ESP header's). Copied as it lies: one 4- and one 8-byte move, where
  // byte-wise big-endian stores cost the receiver ~35 instructions per packet.
  std::memcpy(p.aad, esp, 4);
  std::memcpy(p.aad + 4, esp + 8, 8);
  return Drop::None;
}

inline Drop finish(const Parsed& p, Opened& o) noexcept {
  const uint8_t pad = p.cipher[p.cipher_len - 2];
  const uint8_t nh = p.cipher[p.cipher_len - 1];
  if (pad + 2u > p.cipher_len) return Drop::BadPad;
  const uint8_t* padp = p.cipher + p.cipher_len - 2 - pad;
  if (pad < 8) {
    // The pad bytes must read 1, 2, 3, ... (RFC 4303 §2.4): senders pad to 4 bytes, so this
    // compares them in one masked word instead of a loop. The 8 bytes read stay in the frame:
    // pad length, next header and the 16-byte ICV follow the pad.
    uint64_t got;
    std::memcpy(&got, padp, 8);
    const uint64_t mask = (uint64_t(1) << (8 * pad)) - 1;
    if ((got ^ 0x0807060504030201ull) & mask) return Drop::BadPad;
  } else {
    for (unsigned i = 0; i < pad; ++i)
      if (padp[i] != i + 1) return Drop::BadPad;
  }
  o.inner = p.cipher;
  o.inner_len = p.cipher_len - 2 - pad;
  o.next_header = nh;
  o.payload = nullptr;
  o.payload_len = 0;
  o.src_port = o.dst_port = 0;
  if (nh == kNextControl) return Drop::None;
  if (nh != kNextUdp) return Drop::BadNextHeader;
  if (o.inner_len < kUdpLen || detail::get16(o.inner + 4) != o.inner_len) return Drop::BadInner;
  o.src_port = detail::get16(o.inner);
  o.dst_port = detail::get16(o.inner + 2);
  o.payload = o.inner + kUdpLen;
  o.payload_len = o.inner_len - kUdpLen;
  return Drop::None;
}

}  // namespace keycast::esp
