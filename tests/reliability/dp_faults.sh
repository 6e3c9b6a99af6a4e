#!/bin/bash
# Data-plane fault tests (DPDK, net_pcap, no hugepages).
#
#   dp_faults.sh BIN_DIR sender-restart   keycast-send with one static key file is
#       killed with SIGKILL mid-stream, restarted and stopped with SIGINT
#       mid-stream, restarted and run to completion (3000 packets). Every frame
#       of the three captures must authenticate under the key file, and no
#       (SPI, IV) pair may appear twice across the restarts (the same key is
#       used by every run: only the clock-derived sequence start keeps the
#       nonces apart).
#   dp_faults.sh BIN_DIR flood            30,000 good frames interleaved with
#       ~15,000 corrupted, truncated, replayed, too-old (beyond the replay
#       window) and forged-SPI / wrong-key frames, read by keycast-recv from a
#       pcap as fast as it can: every drop counted under its exact reason,
#       none delivered, all 30,000 good frames delivered intact (verify).
set -euo pipefail
BIN=${1:?usage: dp_faults.sh BIN_DIR MODE}
MODE=${2:?usage: dp_faults.sh BIN_DIR MODE}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
ID=$$
WORK=$(mktemp -d /tmp/kc_rel.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf /var/run/dpdk/kc_rel_*_$ID
  if [ $rc -ne 0 ]; then
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM
EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning -l 0,1"

keys() {  # keys FILE N
  for spi in $(seq 1000 $((1000 + $2 - 1))); do
    echo "$spi $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"
  done > "$1"
}

# wait_bytes PCAP N: until the capture holds at least N bytes
# (progress, not time; bounded at 120 s).
wait_bytes() {
  for _ in $(seq 1 1200); do
    [ -f "$1" ] && [ "$(stat -c %s "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "FAIL: $1 never reached $2 bytes"; return 1
}

case "$MODE" in
  sender-restart)
    keys "$WORK/keys.txt" 2
    send() {  # send RUN [extra]; exec: a backgrounded call's PID is keycast-send itself
      exec "$BIN/keycast-send" $EAL --file-prefix "kc_rel_s$1_$ID" --vdev "net_pcap0,tx_pcap=$WORK/run$1.pcap" -- \
        --key-file "$WORK/keys.txt" --rate 20000 --payload-size 100 --stats-interval 0 \
        --stats-json "$WORK/run$1.json" "${@:2}" > "$WORK/send$1.log" 2>&1
    }
    # Run 1: SIGKILL mid-stream (no clean stop, nothing saved).
    send 1 --duration 300 &
    PIDS+=($!)
    wait_bytes "$WORK/run1.pcap" 300000
    kill -9 "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
    rm -rf /var/run/dpdk/kc_rel_s1_$ID
    # Run 2: SIGINT mid-stream.
    send 2 --duration 300 &
    PIDS+=($!)
    wait_bytes "$WORK/run2.pcap" 300000
    kill -INT "${PIDS[1]}"; wait "${PIDS[1]}"
    # Run 3: to completion.
    ( send 3 --count 3000 )
    $PY - "$WORK/keys.txt" "$WORK/run1.pcap" "$WORK/run2.pcap" "$WORK/run3.pcap" <<'PYEOF'
import struct, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
keys = {}
for line in open(sys.argv[1]):
    spi, hexkey = line.split()
    keys[int(spi)] = bytes.fromhex(hexkey)
def frames(path):
    # Tolerant reader: a SIGKILLed writer may leave a partial last record.
    data = open(path, 'rb').read()
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack('<IIII', data[off:off + 16])[2]
        if off + 16 + incl > len(data):
            break
        yield data[off + 16:off + 16 + incl]
        off += 16 + incl
seen = {}
fails = []
per_run = []
for run, path in enumerate(sys.argv[2:], 1):
    n = auth = 0
    spis = set()
    lo, hi = None, None
    for f in frames(path):
        if f[12:14] != b'\x08\x00' or f[23] != 50:
            fails.append(f'run {run}: non-ESP frame'); continue
        ihl = (f[14] & 15) * 4
        esp = f[14 + ihl:]
        spi, seq_lo = struct.unpack('!LL', esp[:8])
        iv = struct.unpack('!Q', esp[8:16])[0]
        n += 1
        spis.add(spi)
        km = keys.get(spi)
        try:
            AESGCM(km[:-4]).decrypt(km[-4:] + esp[8:16], esp[16:],
                                    struct.pack('!LLL', spi, iv >> 32, iv & 0xffffffff))
            auth += 1
        except Exception:
            fails.append(f'run {run}: frame with SPI {spi} IV {iv} does not authenticate')
        if (spi, iv) in seen:
            fails.append(f'(SPI {spi}, IV {iv}) of run {run} already used in run {seen[(spi, iv)]}')
        seen[(spi, iv)] = run
        lo = iv if lo is None else min(lo, iv)
        hi = iv if hi is None else max(hi, iv)
    per_run.append((n, auth, sorted(spis), lo, hi))
    print(f'run {run}: frames={n} authenticated={auth} spis={sorted(spis)} iv={lo}..{hi}')
if any(r[0] == 0 for r in per_run):
    fails.append('a run captured no frames')
if per_run[2][0] != 3000:
    fails.append(f'run 3 captured {per_run[2][0]} frames, expected 3000')
if not all(r[2] == [1000] for r in per_run):
    fails.append('every run must use the same first key (SPI 1000): that is the case under test')
print(f'distinct (SPI, IV) pairs: {len(seen)} over {sum(r[0] for r in per_run)} frames')
if fails:
    print('FAIL:\n  ' + '\n  '.join(fails[:20])); sys.exit(1)
PYEOF
    ;;
  flood)
    keys "$WORK/keys.txt" 1
    $PY "$HERE/flood.py" "$WORK/flood.pcap" "$WORK/keys.txt" 30000 239.1.1.1:5000 "$ID" > "$WORK/expect.json"
    cat "$WORK/expect.json"
    "$BIN/keycast-recv" $EAL --file-prefix "kc_rel_r_$ID" \
      --vdev "net_pcap0,rx_pcap=$WORK/flood.pcap,tx_pcap=$WORK/unused.pcap" -- \
      --key-file "$WORK/keys.txt" --idle-exit 1 --stats-interval 0 --stats-json "$WORK/r.json" \
      --deliver verify --expect 30000 > "$WORK/recv.log" 2>&1
    $PY - "$WORK/expect.json" "$WORK/r.json" <<'PYEOF'
import json, sys
exp, got = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
fails = []
for reason, n in exp['drops'].items():
    if got['drops'][reason] != n:
        fails.append(f"{reason}: got {got['drops'][reason]}, expected {n}")
for reason, n in got['drops'].items():
    if n and reason not in exp['drops']:
        fails.append(f'unexpected drops {reason}={n}')
for k, v in (('packets_ok', exp['delivered']), ('lost', 0), ('duplicated', 0), ('corrupted', 0),
             ('late', 0), ('rx_packets', exp['frames'])):
    if got[k] != v:
        fails.append(f'{k}: got {got[k]}, expected {v}')
print(f"frames={got['rx_packets']} ok={got['packets_ok']} drops=" +
      str({k: v for k, v in got['drops'].items() if v}) + f" active_pps={got['active_pps']:.0f}")
if fails:
    print('FAIL:\n  ' + '\n  '.join(fails)); sys.exit(1)
PYEOF
    ;;
  *) echo "unknown mode $MODE"; exit 2 ;;
esac
echo "PASS: $MODE"
