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
#include <cstddef>
#include <cstdint>

#include "common/aead.hpp"
#include "common/drop_reason.hpp"

namespace keycast::esp {

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
Drop parse(uint8_t* frame, std::size_t len, Parsed& p) noexcept;

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
AeadOp open_op(Parsed& p) noexcept;
// Checks padding and next header after a successful ICV check.
Drop finish(const Parsed& p, Opened& o) noexcept;
// open_op + open + finish, for one packet.
Drop decap(Aead& aead, const AeadKey& key, Parsed& p, Opened& o) noexcept;

}  // namespace keycast::esp
