#!/bin/bash
# Eviction with forward secrecy. A master and a slave; channel 1 kms-origin,
# channel 2 sender-origin, L = 20 s (no scheduled switch during the run).
# Receiver A (certificate "client") and receiver B ("client2") both take both
# channels through the slave first. Mid-stream, `keycast-ctl revoke client
# 1,2`. Asserts, per channel:
#   - the command succeeds only once the slave confirmed it;
#   - the sender switched to a fresh key within evict-ms (2 s) of the revoke
#     (its log's UTC switch time against the revoke's);
#   - A deciphered nothing under the fresh key (its SPI list stops at the key
#     before it; everything after the switch is unknown_spi to A), and the
#     fresh SPI was refused to A;
#   - B lost nothing: every packet, under every key, fresh one included;
#   - A's key requests for the channels are refused at the master and at the
#     slave afterwards.
#
# usage: BUILD=build eviction.sh [RATE] [SECONDS]
export KEYCAST_CLIENT2_CHANNELS=1,2
source "$(dirname "$0")/lib.sh"
RATE=${1:-2000}
SECS=${2:-12}
COUNT=$((RATE * SECS))
EVICT=2000
POLICY="lifetime=20000,p1=8000,p2=4000,grace=2000,evict=$EVICT"

start_keyd master master --channel "1:$POLICY,origin=kms" --channel "2:$POLICY,origin=sender" \
  --audit-log "$WORK/audit.log"
start_keyd slave slave --master "127.0.0.1:$PORT_master" \
  --channel "1:$POLICY,origin=kms" --channel "2:$POLICY,origin=sender"
bridge_up
KMS="127.0.0.1:$PORT_slave,127.0.0.1:$PORT_master"
CH=(--channel 1=239.7.9.1:6001 --channel 2=239.7.9.2:6002)
# The senders first, so that both channels have a key (a sender-origin
# channel has none until its sender uploads one) before the receivers start
# and fetch; sending begins after the receivers are up.
START_DELAY_MS=6000 start_send s1 0 --kms "127.0.0.1:$PORT_master" --key-origin kms --channel 1 \
  --group 239.7.9.1:6001 --source 10.79.0.1 --rate "$RATE" --count "$COUNT" --notice-lead-ms 300
START_DELAY_MS=6000 start_send s2 1 --kms "127.0.0.1:$PORT_master" --key-origin sender --channel 2 \
  --group 239.7.9.2:6002 --source 10.79.0.2 --rate "$RATE" --count "$COUNT" \
  --lifetime-ms 20000 --p1-ms 8000 --notice-lead-ms 300
for _ in $(seq 1 100); do
  [ "$(ctl -o json channels | grep -o '"current_spi"' | wc -l)" = 2 ] && break
  sleep 0.05
done
for _ in $(seq 1 100); do  # and the slave has them
  [ "$("$CTL" --server "127.0.0.1:$PORT_slave" --tls-cert "$PKI/admin.crt" --tls-key "$PKI/admin.key" \
    --tls-ca "$PKI/ca.crt" -o json channels | grep -o '"current_spi"' | wc -l)" = 2 ] && break
  sleep 0.05
done
start_recv ra client 0 --kms "$KMS" "${CH[@]}"
start_recv rb client2 1 --kms "$KMS" "${CH[@]}"
sleep $((SECS / 2 + 5))
T0=$(date +%s%3N)
ctl revoke client 1,2 > "$WORK/revoke.out" 2>&1 || { echo "FAIL: revoke: $(cat "$WORK/revoke.out")"; exit 1; }
T1=$(date +%s%3N)
wait_exit "$PID_s1"
wait_exit "$PID_s2"
sleep 1.5
stop "$PID_ra" "$PID_rb"
as_client() { "$CTL" --server "127.0.0.1:$1" --tls-cert "$PKI/client.crt" --tls-key "$PKI/client.key" \
  --tls-ca "$PKI/ca.crt" key "$2" 2>&1; }
for port in "$PORT_master" "$PORT_slave"; do
  for ch in 1 2; do
    out=$(as_client "$port" "$ch") && { echo "FAIL: client still gets channel $ch keys at port $port: $out"; exit 1; }
    echo "$out" | grep -q channel_denied || { echo "FAIL: port $port channel $ch: $out"; exit 1; }
  done
done
echo "client refused on channels 1 and 2 at the master and the slave"

