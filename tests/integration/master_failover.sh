#!/bin/bash
# Active/standby masters under load. Two masters on one PostgreSQL database
# (--failover-ms 1200: a takeover within 1,000 ms of a death), a slave that
# lists both; a kms-origin channel (sender s1) and a sender-origin channel
# (sender s2), L = 2,000 ms each, P1 1,400 ms (above the takeover bound: the
# next key is made or uploaded in time even when the active dies at P1).
#   r1 (client: both channels) asks the slave, then the masters.
#   r2 (client2: channel 2) asks the masters only.
# The active master is SIGKILLed mid-stream: its lease has to run out.
# Asserts: the standby leads (epoch + 1); every receiver deciphers every
# packet from its first one on (lost = duplicated = corrupted = auth_fail =
# 0) across the kill, and misses at most 100 ms of traffic at start-up;
# each channel's SPIs are unique, increasing and the same at sender and
# receiver; no sender switched late; every usage report was acknowledged;
# and the ledger the new active serves equals what was acknowledged: each
# client's key requests are its receiver's acknowledged ones (billed once,
# whichever master or the slave answered), its bytes what the senders sent
# under the epochs it held.
#
# usage: BUILD=build master_failover.sh [PACKETS] [RATE]
source "$(dirname "$0")/lib.sh"
PACKETS=${1:-40000}
RATE=${2:-4000}
L=2000; P1=1400; P2=700; F=1200
POL="lifetime=$L,p1=$P1,p2=$P2,grace=1000"

pg_up
MASTERS=(--failover-ms "$F" --channel "1:$POL,origin=kms" --channel "2:$POL,origin=sender" --group-commit-us 0)
KEYD_DB=$PG_URI KEYD_MK=$WORK/masters.mk KEYD_CERT=master start_keyd m1 master "${MASTERS[@]}"
KEYD_DB=$PG_URI KEYD_MK=$WORK/masters.mk KEYD_CERT=master start_keyd m2 master "${MASTERS[@]}"
M="127.0.0.1:$PORT_m1,127.0.0.1:$PORT_m2"
start_keyd slave slave --master "$M" --channel "1:$POL,origin=kms" --channel "2:$POL,origin=sender"
bridge_up

active_of() { mctl "$1" -o json status | $PY -c 'import json,sys; s=json.load(sys.stdin); print(s["active"], s["epoch"])'; }
[ "$(active_of "127.0.0.1:$PORT_m1")" = "True 1" ] || { echo "FAIL: m1 does not lead: $(active_of "127.0.0.1:$PORT_m1")"; exit 1; }

# Losses count from each channel's first deciphered packet to the last one
# sent: a receiver started before the sender-origin channel's first key
# exists drops the first few packets while it fetches that key (an
# unknown SPI), which is start-up, not the failover under test.
RX="--p2-ms $P2 --grace-ms 1000 --expect $PACKETS --verify-from-first"
start_recv r1 client 0 --kms "127.0.0.1:$PORT_slave,$M" --channel 1=239.7.9.1:6001 --channel 2=239.7.9.2:6002 $RX
start_recv r2 client2 1 --kms "$M" --channel 2=239.7.9.2:6002 $RX
start_send s1 0 --kms "$M" --key-origin kms --channel 1 --group 239.7.9.1:6001 --source 10.79.0.1 \
  --rate "$RATE" --count "$PACKETS" --p1-ms "$P1" --notice-lead-ms $((L / 5))
start_send s2 1 --kms "$M" --key-origin sender --lifetime-ms "$L" --channel 2 --group 239.7.9.2:6002 \
  --source 10.79.0.2 --rate "$RATE" --count "$PACKETS" --p1-ms "$P1" --notice-lead-ms $((L / 5))
T=$((PACKETS / RATE))
sleep 1.5
sleep $((T / 3))
kill -KILL "$PID_m1"; wait "$PID_m1" 2>/dev/null || true
killed=$(date +%s%N)
keep=()
for q in "${PIDS[@]}"; do [ "$q" = "$PID_m1" ] || keep+=("$q"); done
PIDS=("${keep[@]}")
echo "m1 (active) SIGKILLed"
for _ in $(seq 1 300); do
  [ "$(active_of "127.0.0.1:$PORT_m2" 2>/dev/null)" = "True 2" ] && break
  sleep 0.02
done
[ "$(active_of "127.0.0.1:$PORT_m2")" = "True 2" ] || { echo "FAIL: m2 did not take over"; exit 1; }
echo "m2 active $(( ($(date +%s%N) - killed) / 1000000 )) ms after the kill (--failover-ms $F; includes the ctl polls)"
wait_exit "$PID_s1"
wait_exit "$PID_s2"
sleep 1.5
stop "$PID_r1" "$PID_r2"
# The slave's forwarded billing events reach the active master.
drain_outbox "$PORT_slave"
mctl "127.0.0.1:$PORT_m2" billing --format json > "$WORK/billing.json"
mctl "127.0.0.1:$PORT_m2" -o json status > "$WORK/m2.json"

PYTHONPATH="$ROOT/tests/integration" $PY - "$WORK" "$PACKETS" "$RATE" <<'PYEOF'
import json, sys
work, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from two_channel_checks import Checks
chk = Checks()
need = chk.need
load = lambda t: json.load(open(f"{work}/{t}.json"))
s1, s2, r1, r2, m2 = (load(t) for t in ("s1", "s2", "r1", "r2", "m2"))
bill = {r["identity"]: r for r in json.load(open(f"{work}/billing.json"))["clients"]}
print(f"m2: active={m2['active']} epoch={m2['epoch']} takeovers={m2['takeovers']} "
      f"duplicate_requests={m2['billing_duplicate_requests']}")
for tag, s in (("s1", s1), ("s2", s2)):
    print(f"{tag}: packets_sent={s['packets_sent']} key_switches={s['key_switches']} "
          f"late_switches={s['late_switches']} usage_reports={s['usage_reports']} acked={s['usage_acked']} "
          f"kms_errors={s['kms_errors']} spis={s['spi_list']}")
    need(s["packets_sent"] == n, f"{tag}: packets_sent {s['packets_sent']} != {n}")
    need(s["key_switches"] >= 4, f"{tag}: only {s['key_switches']} key switches")
    need(s["late_switches"] == 0, f"{tag}: {s['late_switches']} late switches")
    need(s["usage_acked"] == s["usage_reports"], f"{tag}: usage reports not all acknowledged")
    spis = s["spi_list"]
    need(spis == sorted(set(spis)), f"{tag}: SPIs not unique and increasing: {spis}")
chk.receivers(n, rate, r1, r2, s1, s2)
need(m2["active"] and m2["epoch"] == 2, f"m2: active {m2['active']} epoch {m2['epoch']}")
chk.ledger(bill, r1, r2, s1, s2)
sys.exit(chk.verdict())
PYEOF
