#!/usr/bin/env bash
# tshark (Wireshark's ESP dissector, an independent AES-GCM ESP decoder) deciphers
# keycast frames given the keys as esp_sa UAT lines, the form `keycast-ctl
# wireshark-keys` prints: every frame must decode to UDP 4000->5000 carrying
# exactly the payload keycast enciphered.
#
# Limit, stated rather than hidden: Wireshark 4.0 (Debian 12) neither checks
# GCM ICVs ("[unchecked]") nor models ESN, so this test proves decipherment
# and framing; authentication is proven by the Scapy interop test.
set -euo pipefail
tool=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
k128=000102030405060708090a0b0c0d0e0fa0a1a2a3
k256=101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2fb0b1b2b3
printf '4097 %s\n4098 %s\n' "$k128" "$k256" > "$tmp/keys"
count=60
"$tool" build "$tmp/keys" "$tmp/c.pcap" $count 0xffffffe0
sa() { echo "\"IPv4\",\"*\",\"*\",\"$1\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x$2\",\"NULL\",\"\""; }
mkdir -p "$tmp/home/.config/wireshark"
{ sa 0x00001001 $k128; sa 0x00001002 $k256; } > "$tmp/home/.config/wireshark/esp_sa"
HOME="$tmp/home" tshark -r "$tmp/c.pcap" -o esp.enable_encryption_decode:TRUE \
  -T fields -E separator=, -e esp.spi -e udp.srcport -e udp.dstport -e udp.length -e udp.payload \
  2>/dev/null > "$tmp/out"
/usr/bin/python3 - "$tmp/out" $count <<'PY'
import sys
sizes = [0, 1, 2, 3, 4, 5, 64, 255, 256, 512, 1024, 1400, 1458]
lines = open(sys.argv[1]).read().splitlines()
count = int(sys.argv[2])
bad = []
if len(lines) != count:
    bad.append(f"{len(lines)} frames decoded, expected {count}")
for k, line in enumerate(lines):
    spi, sport, dport, ulen, payload = (line.split(",") + [""] * 5)[:5]
    size = sizes[k % len(sizes)]
    want = bytes(((k * 31 + i) & 0xFF) for i in range(size)).hex()
    spi_want = "0x00001001" if k % 2 == 0 else "0x00001002"
    if (spi, sport, dport, ulen) != (spi_want, "4000", "5000", str(8 + size)) or payload.replace(":", "") != want:
        bad.append(f"frame {k}: {line[:80]}")
print("\n".join(bad[:20]) or f"tshark deciphered all {count} frames (AES-128 and AES-256, ESN carry)")
sys.exit(1 if bad else 0)
PY
