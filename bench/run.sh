#!/usr/bin/env bash
# keycast performance bench (issue 6): one command, one worker lcore, one table.
#
# usage: sudo bench/run.sh [--quick] [--seconds S] [--sizes "64 256 512 1024 1400"]
#                          [--no-secgw] [--no-keyd] [--no-extras] [--no-update]
#
#   --seconds   measured seconds per keycast-send run (default 3)
#   --quick     1-second runs, secgw in one mode, short key-server runs (about 3 minutes)
#   --no-secgw  skip DPDK ipsec-secgw (bench/secgw/run.sh); keycast/secgw columns stay empty
#   --no-keyd   skip the key-server bench (bench_keyd)
#   --no-extras skip 2-worker scaling and key swap under load
#   --no-update do not rewrite bench/RESULTS.md
#
# Measures, on one worker lcore (EAL -l 0,1: lcore 0 = control, lcore 1 = the worker):
#   floor     Intel IPsec-MB AES-GCM seal/open, one call per packet (bench_crypto, Google Benchmark
#             JSON, CPU time), AES-128 and AES-256, payloads 64..1400
#   sender    keycast-send --rate 0 (generator, verify pattern) into net_null
#   receiver  keycast-recv --deliver null, replay window on (4096), fed by net_pcap (infinite_rx)
#             with ONE pass over a capture of distinct packets that keycast-send wrote (no
#             repeats); a second pass with non-matching keys measures the input device alone
#   secgw     bench/secgw/run.sh --json (DPDK's ipsec-secgw, same devices, AES-128-GCM)
#   extras    sender with 2 worker lcores; key swap every 100 ms under full load (ratio) and a
#             receiver check (lost = auth_fail = 0) over a capture with swaps; key server
# Cycles per packet: each worker thread's on-CPU time (schedstat, sampled by bench/lib/oncpu.py)
# times the TSC rate, divided by its packets. The machine is shared: wall-clock Mpps are printed
# too, but the ratios use on-CPU figures on both sides (floor: Google Benchmark CPU time).
# IMIX = payloads 64/512/1400 in 7:4:1, computed from the measured per-size costs.
# Output: results/<UTC time>/ (results.json, table.txt, plot.png, raw/), results/latest -> it,
# and bench/RESULTS.md (table + machine).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BUILD=${BUILD_DIR:-$REPO/build}
PY=/usr/bin/python3

SECS=3
SIZES="64 256 512 1024 1400"
QUICK=0
SECGW=1
KEYD=1
EXTRAS=1
UPDATE=1
die() { echo "bench: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) SECS=${2:?}; shift 2 ;;
        --sizes) SIZES=${2:?}; shift 2 ;;
        --quick) QUICK=1; SECS=1; shift ;;
        --no-secgw) SECGW=0; shift ;;
        --no-keyd) KEYD=0; shift ;;
        --no-extras) EXTRAS=0; shift ;;
        --no-update) UPDATE=0; shift ;;
        -h|--help) usage ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done
