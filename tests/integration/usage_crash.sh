#!/bin/bash
# Usage billing survives the sender's death. One master key server, two
# kms-origin channels (L = 20 s, so every stop below is mid-epoch), each with
# its own sender at 5,000 packets/s and its own receiver (client on channel
# 1, client2 on channel 2); --usage-interval-ms 1000.
#   - s1 is killed with SIGKILL (no final report is possible): the bytes
#     billed to client are at least what r1 deciphered minus one interval of
#     s1's traffic, and never more than s1 sent.
#   - s2 gets SIGHUP: it stops cleanly like SIGTERM, so the bytes billed to
#     client2 equal what r2 deciphered and s2 sent, exactly.
#   - A master restart changes neither figure (checkpoints are high-water
#     marks kept in the database).
#
# usage: BUILD=build usage_crash.sh [RATE] [INTERVAL_MS]
source "$(dirname "$0")/lib.sh"
RATE=${1:-5000}
INTERVAL=${2:-1000}
L=20000
POLICY="lifetime=$L,p1=8000,p2=4000,grace=2000,origin=kms"

start_keyd master master --channel "1:$POLICY" --channel "2:$POLICY" \
  --tariff-per-request 0.01 --tariff-per-gib 2 --group-commit-us 0
bridge_up

start_recv r1 client 0 --kms "127.0.0.1:$PORT_master" --channel 1 --group 239.7.8.1:6001
start_recv r2 client2 1 --kms "127.0.0.1:$PORT_master" --channel 2 --group 239.7.8.2:6002
start_send s1 0 --kms "127.0.0.1:$PORT_master" --key-origin kms --channel 1 \
  --group 239.7.8.1:6001 --source 10.78.0.1 --rate "$RATE" --usage-interval-ms "$INTERVAL"
start_send s2 1 --kms "127.0.0.1:$PORT_master" --key-origin kms --channel 2 \
  --group 239.7.8.2:6002 --source 10.78.0.2 --rate "$RATE" --usage-interval-ms "$INTERVAL"

# Both send for a few seconds after their 1.5 s start delay; the kill lands
# at no particular point of a checkpoint interval.
sleep 6.3
kill -KILL "$PID_s1"
wait "$PID_s1" 2>/dev/null && { echo "FAIL: s1 survived SIGKILL"; exit 1; } || true
kill -HUP "$PID_s2"
wait_exit "$PID_s2"
keep=()
for q in "${PIDS[@]}"; do [ "$q" = "$PID_s1" ] || keep+=("$q"); done
PIDS=("${keep[@]}")
sleep 1  # packets still on the bridge
stop "$PID_r1" "$PID_r2"

ctl billing --format json > "$WORK/billing.json"
ctl -o json status > "$WORK/status.json"
kill -TERM "$PID_master"
wait_exit "$PID_master"
restart_keyd master master "$PORT_master" --channel "1:$POLICY" --channel "2:$POLICY" \
  --tariff-per-request 0.01 --tariff-per-gib 2 --group-commit-us 0
ctl billing --format json > "$WORK/billing_after_restart.json"

$PY - "$WORK" "$RATE" "$INTERVAL" <<'PYEOF'
import json, sys
work, rate, interval_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fails = []
def need(cond, what):
    if not cond:
        fails.append(what)
def bill(path):
    return {r["identity"]: r for r in json.load(open(path))["clients"]}
b, b2 = bill(f"{work}/billing.json"), bill(f"{work}/billing_after_restart.json")
r1, r2 = (json.load(open(f"{work}/{t}.json")) for t in ("r1", "r2"))
s2 = json.load(open(f"{work}/s2.json"))
status = json.load(open(f"{work}/status.json"))
for tag, r in (("r1", r1), ("r2", r2)):
    print(f"{tag}: packets_ok={r['packets_ok']} bytes_ok={r['bytes_ok']} lost={r['lost']} "
          f"auth_fail={r['auth_fail']} unknown_spi={r['unknown_spi']} key_switches={r['key_switches']}")
    need(r["packets_ok"] > rate * 2, f"{tag}: only {r['packets_ok']} packets deciphered")
    for k in ("duplicated", "corrupted", "auth_fail", "replay", "malformed"):
        need(r[k] == 0, f"{tag}: {k} = {r[k]}")
print(f"s2: packets_sent={s2['packets_sent']} bytes_sent={s2['bytes_sent']} usage_reports={s2['usage_reports']} "
      f"usage_acked={s2['usage_acked']} usage_bytes={s2['usage_bytes']}")
print(f"master: usage_checkpoints={status.get('usage_checkpoints')} "
      f"unchanged={status.get('usage_checkpoints_unchanged')}")
c1, c2 = b.get("client"), b.get("client2")
need(c1 is not None and c2 is not None, f"billing rows missing: {sorted(b)}")
if c1 and c2:
    per_packet = r1["bytes_ok"] / max(1, r1["packets_ok"])
    interval_bytes = rate * interval_ms / 1000 * per_packet
    unbilled = r1["bytes_ok"] - c1["bytes"]
    print(f"SIGKILL: client billed {c1['bytes']} B, r1 deciphered {r1['bytes_ok']} B, unbilled {unbilled} B "
          f"= {unbilled / (rate * per_packet) * 1000:.0f} ms of traffic (bound: {interval_ms} ms = "
          f"{interval_bytes:.0f} B)")
    need(unbilled <= interval_bytes, f"SIGKILL: {unbilled} B unbilled > one interval ({interval_bytes:.0f} B)")
    need(c1["bytes"] <= r1["bytes_ok"] + r1["lost"] * per_packet,
         f"SIGKILL: billed {c1['bytes']} B > what the sender can have sent")
    print(f"SIGHUP: client2 billed {c2['bytes']} B, r2 deciphered {r2['bytes_ok']} B, s2 sent {s2['bytes_sent']} B")
    need(c2["bytes"] == r2["bytes_ok"] == s2["bytes_sent"],
         f"SIGHUP: billed {c2['bytes']} != deciphered {r2['bytes_ok']} / sent {s2['bytes_sent']}")
    need(s2["usage_acked"] == s2["usage_reports"], "s2: usage reports not all acknowledged")
    need(s2["usage_reports"] >= 3, f"s2: only {s2['usage_reports']} usage reports (checkpoints every interval)")
    for who in ("client", "client2"):
        need(b2.get(who, {}).get("bytes") == b[who]["bytes"] and
             b2.get(who, {}).get("fee_micros") == b[who]["fee_micros"],
             f"{who}: billing changed across the master restart: {b[who]} -> {b2.get(who)}")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS")
PYEOF
