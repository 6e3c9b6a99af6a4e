#!/bin/bash
# End to end on TAP: keycast-send and two keycast-recv processes on net_tap
# devices joined by a Linux bridge. 100,000 packets across >= 5 key rotations,
# --deliver verify on both receivers: lost = duplicated = corrupted =
# auth_fail = 0, every packet delivered, both receivers see every key. The
# second receiver runs in --key-window mode (keys installed from the in-band
# notices through the control thread's event ring, previous keys retired).
#
# usage: e2e_tap.sh BUILD_DIR/dataplane [PACKETS] [RATE] [ROTATE_MS]
# Needs root and /dev/net/tun. Creates only its own bridge and TAPs (names
# carry this shell's PID) and removes them on exit, even on failure.
set -euo pipefail
BIN=${1:?usage: e2e_tap.sh BIN_DIR [PACKETS] [RATE] [ROTATE_MS]}
PACKETS=${2:-100000}
RATE=${3:-25000}
ROTATE_MS=${4:-600}
PY=/usr/bin/python3

ID=$$
BR=kcbr$ID
TS=kcs$ID
TR1=kcra$ID
TR2=kcrb$ID
WORK=$(mktemp -d /tmp/kc_e2e.XXXXXX)
PIDS=()

cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  for i in $TS $TR1 $TR2 $BR; do ip link del "$i" 2>/dev/null || true; done
  rm -rf /var/run/dpdk/kc_e2e_*_$ID
  if [ $rc -ne 0 ]; then
    echo "---- logs ($WORK) ----"
    for f in "$WORK"/*.log "$WORK"/*.json; do [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "FAIL: needs root (TAP devices, bridge)"; exit 1; }
[ -c /dev/net/tun ] || { echo "FAIL: /dev/net/tun missing"; exit 1; }

# Key file: 10 random AES-128-GCM keys (key || salt).
for spi in $(seq 4096 4105); do
  echo "$spi $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"
done > "$WORK/keys.txt"

ip link add name "$BR" type bridge
ip link set "$BR" type bridge mcast_snooping 0
sysctl -qw "net.ipv6.conf.$BR.disable_ipv6=1" || true
ip link set "$BR" up

EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning --log-level=pmd.net.tap:warning"

# Attach a TAP created by a DPDK process to the bridge as soon as it exists.
attach() {
  local ifc=$1
  for _ in $(seq 1 200); do
    ip link show "$ifc" >/dev/null 2>&1 && break
    sleep 0.05
  done
  ip link show "$ifc" >/dev/null 2>&1 || { echo "FAIL: $ifc did not appear"; exit 1; }
  sysctl -qw "net.ipv6.conf.$ifc.disable_ipv6=1" || true
  ip link set "$ifc" txqueuelen 10000
  ip link set "$ifc" master "$BR"
  ip link set "$ifc" up
}

start_recv() {
  local tag=$1 ifc=$2 main=$3; shift 3
  "$BIN/keycast-recv" $EAL --file-prefix "kc_e2e_${tag}_$ID" -l 0,1 --main-lcore "$main" \
    --vdev "net_tap0,iface=$ifc" -- \
    --key-file "$WORK/keys.txt" --group 239.7.7.7:6000 --deliver verify --expect "$PACKETS" \
    --replay-window 4096 --idle-sleep-us 50 --duration 300 --stats-interval 2 \
    --stats-json "$WORK/$tag.json" "$@" > "$WORK/$tag.log" 2>&1 &
  PIDS+=($!)
}

# r1 holds every key of the file; r2 holds only previous/current/next and
# installs each next key when the in-band notice announces it (the path a
# KMS-fed client takes), dropping the previous one after the grace period.
start_recv r1 "$TR1" 0
start_recv r2 "$TR2" 1 --key-window --grace-ms 300
attach "$TR1"
attach "$TR2"

"$BIN/keycast-send" $EAL --file-prefix "kc_e2e_s_$ID" -l 0,1 --vdev "net_tap0,iface=$TS" -- \
  --key-file "$WORK/keys.txt" --group 239.7.7.7:6000 --source 10.77.0.1 \
  --rotate-ms "$ROTATE_MS" --notice-lead-ms 150 --rate "$RATE" --count "$PACKETS" \
  --payload-size 256 --idle-sleep-us 100 --start-delay-ms 2000 --stats-interval 2 \
  --stats-json "$WORK/send.json" > "$WORK/send.log" 2>&1 &
SPID=$!
PIDS+=($SPID)
attach "$TS"
wait "$SPID"
echo "sender finished: $(tail -n 1 "$WORK/send.log")"
# Let the receivers drain, then stop them the way an operator would (SIGINT).
sleep 2
for p in "${PIDS[@]:0:2}"; do kill -INT "$p"; done
for p in "${PIDS[@]:0:2}"; do wait "$p"; done
PIDS=()
tail -n 1 "$WORK/r1.log"
tail -n 1 "$WORK/r2.log"

$PY - "$WORK" "$PACKETS" <<'PYEOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
s = json.load(open(f"{work}/send.json"))
fails = []
def need(cond, what):
    if not cond:
        fails.append(what)
need(s["packets_sent"] == n, f"sender packets_sent {s['packets_sent']} != {n}")
need(s["key_switches"] >= 5, f"sender key_switches {s['key_switches']} < 5")
need(s["spis_used"] == s["key_switches"] + 1, "sender spis_used != key_switches + 1")
for tag in ("r1", "r2"):
    r = json.load(open(f"{work}/{tag}.json"))
    print(f"{tag}: packets_ok={r['packets_ok']} lost={r['lost']} duplicated={r['duplicated']} "
          f"corrupted={r['corrupted']} auth_fail={r['auth_fail']} replay={r['replay']} "
          f"key_switches={r['key_switches']} spis_seen={r['spis_seen']} notices={r['notices']} "
          f"not_ipv4={r['drops']['not_ipv4']}")
    need(r["packets_ok"] == n, f"{tag}: packets_ok {r['packets_ok']} != {n}")
    for k in ("lost", "duplicated", "corrupted", "auth_fail", "unknown_spi", "replay", "malformed"):
        need(r[k] == 0, f"{tag}: {k} = {r[k]}")
    need(r["key_switches"] == s["key_switches"], f"{tag}: key_switches {r['key_switches']} != sender's")
    need(r["spi_list"] == s["spi_list"], f"{tag}: SPIs {r['spi_list']} != sender's {s['spi_list']}")
    need(r["notices"] >= s["key_switches"], f"{tag}: notices {r['notices']} < key switches")
    need(r["bytes_ok"] == s["bytes_sent"], f"{tag}: bytes_ok != sender bytes_sent")
    if tag == "r2":
        need(r["keys_fetched"] >= s["key_switches"] - 1,
             f"r2: keys_fetched {r['keys_fetched']}: next keys not installed from notices")
print(f"sender: packets_sent={s['packets_sent']} key_switches={s['key_switches']} "
      f"spis_used={s['spis_used']} duration_s={s['duration_s']:.2f}")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS")
PYEOF
