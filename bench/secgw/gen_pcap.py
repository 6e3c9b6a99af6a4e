#!/usr/bin/python3
"""Write input captures for the ipsec-secgw baseline.

  gen_pcap.py plain OUT.pcap SIZE COUNT
      plaintext Ether/IPv4/UDP to 239.1.1.1:5000 carrying SIZE payload bytes (outbound input);
      SIZE may be a comma-separated list: the frames then cycle through those sizes
  gen_pcap.py esp OUT.pcap SIZE COUNT SPI KEYHEX
      the same datagrams, ESP transport mode, AES-GCM (16-byte ICV), KEYHEX = key || 4-byte salt,
      sequence numbers 1..COUNT (all distinct) (inbound input)
  gen_pcap.py espfast OUT.pcap SIZE COUNT SPI KEYHEX
      the same ESP frames (one SIZE), built without Scapy (AES-GCM from cryptography, about 100x
      faster) for captures of hundreds of thousands of distinct packets; UDP checksum 0

Needs Debian's python3 (scapy + cryptography): run with /usr/bin/python3.
"""
import struct
import sys

from scapy.all import Ether, IP, UDP, Raw, wrpcap
from scapy.layers.ipsec import ESP, SecurityAssociation

SRC_MAC, DST_MAC = "02:00:00:00:00:01", "01:00:5e:01:01:01"   # dst: IPv4 multicast MAC of 239.1.1.1
SRC_IP, DST_IP = "10.0.0.1", "239.1.1.1"
SPORT, DPORT = 40000, 5000


def datagram(size, i):
    # Distinct, non-trivial payload per packet (first 8 bytes = index).
    body = i.to_bytes(8, "big") + bytes((i + j) & 0xFF for j in range(max(0, size - 8)))
    return IP(src=SRC_IP, dst=DST_IP, ttl=64, id=i & 0xFFFF) / UDP(sport=SPORT, dport=DPORT) / Raw(body[:size])


def _csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def espfast(out, size, count, spi, key):
    """RFC 4106 ESP transport frames, sequence numbers 1..count, IV = sequence number."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    aead, salt = AESGCM(key[:-4]), key[-4:]
    mac = bytes.fromhex(DST_MAC.replace(":", "")) + bytes.fromhex(SRC_MAC.replace(":", "")) + b"\x08\x00"
    src, dst = bytes(map(int, SRC_IP.split("."))), bytes(map(int, DST_IP.split(".")))
    body_len = 8 + size + 2
    pad = (-body_len) % 4
    trailer = bytes(range(1, pad + 1)) + bytes((pad, 17))
    base = bytes(k & 0xFF for k in range(256 + max(0, size - 8)))  # datagram()'s body, sliced
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(count):
            seq = i + 1
            o = i & 0xFF
            body = (i.to_bytes(8, "big") + base[o:o + max(0, size - 8)])[:size]
            plain = struct.pack("!HHHH", SPORT, DPORT, 8 + size, 0) + body + trailer
            esp_hdr = struct.pack("!II", spi, seq)
            iv = seq.to_bytes(8, "big")
            ct = aead.encrypt(salt + iv, plain, esp_hdr)
            tot = 20 + 8 + 8 + len(ct)
            ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, i & 0xFFFF, 0x4000, 64, 50, 0, src, dst))
            ip[10:12] = struct.pack("!H", _csum(bytes(ip)))
            frame = mac + bytes(ip) + esp_hdr + iv + ct
            f.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)))
            f.write(frame)


def main(argv):
    if len(argv) >= 7 and argv[1] == "espfast":
        key = bytes.fromhex(argv[6].replace(":", ""))
        if len(key) not in (20, 36):
            sys.exit("KEYHEX must be a 16- or 32-byte AES key followed by a 4-byte salt")
        espfast(argv[2], int(argv[3]), int(argv[4]), int(argv[5], 0), key)
        return
    if len(argv) < 5 or argv[1] not in ("plain", "esp"):
        sys.exit(__doc__)
    kind, out, count = argv[1], argv[2], int(argv[4])
    sizes = [int(x) for x in argv[3].split(",")]
    pkts = []
    if kind == "plain":
        for i in range(count):
            pkts.append(Ether(src=SRC_MAC, dst=DST_MAC) / datagram(sizes[i % len(sizes)], i))
    else:
        spi, key = int(argv[5], 0), bytes.fromhex(argv[6].replace(":", ""))
        if len(key) not in (20, 36):
            sys.exit("KEYHEX must be a 16- or 32-byte AES key followed by a 4-byte salt")
        sa = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key)
        for i in range(count):
            p = sa.encrypt(datagram(sizes[i % len(sizes)], i), seq_num=i + 1)
            pkts.append(Ether(src=SRC_MAC, dst=DST_MAC) / p)
    wrpcap(out, pkts)


if __name__ == "__main__":
    main(sys.argv)
