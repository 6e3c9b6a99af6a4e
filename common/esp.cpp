#include "common/esp.hpp"

#include <cstring>

namespace keycast::esp {

namespace {

inline void put16(uint8_t* p, uint16_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void put32(uint8_t* p, uint32_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
inline uint16_t get16(const uint8_t* p) noexcept { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t get32(const uint8_t* p) noexcept {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

constexpr std::size_t kIpOff = kEthLen;
constexpr std::size_t kEspOff = kEthLen + kIpv4Len;

uint16_t ipv4_checksum(const uint8_t* h) noexcept {
  uint32_t sum = 0;
  for (std::size_t i = 0; i < kIpv4Len; i += 2) sum += get16(h + i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

}  // namespace

void group_mac(uint32_t group_ip, uint8_t mac[6]) noexcept {
  mac[0] = 0x01;
  mac[1] = 0x00;
  mac[2] = 0x5e;
  mac[3] = static_cast<uint8_t>((group_ip >> 16) & 0x7f);
  mac[4] = static_cast<uint8_t>(group_ip >> 8);
  mac[5] = static_cast<uint8_t>(group_ip);
}

Template make_template(const Flow& f) noexcept {
  Template t{};
  uint8_t* e = t.l2l3;
  group_mac(f.group_ip, e);
  std::memcpy(e + 6, f.src_mac, 6);
  put16(e + 12, kEtherIpv4);
  uint8_t* ip = e + kEthLen;
  ip[0] = 0x45;            // IPv4, 20-byte header
  ip[1] = 0;               // DSCP/ECN
  put16(ip + 4, 0);        // ID: 0 is allowed for atomic (DF) datagrams, RFC 6864
  put16(ip + 6, 0x4000);   // DF: an enciphered datagram is never fragmented
  ip[8] = f.ttl;
  ip[9] = kProtoEsp;
  put32(ip + 12, f.src_ip);
  put32(ip + 16, f.group_ip);
  put16(t.l2l3 + kEthLen + 2, 0);  // total length filled per packet
  t.src_port_be = static_cast<uint16_t>((f.src_port >> 8) | (f.src_port << 8));
  t.dst_port_be = static_cast<uint16_t>((f.dst_port >> 8) | (f.dst_port << 8));
  return t;
}

std::size_t prepare(const Template& t, uint32_t spi, uint64_t seq, uint8_t next_header,
                    uint8_t* frame, std::size_t inner_len, std::size_t cap, uint8_t* aad,
                    AeadOp& op) noexcept {
  const std::size_t pad = (4 - (inner_len + 2) % 4) % 4;
  const std::size_t cipher_len = inner_len + pad + 2;
  const std::size_t total = kCipherOffset + cipher_len + kIcvLen;
  if (total > cap || total - kEthLen > 0xffff) return 0;

  std::memcpy(frame, t.l2l3, sizeof t.l2l3);
  uint8_t* ip = frame + kIpOff;
  put16(ip + 2, static_cast<uint16_t>(total - kEthLen));
  put16(ip + 10, 0);
  put16(ip + 10, ipv4_checksum(ip));

  uint8_t* esp = frame + kEspOff;
  put32(esp, spi);
  put32(esp + 4, static_cast<uint32_t>(seq));
  put32(esp + 8, static_cast<uint32_t>(seq >> 32));  // explicit IV = 64-bit sequence
  put32(esp + 12, static_cast<uint32_t>(seq));

  uint8_t* inner = frame + kCipherOffset;
  if (next_header == kNextUdp && inner_len >= kUdpLen) {
    std::memcpy(inner, &t.src_port_be, 2);
    std::memcpy(inner + 2, &t.dst_port_be, 2);
    put16(inner + 4, static_cast<uint16_t>(inner_len));
    put16(inner + 6, 0);  // no UDP checksum: the ICV authenticates every byte
  }
  uint8_t* trailer = inner + inner_len;
  for (std::size_t i = 0; i < pad; ++i) trailer[i] = static_cast<uint8_t>(i + 1);
  trailer[pad] = static_cast<uint8_t>(pad);
  trailer[pad + 1] = next_header;

  put32(aad, spi);
  put32(aad + 4, static_cast<uint32_t>(seq >> 32));
  put32(aad + 8, static_cast<uint32_t>(seq));
  op = AeadOp{inner, static_cast<uint32_t>(cipher_len), seq, aad, kAadLen,
              inner + cipher_len};
  return total;
}

std::size_t encap(Aead& aead, const AeadKey& key, const Template& t, uint32_t spi,
                  uint64_t seq, uint8_t next_header, uint8_t* frame, std::size_t inner_len,
                  std::size_t cap) noexcept {
  uint8_t aad[kAadLen];
  AeadOp op;
  std::size_t n = prepare(t, spi, seq, next_header, frame, inner_len, cap, aad, op);
  if (n) aead.seal(key, op);
  return n;
}

std::size_t encap_udp(Aead& aead, const AeadKey& key, const Template& t, uint32_t spi,
                      uint64_t seq, const uint8_t* payload, std::size_t len, uint8_t* frame,
                      std::size_t cap) noexcept {
  if (frame_len(len) > cap) return 0;
  std::memmove(frame + kPayloadOffset, payload, len);
  return encap(aead, key, t, spi, seq, kNextUdp, frame, kUdpLen + len, cap);
}

Drop parse(uint8_t* frame, std::size_t len, Parsed& p) noexcept {
  if (len < kEthLen + kIpv4Len || get16(frame + 12) != kEtherIpv4) return Drop::NotIpv4;
  const uint8_t* ip = frame + kIpOff;
  if ((ip[0] >> 4) != 4) return Drop::NotIpv4;
  const std::size_t ihl = (ip[0] & 0x0f) * 4u;
  const std::size_t ip_total = get16(ip + 2);
  if (ihl < kIpv4Len || ip_total < ihl || kEthLen + ihl > len) return Drop::BadIpHeader;
  if (kEthLen + ip_total > len) return Drop::Truncated;  // frame cut short in flight
  if (ip[9] != kProtoEsp) return Drop::NotEsp;
  if ((get16(ip + 6) & 0x3fff) != 0) return Drop::Fragment;  // MF set or offset != 0
  // Ethernet pads short frames: trust the IP total length, not the frame length.
  const std::size_t esp_len = ip_total - ihl;
  if (esp_len < kEspHdrLen + kIvLen) return Drop::Truncated;
  if (esp_len < kEspHdrLen + kIvLen + 4 + kIcvLen) return Drop::ShortIcv;
  uint8_t* esp = frame + kEthLen + ihl;
  const std::size_t cipher_len = esp_len - kEspHdrLen - kIvLen - kIcvLen;
  if (cipher_len % 4 != 0) return Drop::BadLength;

  p.spi = get32(esp);
  const uint32_t seq_lo = get32(esp + 4);
  const uint32_t iv_hi = get32(esp + 8), iv_lo = get32(esp + 12);
  if (iv_lo != seq_lo) return Drop::IvMismatch;
  p.seq = uint64_t(iv_hi) << 32 | iv_lo;
  p.dst_ip = get32(ip + 16);
  p.cipher = esp + kEspHdrLen + kIvLen;
  p.cipher_len = static_cast<uint32_t>(cipher_len);
  p.icv = p.cipher + cipher_len;
  p.ip_offset = kIpOff;
  put32(p.aad, p.spi);
  put32(p.aad + 4, iv_hi);
  put32(p.aad + 8, iv_lo);
  return Drop::None;
}

AeadOp open_op(Parsed& p) noexcept {
  return AeadOp{p.cipher, p.cipher_len, p.seq, p.aad, kAadLen, p.icv};
}

Drop finish(const Parsed& p, Opened& o) noexcept {
  const uint8_t pad = p.cipher[p.cipher_len - 2];
  const uint8_t nh = p.cipher[p.cipher_len - 1];
  if (pad + 2u > p.cipher_len) return Drop::BadPad;
  const uint8_t* padp = p.cipher + p.cipher_len - 2 - pad;
  for (unsigned i = 0; i < pad; ++i)
    if (padp[i] != i + 1) return Drop::BadPad;
  o.inner = p.cipher;
  o.inner_len = p.cipher_len - 2 - pad;
  o.next_header = nh;
  o.payload = nullptr;
  o.payload_len = 0;
  o.src_port = o.dst_port = 0;
  if (nh == kNextControl) return Drop::None;
  if (nh != kNextUdp) return Drop::BadNextHeader;
  if (o.inner_len < kUdpLen || get16(o.inner + 4) != o.inner_len) return Drop::BadInner;
  o.src_port = get16(o.inner);
  o.dst_port = get16(o.inner + 2);
  o.payload = o.inner + kUdpLen;
  o.payload_len = o.inner_len - kUdpLen;
  return Drop::None;
}

Drop decap(Aead& aead, const AeadKey& key, Parsed& p, Opened& o) noexcept {
  if (!aead.open(key, open_op(p))) return Drop::AuthFail;
  return finish(p, o);
}

}  // namespace keycast::esp
