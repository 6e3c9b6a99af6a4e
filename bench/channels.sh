#!/usr/bin/env bash
# keycast channels bench: does the per-packet cost stay flat as one process carries more channels?
#
# usage: sudo bench/channels.sh [--quick] [--seconds S] [--baseline REV] [--out DIR]
#
#   --seconds   measured seconds per keycast-send run (default 2; best of 2 rounds)
#   --quick     1-second runs, smaller captures and swap runs
#   --baseline  the commit to compare one channel against (default: the last commit whose
#               processes carried one channel each); built here, in a git worktree
#   --out DIR   where the raw files, channels.json and channels.txt go (default results/<UTC time>-channels)
#
# Measures, on one worker lcore (EAL -l 0,1), as on-CPU nanoseconds of the worker thread per packet:
#   sender     keycast-send --rate 0 into net_null with 1, 64 and 1,024 channels (bursts round robin
#              over the channels), payload 64 and 1400 B, and the baseline build with its one channel
#   receiver   keycast-recv --deliver null over a capture of distinct packets, round robin over the
#              channels packet by packet (written by keycast-send --burst 1), through the zero-copy
#              replay port (bench/replay), with 1, 64 and 1,024 channels and the baseline receiver
#   swaps      1,024 channels flat out at 64 B with each channel switching keys every 100 ms,
#              staggered (--rotate-stagger), against no switches: the ratio; and a capture made that
#              way verified by keycast-recv per channel (lost = auth_fail = 0)
#   start      keycast-recv with 1,024 kms-origin channels against a keycast-keyd on loopback: how long
#              after its first request each channel's keys were answered (p50 / p99 / max, 3 runs)
#   floor      after each receiver round, Intel IPsec-MB's GCM open alone (bench_rx_channels
#              BM_FloorOpenKeys) with 1, 64 and 1,024 keys taken round robin, as the receiver's
#              packets take them: with many keys the crypto itself pays for fetching each key's
#              schedule, a cost no receiver can avoid
# Ratios: throughput with N channels / one channel = ns(1) / ns(N); one channel against the
# baseline = ns(baseline) / ns(1) (>= 1: no slower than before); the receiver's N / 1 against the
# floor's N keys / 1 key = (recv(1) / recv(N)) / (floor(1) / floor(N)) (1: all the receiver
# loses with N channels is what GCM with N keys loses).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BUILD=${BUILD_DIR:-$REPO/build}
PY=/usr/bin/python3
SECS=2
QUICK=0
BASE=057a503
OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) SECS=${2:?}; shift 2 ;;
        --quick) QUICK=1; SECS=1; shift ;;
        --baseline) BASE=${2:?}; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "channels bench: must run as root (DPDK EAL)" >&2; exit 1; }
[ -n "$OUT" ] || OUT=$REPO/results/$(date -u +%Y%m%dT%H%M%SZ)-channels
RAW=$OUT/raw
mkdir -p "$RAW"
WORK=$(mktemp -d /tmp/keycast-chbench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    git -C "$REPO" worktree remove --force "$WORK/base" 2>/dev/null || true
    rm -rf "$WORK" /var/run/dpdk/kcc$$* 2>/dev/null || true
}
trap cleanup EXIT
T0=$SECONDS
log() { printf '[%3ds] channels: %s\n' $((SECONDS - T0)) "$*" >&2; }
die() { echo "channels bench: error: $*" >&2; exit 1; }

log "building ($BUILD) and the baseline $BASE"
ninja -C "$BUILD" -j2 keycast-send keycast-recv keycast-keyd keycast_replay bench_rx_channels >"$RAW/build.log" 2>&1 \
    || { tail -30 "$RAW/build.log" >&2; die "build failed"; }
git -C "$REPO" worktree add --detach "$WORK/base" "$BASE" >"$RAW/base-build.log" 2>&1 || die "no commit $BASE"
cmake -S "$WORK/base" -B "$WORK/base/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKEYCAST_BUILD_TESTS=OFF -DKEYCAST_BUILD_BENCH=OFF >>"$RAW/base-build.log" 2>&1 \
    && ninja -C "$WORK/base/build" -j2 keycast-send keycast-recv >>"$RAW/base-build.log" 2>&1 \
    || { tail -30 "$RAW/base-build.log" >&2; die "baseline build failed"; }