[ "$(id -u)" = 0 ] || die "must run as root (DPDK EAL)"
T0=$SECONDS

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$REPO/results/$STAMP
RAW=$OUT/raw
mkdir -p "$RAW"
ln -sfn "$STAMP" "$REPO/results/latest"
WORK=$(mktemp -d /tmp/keycast-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    rm -rf /var/run/dpdk/kcb$$* 2>/dev/null || true
}
trap cleanup EXIT
log() { printf '[%3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }

log "building ($BUILD)"
if [ ! -f "$BUILD/build.ninja" ]; then
    cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
ninja -C "$BUILD" -j2 bench_crypto keycast-send keycast-recv bench_keyd >"$RAW/build.log" 2>&1 \
    || { tail -30 "$RAW/build.log" >&2; die "build failed"; }
SEND=$BUILD/dataplane/keycast-send
RECV=$BUILD/dataplane/keycast-recv
CRYPTO=$BUILD/bench/bench_crypto
KEYDB=$BUILD/bench/keyd/bench_keyd

# ------------------------------------------------------------------ machine
{
    echo "model: $(lscpu | sed -n 's/^Model name: *//p')"
    echo "cpus: $(nproc)"
    echo "mhz: $(awk -F: '/^cpu MHz/ { gsub(/ /, "", $2); print $2; exit }' /proc/cpuinfo)"
    echo "flags: $(grep -o -w -E 'avx512f|vaes|vpclmulqdq|aes|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "load_before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kernel: $(uname -r)"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+dirty')"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# static keys: 200 AES-128-GCM keys (key || salt), SPIs 4096..
KEYS=$WORK/keys.txt
for spi in $(seq 4096 4295); do echo "$spi $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"; done >"$KEYS"

N_EAL=0
eal() {  # eal LCORES VDEV...: EAL arguments for one process
    local lc=$1; shift
    N_EAL=$((N_EAL + 1))
    local a="--no-huge -m ${EAL_MEM:-1024} --no-pci --file-prefix kcb$$-$N_EAL --log-level=*:warning"
    case $lc in *@*) a="$a --lcores $lc" ;; *) a="$a -l $lc" ;; esac
    for v in "$@"; do a="$a --vdev $v"; done
    echo "$a"
}
oncpu() {  # oncpu NAME CMD...: run with worker on-CPU sampling -> $RAW/NAME.oncpu.json
    local name=$1; shift
    "$PY" "$HERE/lib/oncpu.py" "$RAW/$name.oncpu.json" -- "$@" >"$RAW/$name.log" 2>&1 \
        || { tail -20 "$RAW/$name.log" >&2; die "$name failed"; }
}

# ------------------------------------------------------------------ floor
log "floor: bench_crypto (IPsec-MB AES-GCM, one call per packet)"
MIN_T=0.25; [ $QUICK = 1 ] && MIN_T=0.15
"$CRYPTO" --benchmark_filter='^BM_(FloorSeal|FloorOpen|EspEncap|EspDecap)' \
    --benchmark_min_time=$MIN_T --benchmark_format=json --benchmark_out="$RAW/bench_crypto.json" \
    --benchmark_out_format=json >/dev/null 2>"$RAW/bench_crypto.log" || die "bench_crypto failed"

# ------------------------------------------------------------------ sender
for s in $SIZES; do
    log "sender: keycast-send --rate 0 --payload-size $s -> net_null, ${SECS} s"
    oncpu "send-$s" "$SEND" $(eal 0,1 net_null0) -- --key-file "$KEYS" --rate 0 --payload-size "$s" \
        --duration "$SECS" --stats-interval 0 --stats-json "$RAW/send-$s.json"
done

# ------------------------------------------------------------------ receiver
# The receiver must see distinct packets (its replay window is on), so it makes one pass over a
# capture of N distinct frames written by keycast-send. net_pcap with infinite_rx=1 loads the
# capture into mbufs at port start (not timed: the worker is not running yet) and, on the worker,
# copies each frame into a fresh mbuf - the same input device secgw uses, except that secgw loops
# over 1024 frames that stay in cache while these N frames come from DRAM. --count N stops the
# receiver after the pass. A second run over the same capture with keys that do not match (every
# frame dropped as unknown_spi after parsing) measures that input cost alone ("device" column).
RN=400000; [ $QUICK = 1 ] && RN=150000
MEM=$((RN * 2600 / 1000000 + 800))
KEYS_OTHER=$WORK/keys-other.txt
for spi in $(seq 9000 9009); do echo "$spi $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"; done >"$KEYS_OTHER"
for s in $SIZES; do
    cap=$WORK/esp-$s.pcap
    log "receiver: capture $RN distinct packets of payload $s; keycast-recv --deliver null over one pass"
    "$SEND" $(eal 0,1 "net_pcap0,tx_pcap=$cap") -- --key-file "$KEYS" --rate 0 --payload-size "$s" \
        --count "$RN" --stats-interval 0 >"$RAW/cap-$s.log" 2>&1 || die "capture $s failed"
    oncpu "recv-$s" "$RECV" $(EAL_MEM=$MEM eal 0,1 "net_pcap0,rx_pcap=$cap,infinite_rx=1") -- \
        --key-file "$KEYS" --deliver null --replay-window 4096 --count "$RN" --mbufs $((RN + 16384)) \
        --duration 60 --stats-interval 0 --stats-json "$RAW/recv-$s.json"
    # A figure is only worth printing if the pass deciphered the whole capture.
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); n=int(sys.argv[2]); sys.exit(0 if d["packets_ok"] == n and d["lost"] == 0 and d["auth_fail"] == 0 and d["malformed"] == 0 and d["drops"]["not_ipv4"] == 0 else 1)' \
        "$RAW/recv-$s.json" "$RN" || die "receiver pass at payload $s did not decipher all $RN packets: see $RAW/recv-$s.log"
    oncpu "recvdev-$s" "$RECV" $(EAL_MEM=$MEM eal 0,1 "net_pcap0,rx_pcap=$cap,infinite_rx=1") -- \
        --key-file "$KEYS_OTHER" --deliver null --mbufs $((RN + 16384)) --duration 1 --stats-interval 0 \
        --stats-json "$RAW/recvdev-$s.json"
    rm -f "$cap"
