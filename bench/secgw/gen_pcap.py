#!/usr/bin/python3
"""Write input captures for the ipsec-secgw baseline.

  gen_pcap.py plain OUT.pcap SIZE COUNT
      plaintext Ether/IPv4/UDP to 239.1.1.1:5000 carrying SIZE payload bytes (outbound input);
      SIZE may be a comma-separated list: the frames then cycle through those sizes
  gen_pcap.py esp OUT.pcap SIZE COUNT SPI KEYHEX
      the same datagrams, ESP transport mode, AES-GCM (16-byte ICV), KEYHEX = key || 4-byte salt,
      sequence numbers 1..COUNT (all distinct) (inbound input)

Needs Debian's python3 (scapy + cryptography): run with /usr/bin/python3.
"""
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


def main(argv):
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
