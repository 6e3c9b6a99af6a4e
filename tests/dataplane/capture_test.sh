#!/bin/bash
# Capture tests through net_pcap, checked by an independent ESP implementation
# (Scapy, tests/dataplane/esp_tool.py).
#
#   capture_test.sh BIN_DIR sender-scapy   keycast-send -> tx pcap -> Scapy deciphers
#                                          every frame (data and notices), checks the
#                                          payload pattern and that no (SPI, IV) repeats.
#   capture_test.sh BIN_DIR scapy-recv     Scapy-built ESP frames (ESN crossing 2^32,
#                                          several keys) -> keycast-recv via rx pcap:
#                                          all delivered intact (verify); the plaintext
#                                          re-emitted (pcap:PATH and port:N) matches.
#   capture_test.sh BIN_DIR channels       16 channels in one capture (Scapy, each under
#                                          its own two keys) -> one keycast-recv with
#                                          --channels: every channel delivers all of its
#                                          packets with its own SPIs; a receiver of 8 of
#                                          them (--channel ID=GROUP:PORT) only those 8;
#                                          others counted wrong_group; one keycast-send
#                                          carrying 16 channels: Scapy deciphers each
#                                          with its channel's keys, keycast-recv
#                                          delivers all with the sender's SPI lists.
#   capture_test.sh BIN_DIR bad-input      malformed / forged / replayed / non-ESP frames
#                                          -> each counted under its reason, only the
#                                          one good frame delivered, clean exit.
#   capture_test.sh BIN_DIR ingest         plaintext UDP frames on --ingest-port ->
#                                          enciphered -> Scapy and keycast-recv check them.
#   capture_test.sh BIN_DIR multi-worker   two sender workers share keys: no (SPI, IV)
#                                          repeats, every index once, receiver verifies.
#   capture_test.sh BIN_DIR swap-under-load  two workers flat out, a key swap every 2 ms:
#                                          nothing lost, nothing with a wrong key.
#   capture_test.sh BIN_DIR aes256         sender and receiver with AES-256-GCM keys,
#                                          through a pcap, checked by Scapy too.
#   capture_test.sh BIN_DIR full-size      30,000 frames of 1400 B flat out (mbufs
#                                          reused): every one deciphers and verifies.
#   capture_test.sh BIN_DIR replay-port LIB  the bench's zero-copy replay port (LIB =
#                                          libkeycast_replay.so, LD_PRELOAD) hands a capture
#                                          with key switches and notices to keycast-recv at
#                                          once (every burst full, pipelined), with one mbuf
#                                          per frame, with recycled mbufs and with frames a
#                                          NIC thread writes just before RX: all verify,
#                                          and the port's own count and timing agree.
set -euo pipefail
BIN=${1:?usage: capture_test.sh BIN_DIR MODE}
MODE=${2:?usage: capture_test.sh BIN_DIR MODE}
PY=/usr/bin/python3
TOOL=$(cd "$(dirname "$0")" && pwd)/esp_tool.py
SRC=$(cd "$(dirname "$0")/../.." && pwd)
ID=$$
WORK=$(mktemp -d /tmp/kc_cap.XXXXXX)
cleanup() {
  local rc=$?
  rm -rf /var/run/dpdk/kc_cap_*_$ID
  if [ $rc -ne 0 ]; then
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM
EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning -l 0,1"

keys() {  # keys FILE N KEYBYTES
  for spi in $(seq 1000 $((1000 + $2 - 1))); do
    echo "$spi $(od -An -tx1 -N$(($3 + 4)) /dev/urandom | tr -d ' \n')"
  done > "$1"
}

send_pcap() {  # send_pcap KEYS OUT COUNT ROTATE_MS [extra]
  "$BIN/keycast-send" $EAL --file-prefix "kc_cap_s_$ID" --vdev "net_pcap0,tx_pcap=$2" -- \
    --key-file "$1" --count "$3" --rotate-ms "$4" --notice-lead-ms 5 --notice-interval-ms 2 \
    --rate 20000 --payload-size 200 --stats-interval 0 --stats-json "$WORK/send.json" "${@:5}" \
    > "$WORK/send.log" 2>&1
}

recv_pcap() {  # recv_pcap KEYS IN JSON [extra]
  "$BIN/keycast-recv" $EAL --file-prefix "kc_cap_r_$ID" \
    --vdev "net_pcap0,rx_pcap=$2,tx_pcap=$WORK/unused.pcap" -- \
    --key-file "$1" --idle-exit 1 --stats-interval 0 --stats-json "$3" "${@:4}" \
    > "$WORK/recv.log" 2>&1
}

check() {  # check JSON PYTHON-EXPR...
  $PY - "$@" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
bad = [e for e in sys.argv[2:] if not eval(e, {}, {"d": d})]
print(json.dumps({k: v for k, v in d.items() if k != "drops"}))
if bad:
    print("FAIL: " + "; ".join(bad))
    sys.exit(1)
PYEOF
}

case "$MODE" in
  channels)
    : > "$WORK/keys.txt"
    : > "$WORK/channels.txt"
    for c in $(seq 1 16); do
      echo "$c 239.5.0.$c:$((6000 + c)) suite=aes128gcm" >> "$WORK/channels.txt"
      for k in 0 1; do
        echo "$c $((2000 + 10 * c + k)) $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')" >> "$WORK/keys.txt"
      done
    done
    $PY "$TOOL" build-channels "$WORK/in.pcap" "$WORK/keys.txt" "$WORK/channels.txt" 200
    recv_pcap "$WORK/keys.txt" "$WORK/in.pcap" "$WORK/r.json" --channels "$WORK/channels.txt" \
      --deliver verify --expect 200
    check "$WORK/r.json" 'd["packets_ok"] == 3200' 'd["lost"] == 0' 'd["duplicated"] == 0' \
      'd["corrupted"] == 0' 'd["auth_fail"] == 0' 'd["unknown_spi"] == 0' \
      'd["drops"]["wrong_group"] == 10' 'd["key_switches"] == 16' 'len(d["channels"]) == 16' \
      'all(c["packets_ok"] == 200 and c["lost"] == 0 and c["duplicated"] == 0 for c in d["channels"])' \
      'all(c["spi_list"] == [2000 + 10 * c["channel"], 2001 + 10 * c["channel"]] for c in d["channels"])' \
      'all(c["group_port"] == 6000 + c["channel"] for c in d["channels"])'
    # A receiver of channels 1-8 only: the other 8 channels' packets are not its groups.
    sub=()
    for c in $(seq 1 8); do sub+=(--channel "$c=239.5.0.$c:$((6000 + c))"); done
    recv_pcap "$WORK/keys.txt" "$WORK/in.pcap" "$WORK/r2.json" "${sub[@]}" --deliver verify --expect 200
    check "$WORK/r2.json" 'd["packets_ok"] == 1600' 'd["lost"] == 0' 'd["auth_fail"] == 0' \
      'd["drops"]["wrong_group"] == 1610' 'sorted(c["channel"] for c in d["channels"]) == list(range(1, 9))' \
      'all(c["packets_ok"] == 200 and c["key_switches"] == 1 for c in d["channels"])'
    # One keycast-send carrying the 16 channels (each rotating through its own
    # two keys): Scapy deciphers every packet with its channel's key, and one
    # keycast-recv delivers every channel's packets under that channel's SPIs.
    for c in $(seq 1 16); do
      echo "$c $((2002 + 10 * c)) $(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')" >> "$WORK/keys.txt"
    done
    sed 's/$/ rate=1000 payload-size=100 ttl=7 dscp=34/' "$WORK/channels.txt" > "$WORK/send_channels.txt"
    send_pcap "$WORK/keys.txt" "$WORK/tx.pcap" 300 60 --channels "$WORK/send_channels.txt"
    check "$WORK/send.json" 'd["packets_sent"] == 4800' 'len(d["channels"]) == 16' \
      'all(c["packets_sent"] == 300 and c["spi_list"][0] == 2000 + 10 * c["channel"] for c in d["channels"])' \
      'all(c["key_switches"] >= 1 for c in d["channels"])'
    $PY "$TOOL" decrypt "$WORK/tx.pcap" "$WORK/keys.txt" > "$WORK/scapy.json"
    check "$WORK/scapy.json" 'd["data"] == 4800' 'd["authenticated"] == d["esp"]' \
      'd["pattern_ok"] == 4800' 'd["seq_repeats"] == 0' 'len(d["spis"]) >= 32'
    # Every frame carries its channel's outer TTL and DSCP (AF41), as tshark reads them.
    hdr=$(tshark -r "$WORK/tx.pcap" -Y esp -T fields -e ip.ttl -e ip.dsfield.dscp 2>/dev/null | sort | uniq -c | awk '{print $2 "/" $3}')
    [ "$hdr" = "7/34" ] || { echo "FAIL: outer TTL/DSCP of the ESP frames: $hdr"; exit 1; }
    recv_pcap "$WORK/keys.txt" "$WORK/tx.pcap" "$WORK/r3.json" --channels "$WORK/channels.txt" \
      --deliver verify --expect 300
    $PY - "$WORK/send.json" "$WORK/r3.json" <<'PYEOF'
