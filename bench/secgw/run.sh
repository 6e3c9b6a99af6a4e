#!/usr/bin/env bash
# DPDK ipsec-secgw baseline for keycast: ESP transport mode, AES-GCM, IPv4 UDP to
# 239.1.1.1:5000, one worker lcore, input net_pcap (infinite_rx), output net_null.
#
# usage: bench/secgw/run.sh [--sizes "64 256 512 1024 1400"] [--seconds S] [--json OUT]
#                           [--modes "cpu lib legacy"] [--algos "aes128 aes256"]
#                           [--pmd aesni_gcm|aesni_mb] [--lcore N] [--count N] [--no-verify]
#
#   --sizes    UDP payload sizes in bytes (default "64 256 512 1024 1400")
#   --seconds  measured seconds per run (default 5); each run takes about S+2 s
#   --json     write [{"size":..,"dir":"out"|"in","mpps":..,"gbps":..,...}, ...] to OUT
#   --modes    cpu    = librte_ipsec path (-l), SA "type cpu-crypto" (synchronous CPU crypto)
#              lib    = librte_ipsec path (-l), lookaside-none (ops through the crypto PMD queue)
#              legacy = secgw's own ESP code (no -l), lookaside-none
#              bypass = no crypto: SP rules bypass IPsec (reference for secgw's I/O path; algo "none")
#              (default "cpu lib legacy")
#   --algos    aes128 and/or aes256 (default aes128)
#   --pmd      crypto vdev: aesni_gcm (crypto_aesni_gcm0, default) or aesni_mb (crypto_aesni_mb0)
#   --lcore    CPU used as the single (main = worker) lcore (default 1)
#   --count    distinct frames in each input capture (default 1024)
#   --no-verify  skip the correctness runs (Scapy checks secgw's ESP output and decipherment)
#   --in-replay N  inbound runs read N distinct frames once each from the zero-copy replay port
#              (bench/replay, LD_PRELOAD; the same input keycast-recv is measured on) instead of
#              looping --count frames through net_pcap; timed by the replay port; replay window
#              --window in the librte_ipsec modes (legacy has none); bypass is not run inbound
#   --reps R   with --in-replay: passes per size and mode, the fastest is kept (default 3)
#   --window W with --in-replay: secgw's -w (default 4096, as keycast-recv's default)
#   --mem MB   EAL memory (default 512; with --in-replay at least N * 2.5 KB more is used)
#   --huge     2 MiB hugepages (EAL --in-memory; the caller reserves them) instead of --no-huge
#   --dirs D   directions to measure: "out in" (default), "out" or "in"
#   --cache DIR  with --in-replay: keep the replay captures in DIR and reuse them (several calls)
#   --mbuf M   with --in-replay: the replay port's mbufs, recycle (default: a driver's small
#              recycled pool, frames cold), distinct (one cold mbuf per frame, the worst case) or
#              llc (recycled, frames written by a NIC thread on CPU 0 just before RX)
#
# Gbps = payload bits only (UDP payload = size). Packets/s = growth of secgw's own per-lcore
# "Packets sent" counter (printed every second with -t 1) between the first and the last sample.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${SCAPY_PYTHON:-/usr/bin/python3}

SIZES="64 256 512 1024 1400"
SECONDS_RUN=5
JSON=""
MODES="cpu lib legacy"
ALGOS="aes128"
PMD=aesni_gcm
LCORE=1
COUNT=1024
VERIFY=1
REPLAY=0
REPS=3
WINDOW=4096
MEM=512
PAGES=--no-huge
DIRS="out in"
CACHE=""
MBUF=recycle
REPLAY_LIB=${KC_REPLAY_LIB:-${BUILD_DIR:-$REPO/build}/bench/libkeycast_replay.so}
SPI=1001

die() { echo "secgw run: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --sizes) SIZES=${2:?}; shift 2 ;;
        --seconds) SECONDS_RUN=${2:?}; shift 2 ;;
        --json) JSON=${2:?}; shift 2 ;;
        --modes) MODES=${2:?}; shift 2 ;;
        --algos) ALGOS=${2:?}; shift 2 ;;
        --pmd) PMD=${2:?}; shift 2 ;;
        --lcore) LCORE=${2:?}; shift 2 ;;
        --count) COUNT=${2:?}; shift 2 ;;
        --no-verify) VERIFY=0; shift ;;
        --in-replay) REPLAY=${2:?}; shift 2 ;;
        --reps) REPS=${2:?}; shift 2 ;;
        --window) WINDOW=${2:?}; shift 2 ;;
        --mem) MEM=${2:?}; shift 2 ;;
        --huge) PAGES=--in-memory; shift ;;
        --dirs) DIRS=${2:?}; shift 2 ;;
        --cache) CACHE=${2:?}; shift 2 ;;
        --mbuf) MBUF=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done