SEND=$BUILD/dataplane/keycast-send
RECV=$BUILD/dataplane/keycast-recv
KEYD=$BUILD/keyplane/keycast-keyd
SEND0=$WORK/base/build/dataplane/keycast-send
RECV0=$WORK/base/build/dataplane/keycast-recv
REPLAY_LIB=$BUILD/bench/libkeycast_replay.so
BENCH_RX=$BUILD/bench/bench_rx_channels

N_EAL=0
eal() {  # eal VDEV...: EAL arguments for one process (lcore 0 control, lcore 1 the worker)
    N_EAL=$((N_EAL + 1))
    local a="--no-huge -m ${EAL_MEM:-1024} --file-prefix kcc$$-$N_EAL --no-pci --log-level=*:warning -l 0,1"
    for v in "$@"; do a="$a --vdev $v"; done
    echo "$a"
}
oncpu() {  # oncpu NAME CMD...: worker on-CPU time -> $RAW/NAME.oncpu.json
    local name=$1; shift
    "$PY" "$HERE/lib/oncpu.py" "$RAW/$name.oncpu.json" -- "$@" >"$RAW/$name.log" 2>&1 \
        || { tail -20 "$RAW/$name.log" >&2; die "$name failed"; }
}

# Channel i (1-based): group 239.30.(i / 256).(i % 256), port 5000, keys SPI 10000 + 8 i + k.
for n in 1 64 1024; do
    : >"$WORK/ch$n.conf"
    : >"$WORK/k$n.txt"
    for i in $(seq 1 $n); do
        echo "$i 239.30.$((i / 256)).$((i % 256)):5000" >>"$WORK/ch$n.conf"
    done
    "$PY" - "$WORK/k$n.txt" "$n" <<'PYEOF'
import os, sys
with open(sys.argv[1], "w") as f:
    for i in range(1, int(sys.argv[2]) + 1):
        for k in range(8):
            f.write(f"{i} {10000 + 8 * i + k} {os.urandom(20).hex()}\n")
PYEOF
done
grep '^1 ' "$WORK/k1.txt" | cut -d' ' -f2- >"$WORK/k1-base.txt"  # the baseline reads SPI HEXKEY
BASE_GROUP="--group 239.30.0.1:5000"

ROUNDS=2
SIZES="64 1400"
RN=300000; [ $QUICK = 1 ] && RN=100000

# ------------------------------------------------------------------ sender
for r in $(seq $ROUNDS); do
    for s in $SIZES; do
        log "sender round $r, payload $s: baseline, 1, 64, 1024 channels"
        oncpu "send-base-$s-r$r" "$SEND0" $(eal net_null0) -- --key-file "$WORK/k1-base.txt" $BASE_GROUP \
            --rate 0 --payload-size "$s" --duration "$SECS" --stats-interval 0 --stats-json "$RAW/send-base-$s-r$r.json"
        for n in 1 64 1024; do
            oncpu "send-$n-$s-r$r" "$SEND" $(eal net_null0) -- --key-file "$WORK/k$n.txt" --channels "$WORK/ch$n.conf" \
                --rate 0 --payload-size "$s" --duration "$SECS" --stats-interval 0 --stats-json "$RAW/send-$n-$s-r$r.json"
        done
    done
done

# ------------------------------------------------------------------ receiver
replay_pass() {  # replay_pass NAME BIN CAPTURE ARGS...
    local name=$1 bin=$2 cap=$3; shift 3
    KC_REPLAY_MBUF=recycle KC_REPLAY_PCAP=$cap KC_REPLAY_OUT=$RAW/$name.replay.json LD_PRELOAD=$REPLAY_LIB \
        "$bin" $(EAL_MEM=$((RN * 25 / 10000 + 800)) eal) -- --deliver null --idle-exit 0.5 --duration 120 \
        --stats-interval 0 --stats-json "$RAW/$name.json" "$@" >"$RAW/$name.log" 2>&1 \
        || { tail -20 "$RAW/$name.log" >&2; die "$name failed"; }
    [ -s "$RAW/$name.replay.json" ] || die "$name: the replay pass did not complete"
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["packets_ok"] == int(sys.argv[2]) and d["auth_fail"] == 0 else 1)' \
        "$RAW/$name.json" "$RN" || die "$name did not decipher all $RN packets"
}
for s in $SIZES; do
    for n in 1 64 1024; do
        log "receiver capture: $n channels, payload $s, packet by packet round robin"
        "$SEND" $(eal "net_pcap0,tx_pcap=$WORK/cap-$n-$s.pcap") -- --key-file "$WORK/k$n.txt" \
            --channels "$WORK/ch$n.conf" --burst 1 --rate 0 --payload-size "$s" --count $((RN / n)) \
            --stats-interval 0 >"$RAW/cap-$n-$s.log" 2>&1 || die "capture $n/$s failed"
    done