import json, sys
s = {c["channel"]: c for c in json.load(open(sys.argv[1]))["channels"]}
r = json.load(open(sys.argv[2]))
assert r["packets_ok"] == 4800 and r["auth_fail"] == 0 and r["unknown_spi"] == 0, r
for c in r["channels"]:
    assert c["packets_ok"] == 300 and c["lost"] == 0 and c["duplicated"] == 0 and c["corrupted"] == 0, c
    assert c["spi_list"] == s[c["channel"]]["spi_list"], (c, s[c["channel"]])
print("16 channels: every packet delivered, receiver SPI lists equal the sender's")
PYEOF
    # Refusals name the line and exit 2.
    echo "3 239.5.0.1:7000" >> "$WORK/channels.txt"
    set +e
    "$BIN/keycast-recv" $EAL --file-prefix "kc_cap_r_$ID" --vdev "net_null0" -- \
      --key-file "$WORK/keys.txt" --channels "$WORK/channels.txt" > "$WORK/bad.log" 2>&1
    rc=$?
    set -e
    [ $rc -eq 2 ] || { echo "FAIL: duplicate channel exit $rc"; exit 1; }
    grep -q "channels.txt:17: channel 3 is already defined at .*channels.txt:3" "$WORK/bad.log" \
      || { echo "FAIL: message"; cat "$WORK/bad.log"; exit 1; }
    ;;
  sender-scapy)
    keys "$WORK/keys.txt" 6 16
    send_pcap "$WORK/keys.txt" "$WORK/tx.pcap" 3000 40
    check "$WORK/send.json" 'd["packets_sent"] == 3000' 'd["key_switches"] >= 3'
    $PY "$TOOL" decrypt "$WORK/tx.pcap" "$WORK/keys.txt" > "$WORK/scapy.json"
    check "$WORK/scapy.json" 'd["data"] == 3000' 'd["authenticated"] == d["esp"]' \
      'd["pattern_ok"] == 3000' 'd["control"] >= 1' 'len(d["spis"]) >= 4' 'd["seq_repeats"] == 0'
    # tshark reads the capture as ESP too (the wire format is standard).
    n=$(tshark -r "$WORK/tx.pcap" -Y esp 2>/dev/null | wc -l)
    esp=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["esp"])' "$WORK/scapy.json")
    [ "$n" -eq "$esp" ] || { echo "FAIL: tshark saw $n ESP frames, Scapy $esp"; exit 1; }
    echo "tshark: $n ESP frames"
    # With the keys and contrib/wireshark/keycast.lua, tshark deciphers the
    # notices and decodes their fields: each names a key of the file, a time
    # within the notice lead and channel 1.
    mkdir -p "$WORK/home/.config/wireshark"
    while read -r spi hex; do
      printf '"IPv4","*","*","0x%08x","AES-GCM with 16 octet ICV [RFC4106]","0x%s","NULL",""\n' "$spi" "$hex"
    done < "$WORK/keys.txt" > "$WORK/home/.config/wireshark/esp_sa"
    HOME="$WORK/home" tshark -r "$WORK/tx.pcap" -o esp.enable_encryption_decode:TRUE \
      -X lua_script:"$SRC/contrib/wireshark/keycast.lua" -Y keycast -T fields -E separator=, \
      -e keycast.version -e keycast.type -e keycast.next_spi -e keycast.ms_to_switch -e keycast.channel \
      -e _ws.expert 2>"$WORK/tshark.err" > "$WORK/notices.csv"
    $PY - "$WORK/notices.csv" "$WORK/keys.txt" "$WORK/scapy.json" <<'PY'
