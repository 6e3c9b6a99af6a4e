#!/usr/bin/env bash
# keycast demo: the whole system on one machine.
#
# A master key server and a slave (TLS 1.3, mutual authentication, SQLite),
# one DPDK sender and two DPDK receivers on TAP devices joined by a Linux
# bridge (--no-huge, no NIC needed). The sender asks the master for every key
# (kms-origin), multicasts ESP/AES-GCM and switches key every ROTATE_S
# seconds, announcing each switch in band; the receivers fetch keys from the
# slave (failing over to the master) and verify every packet. Afterwards: a
# summary and the master's billing report. Everything it made is removed on
# exit, even on failure or Ctrl-C.
#
#   DURATION=30 ROTATE_S=5 RATE=20000 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30}
ROTATE_S=${ROTATE_S:-5}
RATE=${RATE:-20000}
scripts/setup.sh
echo "== building keycast (CMake, build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if ! cmake --build build -j "$(nproc)" --target keycast-send keycast-recv keycast-keyd keycast-ctl \
    > /tmp/keycast-demo-build.log 2>&1; then
  tail -n 30 /tmp/keycast-demo-build.log
  echo "demo: build failed (log: /tmp/keycast-demo-build.log)"
  exit 1
fi
export BUILD=$PWD/build
export KEYCAST_CLIENT2_CHANNELS=1
source tests/integration/lib.sh

L=$((ROTATE_S * 1000))
POLICY="1:lifetime=$L,p1=$((L / 2)),p2=$((L / 4)),grace=2000,origin=kms"
start_keyd master master --channel "$POLICY" --tariff-per-request 0.01 --tariff-per-gib 0.50
start_keyd slave slave --master "127.0.0.1:$PORT_master" --channel "$POLICY"
echo "== key servers: master 127.0.0.1:$PORT_master, slave 127.0.0.1:$PORT_slave (certificates in $PKI)"
bridge_up
KMS="127.0.0.1:$PORT_slave,127.0.0.1:$PORT_master"
RX="--channel 1 --group 239.7.7.7:6000 --p2-ms $((L / 4)) --grace-ms 2000"
start_recv r1 client 0 --kms "$KMS" $RX
start_recv r2 client2 1 --kms "$KMS" $RX
start_send s1 0 --kms "127.0.0.1:$PORT_master" --key-origin kms --channel 1 \
  --group 239.7.7.7:6000 --source 10.77.0.7 --rate "$RATE" --duration "$DURATION" \
  --p1-ms $((L / 2)) --notice-lead-ms 500
echo "== sender and 2 receivers running for ${DURATION}s at ${RATE} packets/s, key switch every ${ROTATE_S}s"
end=$((SECONDS + DURATION + 3))
while kill -0 "$PID_s1" 2>/dev/null && [ $SECONDS -lt $((end + 10)) ]; do
  sleep 4
  for t in s1 r1 r2; do
    line=$(grep -E 't=[0-9.]+s' "$WORK/$t.log" | tail -n 1 || true)
    [ -n "$line" ] && echo "  $line"
  done
done
wait_exit "$PID_s1"
sleep 2
stop "$PID_r1" "$PID_r2"

echo "== summary"
$PY - "$WORK" <<'PYEOF'
import json, sys
w = sys.argv[1]
s = json.load(open(f"{w}/s1.json"))
print(f"  sender:     packets_sent={s['packets_sent']} bytes_sent={s['bytes_sent']} "
      f"key_switches={s['key_switches']} spis={s['spi_list']} usage_reports_acked={s['usage_acked']}/{s['usage_reports']}")
ok = True
for t in ("r1", "r2"):
    r = json.load(open(f"{w}/{t}.json"))
    print(f"  receiver {t}: packets_ok={r['packets_ok']} lost={r['lost']} duplicated={r['duplicated']} "
          f"corrupted={r['corrupted']} auth_fail={r['auth_fail']} unknown_spi={r['unknown_spi']} "
          f"key_switches={r['key_switches']} key_requests={r['kms_requests']}")
    ok &= r["packets_ok"] == s["packets_sent"] and r["lost"] == 0 and r["auth_fail"] == 0
print("  result: every packet delivered to both receivers under every key" if ok
      else "  result: LOSS OR ERRORS (see above)")
sys.exit(0 if ok else 1)
PYEOF
echo "== billing (keycast-ctl billing, master)"
for _ in $(seq 1 20); do ctl billing > "$WORK/billing.txt" 2>&1 && grep -q client2 "$WORK/billing.txt" && break; sleep 0.2; done
sed 's/^/  /' "$WORK/billing.txt"
echo "== done; cleaning up"
