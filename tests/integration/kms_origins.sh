#!/bin/bash
# Claims 1-14, 18-19 with real processes: one master key server with one
# slave; channel 1 kms-origin (the KMS makes every key), channel 2
# sender-origin (the sender makes each key and uploads the decipherment key
# data). Two senders on the two channels rotate keys every
# LIFETIME ms; receiver r1 (channel 1) asks the slave first, then the master;
# receiver r2 (channel 2) asks the master. Both verify every packet.
#
# Asserts: every packet delivered once and intact under every key (lost =
# duplicated = corrupted = auth_fail = 0), >= 10 rotations per channel, no
# packet met an unknown SPI (the next key was fetched at P2 / on the in-band
# notice before the switch), the SPI sequence receivers saw equals the
# senders', and the master's billing equals what the test counted: requests =
# the receiver's key requests answered with keys (kms_ok; a request still
# unanswered when the receiver exited may or may not be billed, so up to
# kms_unanswered more); bytes = the sender's bytes for every epoch the
# receiver held.
#
# usage: BUILD=build kms_origins.sh [PACKETS] [RATE] [LIFETIME_MS]
source "$(dirname "$0")/lib.sh"
PACKETS=${1:-40000}
RATE=${2:-4000}
L=${3:-800}
P1=$((L / 2)); P2=$((L / 4))
POLICY="lifetime=$L,p1=$P1,p2=$P2,grace=1000"

start_keyd master master --channel "1:$POLICY,origin=kms" --channel "2:$POLICY,origin=sender" \
  --tariff-per-request 0.01 --tariff-per-gib 2 --group-commit-us 0
start_keyd slave slave --master "127.0.0.1:$PORT_master" \
  --channel "1:$POLICY,origin=kms" --channel "2:$POLICY,origin=sender"
bridge_up

start_recv r1 client 0 --kms "127.0.0.1:$PORT_slave,127.0.0.1:$PORT_master" --channel 1 \
  --group 239.7.7.1:6001 --expect "$PACKETS" --p2-ms "$P2" --grace-ms 1000
start_recv r2 client2 1 --kms "127.0.0.1:$PORT_master" --channel 2 \
  --group 239.7.7.2:6002 --expect "$PACKETS" --p2-ms "$P2" --grace-ms 1000
start_send s1 0 --kms "127.0.0.1:$PORT_master" --key-origin kms --channel 1 \
  --group 239.7.7.1:6001 --source 10.77.0.1 --rate "$RATE" --count "$PACKETS" \
  --p1-ms "$P1" --notice-lead-ms $((L / 5))
start_send s2 1 --kms "127.0.0.1:$PORT_master" --key-origin sender --channel 2 \
  --group 239.7.7.2:6002 --source 10.77.0.2 --rate "$RATE" --count "$PACKETS" \
  --lifetime-ms "$L" --p1-ms "$P1" --notice-lead-ms $((L / 5))
wait_exit "$PID_s1"
wait_exit "$PID_s2"
sleep 1.5
stop "$PID_r1" "$PID_r2"

# The slave forwards r1's billing events to the master; wait until they are in.
want_r1=$($PY -c "import json;r=json.load(open('$WORK/r1.json'));print(r['kms_ok'])")
for _ in $(seq 1 100); do
  ctl billing --format json > "$WORK/billing.json"
  got=$($PY -c "
import json
b=json.load(open('$WORK/billing.json'))
rows=b['clients'] if isinstance(b,dict) and 'clients' in b else b
print(sum(r['requests'] for r in rows if r.get('client',r.get('identity'))=='client'))" 2>/dev/null || echo -1)
  [ "$got" -ge "$want_r1" ] && break
  sleep 0.1
done
cp "$WORK/billing.json" "$WORK/billing.log"

$PY - "$WORK" "$PACKETS" <<'PYEOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
fails = []
def need(cond, what):
    if not cond:
        fails.append(what)
b = json.load(open(f"{work}/billing.json"))
rows = b["clients"] if isinstance(b, dict) and "clients" in b else b
bill = {r.get("client", r.get("identity")): r for r in rows}
for s_tag, r_tag, cn in (("s1", "r1", "client"), ("s2", "r2", "client2")):
    s = json.load(open(f"{work}/{s_tag}.json"))
    r = json.load(open(f"{work}/{r_tag}.json"))
    print(f"{s_tag}: packets_sent={s['packets_sent']} key_switches={s['key_switches']} "
          f"spis_used={s['spis_used']} usage_reports={s['usage_reports']} acked={s['usage_acked']} "
          f"usage_bytes={s['usage_bytes']}")
    print(f"{r_tag}: packets_ok={r['packets_ok']} lost={r['lost']} duplicated={r['duplicated']} "
          f"corrupted={r['corrupted']} auth_fail={r['auth_fail']} unknown_spi={r['unknown_spi']} "
          f"replay={r['replay']} key_switches={r['key_switches']} spis_seen={r['spis_seen']} "
          f"kms_requests={r['kms_requests']} kms_ok={r['kms_ok']} kms_errors={r['kms_errors']} "
          f"kms_unanswered={r['kms_unanswered']}")
    need(s["packets_sent"] == n, f"{s_tag}: packets_sent {s['packets_sent']} != {n}")
    need(s["key_switches"] >= 10, f"{s_tag}: only {s['key_switches']} key switches")
    need(s["usage_acked"] == s["usage_reports"], f"{s_tag}: usage reports not all acknowledged")
    need(s["usage_packets"] == s["packets_sent"], f"{s_tag}: usage packets {s['usage_packets']} != sent")
    need(s["usage_bytes"] == s["bytes_sent"], f"{s_tag}: usage bytes {s['usage_bytes']} != bytes_sent")
    need(r["packets_ok"] == n, f"{r_tag}: packets_ok {r['packets_ok']} != {n}")
    for k in ("lost", "duplicated", "corrupted", "auth_fail", "replay", "malformed", "unknown_spi"):
        need(r[k] == 0, f"{r_tag}: {k} = {r[k]}")
    need(r["spi_list"] == s["spi_list"], f"{r_tag}: SPIs {r['spi_list']} != sender's {s['spi_list']}")
    need(r["bytes_ok"] == s["bytes_sent"], f"{r_tag}: bytes_ok != sender's bytes_sent")
    c = bill.get(cn)
    need(c is not None, f"billing: no row for {cn}: {rows}")
    if c:
        print(f"billing {cn}: requests={c['requests']} bytes={c['bytes']}")
        need(r["kms_requests"] == r["kms_ok"] + r["kms_errors"] + r["kms_unanswered"],
             f"{r_tag}: kms_requests {r['kms_requests']} != ok + errors + unanswered")
        need(r["kms_ok"] <= c["requests"] <= r["kms_ok"] + r["kms_unanswered"],
             f"billing {cn}: requests {c['requests']} != receiver's answered requests {r['kms_ok']}"
             + (f" (+ up to {r['kms_unanswered']} unanswered)" if r["kms_unanswered"] else ""))
        need(c["bytes"] == s["bytes_sent"], f"billing {cn}: bytes {c['bytes']} != sender's {s['bytes_sent']}")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS")
PYEOF