import json, sys
rows = [l.split(",") for l in open(sys.argv[1]).read().splitlines()]
spis = {int(l.split()[0]) for l in open(sys.argv[2]) if l.strip()}
want = json.load(open(sys.argv[3]))["control"]
bad = [r for r in rows if len(r) < 5 or r[0] != "1" or r[1] != "1" or int(r[2]) not in spis
       or not 0 <= int(r[3]) <= 5 or r[4] != "1" or (len(r) > 5 and r[5])]
if len(rows) != want or bad:
    sys.exit(f"FAIL: keycast.lua decoded {len(rows)} notices (Scapy: {want}); bad: {bad[:3]}")
print(f"keycast.lua: {len(rows)} notices decoded: next SPIs {sorted({int(r[2]) for r in rows})}, channel 1")
PY
    ;;
  scapy-recv)
    keys "$WORK/keys.txt" 4 16
    $PY "$TOOL" build "$WORK/in.pcap" "$WORK/keys.txt" 400 239.1.1.1:5000
    recv_pcap "$WORK/keys.txt" "$WORK/in.pcap" "$WORK/r.json" --deliver verify --expect 400
    check "$WORK/r.json" 'd["packets_ok"] == 400' 'd["lost"] == 0' 'd["duplicated"] == 0' \
      'd["corrupted"] == 0' 'd["auth_fail"] == 0' 'd["malformed"] == 0' 'd["spis_seen"] == 4'
    # Same frames, plaintext re-emitted: Scapy checks every UDP payload.
    recv_pcap "$WORK/keys.txt" "$WORK/in.pcap" "$WORK/r2.json" --deliver "pcap:$WORK/plain.pcap"
    check "$WORK/r2.json" 'd["packets_ok"] == 400'
    # And through --deliver port:1 (a second DPDK port, here a pcap writer).
    "$BIN/keycast-recv" $EAL --file-prefix "kc_cap_r_$ID" \
      --vdev "net_pcap0,rx_pcap=$WORK/in.pcap,tx_pcap=$WORK/unused.pcap" \
      --vdev "net_pcap1,tx_pcap=$WORK/port.pcap" -- \
      --key-file "$WORK/keys.txt" --idle-exit 1 --stats-interval 0 --stats-json "$WORK/r3.json" \
      --deliver port:1 > "$WORK/recv3.log" 2>&1
    check "$WORK/r3.json" 'd["packets_ok"] == 400' 'd["deliver_failed"] == 0'
    n=$(tcpdump -nr "$WORK/port.pcap" 2>/dev/null | wc -l)
    [ "$n" -eq 400 ] || { echo "FAIL: port:1 emitted $n frames"; exit 1; }
    cmp <(tcpdump -nr "$WORK/plain.pcap" -x 2>/dev/null | grep -v '^[0-9]') \
        <(tcpdump -nr "$WORK/port.pcap" -x 2>/dev/null | grep -v '^[0-9]') \
      || { echo "FAIL: port:1 frames differ from pcap: frames"; exit 1; }
    $PY - "$WORK/plain.pcap" "$TOOL" <<'PYEOF'
