#!/bin/bash
# Command line, telemetry and signal handling of keycast-send / keycast-recv:
#  - a bad option or value is named in the message and the exit status is 2
#    (--metrics among them);
#  - /keycast/stats answers over the DPDK telemetry socket while running;
#  - SIGINT stops cleanly (exit 0), final figures printed and written as JSON.
set -euo pipefail
BIN=${1:?usage: cli_test.sh BIN_DIR}
PY=/usr/bin/python3
ID=$$
WORK=$(mktemp -d /tmp/kc_cli.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  rm -rf /var/run/dpdk/kc_cli_*_$ID
  [ $rc -ne 0 ] && for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM
EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning -l 0,1"
echo "256 000102030405060708090a0b0c0d0e0f10111213" > "$WORK/keys.txt"
echo "257 $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')" >> "$WORK/keys.txt"

n=0
expect_usage() {  # expect_usage WORD BINARY ARGS... : exit 2 and WORD in the message
  local word=$1; shift
  n=$((n + 1))
  set +e
  "$@" > "$WORK/u$n.log" 2>&1
  local rc=$?
  set -e
  if [ $rc -ne 2 ] || ! grep -q -- "$word" "$WORK/u$n.log"; then
    echo "FAIL: '$*' exited $rc (want 2) or did not name '$word':"; tail -n 3 "$WORK/u$n.log"; exit 1
  fi
  echo "ok: $word -> $(grep -- "$word" "$WORK/u$n.log" | grep keycast | head -n 1)"
}
S="$BIN/keycast-send $EAL --file-prefix kc_cli_u_$ID --vdev net_null0 --"
R="$BIN/keycast-recv $EAL --file-prefix kc_cli_u_$ID --vdev net_null0 --"
expect_usage "--bogus" $S --key-file "$WORK/keys.txt" --bogus 1
expect_usage "--group" $S --key-file "$WORK/keys.txt" --group 10.1.1.1:5000
expect_usage "--group" $R --key-file "$WORK/keys.txt" --group 239.1.1.1
expect_usage "--rate" $S --key-file "$WORK/keys.txt" --rate fast
expect_usage "--key-file" $S
expect_usage "--key-file" $S --key-file "$WORK/missing.txt"
expect_usage "--payload-size" $S --key-file "$WORK/keys.txt" --payload-size 4
expect_usage "--suite" $S --key-file "$WORK/keys.txt" --suite aes256gcm
expect_usage "--deliver" $R --key-file "$WORK/keys.txt" --deliver sideways
expect_usage "--replay-window" $R --key-file "$WORK/keys.txt" --replay-window 0
expect_usage "--port" $R --key-file "$WORK/keys.txt" --port 5
expect_usage "--kms" $S --kms 127.0.0.1:7000
expect_usage "--vlan" $S --key-file "$WORK/keys.txt" --vlan 4095
expect_usage "--vlan-pcp" $S --key-file "$WORK/keys.txt" --vlan-pcp 3
expect_usage "--vlan-pcp" $S --key-file "$WORK/keys.txt" --vlan 10 --vlan-pcp 8
expect_usage "--vlan" $R --key-file "$WORK/keys.txt" --vlan 5000
expect_usage "--metrics 9750: expected HOST:PORT" $S --key-file "$WORK/keys.txt" --metrics 9750
expect_usage "--metrics 127.0.0.1:99999: expected HOST:PORT" $R --key-file "$WORK/keys.txt" --metrics 127.0.0.1:99999
expect_usage "--metrics no.such.host.invalid:9750: " $R --key-file "$WORK/keys.txt" --metrics no.such.host.invalid:9750

# First-run mistakes get one line, before EAL runs: an application option
# among the EAL arguments (exit 2, no EAL usage page), and --help or
# --version need no hugepages and no device (no EAL line at all).
for prog in keycast-send keycast-recv; do
  set +e
  "$BIN/$prog" --key-file "$WORK/keys.txt" > "$WORK/early.log" 2>&1
  rc=$?
  set -e
  lines=$(wc -l < "$WORK/early.log")
  if [ $rc -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -q -- "--key-file is an option of $prog.*put it after --" "$WORK/early.log"; then
    echo "FAIL: $prog --key-file (before --): exit $rc, $lines line(s):"; head -n 5 "$WORK/early.log"; exit 1
  fi
  echo "ok: $(cat "$WORK/early.log")"
  for h in "-- --help" "--help" "-- -h"; do
    set +e
    "$BIN/$prog" $h > "$WORK/help.log" 2>&1
    rc=$?
    set -e
    if [ $rc -ne 0 ] || ! grep -q "usage: $prog \[EAL args\] -- \[options\]" "$WORK/help.log" ||
       ! grep -q -- "--stats-json" "$WORK/help.log" || grep -q "^EAL:" "$WORK/help.log"; then
      echo "FAIL: $prog $h: exit $rc:"; head -n 5 "$WORK/help.log"; exit 1
    fi
  done
  ver=$("$BIN/$prog" --version)
  echo "$ver" | grep -Eq "^$prog [0-9]+\.[0-9]+\.[0-9]+ \(DPDK " || { echo "FAIL: $prog --version: $ver"; exit 1; }
  echo "ok: $ver; --help without EAL"
done
# An EAL failure ends in one line with the fix: on a host without
# hugepages (this one, unless some are reserved), leaving out --no-huge.
if [ "$(awk '/^HugePages_Total/ {print $2}' /proc/meminfo)" = 0 ]; then
  set +e
  "$BIN/keycast-send" -l 0,1 --no-pci --file-prefix "kc_cli_h_$ID" --vdev net_null0 -- \
    --key-file "$WORK/keys.txt" --count 1 > "$WORK/nohuge.log" 2>&1
  rc=$?
  set -e
  last=$(tail -n 1 "$WORK/nohuge.log")
  if [ $rc -eq 0 ] || ! echo "$last" | grep -q "keycast-send: EAL init failed: .*--no-huge"; then
    echo "FAIL: no hugepages: exit $rc, last line: $last"; exit 1
  fi
  echo "ok: $last"
fi
# Receiver telemetry carries the per-reason drop counters (net_null feeds it
# zero-filled frames: not IPv4).
"$BIN/keycast-recv" $EAL --file-prefix "kc_cli_r_$ID" --vdev net_null0 -- \
  --key-file "$WORK/keys.txt" --idle-sleep-us 100 --stats-interval 0 > "$WORK/recv.log" 2>&1 &
RPID=$!
PIDS+=($RPID)
$PY - "/var/run/dpdk/kc_cli_r_$ID/dpdk_telemetry.v2" <<'PYEOF'
import json, socket, sys, time
deadline = time.time() + 20
while time.time() < deadline:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(sys.argv[1]); s.recv(4096); s.send(b"/keycast/stats")
        st = json.loads(s.recv(65536))["/keycast/stats"]
        if st["drops_not_ipv4"] > 0 and st["rx_packets"] >= st["drops_not_ipv4"] and st["packets_ok"] == 0:
            print("recv telemetry: rx_packets=%d drops_not_ipv4=%d" % (st["rx_packets"], st["drops_not_ipv4"]))
            sys.exit(0)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    time.sleep(0.2)
print("FAIL: receiver telemetry without drops_not_ipv4"); sys.exit(1)
PYEOF
kill -INT "$RPID"
wait "$RPID"
PIDS=()

# A worker that cannot start (unwritable delivery pcap): message, non-zero exit, no hang.
set +e
timeout 60 $R --key-file "$WORK/keys.txt" --deliver pcap:/nonexistent-dir/x.pcap > "$WORK/w.log" 2>&1
rc=$?
set -e
if [ $rc -eq 0 ] || [ $rc -eq 124 ] || ! grep -q "cannot open" "$WORK/w.log"; then
  echo "FAIL: worker start failure: exit $rc"; tail -n 3 "$WORK/w.log"; exit 1
fi
echo "ok: worker failure -> exit $rc"

# Telemetry and SIGINT: a paced sender into net_null.
"$BIN/keycast-send" $EAL --file-prefix "kc_cli_t_$ID" --vdev net_null0 -- \
  --key-file "$WORK/keys.txt" --rate 20000 --idle-sleep-us 100 --rotate-ms 300 \
  --stats-interval 0.2 --stats-json "$WORK/send.json" > "$WORK/send.log" 2>&1 &
SPID=$!
PIDS+=($SPID)
$PY - "/var/run/dpdk/kc_cli_t_$ID/dpdk_telemetry.v2" <<'PYEOF'
import json, socket, sys, time
path = sys.argv[1]
deadline = time.time() + 20
last = None
while time.time() < deadline:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        json.loads(s.recv(4096))  # greeting
        s.send(b"/keycast/stats")
        reply = json.loads(s.recv(65536))
        s.close()
        st = reply["/keycast/stats"]
        last = st
        if st["packets_sent"] > 0 and st["key_switches"] >= 1:
            print("telemetry:", {k: st[k] for k in ("packets_sent", "key_switches", "spis_used", "spi_current")})
            # One channel's figures by its id; an id the process does not carry gets no figures.
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(path)
            json.loads(s.recv(4096))
            s.send(b"/keycast/channel,1")
            ch = json.loads(s.recv(65536))["/keycast/channel"]
            s.send(b"/keycast/channel,2")
            none = json.loads(s.recv(65536))["/keycast/channel"]
            s.close()
            print("telemetry channel 1:", ch, "channel 2:", none)
            if not (ch["channel"] == 1 and ch["packets_sent"] > 0 and ch["spi_current"] > 0 and none is None):
                print("FAIL: /keycast/channel"); sys.exit(1)
            sys.exit(0)
    except (OSError, ValueError, KeyError, TypeError):  # not registered yet: null
        pass
    time.sleep(0.2)
print("FAIL: no usable /keycast/stats reply; last:", last)
sys.exit(1)
PYEOF
sleep 1  # several stats intervals
kill -INT "$SPID"
set +e
wait "$SPID"
rc=$?
set -e
PIDS=()
[ $rc -eq 0 ] || { echo "FAIL: keycast-send exited $rc after SIGINT"; exit 1; }
grep -q "keycast-send: done:" "$WORK/send.log" || { echo "FAIL: no final figures after SIGINT"; exit 1; }
grep -q "keycast-send: t=" "$WORK/send.log" || { echo "FAIL: no periodic stats line"; exit 1; }
grep -q "WARNING: static keys" "$WORK/send.log" || { echo "FAIL: no static key warning"; exit 1; }
# Log types: EAL's own --log-level sets keycast.send / keycast.recv /
# keycast.kms. Above warning for the process and error for the key source,
# the link, statistics, key switch and static-key lines all go; the final
# figures (the run's result, not a log line) stay.
"$BIN/keycast-send" $EAL --log-level=keycast.send:warning --log-level=keycast.kms:error \
  --file-prefix "kc_cli_l_$ID" --vdev net_null0 -- --key-file "$WORK/keys.txt" --rate 5000 \
  --idle-sleep-us 100 --rotate-ms 300 --stats-interval 0.2 --duration 1.5 > "$WORK/lvl.log" 2>&1 ||
  { echo "FAIL: keycast-send with log levels"; tail -n 5 "$WORK/lvl.log"; exit 1; }
grep -q "keycast-send: done:" "$WORK/lvl.log" || { echo "FAIL: log levels: no final figures"; exit 1; }
for quiet in "keycast-send: t=" "key switch" "static keys" "Link up"; do
  if grep -q "$quiet" "$WORK/lvl.log"; then echo "FAIL: '$quiet' printed above its log level"; cat "$WORK/lvl.log"; exit 1; fi
done
grep -q "key switch" "$WORK/send.log" || { echo "FAIL: no key switch line at the default level"; exit 1; }
echo "ok: --log-level=keycast.send:warning --log-level=keycast.kms:error silences info and notices"
# SIGHUP and SIGQUIT stop either binary as SIGINT does: exit 0, final figures written.
for sig in HUP QUIT; do
  for b in send recv; do
    rm -f "$WORK/sig.json"
    "$BIN/keycast-$b" $EAL --file-prefix "kc_cli_sig_$ID" --vdev net_null0 -- --key-file "$WORK/keys.txt" \
      --idle-sleep-us 100 $([ $b = send ] && echo --rate 5000) --stats-interval 0 --stats-json "$WORK/sig.json" \
      > "$WORK/sig.log" 2>&1 &
    SIGPID=$!
    PIDS+=($SIGPID)
    for _ in $(seq 1 100); do grep -q "Link up" "$WORK/sig.log" && break; sleep 0.1; done
    sleep 0.5
    kill -$sig "$SIGPID"
    set +e
    wait "$SIGPID"
    rc=$?
    set -e
    PIDS=()
    [ $rc -eq 0 ] && [ -s "$WORK/sig.json" ] && grep -q "keycast-$b: done:" "$WORK/sig.log" ||
      { echo "FAIL: keycast-$b after SIG$sig: exit $rc, figures $( [ -s "$WORK/sig.json" ] && echo written || echo missing)"; tail -n 3 "$WORK/sig.log"; exit 1; }
    echo "ok: SIG$sig stops keycast-$b cleanly (exit 0, final figures)"
  done
done
# NIC bring-up: the link as l3fwd prints it, and the port's own counters in the JSON.
grep -q "keycast-send: port 0 (net_null): Link up" "$WORK/send.log" || { echo "FAIL: no link line"; exit 1; }
$PY -c "
import json,sys; d=json.load(open('$WORK/send.json'))
for k in ('packets_sent','bytes_sent','duration_s','key_switches','spis_used'): assert k in d, k
assert set(d['port']) == {'rx_missed', 'rx_nombuf', 'rx_errors', 'tx_errors'}, d.get('port')
assert d['packets_sent'] > 0 and d['spis_used'] >= 1, d
print('final json:', {k: d[k] for k in ('packets_sent','key_switches','spis_used')})"
echo "PASS"
