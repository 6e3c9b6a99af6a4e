#!/bin/bash
# Master/slave end to end and failure behaviour: a master with
# two slaves, a kms-origin channel rotating every LIFETIME ms, one sender.
#   r1 asks slave, then slave2, then the master; slave is SIGKILLed mid-stream
#      and the master is restarted (same database, same port) mid-stream.
#   r2 joins mid-stream (a late joiner deciphers from its first packet).
#   r3 is stopped mid-stream and started again (a restarted client).
# Asserts: r1 delivers every packet (lost = duplicated = corrupted =
# auth_fail = 0) across the slave's death and the master's restart; the
# sender kept rotating (>= 10 switches) and every usage report was
# acknowledged; r2 and the restarted r3 lose nothing from their first packet
# on and never fail authentication.
#
# usage: BUILD=build failover.sh [PACKETS] [RATE] [LIFETIME_MS]
source "$(dirname "$0")/lib.sh"
PACKETS=${1:-60000}
RATE=${2:-4000}
L=${3:-1200}
# P2 well after P1 (the next key exists from P1 on) and well before the
# switch: a receiver whose server dies at P2 has time to fail over.
P1=$((L / 2)); P2=$((L * 3 / 8))
POLICY="1:lifetime=$L,p1=$P1,p2=$P2,grace=1000,origin=kms"

start_keyd master master --channel "$POLICY" --group-commit-us 0
start_keyd slave slave --master "127.0.0.1:$PORT_master" --channel "$POLICY"
start_keyd slave2 slave --master "127.0.0.1:$PORT_master" --channel "$POLICY"
bridge_up
KMS_R1="127.0.0.1:$PORT_slave,127.0.0.1:$PORT_slave2,127.0.0.1:$PORT_master"
RX="--channel 1 --group 239.7.7.3:6003 --p2-ms $P2 --grace-ms 1000"

start_recv r1 client 0 --kms "$KMS_R1" $RX --expect "$PACKETS"
start_recv r3 client 1 --kms "127.0.0.1:$PORT_slave2,127.0.0.1:$PORT_master" $RX --verify-from-first
start_send s1 0 --kms "127.0.0.1:$PORT_master" --key-origin kms --channel 1 \
  --group 239.7.7.3:6003 --source 10.77.0.3 --rate "$RATE" --count "$PACKETS" \
  --p1-ms "$P1" --notice-lead-ms $((L / 5))
T=$((PACKETS / RATE))   # seconds of traffic
sleep 1.5               # the sender's start delay
sleep $((T / 4))
start_recv r2 client 1 --kms "127.0.0.1:$PORT_slave2,127.0.0.1:$PORT_slave" $RX --verify-from-first
echo "r2 joined mid-stream"
kill -KILL "$PID_slave"; wait "$PID_slave" 2>/dev/null || true
echo "slave killed"
stop "$PID_r3"
mv "$WORK/r3.json" "$WORK/r3a.json"
start_recv r3 client 1 --kms "127.0.0.1:$PORT_slave2,127.0.0.1:$PORT_master" $RX --verify-from-first
echo "r3 restarted"
sleep $((T / 4))
kill -TERM "$PID_master"; wait "$PID_master" 2>/dev/null || true
restart_keyd master master "$PORT_master" --channel "$POLICY" --group-commit-us 0
echo "master restarted"
wait_exit "$PID_s1"
sleep 1.5
stop "$PID_r1" "$PID_r2" "$PID_r3"

$PY - "$WORK" "$PACKETS" <<'PYEOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
fails = []
def need(cond, what):
    if not cond:
        fails.append(what)
s = json.load(open(f"{work}/s1.json"))
print(f"s1: packets_sent={s['packets_sent']} key_switches={s['key_switches']} late_switches={s['late_switches']} "
      f"usage_reports={s['usage_reports']} acked={s['usage_acked']} kms_errors={s['kms_errors']}")
need(s["packets_sent"] == n, f"s1: packets_sent {s['packets_sent']} != {n}")
need(s["key_switches"] >= 10, f"s1: only {s['key_switches']} key switches")
need(s["usage_acked"] == s["usage_reports"], "s1: usage reports not all acknowledged")
need(s["usage_packets"] == n, f"s1: usage packets {s['usage_packets']} != {n}")
for tag in ("r1", "r2", "r3a", "r3"):
    r = json.load(open(f"{work}/{tag}.json"))
    print(f"{tag}: packets_ok={r['packets_ok']} lost={r['lost']} duplicated={r['duplicated']} "
          f"corrupted={r['corrupted']} auth_fail={r['auth_fail']} unknown_spi={r['unknown_spi']} "
          f"key_switches={r['key_switches']} kms_requests={r['kms_requests']} kms_errors={r['kms_errors']}")
    for k in ("lost", "duplicated", "corrupted", "auth_fail", "replay", "malformed"):
        need(r[k] == 0, f"{tag}: {k} = {r[k]}")
    need(r["packets_ok"] > 0, f"{tag}: delivered nothing")
r1 = json.load(open(f"{work}/r1.json"))
need(r1["packets_ok"] == n, f"r1: packets_ok {r1['packets_ok']} != {n}")
need(r1["unknown_spi"] == 0, f"r1: unknown_spi = {r1['unknown_spi']}")
need(r1["spi_list"] == s["spi_list"], f"r1: SPIs {r1['spi_list']} != sender's {s['spi_list']}")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS")
PYEOF