done

# ------------------------------------------------------------------ extras
if [ $EXTRAS = 1 ]; then
    XS=$((SECS + 1))
    for s in 64 1400; do
        log "scaling: keycast-send with 2 worker lcores, payload $s, ${XS} s"
        oncpu "send2-$s" "$SEND" $(eal '0@0,1@1,2@0' net_null0) -- --key-file "$KEYS" --rate 0 \
            --payload-size "$s" --duration "$XS" --stats-interval 0 --stats-json "$RAW/send2-$s.json"
    done
    SW=10; [ $QUICK = 1 ] && SW=3
    for rot in 0 100; do
        log "key swap: keycast-send payload 512 flat out, rotate-ms $rot, $SW s"
        oncpu "swap-$rot" "$SEND" $(eal 0,1 net_null0) -- --key-file "$KEYS" --rate 0 \
            --payload-size 512 --duration "$SW" --rotate-ms "$rot" --stats-interval 0 \
            --stats-json "$RAW/swap-$rot.json"
    done
    # Receiver under swaps: a flat-out capture with a swap every 100 ms (and notices), then the
    # receiver in key-window mode (previous/current/next, like a KMS-fed client) verifies it.
    n=3000000; [ $QUICK = 1 ] && n=1000000
    cap=$WORK/swap.pcap
    log "key swap: capture $n packets (payload 64) with --rotate-ms 100, receiver verifies"
    oncpu "swapcap" "$SEND" $(eal 0,1 "net_pcap0,tx_pcap=$cap") -- --key-file "$KEYS" --rate 0 \
        --payload-size 64 --count "$n" --rotate-ms 100 --stats-interval 0 \
        --stats-json "$RAW/swapcap-send.json"
    oncpu "swaprecv" "$RECV" $(eal 0,1 "net_pcap0,rx_pcap=$cap") -- --key-file "$KEYS" \
        --key-window --deliver verify --expect "$n" --idle-exit 5 --duration 120 \
        --stats-interval 0 --stats-json "$RAW/swaprecv.json"
    rm -f "$cap"
fi

# ------------------------------------------------------------------ secgw
if [ $SECGW = 1 ]; then
    MODES="cpu legacy bypass"; [ $QUICK = 1 ] && MODES="legacy bypass"
    log "secgw: bench/secgw/run.sh --modes \"$MODES\" --seconds $SECS"
    "$HERE/secgw/run.sh" --sizes "$SIZES" --seconds "$SECS" --modes "$MODES" \
        --json "$RAW/secgw.json" >"$RAW/secgw.log" 2>&1 \
        || { tail -20 "$RAW/secgw.log" >&2; echo "bench: secgw failed; continuing without it" >&2; }
fi

# ------------------------------------------------------------------ key server
if [ $KEYD = 1 ]; then
    KS=3; [ $QUICK = 1 ] && KS=1
    log "key server: bench_keyd --seconds $KS (kept-alive requests, handshakes, 1k/10k clients, rekey storm)"
    timeout 240 "$KEYDB" --seconds "$KS" --json "$RAW/keyd.json" >"$RAW/keyd.log" 2>&1 \
        || { tail -20 "$RAW/keyd.log" >&2; echo "bench: bench_keyd failed; continuing" >&2; }
fi

echo "load_after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo "bench_seconds: $((SECONDS - T0))" >>"$OUT/machine.txt"
UPD=""; [ $UPDATE = 1 ] && UPD="$HERE/RESULTS.md"
"$PY" "$HERE/lib/report.py" "$OUT" "$UPD" "run.sh $*"
log "done in $((SECONDS - T0)) s: $OUT"