done
for r in $(seq $ROUNDS); do
    for s in $SIZES; do
        log "receiver round $r, payload $s: baseline, 1, 64, 1024 channels"
        replay_pass "recv-base-$s-r$r" "$RECV0" "$WORK/cap-1-$s.pcap" --key-file "$WORK/k1-base.txt" $BASE_GROUP
        for n in 1 64 1024; do
            [ "$n" = 1 ] && want=$RN || want=$((RN / n * n))
            RN_SAVE=$RN; RN=$want
            replay_pass "recv-$n-$s-r$r" "$RECV" "$WORK/cap-$n-$s.pcap" --key-file "$WORK/k$n.txt" \
                --channels "$WORK/ch$n.conf"
            RN=$RN_SAVE
        done
        log "floor round $r, payload $s: GCM open alone with 1, 64, 1024 keys"
        "$BENCH_RX" --benchmark_filter="BM_FloorOpenKeys/[0-9]*/$s/" --benchmark_min_time=0.3s \
            --benchmark_out_format=json --benchmark_out="$RAW/floor-$s-r$r.json" >"$RAW/floor-$s-r$r.log" 2>&1 \
            || { tail -20 "$RAW/floor-$s-r$r.log" >&2; die "floor $s failed"; }
    done
done
rm -f "$WORK"/cap-*.pcap

# ------------------------------------------------------------------ key swaps over 1,024 channels
SW=$((SECS * 2))
for r in 1 2; do
    for rot in 0 100; do
        log "swaps: 1024 channels flat out, payload 64, rotate-ms $rot staggered, $SW s (pair $r of 2)"
        oncpu "swap-$rot-r$r" "$SEND" $(eal net_null0) -- --key-file "$WORK/k1024.txt" --channels "$WORK/ch1024.conf" \
            --rate 0 --payload-size 64 --duration "$SW" --rotate-ms "$rot" --rotate-stagger \
            --stats-interval 0 --stats-json "$RAW/swap-$rot-r$r.json"
    done
done
per=1000; [ $QUICK = 1 ] && per=400
log "swaps: capture 1024 x $per packets with staggered switches every 100 ms, receiver verifies"
"$SEND" $(eal "net_pcap0,tx_pcap=$WORK/swap.pcap") -- --key-file "$WORK/k1024.txt" --channels "$WORK/ch1024.conf" \
    --burst 1 --rate 2000 --payload-size 64 --count "$per" --rotate-ms 100 --rotate-stagger \
    --notice-lead-ms 20 --notice-interval-ms 10 --stats-interval 0 --stats-json "$RAW/swapcap-send.json" \
    >"$RAW/swapcap-send.log" 2>&1 || die "swap capture failed"
"$RECV" $(EAL_MEM=2048 eal "net_pcap0,rx_pcap=$WORK/swap.pcap") -- --key-file "$WORK/k1024.txt" \
    --channels "$WORK/ch1024.conf" --deliver verify --expect "$per" --idle-exit 3 --duration 120 \
    --stats-interval 0 --stats-json "$RAW/swapcap-recv.json" >"$RAW/swapcap-recv.log" 2>&1 || die "swap receiver failed"
rm -f "$WORK/swap.pcap"

