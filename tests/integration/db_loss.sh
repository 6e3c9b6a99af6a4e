#!/bin/bash
# The masters' PostgreSQL database crashes (pg_ctl stop -m immediate) under
# load and comes back 5 s later on the same port. Two masters m1 (active)
# and m2 (standby), --failover-ms F = 3000, the default (lease 2,000 ms,
# renewed and polled every 500 ms: a master stalled for less than its lease
# keeps it); a slave listing both; a kms-origin channel (sender s1) and a
# sender-origin channel (sender s2); r1 (client: both channels) asks the
# slave, then the masters; r2 (client2: channel 2) the masters only.
#
# Key lifetimes cover the outage: L = 12,000 ms, P1 = 10,000 ms. A channel's
# next key is made (kms-origin) or uploaded (sender-origin) P1 before the
# current one ends, so at any instant the keys already held last at least P1
# more: from the moment the next key exists, current + next cover P1 + L;
# just before it is made, the current one still covers P1. The outage is
# timed at that worst moment for channel 1 (its next key due 500 ms after
# the crash): the data plane must then ride on the current key through
#   5,000 ms down + restart (~300-1,500 ms) + takeover (<= F/6 + a mint)
# and get the next key made after the takeover, all within P1 = 10,000 ms:
# about 3 s to spare on a loaded machine, before the receivers' own deadline
# (the switch; they fetch at P2 = 2,000 ms before it and retry until then).
#
# Channel 2's phase is not timed: its keys start when s2 first uploads, 2-4 s
# after channel 1's (minted when m1 took the lead) on a loaded machine. r1
# is served by the slave while the database is down, r2 by nobody: with a
# P2 of 2,000 ms, a lag of 3.5-8.5 s puts a channel 2 switch 2-7 s after
# the crash and r2's whole fetch window in the outage (a lag of 4.1 s lost
# it 3.7 s of packets). So r2 fetches from P2_R2 = 9,000 ms before a switch, longer than
# the outage and takeover: part of its window lies outside them, whatever
# the phase, and the next key exists by then (made P1 = 10,000 ms before the
# switch, or just after the takeover if that fell in the outage).
#
# Asserts, with the figures printed:
# - fencing: m1 reports "active": false within 2F/3 (its lease) + 1,000 ms
#   (load) of the crash, has stepped down, and neither master mints a key
#   nor books a checkpoint while the database is down; no key row was ever
#   written under m1's epoch after the crash (the key table is snapshotted
#   under a lock at the crash itself: nothing can slip in between);
# - the data plane runs on the keys it holds: lost = duplicated = corrupted
#   = auth_fail = 0 at both receivers, no sender switched late;
# - recovery: a master leads at a higher epoch within F + 2,000 ms of the
#   restart; channel 1's next key is made under that epoch; each channel's
#   SPIs are unique, increasing, the same at sender and receiver, and in the
#   database, and each sender went on to a key made after the restart; the senders' checkpoints refused during the outage were
#   re-sent: the ledger the new active serves equals what the senders sent
#   and what the receivers were acknowledged, exactly.
#
# usage: BUILD=build db_loss.sh [DOWN_MS] [RATE]
source "$(dirname "$0")/lib.sh"
DOWN_MS=${1:-5000}
RATE=${2:-2000}
L=12000; P1=10000; P2=2000; F=3000
POL="lifetime=$L,p1=$P1,p2=$P2,grace=1000"
# Long enough for each sender to switch to a key made after the restart:
# the crash comes about 2L - P1 = 14 s after channel 1's first key, the
# restart 5-7 s later; a key made after it is in use at most L + P1 later.
PACKETS=$((RATE * 44))

PG_SYNC_COMMIT=on pg_up
MASTERS=(--failover-ms "$F" --channel "1:$POL,origin=kms" --channel "2:$POL,origin=sender" --group-commit-us 0)
KEYD_DB=$PG_URI KEYD_MK=$WORK/masters.mk KEYD_CERT=master start_keyd m1 master "${MASTERS[@]}"
KEYD_DB=$PG_URI KEYD_MK=$WORK/masters.mk KEYD_CERT=master start_keyd m2 master "${MASTERS[@]}"
M="127.0.0.1:$PORT_m1,127.0.0.1:$PORT_m2"
start_keyd slave slave --master "$M" --channel "1:$POL,origin=kms" --channel "2:$POL,origin=sender"
bridge_up