[[ $SECONDS_RUN =~ ^[0-9]+$ ]] && [ "$SECONDS_RUN" -ge 1 ] || die "--seconds must be a positive integer"
[[ $COUNT =~ ^[0-9]+$ ]] && [ "$COUNT" -ge 1 ] && [ "$COUNT" -le 4096 ] || die "--count must be 1..4096"
[[ $REPLAY =~ ^[0-9]+$ ]] || die "--in-replay must be a number of frames"
[[ $REPS =~ ^[0-9]+$ ]] && [ "$REPS" -ge 1 ] || die "--reps must be a positive integer"
[[ $WINDOW =~ ^[0-9]+$ ]] || die "--window must be a number"
case $MBUF in recycle|distinct|llc) ;; *) die "--mbuf must be recycle, distinct or llc" ;; esac
[[ $MEM =~ ^[0-9]+$ ]] && [ "$MEM" -ge 64 ] || die "--mem must be at least 64 (MB)"
if [ "$REPLAY" -gt 0 ]; then
    [ -f "$REPLAY_LIB" ] || die "--in-replay needs $REPLAY_LIB (ninja -C build keycast_replay; or set KC_REPLAY_LIB)"
    MEM=$((MEM + REPLAY * 25 / 10000 + 64))
fi
for s in $SIZES; do [[ $s =~ ^[0-9]+$ ]] && [ "$s" -ge 8 ] && [ "$s" -le 1400 ] || die "size $s not in 8..1400"; done
for d in $DIRS; do case $d in out|in) ;; *) die "unknown direction $d (out or in)" ;; esac; done
has_dir() { case " $DIRS " in *" $1 "*) return 0 ;; esac; return 1; }
[ -z "$CACHE" ] || mkdir -p "$CACHE" || die "--cache $CACHE: cannot create"
for m in $MODES; do case $m in cpu|lib|legacy|bypass) ;; *) die "unknown mode $m" ;; esac; done
for a in $ALGOS; do case $a in aes128|aes256) ;; *) die "unknown algo $a" ;; esac; done
case $PMD in
    aesni_gcm) CDEV=crypto_aesni_gcm0 ;;
    aesni_mb) CDEV=crypto_aesni_mb0 ;;
    *) die "unknown --pmd $PMD (aesni_gcm or aesni_mb)" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (DPDK EAL)"
command -v stdbuf >/dev/null || die "stdbuf (coreutils) not found"
"$PY" -c 'import scapy.layers.ipsec, cryptography' 2>/dev/null \
    || die "$PY lacks scapy/cryptography (set SCAPY_PYTHON to Debian's /usr/bin/python3)"

BIN=$("$HERE/build.sh") || die "build failed"

WORK=$(mktemp -d /tmp/keycast-secgw.XXXXXX)
PREFIX_BASE=kcsecgw$$
PID=""
CUR_PREFIX=""
RUNS=0

stop_secgw() {
    # Stop the secgw we started (by its pid only): SIGINT (clean exit), then SIGKILL.
    local p=$PID
    [ -n "$p" ] || return 0
    if kill -0 "$p" 2>/dev/null; then
        kill -INT "$p" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    fi
    wait "$p" 2>/dev/null || true
    PID=""
    [ -z "$CUR_PREFIX" ] || rm -rf "/var/run/dpdk/$CUR_PREFIX"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_secgw
    rm -rf "$WORK"
    rm -rf /var/run/dpdk/"$PREFIX_BASE"-* 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "secgw run: interrupted" >&2; exit 130' INT TERM HUP

cfg_file() { # dir algo mode
    case $3 in
        bypass) echo "$HERE/conf/$1-bypass.cfg" ;;
        cpu) echo "$HERE/conf/$1-$2-cpu.cfg" ;;
        *) echo "$HERE/conf/$1-$2-lookaside.cfg" ;;
    esac
}
FIRST_ALGO=${ALGOS%% *}
# skip ALGO MODE: the bypass mode has no algorithm; run it once (with the first algo).
skip() { [ "$2" = bypass ] && [ "$1" != "$FIRST_ALGO" ]; }
label() { if [ "$2" = bypass ]; then echo none; else echo "$1"; fi; }
key_of() { awk '$1=="sa" && $2=="out" { for (i=1;i<NF;i++) if ($i=="aead_key") print $(i+1) }' "$1" | tr -d ':'; }
mode_flags() { case $1 in cpu|lib) echo "-l";; *) echo "";; esac; }

