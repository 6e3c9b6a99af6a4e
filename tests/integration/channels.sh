#!/bin/bash
# Many channels in one process, end to end through a key server: one
# keycast-send carries 64 kms-origin channels whose key lifetimes are
# staggered (900..1412 ms, so their switches land at different times), and
# three receivers on the same bridge subscribe to different sets:
#   r1  channels 1-40 from a channels file        (certificate: every channel)
#   r2  channels 25-64 as --channel ID=GROUP:PORT (certificate: every channel)
#   r3  channels 1-16, certificate entitled to 1-8 only
# Every process holds one TLS connection to the key server for all its channels.
#
# Asserts, per channel: every packet delivered once and intact (lost =
# duplicated = corrupted = 0, no auth_fail, no unknown SPI) across >= 5 key
# switches, and each receiver's SPI list equals the sender's. Packets of
# groups a receiver did not subscribe to are counted wrong_group. r3 gets
# channels 1-8 in full; 9-16 are refused by the key server, reported and
# counted, and asked for exactly once each (no retry storm), their packets
# dropped as unknown_spi.
#
# usage: BUILD=build channels.sh [PACKETS_PER_CHANNEL] [RATE_PER_CHANNEL]
export KEYCAST_CLIENT_CHANNELS='*'
export KEYCAST_CLIENT2_CHANNELS='1,2,3,4,5,6,7,8'
source "$(dirname "$0")/lib.sh"
PER=${1:-800}
RATE=${2:-100}
N=64

pol=()
: > "$WORK/all.conf"
for c in $(seq 1 $N); do
  L=$((900 + 8 * c))
  pol+=(--channel "$c:lifetime=$L,p1=$((L / 2)),p2=$((L / 4)),grace=1000,origin=kms")
  echo "$c 239.8.0.$c:$((7000 + c))" >> "$WORK/all.conf"
done
sed -n '1,40p' "$WORK/all.conf" > "$WORK/r1.conf"
sed -n '1,16p' "$WORK/all.conf" > "$WORK/r3.conf"
r2=()
for c in $(seq 25 $N); do r2+=(--channel "$c=239.8.0.$c:$((7000 + c))"); done

start_keyd master master "${pol[@]}" --group-commit-us 0
bridge_up

start_recv r1 client 0 --kms "127.0.0.1:$PORT_master" --channels "$WORK/r1.conf" --expect "$PER"
start_recv r2 client 1 --kms "127.0.0.1:$PORT_master" "${r2[@]}" --expect "$PER"
start_recv r3 client2 0 --kms "127.0.0.1:$PORT_master" --channels "$WORK/r3.conf" --expect "$PER"
start_send s 1 --kms "127.0.0.1:$PORT_master" --key-origin kms --channels "$WORK/all.conf" \
  --source 10.78.0.1 --rate "$RATE" --count "$PER"
wait_exit "$PID_s"
sleep 1.5
stop "$PID_r1" "$PID_r2" "$PID_r3"
grep -c "channel [0-9]* refused by the key server" "$WORK/r3.log" > "$WORK/r3_refusals.txt" || true

$PY - "$WORK" "$PER" "$N" <<'PYEOF'
import json, sys
work, per, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fails = []
def need(cond, what):
    if not cond:
        fails.append(what)
s = json.load(open(f"{work}/s.json"))
sch = {c["channel"]: c for c in s["channels"]}
print(f"s: packets_sent={s['packets_sent']} key_switches={s['key_switches']} "
      f"switches per channel {min(c['key_switches'] for c in s['channels'])}.."
      f"{max(c['key_switches'] for c in s['channels'])} kms_requests={s['kms_requests']}")
need(s["packets_sent"] == n * per, f"s: packets_sent {s['packets_sent']} != {n * per}")
need(len(sch) == n, f"s: {len(sch)} channels")
for c in sch.values():
    need(c["packets_sent"] == per, f"s: channel {c['channel']} sent {c['packets_sent']}")
    need(c["key_switches"] >= 5, f"s: channel {c['channel']}: only {c['key_switches']} switches")
def errors(r):
    # Failed key requests by error, over the channels: what a receiver that
    # met an SPI it did not hold was told.
    by = {}
    for c in r["channels"]:
        for k, v in c.get("kms_errors", {}).items():
            by[k] = by.get(k, 0) + v
    return by
subs = {"r1": set(range(1, 41)), "r2": set(range(25, 65)), "r3": set(range(1, 17))}
for tag, chans in subs.items():
    r = json.load(open(f"{work}/{tag}.json"))
    rch = {c["channel"]: c for c in r["channels"]}
    print(f"{tag}: packets_ok={r['packets_ok']} lost={r['lost']} duplicated={r['duplicated']} "
          f"corrupted={r['corrupted']} auth_fail={r['auth_fail']} unknown_spi={r['unknown_spi']} "
          f"wrong_group={r['drops']['wrong_group']} key_switches={r['key_switches']} "
          f"kms_requests={r['kms_requests']} kms_ok={r['kms_ok']} refused={r['channels_refused']} "
          f"keys_late={r['kms_keys_late']} errors={errors(r)}")
    need(set(rch) == chans, f"{tag}: channels {sorted(rch)}")
    entitled = chans if tag != "r3" else set(range(1, 9))
    need(r["packets_ok"] == per * len(entitled), f"{tag}: packets_ok {r['packets_ok']}")
    # A refused channel's expected packets all count as lost, and only those.
    need(r["lost"] == per * (len(chans) - len(entitled)), f"{tag}: lost = {r['lost']}")
    for k in ("duplicated", "corrupted", "auth_fail", "replay", "malformed"):
        need(r[k] == 0, f"{tag}: {k} = {r[k]}")
    need(r["drops"]["wrong_group"] >= per * (n - len(chans)),
         f"{tag}: wrong_group {r['drops']['wrong_group']} < the other channels' packets")
    for cid in entitled:
        c = rch[cid]
        need(c["packets_ok"] == per and c["lost"] == 0 and c["duplicated"] == 0 and c["corrupted"] == 0,
             f"{tag}: channel {cid}: {c}")
        need(c["spi_list"] == sch[cid]["spi_list"],
             f"{tag}: channel {cid}: SPIs {c['spi_list']} != sender's {sch[cid]['spi_list']}")
        need(c["refused"] == 0, f"{tag}: channel {cid} refused")
    if tag != "r3":
        need(r["unknown_spi"] == 0, f"{tag}: unknown_spi = {r['unknown_spi']}")
        need(r["channels_refused"] == 0, f"{tag}: channels_refused = {r['channels_refused']}")
    else:
        need(r["channels_refused"] == 8, f"r3: channels_refused {r['channels_refused']} != 8")
        for cid in range(9, 17):
            c = rch[cid]
            need(c["refused"] == 1 and c["packets_ok"] == 0 and c["lost"] == per, f"r3: channel {cid}: {c}")
            need(c["kms_requests"] == 1, f"r3: channel {cid} asked {c['kms_requests']} times (once expected)")
        need(r["unknown_spi"] > 0, "r3: the refused channels' packets were not counted unknown_spi")
refusals = int(open(f"{work}/r3_refusals.txt").read().strip() or 0)
need(refusals == 8, f"r3: {refusals} refusal messages (one per refused channel expected)")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS")
PYEOF