# ------------------------------------------------------------------ receiver start, 1,024 channels
log "start: keycast-keyd with 1024 kms-origin channels; receiver start times"
KEYCAST_CLIENT_CHANNELS='*' "$REPO/scripts/make-certs.sh" "$WORK/pki" >/dev/null
PKI=$WORK/pki
"$KEYD" --gen-master-key "$WORK/mk" >/dev/null
pol=()
for i in $(seq 1 1024); do pol+=(--channel "$i:lifetime=60000,p1=20000,p2=10000,grace=2000,origin=kms"); done
"$KEYD" --role master --listen 127.0.0.1:0 --db "$WORK/keyd.db" --master-key-file "$WORK/mk" \
    --tls-cert "$PKI/master.crt" --tls-key "$PKI/master.key" --tls-ca "$PKI/ca.crt" "${pol[@]}" \
    >"$WORK/keyd.out" 2>"$RAW/keyd.log" &
PIDS+=($!)
port=""
for _ in $(seq 1 200); do
    port=$(grep -o 'listening on port [0-9]*' "$WORK/keyd.out" 2>/dev/null | grep -o '[0-9]*$' || true)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || die "keyd did not start"
TLS_S="--tls-cert $PKI/sender.crt --tls-key $PKI/sender.key --tls-ca $PKI/ca.crt"
TLS_C="--tls-cert $PKI/client.crt --tls-key $PKI/client.key --tls-ca $PKI/ca.crt"
# A sender makes every channel's keys (kms-origin: generate current and next).
"$SEND" $(eal net_null0) -- --channels "$WORK/ch1024.conf" --kms "127.0.0.1:$port" --key-origin kms $TLS_S \
    --rate 1000 --duration 1 --stats-interval 0 --stats-json "$RAW/start-send.json" >"$RAW/start-send.log" 2>&1 \
    || die "start: sender failed"
for r in 1 2 3; do
    "$RECV" $(eal net_null0) -- --channels "$WORK/ch1024.conf" --kms "127.0.0.1:$port" $TLS_C \
        --duration 1 --stats-interval 0 --stats-json "$RAW/start-recv-r$r.json" >"$RAW/start-recv-r$r.log" 2>&1 \
        || die "start: receiver failed"
done

# ------------------------------------------------------------------ report
"$PY" - "$RAW" "$OUT" "$ROUNDS" "$SIZES" "$(git -C "$REPO" rev-parse --short HEAD)" "$BASE" <<'PYEOF'
import json, os, sys
raw, out, rounds, sizes, head, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), sys.argv[5], sys.argv[6]
def j(name):
    return json.load(open(os.path.join(raw, name)))
def send_ns(name):  # best round: on-CPU ns of the worker per packet
    best = None
    for r in range(1, rounds + 1):
        o, d = j(f"{name}-r{r}.oncpu.json"), j(f"{name}-r{r}.json")
        v = sum(o["workers"].values()) / max(1, d["packets_sent"])
        best = v if best is None else min(best, v)
    return best
def recv_ns(name):
    return min(j(f"{name}-r{r}.replay.json")["cycles_per_pkt_cpu"] for r in range(1, rounds + 1))
def floor_cyc(s, n):  # best round: cycles per GCM open with n keys round robin
    best = None
    for r in range(1, rounds + 1):
        for b in j(f"floor-{s}-r{r}.json")["benchmarks"]:
            if b["name"].startswith(f"BM_FloorOpenKeys/{n}/{s}/"):
                best = b["cyc_per_pkt"] if best is None else min(best, b["cyc_per_pkt"])
    return best