# start_secgw NAME PORT0_VDEV PORT1_VDEV CFG FLAGS... : runs secgw in the background, sets PID.
start_secgw() {
    local name=$1 p0=$2 p1=$3 cfg=$4; shift 4
    RUNS=$((RUNS + 1))
    local prefix=$PREFIX_BASE-$RUNS
    CUR_PREFIX=$prefix
    LOG=$WORK/$name.log
    : >"$LOG"
    # Port 0 = protected, port 1 = unprotected (-u 0x2). One lcore: it is both the main and the
    # only worker lcore, polling both ports; stats are printed by the EAL alarm (control) thread.
    # An empty PORT1_VDEV: port 1 is the replay port that the LD_PRELOAD shim adds (env set by caller).
    local vdevs=(--vdev "$p0")
    [ -z "$p1" ] || vdevs+=(--vdev "$p1")
    stdbuf -oL -eL "$BIN" -l "$LCORE" "$PAGES" -m "$MEM" --file-prefix "$prefix" --no-pci \
        --no-telemetry --log-level=lib.eal:warning \
        "${vdevs[@]}" --vdev "$CDEV" -- \
        -p 0x3 -u 0x2 --config "(0,0,$LCORE),(1,0,$LCORE)" -f "$cfg" "$@" >"$LOG" 2>&1 &
    PID=$!
}
# clean_log LOG: strip the screen-control escapes of secgw's stats screen.
clean_log() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$1"; }
sent_samples() { clean_log "$1" | awk '/^Packets sent:/ { print $3 }'; }
drop_samples() { clean_log "$1" | awk '/^Packets dropped:/ { print $3 }'; }
fail_run() {
    echo "---- last lines of $1 ----" >&2
    clean_log "$1" | grep -v '^[[:space:]]*$' | tail -n 25 >&2
    die "$2"
}

echo "# ipsec-secgw baseline: $(basename "$BIN") from DPDK $(pkg-config --modversion libdpdk), crypto vdev $CDEV, lcore $LCORE"
echo "# host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, load avg $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- input captures
echo "# generating captures ($COUNT frames per size) ..."
for algo in $ALGOS; do
    key=$(key_of "$(cfg_file out "$algo" cpu)")
    [ -n "$key" ] || die "no aead_key in $(cfg_file out "$algo" cpu)"
    for size in $SIZES; do
        # Only what the throughput runs below read (the verification runs make their own).
        if has_dir out || { has_dir in && [ "$REPLAY" = 0 ]; }; then
            [ -f "$WORK/plain-$size.pcap" ] || "$PY" "$HERE/gen_pcap.py" plain "$WORK/plain-$size.pcap" "$size" "$COUNT"
        fi
        if has_dir in && [ "$REPLAY" = 0 ]; then
            "$PY" "$HERE/gen_pcap.py" esp "$WORK/esp-$algo-$size.pcap" "$size" "$COUNT" "$SPI" "$key"
        fi
    done
done
if [ "$REPLAY" -gt 0 ]; then
    echo "# generating replay captures ($REPLAY distinct frames per size; sequence numbers 1..$REPLAY) ..."
fi