# FIELD... of a master's status, space separated (empty when it does not answer).
mstat() {
  mctl "127.0.0.1:$1" -o json status 2>/dev/null | $PY -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join(str(s[f]) for f in sys.argv[1:]))' "${@:2}" || true
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
[ "$(mstat "$PORT_m1" active epoch)" = "True 1" ] || { echo "FAIL: m1 does not lead: $(mstat "$PORT_m1" active epoch)"; exit 1; }
[ "$(mstat "$PORT_m2" active)" = "False" ] || { echo "FAIL: m2 is not a standby"; exit 1; }
E=1

RX="--grace-ms 1000 --expect $PACKETS --verify-from-first"
P2_R2=9000
start_recv r1 client 0 --kms "127.0.0.1:$PORT_slave,$M" --channel 1=239.7.9.1:6001 --channel 2=239.7.9.2:6002 \
  --p2-ms "$P2" $RX
start_recv r2 client2 1 --kms "$M" --channel 2=239.7.9.2:6002 --p2-ms "$P2_R2" $RX
start_send s1 0 --kms "$M" --key-origin kms --channel 1 --group 239.7.9.1:6001 --source 10.79.0.1 \
  --rate "$RATE" --count "$PACKETS" --p1-ms "$P1" --notice-lead-ms $((L / 5))
start_send s2 1 --kms "$M" --key-origin sender --lifetime-ms "$L" --channel 2 --group 239.7.9.2:6002 \
  --source 10.79.0.2 --rate "$RATE" --count "$PACKETS" --p1-ms "$P1" --notice-lead-ms $((L / 5))

# The session that snapshots the key table at the crash, connected now: a
# psql started at the last moment can take longer than the 500 ms planned
# on a loaded machine. The snapshot goes to a file (\g closes it, so it is
# complete once there); the session then stays open, holding its lock,
# until the server dies.
coproc PSQL { "$PGBIN/psql" "$PG_URI" -qAtX -v ON_ERROR_STOP=1 > "$WORK/psql.log" 2>&1; }
psql_pid=$PSQL_PID psql_in=${PSQL[1]}
PIDS+=("$psql_pid")