import sys, struct, importlib.util
spec = importlib.util.spec_from_file_location("t", sys.argv[2]); t = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t)
from scapy.all import rdpcap, UDP, IP
pk = rdpcap(sys.argv[1])
idx = sorted(struct.unpack('<Q', bytes(p[UDP].payload)[:8])[0] for p in pk)
ok = all(bytes(p[UDP].payload) == t.pattern(struct.unpack('<Q', bytes(p[UDP].payload)[:8])[0], len(p[UDP].payload)) for p in pk)
good_ip = all(p[IP].proto == 17 and p[IP].dst == "239.1.1.1" and p[IP].chksum == IP(bytes(p[IP])).__class__(bytes(p[IP])).chksum for p in pk)
print(f"plaintext frames={len(pk)} pattern_ok={ok} ip_ok={good_ip}")
sys.exit(0 if len(pk) == 400 and idx == list(range(400)) and ok and good_ip else 1)
PYEOF
    ;;
  bad-input)
    keys "$WORK/keys.txt" 2 16
    $PY "$TOOL" badinput "$WORK/bad.pcap" "$WORK/keys.txt" 239.1.1.1:5000 > "$WORK/expect.json"
    cat "$WORK/expect.json"
    recv_pcap "$WORK/keys.txt" "$WORK/bad.pcap" "$WORK/r.json" --deliver "pcap:$WORK/out.pcap"
    # The unknown SPI reached the control thread through the event ring.
    grep -q "unknown SPI 57005" "$WORK/recv.log" || { echo "FAIL: unknown SPI not reported to control"; exit 1; }
    $PY - "$WORK/expect.json" "$WORK/r.json" "$WORK/out.pcap" <<'PYEOF'
