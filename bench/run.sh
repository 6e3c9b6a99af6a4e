#!/usr/bin/env bash
# keycast performance bench: one command, one worker lcore, one table.
#
# usage: sudo bench/run.sh [--quick] [--seconds S] [--sizes "64 256 512 1024 1400"]
#                          [--no-secgw] [--no-keyd] [--no-storm] [--no-extras] [--no-channels] [--no-update]
#
#   --seconds   measured seconds per keycast-send run (default 2; one run per round)
#   --quick     1-second runs, 2 rounds, 150,000-frame captures, secgw in one mode, short
#               key-server runs (about 4.5 minutes; the full run takes about 9)
#   --no-secgw  skip DPDK ipsec-secgw (bench/secgw/run.sh); keycast/secgw columns stay empty
#   --no-keyd   skip the key-server bench (bench_keyd), its failover runs and largest storm
#   --no-storm  skip the largest rekey storm (up to 100,000 clients; at most 8 minutes, 3 with --quick)
#   --no-extras skip 2-worker scaling and key swap under load
#   --no-channels skip bench/channels.sh (1 / 64 / 1,024 channels against a one-channel build)
#   --no-update do not rewrite bench/RESULTS.md
#
# Measures, on one worker lcore (EAL -l 0,1: lcore 0 = control, lcore 1 = the worker):
#   floor     Intel IPsec-MB AES-GCM seal/open, one call per packet (bench_crypto, Google Benchmark
#             JSON, CPU time, pinned to CPU 1), AES-128 and AES-256, payloads 64..1400
#   sender    keycast-send --rate 0 (generator, verify pattern) into net_null
#   receiver  keycast-recv --deliver null, replay window on (4096), reading the zero-copy replay
#             port (bench/replay, LD_PRELOAD): ONE pass over a capture of 400,000 distinct packets
#             that keycast-send wrote (no repeats), frames cold in DRAM; mbufs recycled as a
#             driver does, and once more with one cold mbuf per frame (the worst case, "all
#             cold") and with the frames in the LLC (DDIO-like); a pass with non-matching keys
#             measures the input port + parse + drop alone
#   secgw     DPDK's ipsec-secgw (bench/secgw/run.sh), AES-128-GCM: outbound from net_pcap into
#             net_null; inbound from the same replay port over the same number of distinct frames
#   extras    sender with 2 worker lcores; key swap every 100 ms under full load (ratio) and a
#             receiver check (lost = auth_fail = 0) over a capture with swaps; key server
# Rounds: the floor (AES-128), the sender, the receiver and secgw inbound are measured once per
# size in each of 3 rounds, and each figure is its best round: this VM's host slows it down by up
# to ~1.8x for minutes at a time, never speeds it up, so spreading the samples over the run keeps
# one slow phase from spoiling a figure (the full floor runs at the start and the end as well).
# Cycles per packet: each worker thread's on-CPU time (schedstat, sampled by bench/lib/oncpu.py;
# receiver and secgw inbound: thread CPU time from the replay port) times the TSC rate, divided by
# its packets; the ratios use on-CPU figures on both sides (floor: Google Benchmark CPU time).
# Hugepages (EAL --in-memory) when the bench can reserve them, as in production; else --no-huge.
# IMIX = payloads 64/512/1400 in 7:4:1, computed from the measured per-size costs.
# Output: results/<UTC time>/ (results.json, table.txt, plot.png, raw/), results/latest -> it,
# and bench/RESULTS.md (table + machine).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BUILD=${BUILD_DIR:-$REPO/build}
PY=/usr/bin/python3

