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

constexpr std::size_t kIpOff = kEthLen;
constexpr std::size_t kEspOff = kEthLen + kIpv4Len;

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
  ip[1] = static_cast<uint8_t>((f.dscp & 0x3f) << 2);  // DSCP, ECN not-ECT
  put16(ip + 4, 0);        // ID: 0 is allowed for atomic (DF) datagrams, RFC 6864
  put16(ip + 6, 0x4000);   // DF: an enciphered datagram is never fragmented
  ip[8] = f.ttl;
  ip[9] = kProtoEsp;
  put32(ip + 12, f.src_ip);
  put32(ip + 16, f.group_ip);
  put16(t.l2l3 + kEthLen + 2, 0);  // total length filled per packet
  t.src_port_be = static_cast<uint16_t>((f.src_port >> 8) | (f.src_port << 8));
  t.dst_port_be = static_cast<uint16_t>((f.dst_port >> 8) | (f.dst_port << 8));
  t.ip_sum = 0;
  for (std::size_t i = 0; i < kIpv4Len; i += 2) t.ip_sum += detail::get16(ip + i);
  return t;
}

std::size_t prepare_outer(const Template& t, uint32_t spi, uint64_t seq, uint8_t* frame,
                          std::size_t cipher_len, std::size_t cap, uint8_t* aad,
                          AeadOp& op) noexcept {
  const std::size_t total = kCipherOffset + cipher_len + kIcvLen;
  if (total > cap || total - kEthLen > 0xffff) return 0;

  // Ethernet + IPv4 from the template (34 bytes: fixed-size copies), then the
  // length and the checksum from the template's pre-computed partial sum.
  std::memcpy(frame, t.l2l3, sizeof t.l2l3);
  const uint16_t ip_len = static_cast<uint16_t>(total - kEthLen);
  uint32_t sum = t.ip_sum + ip_len;
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  const uint32_t len_csum =
      uint32_t(__builtin_bswap16(ip_len)) | uint32_t(__builtin_bswap16(static_cast<uint16_t>(~sum))) << 16;
  // IPv4 bytes 2..3 (total length) and 10..11 (checksum).
  const uint16_t len_be = static_cast<uint16_t>(len_csum), csum_be = static_cast<uint16_t>(len_csum >> 16);
  std::memcpy(frame + kIpOff + 2, &len_be, 2);
  std::memcpy(frame + kIpOff + 10, &csum_be, 2);

  // ESP header and explicit IV: SPI | seq low | IV = 64-bit seq, two 8-byte stores.
  const uint64_t spi_seq = __builtin_bswap64(uint64_t(spi) << 32 | static_cast<uint32_t>(seq));
  const uint64_t iv = __builtin_bswap64(seq);
  uint8_t* esp = frame + kEspOff;
  std::memcpy(esp, &spi_seq, 8);
  std::memcpy(esp + 8, &iv, 8);

  std::memcpy(aad, &spi_seq, 4);  // SPI
  const uint32_t seq_hi = __builtin_bswap32(static_cast<uint32_t>(seq >> 32));
  const uint32_t seq_lo = __builtin_bswap32(static_cast<uint32_t>(seq));
  std::memcpy(aad + 4, &seq_hi, 4);
  std::memcpy(aad + 8, &seq_lo, 4);
  uint8_t* inner = frame + kCipherOffset;
  op = AeadOp{inner, static_cast<uint32_t>(cipher_len), seq, aad, kAadLen, inner + cipher_len};
  return total;
}

namespace {
std::size_t prepare_inner(const Template& t, uint32_t spi, uint64_t seq, uint8_t next_header,
                          uint8_t* frame, std::size_t inner_len, std::size_t cap, uint8_t* aad,
                          AeadOp& op, bool write_udp) noexcept {
  const std::size_t pad = (4 - (inner_len + 2) % 4) % 4;
  const std::size_t cipher_len = inner_len + pad + 2;
  const std::size_t total = prepare_outer(t, spi, seq, frame, cipher_len, cap, aad, op);
  if (total == 0) return 0;

  uint8_t* inner = frame + kCipherOffset;
  if (write_udp && next_header == kNextUdp && inner_len >= kUdpLen) {
    // No UDP checksum: the ICV authenticates every byte.
    const uint64_t udp = uint64_t(t.src_port_be) | uint64_t(t.dst_port_be) << 16 |
                         uint64_t(__builtin_bswap16(static_cast<uint16_t>(inner_len))) << 32;
    std::memcpy(inner, &udp, 8);
  }
  // Trailer: pad bytes 1, 2, 3 (as many as needed), pad length, next header.
  // One 8-byte store: the bytes past the trailer fall in the ICV, written by
  // the seal (total covers them).
  const uint64_t pad_bytes = 0x030201ull & ((uint64_t(1) << (8 * pad)) - 1);
  const uint64_t trailer = pad_bytes | uint64_t(pad) << (8 * pad) | uint64_t(next_header) << (8 * pad + 8);
  std::memcpy(inner + inner_len, &trailer, 8);
  return total;
}
}  // namespace