import json, sys
from scapy.all import rdpcap
exp, got = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
fails = []
for reason, n in exp["drops"].items():
    if got["drops"][reason] != n:
        fails.append(f"{reason}: got {got['drops'][reason]}, expected {n}")
for reason, n in got["drops"].items():
    if n and reason not in exp["drops"]:
        fails.append(f"unexpected drops {reason}={n}")
if got["malformed"] != exp["malformed"]:
    fails.append(f"malformed {got['malformed']} != {exp['malformed']}")
if got["packets_ok"] != exp["delivered"]:
    fails.append(f"packets_ok {got['packets_ok']} != {exp['delivered']}")
out = rdpcap(sys.argv[3])
if len(out) != exp["delivered"]:
    fails.append(f"delivered frames {len(out)} != {exp['delivered']}")
print("drops:", {k: v for k, v in got["drops"].items() if v})
for must in ("bad_pad", "bad_next_header", "bad_inner", "bad_control", "auth_fail", "replay",
             "unknown_spi", "truncated", "not_esp"):
    if must not in exp["drops"]:
        fails.append(f"test pcap lacks a {must} case")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails)); sys.exit(1)
print("PASS")
PYEOF
    ;;
  aes256)
    keys "$WORK/keys.txt" 3 32
    send_pcap "$WORK/keys.txt" "$WORK/tx.pcap" 1000 20 --suite aes256gcm
    $PY "$TOOL" decrypt "$WORK/tx.pcap" "$WORK/keys.txt" > "$WORK/scapy.json"
    check "$WORK/scapy.json" 'd["data"] == 1000' 'd["authenticated"] == d["esp"]' 'd["pattern_ok"] == 1000'
    recv_pcap "$WORK/keys.txt" "$WORK/tx.pcap" "$WORK/r.json" --deliver verify --expect 1000 --suite aes256gcm
    check "$WORK/r.json" 'd["packets_ok"] == 1000' 'd["lost"] == 0' 'd["auth_fail"] == 0' 'd["key_switches"] >= 1'
    ;;
  ingest)
    keys "$WORK/keys.txt" 3 16
    $PY "$TOOL" plain "$WORK/plain.pcap" 500 239.1.1.1:5000
    "$BIN/keycast-send" $EAL --file-prefix "kc_cap_s_$ID" --vdev "net_pcap0,tx_pcap=$WORK/tx.pcap" \
      --vdev "net_pcap1,rx_pcap=$WORK/plain.pcap,tx_pcap=$WORK/unused.pcap" -- \
      --key-file "$WORK/keys.txt" --ingest-port 1 --count 502 --duration 20 --rate 5000 \
      --rotate-ms 30 --notice-lead-ms 0 --stats-interval 0 --stats-json "$WORK/send.json" \
      > "$WORK/send.log" 2>&1
    check "$WORK/send.json" 'd["packets_sent"] == 500' 'd["ingest_bad"] == 2' 'd["ingest_rx"] == 502'
    $PY "$TOOL" decrypt "$WORK/tx.pcap" "$WORK/keys.txt" > "$WORK/scapy.json"
    check "$WORK/scapy.json" 'd["data"] == 500' 'd["authenticated"] == d["esp"]' 'd["pattern_ok"] == 500'
    recv_pcap "$WORK/keys.txt" "$WORK/tx.pcap" "$WORK/r.json" --deliver verify --expect 500
    check "$WORK/r.json" 'd["packets_ok"] == 500' 'd["lost"] == 0' 'd["corrupted"] == 0'
    ;;
  multi-worker)
    # Two sender workers (lcores 1 and 2) share each key, one TX queue (pcap
    # file) each: sequence blocks must be disjoint, packet indexes unique.
    keys "$WORK/keys.txt" 4 16
    "$BIN/keycast-send" --no-huge -m 256 --no-pci --log-level=lib.eal:warning \
      --lcores '0@0,1@1,2@0' --file-prefix "kc_cap_s_$ID" \
      --vdev "net_pcap0,tx_pcap=$WORK/tx0.pcap,tx_pcap=$WORK/tx1.pcap" -- \
      --key-file "$WORK/keys.txt" --count 4000 --rotate-ms 50 --notice-lead-ms 0 \
      --rate 20000 --burst 8 --payload-size 64 --stats-interval 0 --stats-json "$WORK/send.json" \
      > "$WORK/send.log" 2>&1
    check "$WORK/send.json" 'd["packets_sent"] == 4000' 'd["workers"] == 2' 'd["key_switches"] >= 2'
    $PY "$TOOL" decrypt "$WORK/tx0.pcap,$WORK/tx1.pcap" "$WORK/keys.txt" > "$WORK/scapy.json"
    check "$WORK/scapy.json" 'd["data"] == 4000' 'd["pattern_ok"] == 4000' 'd["seq_repeats"] == 0' \
      'd["index_repeats"] == 0' 'd["index_min"] == 0 and d["index_max"] == 3999'
    # Both workers' frames interleaved by time: the receiver's window absorbs it.
    mergecap -w "$WORK/merged.pcap" "$WORK/tx0.pcap" "$WORK/tx1.pcap"
    recv_pcap "$WORK/keys.txt" "$WORK/merged.pcap" "$WORK/r.json" --deliver verify --expect 4000
    check "$WORK/r.json" 'd["packets_ok"] == 4000' 'd["lost"] == 0' 'd["duplicated"] == 0' 'd["replay"] == 0'
    ;;
  swap-under-load)
    # Flat-out sending (--rate 0) by two workers while keys swap every 2 ms:
    # no packet lost, none deciphered with a wrong key, every key seen.
    keys "$WORK/keys.txt" 60 16
    "$BIN/keycast-send" --no-huge -m 512 --no-pci --log-level=lib.eal:warning \
      --lcores '0@0,1@1,2@0' --file-prefix "kc_cap_s_$ID" \
      --vdev "net_pcap0,tx_pcap=$WORK/tx0.pcap,tx_pcap=$WORK/tx1.pcap" -- \
      --key-file "$WORK/keys.txt" --count 200000 --rotate-ms 2 --notice-lead-ms 1 \
      --notice-interval-ms 1 --rate 0 --payload-size 64 --stats-interval 0 \
      --stats-json "$WORK/send.json" > "$WORK/send.log" 2>&1
    check "$WORK/send.json" 'd["packets_sent"] == 200000' 'd["tx_dropped"] == 0' 'd["key_switches"] >= 5'
    mergecap -w "$WORK/merged.pcap" "$WORK/tx0.pcap" "$WORK/tx1.pcap"
    recv_pcap "$WORK/keys.txt" "$WORK/merged.pcap" "$WORK/r.json" --deliver verify --expect 200000 \
      --replay-window 65536
    $PY - "$WORK/send.json" "$WORK/r.json" <<'PYEOF'