SECS=2
SIZES="64 256 512 1024 1400"
QUICK=0
SECGW=1
KEYD=1
STORM=1
EXTRAS=1
CHANNELS=1
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
        --no-storm) STORM=0; shift ;;
        --no-extras) EXTRAS=0; shift ;;
        --no-channels) CHANNELS=0; shift ;;
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
OLD_HUGEPAGES=""
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    rm -rf /var/run/dpdk/kcb$$* 2>/dev/null || true
    [ -z "$OLD_HUGEPAGES" ] || echo "$OLD_HUGEPAGES" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
}
trap cleanup EXIT
log() { printf '[%3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }

log "building ($BUILD)"
if [ ! -f "$BUILD/build.ninja" ]; then
    cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
ninja -C "$BUILD" -j2 bench_crypto keycast-send keycast-recv bench_keyd keycast_replay >"$RAW/build.log" 2>&1 \
    || { tail -30 "$RAW/build.log" >&2; die "build failed"; }
REPLAY_LIB=$BUILD/bench/libkeycast_replay.so
export KC_REPLAY_LIB=$REPLAY_LIB

# Hugepages, as in production, when this machine lets the bench reserve them (2 MiB pages; EAL
# --in-memory, so nothing is mounted); otherwise --no-huge (4 KiB pages: a TLB miss per frame of a
# large capture). The previous reservation is restored on exit.
HUGE=0
HP_WANT=2560  # 5 GiB: the largest process (receiver or secgw over the replay capture) needs ~2 GiB
if [ -w /proc/sys/vm/nr_hugepages ] && [ -d /sys/kernel/mm/hugepages/hugepages-2048kB ]; then
    hp_old=$(cat /proc/sys/vm/nr_hugepages)
    if [ "$hp_old" -lt "$HP_WANT" ]; then
        OLD_HUGEPAGES=$hp_old
        echo "$HP_WANT" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
    fi
    [ "$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages)" -ge 1024 ] && HUGE=1
fi
SEND=$BUILD/dataplane/keycast-send
RECV=$BUILD/dataplane/keycast-recv
CRYPTO=$BUILD/bench/bench_crypto
KEYDB=$BUILD/bench/keyd/bench_keyd

# ------------------------------------------------------------------ machine
{
    echo "model: $(lscpu | sed -n 's/^Model name: *//p')"
    echo "cpus: $(nproc)"
    echo "mhz: $(awk -F: '/^cpu MHz/ { gsub(/ /, "", $2); print $2; exit }' /proc/cpuinfo)"
    echo "pages: $([ $HUGE = 1 ] && echo "2 MiB hugepages (EAL --in-memory)" || echo "4 KiB (EAL --no-huge)")"
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
    local a="-m ${EAL_MEM:-1024} --no-pci --log-level=*:warning"
    if [ $HUGE = 1 ]; then a="--in-memory $a"; else a="--no-huge --file-prefix kcb$$-$N_EAL $a"; fi
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
MIN_T=0.2; [ $QUICK = 1 ] && MIN_T=0.1
# On the worker's CPU. This VM's clock and memory speed drift with its host's load (the same
# binary runs up to ~1.8x slower for minutes at a time), so every figure in the tables is the
# best one seen - the floor's too - and the measurements are made in ROUNDS spread over the run,
# so that one slow phase of the host cannot spoil every sample of one figure.
floor_run() {  # floor_run NAME FILTER REPETITIONS
    taskset -c 1 "$CRYPTO" --benchmark_filter="$2" --benchmark_min_time=$MIN_T \
        --benchmark_repetitions="$3" --benchmark_format=json --benchmark_out="$RAW/$1.json" \
        --benchmark_out_format=json >/dev/null 2>"$RAW/$1.log" || die "bench_crypto failed"
}
FLOOR_ALL='^BM_(FloorSeal|FloorOpen|EspEncap|EspDecap)'
FLOOR_128='^BM_(FloorSeal|FloorOpen)/aes128gcm'
floor_run bench_crypto "$FLOOR_ALL" 2

# ------------------------------------------------------------------ sender, receiver, secgw inbound
# sender    keycast-send --rate 0 (generator, verify pattern) into net_null for SECS s; per size, the
#           round with the fewest on-CPU cycles per packet is kept.
# receiver  keycast-recv --deliver null, replay window on (4096), reading the zero-copy replay port
#           (bench/replay/replay_port.cpp, LD_PRELOAD): a capture of RN distinct frames that
#           keycast-send wrote is preloaded into mbufs and flushed from the caches before the worker
#           starts (as a NIC leaves frames in host memory), then each frame is handed to the worker
#           once, without a copy. No frame is seen twice, so nothing is dropped as a replay and every
#           one must be deciphered (checked). Main figure: mbuf headers recycled from a driver-sized
#           pool (KC_REPLAY_MBUF=recycle: what any PMD does; frames and descriptors stay cold);
#           "all cold": one flushed mbuf per frame (distinct), header misses on top; "frames in LLC"
#           (rounds 1-2): recycled mbufs whose buffers a NIC thread on CPU 0 writes just before RX
#           (KC_REPLAY_MBUF=llc, DDIO-like). The replay port times the pass on the worker thread
#           (thread CPU time, first frame to the poll after the last). A pass with keys that do not
#           match (every frame parsed and dropped as unknown_spi, round 1) measures the input port +
#           parse + drop alone ("device" column).
# secgw in  DPDK ipsec-secgw inbound on the same replay port, the same number of distinct frames
#           (bench/secgw/run.sh --dirs in --in-replay RN), in the same rounds.
RN=400000; ROUNDS=3; [ $QUICK = 1 ] && { RN=150000; ROUNDS=2; }
MEM=$((RN * 25 / 10000 + 800))
KEYS_OTHER=$WORK/keys-other.txt
for spi in $(seq 9000 9009); do echo "$spi $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"; done >"$KEYS_OTHER"
HFLAG=""; [ $HUGE = 1 ] && HFLAG=--huge
SG_IN_MODES="cpu legacy"; [ $QUICK = 1 ] && SG_IN_MODES="legacy"
# [MBUF=distinct] replay_pass NAME KEYS EXTRA...: one pass over $cap -> $RAW/NAME.json (keycast),
# NAME.replay.json; mbufs recycled unless MBUF says otherwise
replay_pass() {
    local name=$1 keys=$2; shift 2
    KC_REPLAY_MBUF=${MBUF:-recycle} KC_REPLAY_PCAP=$cap KC_REPLAY_OUT=$RAW/$name.replay.json LD_PRELOAD=$REPLAY_LIB \
        "$RECV" $(EAL_MEM=$MEM eal 0,1) -- --key-file "$keys" --deliver null --idle-exit 0.5 \
        --duration 120 --stats-interval 0 --stats-json "$RAW/$name.json" "$@" >"$RAW/$name.log" 2>&1 \
        || { tail -20 "$RAW/$name.log" >&2; die "$name failed"; }
    [ -s "$RAW/$name.replay.json" ] || die "$name: the replay pass did not complete (see $RAW/$name.log)"
}
# keep_best_oncpu NAME: of the sender runs NAME-r*, the one with the fewest on-CPU cycles per
# packet becomes NAME.json / NAME.oncpu.json
keep_best_oncpu() {
    local best
    best=$("$PY" -c 'import json,sys
r = []
for f in sys.argv[1:]:
    a = f[:-len(".oncpu.json")]
    j, o = json.load(open(a + ".json")), json.load(open(f))
    r.append((sum(o["workers"].values()) / max(1, j["packets_sent"]), a))
print(min(r)[1])' "$RAW/$1"-r*.oncpu.json)
    cp "$best.json" "$RAW/$1.json"
    cp "$best.oncpu.json" "$RAW/$1.oncpu.json"
}
# keep_best NAME: the fastest of NAME-r* becomes NAME.json / NAME.replay.json
keep_best() {
    local best
    best=$("$PY" -c 'import json,sys; r=[(json.load(open(f))["cycles_per_pkt_cpu"], f) for f in sys.argv[1:]]; print(min(r)[1][:-len(".replay.json")])' \
        "$RAW/$1"-r*.replay.json)
    cp "$best.json" "$RAW/$1.json"
    cp "$best.replay.json" "$RAW/$1.replay.json"
}
for s in $SIZES; do
    log "receiver: capture $RN distinct packets of payload $s"
    "$SEND" $(eal 0,1 "net_pcap0,tx_pcap=$WORK/esp-$s.pcap") -- --key-file "$KEYS" --rate 0 \
        --payload-size "$s" --count "$RN" --stats-interval 0 >"$RAW/cap-$s.log" 2>&1 || die "capture $s failed"
done
SG_OK=$SECGW
for r in $(seq $ROUNDS); do
    log "round $r of $ROUNDS: floor (AES-128), sender, receiver$([ "$SG_OK" = 1 ] && echo ", secgw inbound") at each size"
    floor_run "bench_crypto_round$r" "$FLOOR_128" 1
    for s in $SIZES; do
        oncpu "send-$s-r$r" "$SEND" $(eal 0,1 net_null0) -- --key-file "$KEYS" --rate 0 --payload-size "$s" \
            --duration "$SECS" --stats-interval 0 --stats-json "$RAW/send-$s-r$r.json"
        cap=$WORK/esp-$s.pcap
        replay_pass "recv-$s-r$r" "$KEYS" --replay-window 4096
        MBUF=distinct replay_pass "recvcold-$s-r$r" "$KEYS" --replay-window 4096
        passes="recv recvcold"
        if [ $r -le 2 ]; then
            MBUF=llc replay_pass "recvllc-$s-r$r" "$KEYS" --replay-window 4096
            passes="$passes recvllc"
        fi
        # A figure is only worth printing if the pass deciphered the whole capture.
        for p in $passes; do
            "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); n=int(sys.argv[2]); sys.exit(0 if d["packets_ok"] == n and d["lost"] == 0 and d["auth_fail"] == 0 and d["malformed"] == 0 and d["replay"] == 0 and d["drops"]["not_ipv4"] == 0 else 1)' \
                "$RAW/$p-$s-r$r.json" "$RN" || die "receiver pass $p at payload $s did not decipher all $RN packets: see $RAW/$p-$s-r$r.log"
        done
        [ $r -gt 1 ] || replay_pass "recvdev-$s-r$r" "$KEYS_OTHER"
        if [ "$SG_OK" = 1 ]; then
            "$HERE/secgw/run.sh" --sizes "$s" --modes "$SG_IN_MODES" --dirs in --no-verify $HFLAG \
                --in-replay "$RN" --mbuf recycle --reps 1 --cache "$WORK/secgw-cache" --json "$RAW/secgw-in-$s-r$r.json" \
                >"$RAW/secgw-in-$s-r$r.log" 2>&1 \
                || { tail -20 "$RAW/secgw-in-$s-r$r.log" >&2; echo "bench: secgw inbound failed; continuing without it" >&2; SG_OK=0; }
        fi
    done
done
for s in $SIZES; do
    keep_best_oncpu "send-$s"
    keep_best "recv-$s"
    keep_best "recvcold-$s"
    keep_best "recvllc-$s"
    keep_best "recvdev-$s"
    rm -f "$WORK/esp-$s.pcap"
done
rm -rf "$WORK/secgw-cache"

# ------------------------------------------------------------------ extras
if [ $EXTRAS = 1 ]; then
    XS=$((SECS + 1))
    for s in 64 1400; do
        log "scaling: keycast-send with 2 worker lcores, payload $s, ${XS} s"
        oncpu "send2-$s" "$SEND" $(eal '0@0,1@1,2@0' net_null0) -- --key-file "$KEYS" --rate 0 \
            --payload-size "$s" --duration "$XS" --stats-interval 0 --stats-json "$RAW/send2-$s.json"
    done
    SW=10; [ $QUICK = 1 ] && SW=3
    # Two alternated pairs (without, with rotation), the best of each kept: a single pair fell into
    # different phases of the host's load once (ratio 0.92 in one run, 1.006 and 1.013 in others).
    for k in 1 2; do
        for rot in 0 100; do
            log "key swap: keycast-send payload 512 flat out, rotate-ms $rot, $SW s (pair $k of 2)"
            oncpu "swap-$rot-r$k" "$SEND" $(eal 0,1 net_null0) -- --key-file "$KEYS" --rate 0 \
                --payload-size 512 --duration "$SW" --rotate-ms "$rot" --stats-interval 0 \
                --stats-json "$RAW/swap-$rot-r$k.json"
        done
    done
    keep_best_oncpu swap-0
    keep_best_oncpu swap-100
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

# ------------------------------------------------------------------ secgw outbound
# (and the correctness runs: Scapy checks secgw's ESP output and its decipherment, both ways)
if [ $SECGW = 1 ]; then
    MODES="cpu legacy bypass"; [ $QUICK = 1 ] && MODES="legacy bypass"
    log "secgw: bench/secgw/run.sh --dirs out --modes \"$MODES\" --seconds $SECS"
    "$HERE/secgw/run.sh" --sizes "$SIZES" --seconds "$SECS" --modes "$MODES" --dirs out $HFLAG \
        --json "$RAW/secgw-out.json" >"$RAW/secgw.log" 2>&1 \
        || { tail -20 "$RAW/secgw.log" >&2; echo "bench: secgw failed; continuing without it" >&2; }
fi
# One list for the report: outbound rows and every inbound round's rows.
"$PY" -c 'import json,sys,os; out=[]
for f in sys.argv[1:]:
    if os.path.exists(f): out += json.load(open(f))
json.dump(out, open(os.path.join(os.path.dirname(sys.argv[1]), "secgw.json"), "w"), indent=1)' \
    "$RAW/secgw-out.json" "$RAW"/secgw-in-*.json 2>/dev/null || true

# ------------------------------------------------------------------ key server
if [ $KEYD = 1 ]; then
    KS=3; [ $QUICK = 1 ] && KS=1
    log "key server: bench_keyd --seconds $KS (kept-alive requests on SQLite and PostgreSQL, handshakes, 1k/10k clients, rekey storm)"
    timeout 240 "$KEYDB" --seconds "$KS" --json "$RAW/keyd.json" >"$RAW/keyd.log" 2>&1 \
        || { tail -20 "$RAW/keyd.log" >&2; echo "bench: bench_keyd failed; continuing" >&2; }
    KILLS=10; [ $QUICK = 1 ] && KILLS=3
    for be in sqlite postgres; do
        log "key server failover: bench/keyd/failover.py --backend $be ($KILLS SIGKILLs of the active master, --failover-ms 3000)"
        timeout 300 "$PY" "$HERE/keyd/failover.py" --build "$BUILD" --backend "$be" --kills "$KILLS" \
            --json "$RAW/failover-$be.json" >>"$RAW/failover.log" 2>&1 \
            || { tail -20 "$RAW/failover.log" >&2; echo "bench: failover ($be) failed; continuing" >&2; }
    done
fi

# ------------------------------------------------------------------ largest rekey storm
# As many kept-alive mTLS clients as this machine holds (aim 100,000), then the
# rekey storm at once and spread; bench_keyd says how far it got and why it stopped.
if [ $KEYD = 1 ] && [ $STORM = 1 ]; then
    SB=300; [ $QUICK = 1 ] && SB=45
    log "key server: largest rekey storm: bench_keyd --max-clients 100000 --setup-budget-s $SB"
    # budget + the storms, a last stage's stragglers (15 s handshake timeout) and tearing the fleet down
    timeout $((SB + 180)) "$KEYDB" --max-clients 100000 --setup-budget-s "$SB" --json "$RAW/keyd-storm.json" \
        >"$RAW/keyd-storm.log" 2>&1 \
        || { tail -20 "$RAW/keyd-storm.log" >&2; echo "bench: largest storm failed; continuing" >&2; }
fi

# ------------------------------------------------------------------ channels
if [ $CHANNELS = 1 ]; then
    log "channels: bench/channels.sh (1, 64, 1024 channels; staggered swaps; start with 1024)"
    CQ=""; [ $QUICK = 1 ] && CQ=--quick
    BUILD_DIR=$BUILD "$HERE/channels.sh" $CQ --seconds "$SECS" --out "$OUT/channels" >"$RAW/channels.log" 2>&1 \
        || { tail -20 "$RAW/channels.log" >&2; echo "bench: channels bench failed; continuing" >&2; }
fi

log "floor again (bench_crypto), for the best-of figures"
floor_run bench_crypto_end "$FLOOR_ALL" 2
echo "load_after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo "bench_seconds: $((SECONDS - T0))" >>"$OUT/machine.txt"
UPD=""; [ $UPDATE = 1 ] && UPD="$HERE/RESULTS.md"
"$PY" "$HERE/lib/report.py" "$OUT" "$UPD" "run.sh $*"
if [ -n "$UPD" ] && [ -s "$OUT/channels/channels.txt" ]; then
    # The channels block has markers of its own; every run replaces it.
    "$PY" - "$UPD" "$OUT/channels/channels.txt" <<'PYEOF'
import sys
md, block = open(sys.argv[1]).read(), open(sys.argv[2]).read()
b, e = "<!-- channels:begin -->", "<!-- channels:end -->"
new = f"{b}\n\n{block}\n{e}"
if b in md and e in md:
    md = md[:md.index(b)] + new + md[md.index(e) + len(e):]
else:
    md = md.rstrip("\n") + "\n\n" + new + "\n"
open(sys.argv[1], "w").write(md)
PYEOF
    cat "$OUT/channels/channels.txt" >&2
fi
log "done in $((SECONDS - T0)) s: $OUT"