std::size_t prepare(const Template& t, uint32_t spi, uint64_t seq, uint8_t next_header,
                    uint8_t* frame, std::size_t inner_len, std::size_t cap, uint8_t* aad,
                    AeadOp& op) noexcept {
  return prepare_inner(t, spi, seq, next_header, frame, inner_len, cap, aad, op, true);
}

std::size_t prepare_datagram(const Template& t, uint32_t spi, uint64_t seq, uint8_t* frame,
                             std::size_t udp_len, std::size_t cap, uint8_t* aad,
                             AeadOp& op) noexcept {
  return prepare_inner(t, spi, seq, kNextUdp, frame, udp_len, cap, aad, op, false);
}

bool parse_datagram(const uint8_t* f, std::size_t len, Datagram& d) noexcept {
  if (len < kEthLen + kIpv4Len + kUdpLen || detail::get16(f + 12) != kEtherIpv4 || (f[14] >> 4) != 4)
    return false;
  const uint32_t ihl = (f[14] & 0x0f) * 4u;
  if (ihl < kIpv4Len || f[14 + 9] != 17 || len < kEthLen + ihl + kUdpLen ||
      (detail::get16(f + 14 + 6) & 0x3fff) != 0)
    return false;
  const uint8_t* udp = f + kEthLen + ihl;
  const uint32_t udp_len = detail::get16(udp + 4);
  if (udp_len < kUdpLen || kEthLen + ihl + udp_len > len) return false;
  d.src_ip = detail::get32(f + 14 + 12);
  d.dst_ip = detail::get32(f + 14 + 16);
  d.dst_port = detail::get16(udp + 2);
  d.udp_offset = static_cast<uint32_t>(kEthLen + ihl);
  d.udp_len = udp_len;
  return true;
}

void udp_checksum_new_source(uint8_t* udp, uint32_t old_src, uint32_t new_src) noexcept {
  const uint16_t hc = detail::get16(udp + 6);
  if (hc == 0 || old_src == new_src) return;
  // HC' = ~(~HC + ~m + m') over the two 16-bit words of the address.
  uint32_t sum = uint32_t(~hc & 0xffff);
  sum += (~(old_src >> 16) & 0xffff) + (~old_src & 0xffff);
  sum += (new_src >> 16) + (new_src & 0xffff);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  uint16_t r = static_cast<uint16_t>(~sum & 0xffff);
  if (r == 0) r = 0xffff;  // 0 means "no checksum" on the wire
  udp[6] = static_cast<uint8_t>(r >> 8);
  udp[7] = static_cast<uint8_t>(r);
}

uint32_t template_source(const Template& t) noexcept { return detail::get32(t.l2l3 + kEthLen + 12); }

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
  if (len) std::memmove(frame + kPayloadOffset, payload, len);  // payload may be null when len is 0
  return encap(aead, key, t, spi, seq, kNextUdp, frame, kUdpLen + len, cap);
}

Drop decap(Aead& aead, const AeadKey& key, Parsed& p, Opened& o) noexcept {
  if (!aead.open(key, open_op(p))) return Drop::AuthFail;
  return finish(p, o);
}

std::size_t to_plain(uint8_t* f, const Parsed& p, const Opened& o, std::size_t& len) noexcept {
  const std::size_t l23 = static_cast<std::size_t>(o.inner - f) - kEspHdrLen - kIvLen;
  const std::size_t shift = kEspHdrLen + kIvLen;
  std::memmove(f + shift, f, l23);
  f += shift;
  uint8_t* ip = f + p.ip_offset;
  const std::size_t ihl = (ip[0] & 0x0f) * 4u;
  const uint16_t total = static_cast<uint16_t>(ihl + o.inner_len);
  ip[2] = static_cast<uint8_t>(total >> 8);
  ip[3] = static_cast<uint8_t>(total);
  ip[9] = kNextUdp;
  ip[10] = ip[11] = 0;
  uint32_t sum = 0;
  for (std::size_t k = 0; k < ihl; k += 2) sum += uint32_t(ip[k]) << 8 | ip[k + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  sum = ~sum & 0xffff;
  ip[10] = static_cast<uint8_t>(sum >> 8);
  ip[11] = static_cast<uint8_t>(sum);
  len = p.ip_offset + total;
  return shift;
}

}  // namespace keycast::esp
