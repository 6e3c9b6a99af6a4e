#!/bin/bash
# 802.1Q on both binaries. This kernel has neither VLAN filtering in its
# bridge nor 8021q interfaces, so it cannot be the VLAN-aware peer: a plain
# bridge carries the tagged frames as a trunk would (it floods them), and
# tshark and Scapy check the tags and the ESP inside them. keycast-send
# --vlan 301 --vlan-pcp 4 carries 2 channels; then:
#   - r301 (--vlan 301) gets every packet; r302 (--vlan 302) and notag (no
#     --vlan) deliver nothing and count every data frame wrong_vlan;
#   - tshark on the bridge reads every ESP frame as VLAN 301 priority 4, and
#     the IGMP reports of r301, r302 and notag as tagged 301, tagged 302 and
#     untagged; Scapy deciphers every ESP frame captured there;
#   - Scapy-built ESP frames tagged 301 (and 302, untagged, stacked QinQ ones)
#     read from a capture by keycast-recv --vlan 301: exactly the 301 ones
#     delivered, the rest counted wrong_vlan.
#
# usage: vlan_test.sh BUILD_DIR/dataplane
# Needs root. Creates only its own bridge and TAPs and removes them on exit.
set -euo pipefail
BIN=${1:?usage: vlan_bridge.sh BIN_DIR}
PY=/usr/bin/python3
ID=$$
BR=kvbr$ID
WORK=$(mktemp -d /tmp/kc_vlan.XXXXXX)
PIDS=()
TAPS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  for i in "${TAPS[@]:-}" "$BR"; do [ -n "$i" ] && ip link del "$i" 2>/dev/null || true; done
  rm -rf /var/run/dpdk/kc_vlan_*_$ID
  if [ $rc -ne 0 ]; then
    echo "---- logs ($WORK) ----"
    for f in "$WORK"/*.log "$WORK"/*.json "$WORK"/*.txt; do [ -f "$f" ] && { echo "== $f"; tail -n 25 "$f"; }; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM
[ "$(id -u)" = 0 ] || { echo "FAIL: needs root (TAP devices, bridge)"; exit 1; }

EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning --log-level=pmd.net.tap:error"
printf '1 239.46.0.1:5001\n2 239.46.0.2:5002\n' > "$WORK/ch.conf"
: > "$WORK/keys.txt"
for c in 1 2; do echo "$c $((800 + c)) $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')" >> "$WORK/keys.txt"; done

ip link add name "$BR" type bridge
ip link set "$BR" type bridge mcast_snooping 0
sysctl -qw "net.ipv6.conf.$BR.disable_ipv6=1" || true
ip link set "$BR" up

attach() {  # attach IFACE: on the bridge
  for _ in $(seq 1 200); do ip link show "$1" >/dev/null 2>&1 && break; sleep 0.05; done
  ip link show "$1" >/dev/null 2>&1 || { echo "FAIL: $1 did not appear"; exit 1; }
  sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1" || true
  ip link set "$1" txqueuelen 10000
  ip link set "$1" master "$BR"
  ip link set "$1" up
}
start_recv() {  # start_recv TAG MAIN_LCORE options...
  local tag=$1 main=$2; shift 2
  local ifc=kv${tag}$ID
  TAPS+=("$ifc")
  "$BIN/keycast-recv" $EAL --file-prefix "kc_vlan_${tag}_$ID" -l 0,1 --main-lcore "$main" \
    --vdev "net_tap0,iface=$ifc" -- --key-file "$WORK/keys.txt" --channels "$WORK/ch.conf" \
    --deliver verify --local-ip 10.46.0.$((RANDOM % 200 + 2)) --idle-sleep-us 50 --duration 120 \
    --stats-interval 0 --stats-json "$WORK/$tag.json" "$@" > "$WORK/$tag.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$tag=$!"
  attach "$ifc"
}

PER=4000  # packets per channel, 1,000 per second each
# Everything the bridge floods, which reaches its own interface too: the
# receivers' reports from their first, and the sender's frames.
timeout 90 tshark -q -i "$BR" -w "$WORK/br.pcapng" > "$WORK/tshark.log" 2>&1 &
TSHARK=$!
for _ in $(seq 1 100); do grep -q "Capturing on" "$WORK/tshark.log" && break; sleep 0.1; done
start_recv r301 0 --vlan 301 --expect "$PER"
start_recv r302 1 --vlan 302
start_recv notag 0

TAPS+=("kvs$ID")
# The sender's TAP joins the bridge only once it exists (attach below): the
# start delay covers that on a loaded machine, so no frame is sent into a
# TAP that is not on the bridge yet.
"$BIN/keycast-send" $EAL --file-prefix "kc_vlan_s_$ID" -l 0,1 --main-lcore 1 --vdev "net_tap0,iface=kvs$ID" -- \
  --key-file "$WORK/keys.txt" --channels "$WORK/ch.conf" --vlan 301 --vlan-pcp 4 --rate 1000 --count "$PER" \
  --payload-size 200 --idle-sleep-us 100 --start-delay-ms 2000 --stats-interval 0 --stats-json "$WORK/s.json" \
  > "$WORK/s.log" 2>&1 &
PIDS+=($!)
PID_s=$!
attach "kvs$ID"
wait "$PID_s" || { echo "FAIL: sender exit $?"; exit 1; }
sleep 1
for p in "$PID_r301" "$PID_r302" "$PID_notag"; do kill -INT "$p"; done
for p in "$PID_r301" "$PID_r302" "$PID_notag"; do wait "$p" || { echo "FAIL: receiver exit $?"; exit 1; }; done
PIDS=()
sleep 0.5  # the leaves reach the capture
kill -INT "$TSHARK" 2>/dev/null || true
wait "$TSHARK" 2>/dev/null || true

# What tshark reads on the bridge: VLAN id and priority of the ESP frames, and each IGMPv3 report's VLAN.
tshark -r "$WORK/br.pcapng" -Y esp -T fields -e vlan.id -e vlan.priority 2>/dev/null | sort | uniq -c > "$WORK/esp_vlan.txt"
tshark -r "$WORK/br.pcapng" -Y "igmp.type == 0x22" -T fields -e vlan.id 2>/dev/null | sort | uniq -c > "$WORK/igmp_vlan.txt"
echo "tshark on the bridge: ESP (count vlan priority): $(tr '\n' ';' < "$WORK/esp_vlan.txt") IGMPv3 reports (count vlan): $(tr '\n' ';' < "$WORK/igmp_vlan.txt")"
tshark -r "$WORK/br.pcapng" -Y esp -w "$WORK/br_esp.pcap" -F pcap 2>/dev/null
$PY "$(dirname "$0")/esp_tool.py" decrypt "$WORK/br_esp.pcap" "$WORK/keys.txt" > "$WORK/scapy.json" \
  || { echo "FAIL: Scapy could not decipher the tagged frames: $(cat "$WORK/scapy.json")"; exit 1; }
echo "Scapy on the tagged capture: $(cat "$WORK/scapy.json")"

# Scapy-built tagged frames from a capture: only VLAN 301's are delivered.
$PY - "$(dirname "$0")" "$WORK/keys.txt" "$WORK/built.pcap" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
import esp_tool
from scapy.all import Ether, Dot1Q, Dot1AD, wrpcap
keys = esp_tool.load_keys(sys.argv[2])
spi = 801
sa = esp_tool.sa_for(spi, keys[spi])
frames, seq = [], 1
def esp(i):
    global seq
    f = esp_tool.esp_frame(sa, "239.46.0.1", 5001, seq, esp_tool.pattern(i, 100))
    seq += 1
    return f
def tag(f, vlan, prio=0, outer=None):
    inner = Dot1Q(vlan=vlan, prio=prio) / f.payload
    if outer is not None:
        inner = Dot1AD(vlan=outer) / inner
    return Ether(dst=f.dst, src=f.src) / inner
for i in range(200):
    frames.append(tag(esp(i), 301, prio=i % 8))
for i in range(200, 205):
    frames.append(tag(esp(i), 302))
for i in range(205, 210):
    frames.append(esp(i))
for i in range(210, 213):
    frames.append(tag(esp(i), 301, outer=100))
wrpcap(sys.argv[3], frames)
PYEOF
"$BIN/keycast-recv" $EAL --file-prefix "kc_vlan_p_$ID" -l 0,1 \
  --vdev "net_pcap0,rx_pcap=$WORK/built.pcap,tx_pcap=$WORK/built_out.pcap" -- --key-file "$WORK/keys.txt" \
  --channels "$WORK/ch.conf" --vlan 301 --igmp off --deliver verify --idle-exit 1 --stats-interval 0 \
  --stats-json "$WORK/built.json" > "$WORK/built.log" 2>&1

$PY - "$WORK" "$PER" <<'PYEOF'
import json, sys
work, per = sys.argv[1], int(sys.argv[2])
j = lambda t: json.load(open(f"{work}/{t}.json"))
s, r301, r302, notag, built = j("s"), j("r301"), j("r302"), j("notag"), j("built")
fails = []
def need(c, w):
    if not c:
        fails.append(w)
for t, r in (("r301", r301), ("r302", r302), ("notag", notag)):
    print(f"{t}: rx={r['rx_packets']} packets_ok={r['packets_ok']} lost={r['lost']} "
          f"wrong_vlan={r['drops']['wrong_vlan']} igmp_reports_sent={r['igmp_reports_sent']}")
need(s["packets_sent"] == 2 * per, f"sender: {s['packets_sent']} of {2 * per}")
need(r301["packets_ok"] == 2 * per and r301["lost"] == 0 and r301["duplicated"] == 0,
     f"r301: packets_ok {r301['packets_ok']} lost {r301['lost']} (every packet expected)")
need(r301["drops"]["wrong_vlan"] < 50, f"r301: wrong_vlan {r301['drops']['wrong_vlan']} (only other receivers' reports)")
for t, r in (("r302", r302), ("notag", notag)):
    need(r["packets_ok"] == 0 and r["drops"]["wrong_vlan"] >= 2 * per,
         f"{t}: packets_ok {r['packets_ok']} wrong_vlan {r['drops']['wrong_vlan']} (all {2 * per} expected wrong_vlan)")
esp = [l.split() for l in open(f"{work}/esp_vlan.txt") if l.strip()]
need(len(esp) == 1 and esp[0][1:] == ["301", "4"] and int(esp[0][0]) >= 2 * per,
     f"tshark: ESP frames on the bridge not all VLAN 301 priority 4: {esp}")
igmp = {(l.split()[1] if len(l.split()) > 1 else "untagged") for l in open(f"{work}/igmp_vlan.txt") if l.strip()}
need(igmp == {"301", "302", "untagged"}, f"tshark: IGMP reports by VLAN {sorted(igmp)}, expected 301, 302 and untagged")
sc = json.load(open(f"{work}/scapy.json"))
need(sc["authenticated"] == sc["esp"] and sc["data"] >= 2 * per, f"Scapy: {sc}")
print(f"built: packets_ok={built['packets_ok']} wrong_vlan={built['drops']['wrong_vlan']} auth_fail={built['auth_fail']}")
need(built["packets_ok"] == 200 and built["drops"]["wrong_vlan"] == 13 and built["auth_fail"] == 0,
     "Scapy-built tagged frames: 200 of VLAN 301 delivered, 13 others wrong_vlan expected")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS")
PYEOF