res = {"commit": head, "baseline": base, "sender": {}, "receiver": {}, "floor": {}}
lines = [f"## Channels (commit {head}, baseline {base}: one channel per process)", "",
         "Worker cost per packet (sender: on-CPU ns; receiver: replay-port CPU cycles), best of "
         f"{rounds} rounds; ratios are throughput ratios (higher is better).", "",
         "| side | payload | baseline | 1 ch | 64 ch | 1024 ch | 1 ch / baseline | 64 / 1 | 1024 / 1 |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for side, fn, unit in (("sender", send_ns, "ns"), ("receiver", recv_ns, "cyc")):
    pre = "send" if side == "sender" else "recv"
    for s in sizes:
        b = fn(f"{pre}-base-{s}")
        v = {n: fn(f"{pre}-{n}-{s}") for n in (1, 64, 1024)}
        res[side][s] = {"baseline": b, **{str(n): x for n, x in v.items()},
                        "one_vs_baseline": b / v[1], "64_vs_1": v[1] / v[64], "1024_vs_1": v[1] / v[1024]}
        lines.append(f"| {side} | {s} | {b:.1f} {unit} | {v[1]:.1f} | {v[64]:.1f} | {v[1024]:.1f} | "
                     f"{b / v[1]:.3f} | {v[1] / v[64]:.3f} | {v[1] / v[1024]:.3f} |")
lines += ["", "The floor in the same run: GCM open alone (IPsec-MB) with N keys taken round robin, "
          "cycles per open, best of rounds; the receiver's N / 1 channels against the floor's N / 1 keys "
          "(1: the receiver loses with N channels only what GCM with N keys loses).", "",
          "| payload | floor 1 key | 64 keys | 1024 keys | floor 64 / 1 | floor 1024 / 1 | "
          "receiver 64 / 1 vs floor | receiver 1024 / 1 vs floor |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
for s in sizes:
    f = {n: floor_cyc(s, n) for n in (1, 64, 1024)}
    rv = res["receiver"][s]
    fr = {n: f[1] / f[n] for n in (64, 1024)}
    res["floor"][s] = {**{str(n): x for n, x in f.items()}, "64_vs_1": fr[64], "1024_vs_1": fr[1024],
                       "receiver_64_vs_floor": rv["64_vs_1"] / fr[64],
                       "receiver_1024_vs_floor": rv["1024_vs_1"] / fr[1024]}
    lines.append(f"| {s} | {f[1]:.1f} cyc | {f[64]:.1f} | {f[1024]:.1f} | {fr[64]:.3f} | {fr[1024]:.3f} | "
                 f"{rv['64_vs_1'] / fr[64]:.3f} | {rv['1024_vs_1'] / fr[1024]:.3f} |")
sw = {rot: min(sum(j(f"swap-{rot}-r{r}.oncpu.json")["workers"].values()) / max(1, j(f"swap-{rot}-r{r}.json")["packets_sent"])
               for r in (1, 2)) for rot in (0, 100)}
ratio = sw[0] / sw[100]
cs, cr = j("swapcap-send.json"), j("swapcap-recv.json")
min_sw = min(c["key_switches"] for c in cs["channels"])
bad = [c["channel"] for c in cr["channels"] if c["lost"] or c["duplicated"] or c["corrupted"]]
res["swaps"] = {"ratio": ratio, "ns_no_swap": sw[0], "ns_swap": sw[100], "capture_packets": cs["packets_sent"],
                "capture_min_switches_per_channel": min_sw, "received": cr["packets_ok"], "lost": cr["lost"],
                "auth_fail": cr["auth_fail"], "unknown_spi": cr["unknown_spi"], "channels_with_loss": bad}
lines += ["", f"Key swaps staggered over 1,024 channels (every 100 ms each), 64 B flat out: throughput ratio "
          f"with / without swaps {ratio:.3f} ({sw[100]:.1f} vs {sw[0]:.1f} ns per packet). Capture of "
          f"{cs['packets_sent']} packets (>= {min_sw} switches per channel) verified by keycast-recv: "
          f"received {cr['packets_ok']}, lost {cr['lost']}, auth_fail {cr['auth_fail']}, "
          f"unknown_spi {cr['unknown_spi']}, channels with loss {len(bad)}."]
st = [j(f"start-recv-r{r}.json") for r in (1, 2, 3)]
res["start"] = [{"p50": d["start_keys_ms"]["p50"], "p99": d["start_keys_ms"]["p99"], "max": d["start_keys_ms"]["max"],
                 "kms_ok": d["kms_ok"], "channels_refused": d["channels_refused"]} for d in st]
lines += ["", "Receiver start with 1,024 kms-origin channels (one TLS connection, every request sent "
          "before any answer is awaited), ms from the first request to each channel's keys: " +
          "; ".join(f"run {i + 1}: p50 {x['p50']:.1f}, p99 {x['p99']:.1f}, max {x['max']:.1f} ({x['kms_ok']} answered)"
                    for i, x in enumerate(res["start"])) + "."]
json.dump(res, open(os.path.join(out, "channels.json"), "w"), indent=1)
open(os.path.join(out, "channels.txt"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
log "done in $((SECONDS - T0)) s: $OUT"