# ---------------------------------------------------------------- correctness
if [ "$VERIFY" = 1 ]; then
    VSIZES=$(echo "$SIZES" | tr -s ' ' ',' | sed 's/^,//; s/,$//')
    VN=64
    "$PY" "$HERE/gen_pcap.py" plain "$WORK/vplain.pcap" "$VSIZES" "$VN"
    for algo in $ALGOS; do
        key=$(key_of "$(cfg_file out "$algo" cpu)")
        "$PY" "$HERE/gen_pcap.py" esp "$WORK/vesp-$algo.pcap" "$VSIZES" "$VN" "$SPI" "$key"
        for mode in $MODES; do
            skip "$algo" "$mode" && continue
            # Inbound verification runs with a 64-packet replay window in the librte_ipsec modes.
            win=""; [ "$mode" = legacy ] || win="-w 64"
            for dir in out in; do
                cfg=$(cfg_file "$dir" "$algo" "$mode")
                cap=$WORK/v-$dir-$algo-$mode.pcap
                if [ $dir = out ]; then
                    start_secgw "v-$dir-$algo-$mode" "net_pcap0,rx_pcap=$WORK/vplain.pcap" \
                        "net_pcap1,tx_pcap=$cap" "$cfg" $(mode_flags "$mode")
                else
                    vin=$WORK/vesp-$algo.pcap; [ "$mode" = bypass ] && vin=$WORK/vplain.pcap
                    start_secgw "v-$dir-$algo-$mode" "net_pcap0,tx_pcap=$cap" \
                        "net_pcap1,rx_pcap=$vin" "$cfg" $(mode_flags "$mode") $win
                fi
                # Wait until the worker runs, give it a moment to drain the finite capture, stop.
                for _ in $(seq 100); do
                    grep -q "entering main loop" "$LOG" 2>/dev/null && break
                    kill -0 "$PID" 2>/dev/null || break
                    sleep 0.1
                done
                kill -0 "$PID" 2>/dev/null || fail_run "$LOG" "secgw exited early (verify $dir $algo $mode)"
                sleep 1
                stop_secgw
                if [ $dir = out ] && [ "$mode" != bypass ]; then
                    res=$("$PY" "$HERE/verify.py" out "$WORK/vplain.pcap" "$cap" "$SPI" "$key") \
                        || fail_run "$LOG" "verify $dir $algo $mode: $res"
                else
                    vk=in; [ "$mode" = bypass ] && vk=same
                    res=$("$PY" "$HERE/verify.py" $vk "$WORK/vplain.pcap" "$cap") \
                        || fail_run "$LOG" "verify $dir $algo $mode: $res"
                fi
                printf '# verify %-3s %-6s %-6s %s\n' "$dir" "$(label "$algo" "$mode")" "$mode" "$res"
            done
        done
    done
fi

# ---------------------------------------------------------------- throughput
MHZ=$(awk -F: '/^cpu MHz/ { print $2; exit }' /proc/cpuinfo | tr -d ' ')
RESULTS=$WORK/results.tsv
: >"$RESULTS"
now_ns() { date +%s%N; }
oncpu_ns() { awk '{ print $1 }' "/proc/$PID/task/$PID/schedstat" 2>/dev/null || echo 0; }
echo
echo "# Mpps = mean over the ${SECONDS_RUN} s window; best1s = best 1-s interval; cpu% = share of that window the"
echo "# worker lcore thread was actually on a CPU (the machine is shared); cyc/pkt = on-CPU cycles per packet"
echo "# at ${MHZ:-?} MHz; Mpps/cpu = Mpps per second the worker was on a CPU (what a whole core would do)."
echo "# Gbps_pl = UDP payload bits, Gbps_l2 = output frame bits (Ethernet header, no FCS)."
printf '%-6s %5s %-3s %-6s %8s %8s %5s %8s %8s %8s %7s\n' algo size dir mode Mpps best1s cpu% Mpps/cpu Gbps_pl Gbps_l2 cyc/pkt