# The crash's moment: channel 1 has switched once (its second key is
# current, no third yet) and its next key is due in 500 ms.
target=""
for _ in $(seq 1 400); do
  row=$(psql_q "SELECT count(*), max(expires_wall_ms) - (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                FROM keys WHERE channel = 1")
  n=${row%%|*} rem=${row#*|}
  if [ "$n" = 2 ] && [ "$rem" -gt $((P1 + 700)) ] && [ "$rem" -le $((L + P1)) ]; then
    target=$(($(now_ms) + rem - P1 - 500))
    break
  fi
  sleep 0.1
done
[ -n "$target" ] || { echo "FAIL: channel 1 did not reach its second key ($row)"; exit 1; }
while [ "$(now_ms)" -lt "$target" ]; do sleep 0.02; done

# Snapshot and crash under one lock: keyd's key writes wait on it, and
# die with the server, so the snapshot is the key table at the crash.
echo "BEGIN; LOCK TABLE keys IN EXCLUSIVE MODE;
SELECT (SELECT COALESCE(max(seq), 0) FROM keys), (SELECT count(*) FROM keys WHERE channel = 1),
  (SELECT max(expires_wall_ms) - (extract(epoch FROM clock_timestamp()) * 1000)::bigint FROM keys WHERE channel = 1),
  (SELECT epoch FROM leader),
  (SELECT max(expires_wall_ms) FROM keys WHERE channel = 2) - (SELECT max(expires_wall_ms) FROM keys WHERE channel = 1)
  \\g $WORK/snap.txt" >&"$psql_in"
snap=""
for _ in $(seq 1 1000); do
  snap=$(cat "$WORK/snap.txt" 2>/dev/null || true)
  [ -n "$snap" ] && break
  sleep 0.01
done
[ -n "$snap" ] || { echo "FAIL: no snapshot from psql: $(cat "$WORK/psql.log")"; exit 1; }
pg_stop immediate
stopped=$(now_ms)
eval "exec $psql_in>&-"
wait "$psql_pid" 2>/dev/null || true
IFS='|' read -r SNAP_SEQ SNAP_N1 SNAP_REM SNAP_EPOCH SNAP_LAG2 <<<"$snap"
echo "crash: key seq $SNAP_SEQ, channel 1 holds $SNAP_N1 keys, its newest ends in $SNAP_REM ms" \
  "(next due at P1 = $P1), leader epoch $SNAP_EPOCH; channel 2's keys end ${SNAP_LAG2:-?} ms after channel 1's"
[ "$SNAP_EPOCH" = "$E" ] || { echo "FAIL: the lead moved before the crash (epoch $SNAP_EPOCH):" \
  "m1 went without renewing for over $((2 * F / 3)) ms"; exit 1; }
[ "$SNAP_N1" = 2 ] || { echo "FAIL: channel 1's third key was made before the crash, not after it"; exit 1; }

# Fencing: m1 stands down on its own clock; nobody books or mints.
fenced=""
first="" last=""
while [ $(($(now_ms) - stopped)) -lt "$DOWN_MS" ]; do
  s1=$(mstat "$PORT_m1" active stepdowns keys_made usage_checkpoints)
  # Until m1 stands down it alone is asked: each ctl call is a process and
  # a TLS handshake, and the fence time is read at this loop's pace.
  if [ -z "$fenced" ] && [ "${s1%% *}" != False ]; then sleep 0.02; continue; fi
  s2=$(mstat "$PORT_m2" active keys_made usage_checkpoints)
  [ -n "$fenced" ] || { fenced=$(($(now_ms) - stopped)); first="$s1 / $s2"; }
  last="$s1 / $s2"
  [ "${s2%% *}" != True ] || { echo "FAIL: m2 leads with the database down: $s2"; exit 1; }
  sleep 0.05
done
[ -n "$fenced" ] || { echo "FAIL: m1 still active ${DOWN_MS} ms into the outage: $s1"; exit 1; }
echo "m1 fenced itself $fenced ms after the crash (lease $((2 * F / 3)) ms; bound $((2 * F / 3 + 1000)) ms)"
echo "  during the outage (m1 active stepdowns keys_made checkpoints / m2 active keys_made checkpoints):" \
  "first $first, last $last"
[ "$fenced" -le $((2 * F / 3 + 1000)) ] || { echo "FAIL: fenced after $fenced ms"; exit 1; }
[ "$first" = "$last" ] || { echo "FAIL: a master minted or booked while the database was down"; exit 1; }
read -r _ sd _ <<<"$last"
[ "$sd" -ge 1 ] || { echo "FAIL: m1 did not step down ($last)"; exit 1; }

pg_start
up=$(now_ms)
echo "postgres down $((up - stopped)) ms (restart included)"
leader=""
for _ in $(seq 1 200); do
  for m in m1 m2; do
    eval "p=\$PORT_$m"
    read -r a e <<<"$(mstat "$p" active epoch)"
    [ "$a" = True ] && [ "${e:-0}" -gt "$E" ] && { leader=$m; break 2; }
  done
  sleep 0.05
done
[ -n "$leader" ] || { echo "FAIL: no master leads after the restart"; exit 1; }
took=$(($(now_ms) - up))
eval "PORT_new=\$PORT_$leader"
E2=$(mstat "$PORT_new" epoch)
echo "$leader leads at epoch $E2, $took ms after the restart (bound $((F + 2000)) ms; includes the ctl polls)"
[ "$took" -le $((F + 2000)) ] || { echo "FAIL: takeover took $took ms"; exit 1; }
resumed=""
for _ in $(seq 1 200); do
  [ "$(psql_q "SELECT count(*) FROM keys WHERE channel = 1 AND seq > $SNAP_SEQ")" -ge 1 ] && {
    resumed=$(($(now_ms) - up)); break; }
  sleep 0.05
done
[ -n "$resumed" ] || { echo "FAIL: channel 1 has no new key after the restart"; exit 1; }
echo "channel 1's next key in the database $resumed ms after the restart"

wait_exit "$PID_s1"
wait_exit "$PID_s2"
sleep 1.5
stop "$PID_r1" "$PID_r2"
drain_outbox "$PORT_slave"
mctl "127.0.0.1:$PORT_new" billing --format json > "$WORK/billing.json"
mctl "127.0.0.1:$PORT_new" -o json status > "$WORK/new.json"
mctl "127.0.0.1:$PORT_m1" -o json status > "$WORK/m1.json"
psql_q "SELECT channel, spi, seq, gen, epoch FROM keys ORDER BY channel, seq" > "$WORK/keys.txt"

PYTHONPATH="$ROOT/tests/integration" $PY - "$WORK" "$PACKETS" "$RATE" "$SNAP_SEQ" "$E" "$E2" <<'PYEOF'
import json, sys
work, n, rate, snap_seq, e_old, e_new = sys.argv[1], *map(int, sys.argv[2:])
from two_channel_checks import Checks
chk = Checks()
need = chk.need
load = lambda t: json.load(open(f"{work}/{t}.json"))
s1, s2, r1, r2, new, m1 = (load(t) for t in ("s1", "s2", "r1", "r2", "new", "m1"))
bill = {r["identity"]: r for r in json.load(open(f"{work}/billing.json"))["clients"]}
keys = [tuple(map(int, l.split("|"))) for l in open(f"{work}/keys.txt").read().split()]
print(f"new active: epoch={new['epoch']} takeovers={new['takeovers']} "
      f"duplicate_requests={new['billing_duplicate_requests']}; m1: active={m1['active']} "
      f"stepdowns={m1['stepdowns']} takeovers={m1['takeovers']}")
need(new["active"] and new["epoch"] == e_new and e_new > e_old, f"new active: {new['active']} epoch {new['epoch']}")
need(m1["stepdowns"] >= 1, f"m1: stepdowns {m1['stepdowns']}")
# The key table: what was written after the crash, under which epoch.
after = [k for k in keys if k[2] > snap_seq]
print(f"keys: {len(keys)} rows, {len(after)} written after the crash, epochs "
      f"{sorted(set(k[4] for k in after))}")
need(not [k for k in after if k[4] <= e_old], f"keys written after the crash under epoch <= {e_old}: "
     f"{[k for k in after if k[4] <= e_old]}")
need(any(k[0] == 1 for k in after), "channel 1: no key made after the restart")
db_spis = {}
for ch, spi, seq, gen, ep in keys:
    db_spis.setdefault(ch, []).append(spi)
for ch, spis in db_spis.items():
    need(len(spis) == len(set(spis)), f"channel {ch}: an SPI twice in the database: {spis}")
    gens = [k[3] for k in keys if k[0] == ch and k[3] > 0]
    need(len(gens) == len(set(gens)), f"channel {ch}: a generation twice in the database: {gens}")
for tag, ch, s in (("s1", 1, s1), ("s2", 2, s2)):
    print(f"{tag}: packets_sent={s['packets_sent']} key_switches={s['key_switches']} "
          f"late_switches={s['late_switches']} usage_reports={s['usage_reports']} acked={s['usage_acked']} "
          f"kms_errors={s['kms_errors']} spis={s['spi_list']}")
    need(s["packets_sent"] == n, f"{tag}: packets_sent {s['packets_sent']} != {n}")
    need(s["key_switches"] >= 2, f"{tag}: only {s['key_switches']} key switches")
    made_after = {k[1] for k in after if k[0] == ch}
    need(set(s["spi_list"]) & made_after, f"{tag}: used no key made after the restart ({sorted(made_after)})")
    need(s["late_switches"] == 0, f"{tag}: {s['late_switches']} late switches")
    # Checkpoints go out every 500 ms: those of the outage were refused
    # (not acknowledged and lost), and the ledger below shows they were re-sent.
    need(s["usage_reports"] > s["usage_acked"], f"{tag}: no usage report was refused during the outage")
    spis = s["spi_list"]
    need(spis == sorted(set(spis)), f"{tag}: SPIs not unique and increasing: {spis}")
    need(set(spis) <= set(db_spis.get(ch, [])), f"{tag}: SPIs {spis} not all in the database {db_spis.get(ch)}")
chk.receivers(n, rate, r1, r2, s1, s2)
chk.ledger(bill, r1, r2, s1, s2)
sys.exit(chk.verdict())
PYEOF