import json, sys
s, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"sent={s['packets_sent']} switches={s['key_switches']} ok={r['packets_ok']} lost={r['lost']} "
      f"dup={r['duplicated']} auth_fail={r['auth_fail']} replay={r['replay']} spis_seen={r['spis_seen']}")
ok = (r["packets_ok"] == 200000 and r["lost"] == 0 and r["duplicated"] == 0 and r["corrupted"] == 0
      and r["late"] == 0
      and r["auth_fail"] == 0 and r["replay"] == 0 and r["unknown_spi"] == 0
      # The sender lists the keys its workers' data went out under (a key
      # can carry none if both were descheduled for its 2 ms): exactly the
      # keys the receiver deciphered data with, in the same order.
      and r["spi_list"] == s["spi_list"] and r["spis_seen"] >= 5)
if r["spi_list"] != s["spi_list"]:
    print(f"receiver SPIs {r['spi_list']} != sender's {s['spi_list']}")
sys.exit(0 if ok else 1)
PYEOF
    ;;
  full-size)
    # Flat out at 1400 B: every mbuf is reused many times, so a frame built in
    # a recycled mbuf must get the whole room (a stale length once sent every
    # other burst empty). Every frame deciphers and verifies.
    keys "$WORK/keys.txt" 1 16
    "$BIN/keycast-send" $EAL --file-prefix "kc_cap_s_$ID" --vdev "net_pcap0,tx_pcap=$WORK/tx.pcap" -- \
      --key-file "$WORK/keys.txt" --count 30000 --rate 0 --payload-size 1400 --stats-interval 0 \
      --stats-json "$WORK/send.json" > "$WORK/send.log" 2>&1
    check "$WORK/send.json" 'd["packets_sent"] == 30000' 'd["tx_dropped"] == 0'
    recv_pcap "$WORK/keys.txt" "$WORK/tx.pcap" "$WORK/r.json" --deliver verify --expect 30000
    check "$WORK/r.json" 'd["packets_ok"] == 30000' 'd["bytes_ok"] == 30000 * 1400' 'd["lost"] == 0' \
      'd["corrupted"] == 0' 'd["malformed"] == 0' 'd["auth_fail"] == 0' 'd["replay"] == 0'
    ;;
  replay-port)
    LIB=${3:?usage: capture_test.sh BIN_DIR replay-port LIBKEYCAST_REPLAY}
    keys "$WORK/keys.txt" 8 16
    # 20,003 frames: not a multiple of any burst size, so the last burst is a short one.
    "$BIN/keycast-send" $EAL --file-prefix "kc_cap_s_$ID" --vdev "net_pcap0,tx_pcap=$WORK/tx.pcap" -- \
      --key-file "$WORK/keys.txt" --count 20003 --rate 0 --payload-size 100 --rotate-ms 2 \
      --notice-lead-ms 1 --notice-interval-ms 1 --stats-interval 0 --stats-json "$WORK/send.json" \
      > "$WORK/send.log" 2>&1
    check "$WORK/send.json" 'd["packets_sent"] == 20003' 'd["tx_dropped"] == 0' 'd["key_switches"] >= 1'
    frames=$($PY -c 'import sys; from scapy.utils import PcapReader; print(sum(1 for _ in PcapReader(sys.argv[1])))' "$WORK/tx.pcap")
    # The three models: one cold mbuf per frame; a driver's recycled headers pointed at the
    # frames' buffers (the pool is far smaller than the capture, so headers are reused); and
    # recycled mbufs whose buffers a NIC thread writes just before RX (lock-free handover).
    for mb in distinct recycle llc; do
      KC_REPLAY_MBUF=$mb KC_REPLAY_PCAP=$WORK/tx.pcap KC_REPLAY_OUT=$WORK/replay-$mb.json LD_PRELOAD=$LIB \
        "$BIN/keycast-recv" --no-huge -m 512 --no-pci --log-level=lib.eal:warning -l 0,1 \
        --file-prefix "kc_cap_r_$ID" -- --key-file "$WORK/keys.txt" --deliver verify --expect 20003 \
        --idle-exit 1 --stats-interval 0 --stats-json "$WORK/r-$mb.json" > "$WORK/recv-$mb.log" 2>&1
      check "$WORK/r-$mb.json" 'd["packets_ok"] == 20003' 'd["lost"] == 0' 'd["duplicated"] == 0' \
        'd["corrupted"] == 0' 'd["malformed"] == 0' 'd["auth_fail"] == 0' 'd["replay"] == 0' \
        'd["unknown_spi"] == 0' "d[\"rx_packets\"] == $frames" 'd["key_switches"] >= 1'
      check "$WORK/replay-$mb.json" "d[\"packets\"] == $frames" 'd["tsc_cycles"] > 0' 'd["cpu_s"] > 0' \
        "d[\"mbuf\"] == \"$mb\""
    done
    # A mode the port does not know is refused by name, not silently replaced.
    if KC_REPLAY_MBUF=bogus KC_REPLAY_PCAP=$WORK/tx.pcap LD_PRELOAD=$LIB \
        "$BIN/keycast-recv" --no-huge -m 512 --no-pci --log-level=lib.eal:warning -l 0,1 \
        --file-prefix "kc_cap_r_$ID" -- --key-file "$WORK/keys.txt" --idle-exit 1 \
        --stats-interval 0 > "$WORK/bogus.log" 2>&1; then
      echo "FAIL: KC_REPLAY_MBUF=bogus was accepted"; exit 1
    fi
    grep -q "KC_REPLAY_MBUF must be distinct, recycle or llc" "$WORK/bogus.log" \
      || { echo "FAIL: no error naming KC_REPLAY_MBUF"; cat "$WORK/bogus.log"; exit 1; }
    ;;
  *) echo "unknown mode $MODE"; exit 2 ;;
esac
echo "PASS: $MODE"
