#!/bin/bash
# IGMP on a switch that snoops: a Linux bridge with IGMP snooping and its own
# querier (v2 or v3), and on every receiver port mcast_flood off, so that a
# group reaches a port only once that port has joined it (as on a snooping
# switch). One keycast-send carries 3 channels; keycast-recv r1 takes
# channels 1-3, r2 channels 1-2, joining with IGMP. Then:
#   - the bridge's mdb lists each receiver's port for exactly its groups while
#     it runs, a receiver with --igmp off for none, and that one gets nothing;
#   - r1 gets every packet of its channels; every receiver hears the querier
#     and answers it (v2 reports while the querier is v2: igmp_v2_mode);
#   - r3 joins mid-stream: listed within 2 s, receiving from then on, no hole;
#   - r2 stops mid-stream: its leave removes its entries, r1's stay, r1 loses
#     nothing; r1 stops: its entries go;
#   - malformed IGMP frames (short, bad checksum, huge source lists) reaching a
#     receiver are counted and ignored.
#
# usage: igmp_snoop.sh BUILD_DIR/dataplane IGMP_VERSION(2|3)
# Needs root. Creates only its own bridge and TAPs and removes them on exit.
set -euo pipefail
BIN=${1:?usage: igmp_snoop.sh BIN_DIR 2|3}
VER=${2:?usage: igmp_snoop.sh BIN_DIR 2|3}
PY=/usr/bin/python3
ID=$$
BR=kgbr$ID
WORK=$(mktemp -d /tmp/kc_igmp.XXXXXX)
PIDS=()
TAPS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  for i in "${TAPS[@]:-}" "$BR"; do [ -n "$i" ] && ip link del "$i" 2>/dev/null || true; done
  rm -rf /var/run/dpdk/kc_igmp_*_$ID
  if [ $rc -ne 0 ]; then
    echo "---- logs ($WORK) ----"
    for f in "$WORK"/*.log "$WORK"/*.json "$WORK"/mdb*; do [ -f "$f" ] && { echo "== $f"; tail -n 25 "$f"; }; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM
[ "$(id -u)" = 0 ] || { echo "FAIL: needs root (TAP devices, bridge)"; exit 1; }

EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning --log-level=pmd.net.tap:error"
printf '1 239.45.0.1:5001\n2 239.45.0.2:5002\n3 239.45.0.3:5003\n' > "$WORK/all.conf"
head -2 "$WORK/all.conf" > "$WORK/r2.conf"
: > "$WORK/keys.txt"
for c in 1 2 3; do echo "$c $((700 + c)) $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')" >> "$WORK/keys.txt"; done

# Querier every 2 s (centiseconds), answers within 1 s; v2 or v3 as asked.
# The querier is enabled after the intervals are set: enabling it starts a
# wait of one (then current) response interval before the bridge trusts its
# mdb, and until then it floods - to no receiver port here.
ip link add name "$BR" type bridge
ip link set "$BR" type bridge mcast_snooping 1 mcast_igmp_version "$VER" \
  mcast_query_interval 200 mcast_query_response_interval 100 mcast_startup_query_interval 50 \
  mcast_membership_interval 2000
ip link set "$BR" type bridge mcast_querier 1
sysctl -qw "net.ipv6.conf.$BR.disable_ipv6=1" || true
ip link set "$BR" up

attach() {  # attach IFACE [receiver]: on the bridge; receiver ports get no flooded multicast
  for _ in $(seq 1 200); do ip link show "$1" >/dev/null 2>&1 && break; sleep 0.05; done
  ip link show "$1" >/dev/null 2>&1 || { echo "FAIL: $1 did not appear"; exit 1; }
  sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1" || true
  ip link set "$1" txqueuelen 10000
  ip link set "$1" master "$BR"
  [ "${2:-}" = receiver ] && bridge link set dev "$1" mcast_flood off
  ip link set "$1" up
}
start_recv() {  # start_recv TAG MAIN_LCORE options...
  local tag=$1 main=$2; shift 2
  local ifc=kg${tag}$ID
  TAPS+=("$ifc")
  "$BIN/keycast-recv" $EAL --file-prefix "kc_igmp_${tag}_$ID" -l 0,1 --main-lcore "$main" \
    --vdev "net_tap0,iface=$ifc" -- --key-file "$WORK/keys.txt" --deliver verify \
    --local-ip 10.45.0.$((RANDOM % 200 + 2)) --idle-sleep-us 50 --duration 120 --stats-interval 0 \
    --stats-json "$WORK/$tag.json" "$@" > "$WORK/$tag.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$tag=$!"
  attach "$ifc" receiver
}
mdb_groups() {  # mdb_groups IFACE: the groups the bridge forwards to that port, sorted
  bridge mdb show dev "$BR" | awk -v p="$1" '$4 == p && $6 ~ /^2/ { print $6 }' | sort | tr '\n' ' '
}
wait_mdb() {  # wait_mdb IFACE "GROUPS" SECONDS
  for _ in $(seq 1 $(($3 * 10))); do [ "$(mdb_groups "$1")" = "$2" ] && return 0; sleep 0.1; done
  echo "FAIL: mdb of $1 is '$(mdb_groups "$1")', expected '$2'"; bridge mdb show > "$WORK/mdb.txt"; exit 1
}

PER=6000  # packets per channel, 1,000 per second each
start_recv r1 0 --channels "$WORK/all.conf" --expect "$PER"
start_recv r2 1 --channels "$WORK/r2.conf" --verify-from-first
start_recv off 0 --channels "$WORK/all.conf" --igmp off
# The receivers have joined before anything is sent.
wait_mdb "kgr1$ID" "239.45.0.1 239.45.0.2 239.45.0.3 " 10
wait_mdb "kgr2$ID" "239.45.0.1 239.45.0.2 " 10
echo "mdb while running: r1: $(mdb_groups kgr1$ID)| r2: $(mdb_groups kgr2$ID)| igmp off: '$(mdb_groups kgoff$ID)'"
bridge mdb show dev "$BR" | grep -v ff02 > "$WORK/mdb_running.txt" || true

sleep 1.5  # past the querier's start-up wait
TAPS+=("kgs$ID")
"$BIN/keycast-send" $EAL --file-prefix "kc_igmp_s_$ID" -l 0,1 --main-lcore 1 --vdev "net_tap0,iface=kgs$ID" -- \
  --key-file "$WORK/keys.txt" --channels "$WORK/all.conf" --rate 1000 --count "$PER" --payload-size 200 \
  --idle-sleep-us 100 --start-delay-ms 2000 --stats-interval 0 --stats-json "$WORK/s.json" > "$WORK/s.log" 2>&1 &
PIDS+=($!)
PID_s=$!
attach "kgs$ID"
sleep 2
# r3 joins mid-stream.
start_recv r3 0 --channels "$WORK/r2.conf" --verify-from-first
wait_mdb "kgr3$ID" "239.45.0.1 239.45.0.2 " 2
sleep 1
# r2 leaves mid-stream: its entries go, r1's stay.
kill -INT "$PID_r2"
wait "$PID_r2" || { echo "FAIL: r2 exit $?"; exit 1; }
wait_mdb "kgr2$ID" "" 6
echo "after r2's leave: r2: '$(mdb_groups kgr2$ID)', r1: $(mdb_groups kgr1$ID)"
[ "$(mdb_groups kgr1$ID)" = "239.45.0.1 239.45.0.2 239.45.0.3 " ] || { echo "FAIL: r1's entries went with r2's"; exit 1; }
wait "$PID_s" || { echo "FAIL: sender exit $?"; exit 1; }
sleep 1
for p in "$PID_r1" "$PID_r3" "$PID_off"; do kill -INT "$p"; done
for p in "$PID_r1" "$PID_r3" "$PID_off"; do wait "$p" || { echo "FAIL: receiver exit $?"; exit 1; }; done
PIDS=()
wait_mdb "kgr1$ID" "" 6
echo "after r1's leave: r1: '$(mdb_groups kgr1$ID)'"

# Malformed IGMP reaching a receiver (here from a capture): counted, ignored.
$PY - "$WORK/bad.pcap" <<'PYEOF'
import struct, sys
from scapy.all import Ether, IP, Raw, wrpcap
from scapy.contrib.igmp import IGMP
from scapy.contrib.igmpv3 import IGMPv3, IGMPv3mq
good = Ether(dst="01:00:5e:00:00:01") / IP(dst="224.0.0.1", ttl=1) / IGMP(type=0x11, mrcode=10, gaddr="0.0.0.0")
frames = [
    Ether(dst="01:00:5e:00:00:01") / IP(dst="224.0.0.1", ttl=1, proto=2) / Raw(b"\x11\x0a"),       # short
    Ether(dst="01:00:5e:00:00:01") / IP(dst="224.0.0.1", ttl=1, proto=2) / Raw(b"\x11\x0a\x12\x34\0\0\0\0"),  # bad checksum
    # v3 query claiming 65,535 sources in 16 bytes
    Ether(dst="01:00:5e:00:00:01") / IP(dst="224.0.0.1", ttl=1) / IGMPv3(type=0x11, mrcode=10) / IGMPv3mq(numsrc=65535, srcaddrs=["10.0.0.1"]),
    good,
]
wrpcap(sys.argv[1], frames)
PYEOF
"$BIN/keycast-recv" $EAL --file-prefix "kc_igmp_b_$ID" -l 0,1 \
  --vdev "net_pcap0,rx_pcap=$WORK/bad.pcap,tx_pcap=$WORK/bad_out.pcap" -- --key-file "$WORK/keys.txt" \
  --channels "$WORK/all.conf" --idle-exit 1 --stats-interval 0 --stats-json "$WORK/bad.json" > "$WORK/bad.log" 2>&1

$PY - "$WORK" "$VER" <<'PYEOF'
import json, sys
work, ver = sys.argv[1], int(sys.argv[2])
j = lambda t: json.load(open(f"{work}/{t}.json"))
r1, r2, r3, off, bad = j("r1"), j("r2"), j("r3"), j("off"), j("bad")
fails = []
def need(c, w):
    if not c:
        fails.append(w)
s = j("s")
for t, r in (("r1", r1), ("r2", r2), ("r3", r3), ("off", off)):
    print(f"{t}: packets_ok={r['packets_ok']} lost={r['lost']} per channel {[c['packets_ok'] for c in r['channels']]} "
          + (f"igmp_queries={r['igmp_queries']} igmp_reports_sent={r['igmp_reports_sent']} "
             f"igmp_v2_mode={r['igmp_v2_mode']} not_esp={r['drops']['not_esp']}" if t != "off" else ""))
    if t == "off":
        continue
    need(r["igmp_queries"] >= 1, f"{t}: no query seen")
    need(r["igmp_reports_sent"] >= 3, f"{t}: {r['igmp_reports_sent']} reports (joins, answers, leave)")
    need(r["igmp_v2_mode"] == (1 if ver == 2 else 0), f"{t}: igmp_v2_mode {r['igmp_v2_mode']} with a v{ver} querier")
    need(r["drops"]["not_esp"] == 0, f"{t}: IGMP counted as not_esp")
per = s["packets_sent"] // 3
need(s["packets_sent"] == 3 * per and per > 0, f"sender: {s['packets_sent']}")
need(r1["packets_ok"] == 3 * per and r1["lost"] == 0 and r1["duplicated"] == 0,
     f"r1: packets_ok {r1['packets_ok']} lost {r1['lost']} (every packet of its 3 channels expected)")
need(all(c["packets_ok"] > 0 for c in r2["channels"]) and r2["lost"] == 0 and r2["duplicated"] == 0,
     "r2: not a gap-free stream up to its leave")
need(all(c["packets_ok"] > 0 for c in r3["channels"]) and r3["lost"] == 0,
     f"r3 (joined mid-stream): {[c['packets_ok'] for c in r3['channels']]}, lost {r3['lost']}")
need(off["packets_ok"] == 0 and off["rx_packets"] < 100, f"--igmp off received {off['packets_ok']} (rx {off['rx_packets']})")
need("igmp_queries" not in off, "--igmp off still ran IGMP")
print(f"bad: igmp_rx={bad['igmp_rx']} igmp_malformed={bad['igmp_malformed']} igmp_queries={bad['igmp_queries']}")
need(bad["igmp_rx"] == 4 and bad["igmp_malformed"] == 3 and bad["igmp_queries"] == 1, "malformed IGMP not counted as such")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print(f"PASS (IGMPv{ver} querier)")
PYEOF
cat "$WORK/mdb_running.txt"