# run_in_replay ALGO SIZE MODE: inbound, one pass over $REPLAY distinct frames from the replay
# port, $REPS times; appends the fastest pass to $RESULTS (best1s = wall Mpps of that pass).
run_in_replay() {
    local algo=$1 size=$2 mode=$3 cap=${CACHE:-$WORK}/rep-$1-$2-$REPLAY.pcap cfg best="" bj="" r out pps sent
    cfg=$(cfg_file in "$algo" "$mode")
    [ -f "$cap" ] || "$PY" "$HERE/gen_pcap.py" espfast "$cap" "$size" "$REPLAY" "$SPI" \
        "$(key_of "$(cfg_file out "$algo" cpu)")" || die "replay capture $algo $size failed"
    local win=""; [ "$mode" = legacy ] || win="-w $WINDOW"
    for r in $(seq "$REPS"); do
        out=$WORK/replay-$algo-$size-$mode-$r.json
        rm -f "$out"
        KC_REPLAY_MBUF=$MBUF KC_REPLAY_PCAP=$cap KC_REPLAY_OUT=$out LD_PRELOAD=$REPLAY_LIB \
            start_secgw "in-$algo-$mode-$size-r$r" "net_null0,no-rx=1" "" "$cfg" $(mode_flags "$mode") $win -t 1
        local deadline=$((SECONDS + 120))
        until [ -s "$out" ]; do
            kill -0 "$PID" 2>/dev/null || fail_run "$LOG" "secgw exited early (replay in $algo $mode $size)"
            [ $SECONDS -lt $deadline ] || fail_run "$LOG" "the replay pass did not end (in $algo $mode $size)"
            sleep 0.05
        done
        sleep 1.5  # one more statistics print, after the pass
        stop_secgw
        # Every frame must have gone out deciphered, or the figure is not worth printing.
        sent=$(sent_samples "$LOG" | tail -n 1)
        [ "${sent:-0}" = "$REPLAY" ] || fail_run "$LOG" "replay in $algo $mode $size: secgw sent ${sent:-0} of $REPLAY"
        local c; c=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["cycles_per_pkt_cpu"])' "$out")
        if [ -z "$best" ] || awk -v a="$c" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$c; bj=$out; fi
    done
    "$PY" - "$bj" "$size" "$mode" "$(label "$algo" "$mode")" "$REPS" >>"$RESULTS" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1])); size = int(sys.argv[2])
cyc = j["cycles_per_pkt_cpu"]; hz = j["tsc_hz"]; pps_cpu = hz / cyc
wall_mpps = j["packets"] / j["wall_s"] / 1e6; share = min(1.0, j["cpu_s"] / j["wall_s"])
l2 = 14 + 20 + 8 + size
print("\t".join(str(x) for x in (sys.argv[4], size, "in", sys.argv[3], "%.4f" % wall_mpps, "%.4f" % wall_mpps,
      "%.1f" % (share * 100), "%.4f" % (pps_cpu / 1e6), "%.4f" % (pps_cpu * size * 8 / 1e9),
      "%.4f" % (pps_cpu * l2 * 8 / 1e9), "%.0f" % cyc, int(j["packets"] / j["wall_s"]), 0)))
PYEOF
    printf '%-6s %5d %-3s %-6s replay pass of %d frames, best of %d: %.0f cycles/pkt\n' "$(label "$algo" "$mode")" \
        "$size" in "$mode" "$REPLAY" "$REPS" "$best"
}

