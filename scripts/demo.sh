#!/usr/bin/env bash
# keycast demo (interim: the foundation only). Builds keycast, enciphers a
# stream of multicast datagrams into a capture with keycast's ESP/AES-GCM
# code, then has Wireshark's own dissector decipher it with the keys, and
# prints the measured cost of keycast's ESP against the IPsec-MB floor.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
k1=$(openssl rand -hex 20); k2=$(openssl rand -hex 20)
printf '4096 %s\n4097 %s\n' "$k1" "$k2" > "$tmp/keys"
build/tests/common/esp_tool build "$tmp/keys" "$tmp/stream.pcap" 1000 0xfffffe00
echo "== enciphered 1000 datagrams under 2 keys (SPI 4096, 4097) into $tmp/stream.pcap"
mkdir -p "$tmp/home/.config/wireshark"
for pair in "0x00001000 $k1" "0x00001001 $k2"; do
  set -- $pair
  echo "\"IPv4\",\"*\",\"*\",\"$1\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x$2\",\"NULL\",\"\""
done > "$tmp/home/.config/wireshark/esp_sa"
echo "== tshark deciphers it with the keys (first 5 frames):"
HOME="$tmp/home" tshark -r "$tmp/stream.pcap" -o esp.enable_encryption_decode:TRUE -c 5 2>/dev/null
n=$(HOME="$tmp/home" tshark -r "$tmp/stream.pcap" -o esp.enable_encryption_decode:TRUE -Y udp.dstport==5000 2>/dev/null | wc -l)
echo "== tshark found $n of 1000 frames deciphered to UDP port 5000"
echo "== ESP cost next to the IPsec-MB AES-128-GCM floor:"
build/bench/bench_crypto --benchmark_filter='aes128gcm' --benchmark_min_time=0.2 2>/dev/null |
  awk '/^BM_/ {printf "  %-32s %8s ns  %s\n", $1, $2, $NF}'