$PY - "$WORK" "$COUNT" "$T0" "$T1" "$EVICT" <<'PYEOF'
import json, re, sys, datetime
work, count, t0, t1, evict = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
fails = []
fresh_by_channel = {}
def need(cond, what):
    if not cond:
        fails.append(what)
def ms(ts):
    d = datetime.datetime.strptime(ts.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f" if "." in ts else "%Y-%m-%dT%H:%M:%S")
    return int(d.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
ra, rb = (json.load(open(f"{work}/{t}.json")) for t in ("ra", "rb"))
by = lambda r: {c["channel"]: c for c in r["channels"]}
a, b = by(ra), by(rb)
print(f"revoke: issued {t0}, returned {t1} ({t1 - t0} ms, slave confirmed): {open(f'{work}/revoke.out').read().strip()}")
for ch, tag in ((1, "s1"), (2, "s2")):
    s = json.load(open(f"{work}/{tag}.json"))
    log = open(f"{work}/{tag}.log").read()
    switches = [(int(o), int(n), ms(t)) for o, n, t in
                re.findall(r"key switch \d+: SPI (\d+) -> (\d+) at (\S+)", log)]
    after = [x for x in switches if x[2] >= t0 - 50]
    need(s["packets_sent"] == count, f"{tag}: sent {s['packets_sent']} != {count}")
    need(s["evictions"] == 1, f"{tag}: evictions {s['evictions']}")
    need(len(after) == 1, f"{tag}: switches after the revoke: {after} (all: {switches})")
    if not after:
        continue
    old, fresh, at = after[0]
    fresh_by_channel[ch] = fresh
    print(f"channel {ch} ({'kms' if ch == 1 else 'sender'}-origin): revoke {t0}..{t1}, switch {old} -> {fresh} "
          f"at {at} = revoke issued + {at - t0} ms = revoke acknowledged + {at - t1} ms; sender SPIs {s['spi_list']}")
    need(at <= t1 + evict, f"channel {ch}: switch {at - t1} ms after the revoke returned (evict {evict} ms)")
    need(s["spi_list"][-1] == fresh, f"channel {ch}: last SPI {s['spi_list'][-1]} != fresh {fresh}")
    ca, cb = a[ch], b[ch]
    print(f"  A: packets_ok={ca['packets_ok']} spi_list={ca['spi_list']} refused={ca['refused']} lost={ca['lost']}")
    print(f"  B: packets_ok={cb['packets_ok']} spi_list={cb['spi_list']} lost={cb['lost']}")
    need(fresh not in ca["spi_list"], f"channel {ch}: A deciphered under the fresh key {fresh}")
    need(ca["packets_ok"] < count, f"channel {ch}: A deciphered all {count}")
    need(ca["refused"] >= 1, f"channel {ch}: A was never refused")
    need(cb["packets_ok"] == count, f"channel {ch}: B packets_ok {cb['packets_ok']} != {count}")
    need(fresh in cb["spi_list"], f"channel {ch}: B never used the fresh key")
    for k in ("lost", "duplicated", "corrupted"):
        need(cb[k] == 0, f"channel {ch}: B {k} = {cb[k]}")
need(rb["auth_fail"] == 0 and ra["auth_fail"] == 0, "auth_fail")
need(ra["unknown_spi"] > 0, "A met no unknown SPI after the switch")
print(f"A: packets_ok={ra['packets_ok']} unknown_spi={ra['unknown_spi']}; B: packets_ok={rb['packets_ok']} lost={rb['lost']}")
# What the master handed to A, from its own ledger of holdings (slaves
# forward theirs): no fresh SPI is among them.
import sqlite3
db = sqlite3.connect(f"file:{work}/master.db?mode=ro", uri=True)
held = {(c, s) for c, s in db.execute("SELECT channel, spi FROM holders WHERE identity = 'client'")}
print(f"keys ever handed to A (channel, SPI): {sorted(held)}")
for ch, fresh in fresh_by_channel.items():
    need((ch, fresh) not in held, f"channel {ch}: the fresh SPI {fresh} was handed to A")
audit = [json.loads(l) for l in open(f"{work}/audit.log")]
acts = [(e["action"], e["channels"], e["result"]) for e in audit]
print("audit:", acts)
need(("revoke", [1, 2], "ok") in acts, f"audit: no revoke line: {acts}")
need(("eviction", [1], "ok") in acts and ("eviction", [2], "ok") in acts, f"audit: evictions: {acts}")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS")
PYEOF
