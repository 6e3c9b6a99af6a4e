#!/bin/bash
# Ingest end to end with kernel applications on both sides. In namespace
# "app" kernel UDP sockets send datagrams to three groups through a TAP into
# keycast-send's --ingest-port; the sender enciphers each into the channel its
# destination group:port names and multicasts it over a bridge to
# keycast-recv, which delivers the plaintext into a TAP (--deliver port:1) in
# namespace "sink", where kernel sockets joined to the three groups receive
# them. Datagrams to a fourth group no channel has are counted
# ingest_no_channel and go nowhere.
#
# Asserts: every datagram arrives at its group's socket, byte for byte, with
# the sending application's UDP source port (and the channel's source
# address: the UDP checksum, which the kernel checks, is kept valid for it).
#
# usage: ingest_tap.sh BUILD_DIR/dataplane [DATAGRAMS_PER_GROUP]
# Needs root. Creates only its own namespaces, bridge and TAPs (names carry
# this shell's PID) and removes them on exit, even on failure.
set -euo pipefail
BIN=${1:?usage: ingest_tap.sh BIN_DIR [DATAGRAMS_PER_GROUP]}
PER=${2:-300}
PY=/usr/bin/python3
ID=$$
BR=kibr$ID
NS_APP=kcapp$ID
NS_SINK=kcsink$ID
T_IN=kiin$ID     # sender's ingest port (moved into $NS_APP)
T_TX=kitx$ID     # sender's TX port (on the bridge)
T_RX=kirx$ID     # receiver's RX port (on the bridge)
T_OUT=kiout$ID   # receiver's delivery port (moved into $NS_SINK)
WORK=$(mktemp -d /tmp/kc_ing.XXXXXX)
PIDS=()

cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  ip netns del "$NS_APP" 2>/dev/null || true
  ip netns del "$NS_SINK" 2>/dev/null || true
  for i in $T_TX $T_RX $BR; do ip link del "$i" 2>/dev/null || true; done
  rm -rf /var/run/dpdk/kc_ing_*_$ID
  if [ $rc -ne 0 ]; then
    echo "---- logs ($WORK) ----"
    for f in "$WORK"/*.log "$WORK"/*.json; do [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "FAIL: needs root (namespaces, TAP devices, bridge)"; exit 1; }

EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning --log-level=pmd.net.tap:error"
cat > "$WORK/channels.conf" <<EOF
21 239.9.0.21:6021 source=10.79.0.1 ttl=9
22 239.9.0.22:6022 source=10.79.0.1 ttl=9
23 239.9.0.23:6023 source=10.79.0.1 ttl=9
EOF
: > "$WORK/keys.txt"
for c in 21 22 23; do
  echo "$c $((5000 + c)) $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')" >> "$WORK/keys.txt"
done

ip netns add "$NS_APP"
ip netns add "$NS_SINK"
ip link add name "$BR" type bridge
ip link set "$BR" type bridge mcast_snooping 0
sysctl -qw "net.ipv6.conf.$BR.disable_ipv6=1" || true
ip link set "$BR" up

# Until DPDK has started the port (it sets the TAP up by name, so a TAP must
# not leave this namespace before that).
wait_link() {
  for _ in $(seq 1 200); do
    ip link show "$1" 2>/dev/null | grep -q '[<,]UP[,>]' && return 0
    sleep 0.05
  done
  echo "FAIL: $1 did not come up"; exit 1
}
to_bridge() {
  wait_link "$1"
  sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1" || true
  ip link set "$1" master "$BR"
  ip link set "$1" up
}
# into_ns IFACE NS ADDR: the TAP (its DPDK end keeps working) becomes the
# namespace's interface, with multicast routed through it.
into_ns() {
  wait_link "$1"
  ip link set "$1" netns "$2"
  ip -n "$2" link set lo up
  ip -n "$2" addr add "$3" dev "$1"
  ip -n "$2" link set "$1" up
  ip -n "$2" route add 224.0.0.0/4 dev "$1"
  ip netns exec "$2" sysctl -qw net.ipv4.conf.all.rp_filter=0 "net.ipv4.conf.$1.rp_filter=0"
}

"$BIN/keycast-recv" $EAL --file-prefix "kc_ing_r_$ID" -l 0,1 \
  --vdev "net_tap0,iface=$T_RX" --vdev "net_tap1,iface=$T_OUT" -- \
  --port 0 --deliver port:1 --channels "$WORK/channels.conf" --key-file "$WORK/keys.txt" \
  --idle-sleep-us 50 --duration 60 --stats-interval 0 --stats-json "$WORK/r.json" \
  > "$WORK/recv.log" 2>&1 &
PIDS+=($!)
PID_R=$!
to_bridge "$T_RX"
into_ns "$T_OUT" "$NS_SINK" 198.51.100.1/24

"$BIN/keycast-send" $EAL --file-prefix "kc_ing_s_$ID" -l 0,1 \
  --vdev "net_tap0,iface=$T_IN" --vdev "net_tap1,iface=$T_TX" -- \
  --port 1 --ingest-port 0 --channels "$WORK/channels.conf" --key-file "$WORK/keys.txt" \
  --idle-sleep-us 50 --stats-interval 0 --stats-json "$WORK/s.json" > "$WORK/send.log" 2>&1 &
PIDS+=($!)
PID_S=$!
to_bridge "$T_TX"
into_ns "$T_IN" "$NS_APP" 192.0.2.1/24

# The sink's sockets: one per group, joined on the delivery TAP; they write
# what they got (source address and port, payload digest) when idle for 3 s.
ip netns exec "$NS_SINK" $PY - "$WORK/got.json" > "$WORK/sink.log" 2>&1 <<'PYEOF' &
import json, select, socket, struct, sys, time, hashlib
groups = [("239.9.0.21", 6021), ("239.9.0.22", 6022), ("239.9.0.23", 6023)]
socks = []
for g, p in groups:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((g, p))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 struct.pack("4s4s", socket.inet_aton(g), socket.inet_aton("198.51.100.1")))
    socks.append((g, s))
open(sys.argv[1] + ".ready", "w").close()
got = {g: [] for g, _ in groups}
last = time.time()
while time.time() - last < 3:
    r, _, _ = select.select([s for _, s in socks], [], [], 0.2)
    for g, s in socks:
        if s in r:
            data, (src, sport) = s.recvfrom(65535)
            got[g].append([src, sport, hashlib.sha256(data).hexdigest(), len(data)])
            last = time.time()
json.dump(got, open(sys.argv[1], "w"))
PYEOF
PID_SINK=$!
for _ in $(seq 1 100); do [ -f "$WORK/got.json.ready" ] && break; sleep 0.05; done
[ -f "$WORK/got.json.ready" ] || { echo "FAIL: sink sockets not ready"; exit 1; }
sleep 1  # both DPDK processes polling

# The application: PER datagrams to each group from its own source port, and
# 20 to a group no channel carries.
ip netns exec "$NS_APP" $PY - "$WORK/sent.json" "$PER" <<'PYEOF'
import json, socket, sys, time, hashlib
per = int(sys.argv[2])
groups = [("239.9.0.21", 6021), ("239.9.0.22", 6022), ("239.9.0.23", 6023)]
socks = {}
for i, (g, p) in enumerate(groups + [("239.9.0.99", 6099)]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("192.0.2.1"))
    s.bind(("192.0.2.1", 41000 + i))
    socks[g] = (s, p)
sent = {g: [] for g, _ in groups}
for k in range(per):
    for g, p in groups:
        data = f"{g} datagram {k} ".encode() * (1 + k % 7)
        socks[g][0].sendto(data, (g, p))
        sent[g].append([socks[g][0].getsockname()[1], hashlib.sha256(data).hexdigest(), len(data)])
    if k < 20:
        socks["239.9.0.99"][0].sendto(b"for no channel", ("239.9.0.99", 6099))
    time.sleep(0.002)
json.dump(sent, open(sys.argv[1], "w"))
PYEOF
wait "$PID_SINK"
kill -INT "$PID_S" "$PID_R"
wait "$PID_S" || { echo "FAIL: sender exit $?"; exit 1; }
wait "$PID_R" || { echo "FAIL: receiver exit $?"; exit 1; }
PIDS=()

$PY - "$WORK" "$PER" <<'PYEOF'
import json, sys
work, per = sys.argv[1], int(sys.argv[2])
sent = json.load(open(f"{work}/sent.json"))
got = json.load(open(f"{work}/got.json"))
s = json.load(open(f"{work}/s.json"))
r = json.load(open(f"{work}/r.json"))
print(f"sender: ingest_rx={s['ingest_rx']} packets_sent={s['packets_sent']} "
      f"ingest_no_channel={s['ingest_no_channel']} ingest_bad={s['ingest_bad']}")
print(f"receiver: packets_ok={r['packets_ok']} auth_fail={r['auth_fail']} deliver_failed={r['deliver_failed']}")
fails = []
for g in sent:
    want = sent[g]
    have = got.get(g, [])
    print(f"{g}: sent {len(want)}, received {len(have)}")
    if len(have) != len(want):
        fails.append(f"{g}: received {len(have)} of {len(want)}")
    for w, h in zip(want, have):
        if h[0] != "10.79.0.1" or h[1] != w[0] or h[2] != w[1] or h[3] != w[2]:
            fails.append(f"{g}: got {h}, sent {w}")
            break
if s["packets_sent"] != 3 * per:
    fails.append(f"sender: packets_sent {s['packets_sent']} != {3 * per}")
if s["ingest_no_channel"] < 20:
    fails.append(f"sender: ingest_no_channel {s['ingest_no_channel']} < 20")
if r["packets_ok"] != 3 * per or r["deliver_failed"] != 0:
    fails.append(f"receiver: packets_ok {r['packets_ok']}, deliver_failed {r['deliver_failed']}")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS: every datagram delivered byte for byte with its source port")
PYEOF