for algo in $ALGOS; do
    for size in $SIZES; do
        for dir in out in; do
            has_dir "$dir" || continue
            for mode in $MODES; do
                skip "$algo" "$mode" && continue
                if [ $dir = in ] && [ "$REPLAY" -gt 0 ]; then
                    [ "$mode" = bypass ] || run_in_replay "$algo" "$size" "$mode"
                    continue
                fi
                cfg=$(cfg_file "$dir" "$algo" "$mode")
                if [ $dir = out ]; then
                    in=$WORK/plain-$size.pcap
                    start_secgw "$dir-$algo-$mode-$size" "net_pcap0,rx_pcap=$in,infinite_rx=1" \
                        "net_null0,no-rx=1" "$cfg" $(mode_flags "$mode") -t 1
                else
                    in=$WORK/esp-$algo-$size.pcap; [ "$mode" = bypass ] && in=$WORK/plain-$size.pcap
                    start_secgw "$dir-$algo-$mode-$size" "net_null0,no-rx=1" \
                        "net_pcap1,rx_pcap=$in,infinite_rx=1" "$cfg" $(mode_flags "$mode") -t 1
                fi
                # secgw prints its cumulative counters every second (first print ~1 s after start).
                # Measure from the 1st to the (S+1)th print; note the worker's on-CPU time at both.
                need=$((SECONDS_RUN + 1))
                deadline=$((SECONDS + SECONDS_RUN + 30))
                w0=""; c0=""
                while :; do
                    n=$(sent_samples "$LOG" | wc -l)
                    if [ -z "$w0" ] && [ "$n" -ge 1 ]; then w0=$(now_ns); c0=$(oncpu_ns); fi
                    if [ "$n" -ge "$need" ]; then w1=$(now_ns); c1=$(oncpu_ns); break; fi
                    kill -0 "$PID" 2>/dev/null || fail_run "$LOG" "secgw exited early ($dir $algo $mode $size)"
                    [ $SECONDS -lt $deadline ] || fail_run "$LOG" "no statistics from secgw ($dir $algo $mode $size)"
                    sleep 0.05
                done
                stop_secgw
                samples=$(sent_samples "$LOG" | head -n "$need" | tr '\n' ' ')
                drops=$(drop_samples "$LOG" | sed -n "${need}p")
                line=$(awk -v s="$size" -v dir="$dir" -v mhz="${MHZ:-0}" -v smp="$samples" -v mode="$mode" \
                           -v w0="$w0" -v w1="$w1" -v c0="$c0" -v c1="$c1" 'BEGIN {
                    n = split(smp, v, " "); best = 0
                    for (i = 2; i <= n; i++) if (v[i] - v[i-1] > best) best = v[i] - v[i-1]
                    pps = (v[n] - v[1]) / (n - 1)
                    share = (w1 > w0 && c1 > c0) ? (c1 - c0) / (w1 - w0) : 0
                    if (share > 1) share = 1
                    ip = 20 + 8 + s                                   # IPv4 + UDP + payload
                    esp = 20 + 8 + 8 + int((8 + s + 2 + 3) / 4) * 4 + 16 # + ESP hdr, IV, pad/trailer, ICV
                    l2 = 14 + ((dir == "out" && mode != "bypass") ? esp : ip)
                    cyc = (pps > 0 && share > 0 && mhz > 0) ? mhz * 1e6 * share / pps : 0
                    printf "%d %.4f %.4f %.1f %.4f %.4f %.4f %.0f", pps, pps/1e6, best/1e6, share*100,
                           (share > 0 ? pps/share/1e6 : 0), pps*s*8/1e9, pps*l2*8/1e9, cyc }')
                read -r pps mpps best cpu mcpu gbps gbl2 cyc <<<"$line"
                [ "$pps" -gt 0 ] || fail_run "$LOG" "no packets sent ($dir $algo $mode $size; dropped ${drops:-?})"
                printf '%-6s %5d %-3s %-6s %8.3f %8.3f %5.1f %8.3f %8.3f %8.3f %7s\n' "$(label "$algo" "$mode")" \
                    "$size" "$dir" "$mode" "$mpps" "$best" "$cpu" "$mcpu" "$gbps" "$gbl2" "$cyc"
                [ "${drops:-0}" = 0 ] || echo "#   warning: secgw counted $drops dropped packets in this run" >&2
                printf '%s\t' "$(label "$algo" "$mode")" "$size" "$dir" "$mode" "$mpps" "$best" "$cpu" "$mcpu" "$gbps" \
                    "$gbl2" "$cyc" "$pps" >>"$RESULTS"
                printf '%s\n' "${drops:-0}" >>"$RESULTS"
            done
        done
        [ -n "$CACHE" ] || rm -f "$WORK"/rep-*-"$size"-*.pcap
    done
done

if [ -n "$JSON" ]; then
    "$PY" - "$RESULTS" "$JSON" "$PMD" "$SECONDS_RUN" "$REPLAY" <<'EOF'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
out = []
for algo, size, d, mode, mpps, best, cpu, mcpu, gbps, gbl2, cyc, pps, drops in rows:
    out.append({"size": int(size), "dir": d, "mpps": round(float(mpps), 4), "gbps": round(float(gbps), 4),
                "mpps_best_1s": round(float(best), 4), "worker_cpu_pct": float(cpu),
                "mpps_per_cpu_s": round(float(mcpu), 4),
                "gbps_l2": round(float(gbl2), 4), "pps": int(pps), "cycles_per_pkt": int(float(cyc)),
                "mode": mode, "algo": algo, "pmd": sys.argv[3], "seconds": int(sys.argv[4]),
                "dropped": int(drops), "best": False,
                "input": "replay" if d == "in" and int(sys.argv[5]) > 0 else "net_pcap"})
best = {}
for r in out:  # mark the fastest crypto mode per (algo, size, dir)
    if r["mode"] == "bypass":
        continue
    k = (r["algo"], r["size"], r["dir"])
    if k not in best or r["mpps"] > best[k]["mpps"]:
        best[k] = r
for r in best.values():
    r["best"] = True
json.dump(out, open(sys.argv[2], "w"), indent=1)
EOF
    echo "# wrote $JSON"
fi
