#!/bin/bash
# keycast as a service, checked on an install into a scratch root:
#  - `cmake --install` puts binaries, units, the service user, example
#    configurations and the docs where the units expect them, and man pages
#    that name every option of their binary;
#  - systemd-analyze verify accepts every unit as installed (any warning fails);
#  - keycast-keyd started with the installed keyd.conf tells the service
#    manager READY=1, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM;
#  - keycast-send run from a --config file sends READY=1, STATUS lines and
#    STOPPING=1, and a bad config line is named with exit 2.
set -euo pipefail
BUILD=${1:?usage: service_test.sh BUILD_DIR}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
ID=$$
WORK=$(mktemp -d /tmp/kc_service.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  rm -rf /var/run/dpdk/kc_svc_$ID
  [ $rc -ne 0 ] && for f in "$WORK"/*.log "$WORK"/*.notify; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; exit 1; }

# 1. Install into a scratch root.
ROOT=$WORK/root
DESTDIR=$ROOT cmake --install "$BUILD" > "$WORK/install.log"
PREFIX=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD/CMakeCache.txt")
for f in $PREFIX/bin/keycast-{keyd,ctl,send,recv} \
         $PREFIX/lib/systemd/system/keycast-{keyd.service,send@.service,recv@.service} \
         $PREFIX/lib/sysusers.d/keycast.conf /etc/keycast/keyd.conf \
         /etc/keycast/{send,recv}/example.{conf,env} $PREFIX/share/doc/keycast/operator-guide.md \
         $PREFIX/share/bash-completion/completions/keycast-ctl \
         $PREFIX/share/keycast/grafana/keycast.json $PREFIX/share/keycast/prometheus/keycast-rules.yml; do
  [ -f "$ROOT$f" ] || fail "install: $f missing"
done
echo "ok: installed $(find "$ROOT" -type f | wc -l) files"
# The installed completion completes commands, sub-words and formats.
complete_words() {  # complete_words WORD...: what TAB offers after them
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _keycast_ctl; echo "${COMPREPLY[*]}"' \
    _ "$ROOT$PREFIX/share/bash-completion/completions/keycast-ctl" keycast-ctl "$@"
}
[ "$(complete_words st)" = status ] || fail "completion: 'st' gave '$(complete_words st)'"
[ "$(complete_words billing '')" = "close invoices" ] || fail "completion: billing gave '$(complete_words billing '')'"
[ "$(complete_words -o '')" = "table json csv" ] || fail "completion: -o gave '$(complete_words -o '')'"
[ "$(complete_words -o json s)" = "status sas" ] || fail "completion: '-o json s' gave '$(complete_words -o json s)'"
echo "ok: bash completion of keycast-ctl"
# Man pages: made from --help at build time, so each names every option.
for page in man1/keycast-send.1.gz man1/keycast-recv.1.gz man1/keycast-ctl.1.gz man8/keycast-keyd.8.gz; do
  bin=$(basename "${page%%.*}")
  text=$(LC_ALL=C MANWIDTH=200 man -l "$ROOT$PREFIX/share/man/$page" 2>/dev/null) || fail "man -l $page"
  opts=$("$ROOT$PREFIX/bin/$bin" --help | grep -o -- '^  \(-. \[ \)\?--[a-z0-9-]*' | grep -o -- '--[a-z0-9-]*')
  [ "$(echo "$opts" | wc -l)" -ge 10 ] || fail "$bin --help: options not found: $opts"
  for o in $opts; do
    grep -Eq -- "$o([^a-z0-9-]|\$)" <<< "$text" || fail "$page lacks $o"
  done
done
echo "ok: 4 man pages, each with every option of its binary's --help"

# 2. The units as installed. systemd-analyze checks that ExecStart's binary
# exists, so the copies it reads point into the scratch root.
mkdir "$WORK/units"
for u in "$ROOT$PREFIX"/lib/systemd/system/*.service; do
  sed "s#$PREFIX/bin/#$ROOT$PREFIX/bin/#g" "$u" > "$WORK/units/$(basename "$u")"
done
for role in send recv; do cp "$WORK/units/keycast-$role@.service" "$WORK/units/keycast-$role@example.service"; done
(cd "$WORK/units" && systemd-analyze verify --man=no keycast-keyd.service keycast-send@example.service \
  keycast-recv@example.service) > "$WORK/verify.log" 2>&1 || fail "systemd-analyze verify: $(cat "$WORK/verify.log")"
[ -s "$WORK/verify.log" ] && fail "systemd-analyze verify warned: $(cat "$WORK/verify.log")"
echo "ok: systemd-analyze verify: 3 units, no warnings"

# 3. keyd from the installed config, notifying a stand-in for systemd.
start_listener() {  # start_listener NAME
  /usr/bin/python3 "$SRC/tests/service/notify_listen.py" "$WORK/$1.sock" "$WORK/$1.notify" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q listening "$WORK/$1.notify" 2>/dev/null && return; sleep 0.05; done
  fail "notify listener did not start"
}
wait_msg() {  # wait_msg NAME PATTERN [N]: the Nth message matching PATTERN arrives within 10 s
  local n=${3:-1}
  for _ in $(seq 200); do
    [ "$(grep -c -- "$2" "$WORK/$1.notify" || true)" -ge "$n" ] && return
    sleep 0.05
  done
  fail "$1: no message matching '$2' (#$n)"
}
bash "$SRC/scripts/make-certs.sh" "$WORK/pki" > /dev/null
"$ROOT$PREFIX/bin/keycast-keyd" --gen-master-key "$WORK/master.key" > /dev/null
start_listener keyd
NOTIFY_SOCKET=$WORK/keyd.sock "$ROOT$PREFIX/bin/keycast-keyd" --config "$ROOT/etc/keycast/keyd.conf" \
  --master-key-file "$WORK/master.key" --listen 127.0.0.1:0 --db "$WORK/keyd.db" --metrics "" \
  --audit-log "$WORK/audit.jsonl" --tls-cert "$WORK/pki/master.crt" --tls-key "$WORK/pki/master.key" \
  --tls-ca "$WORK/pki/ca.crt" > "$WORK/keyd.log" 2>&1 &
KEYD=$!
PIDS+=($KEYD)
wait_msg keyd '^READY=1|STATUS=master listening on port [0-9]'
kill -HUP $KEYD
wait_msg keyd '^RELOADING=1'
wait_msg keyd '^READY=1' 2
kill -TERM $KEYD
wait_msg keyd '^STOPPING=1'
wait $KEYD || fail "keyd exited $?"
grep -q "channel 1" "$WORK/keyd.log" || fail "keyd did not take channel 1 from keyd.conf"
echo "ok: keyd: $(tr '\n' ' ' < "$WORK/keyd.notify")"

# 4. A sender from a config file.
echo "256 000102030405060708090a0b0c0d0e0f10111213" > "$WORK/keys.txt"
cat > "$WORK/send.conf" <<CONF
# a lab sender
key-file = $WORK/keys.txt
channel = 1=239.1.1.1:5000
rate = 1000
duration = 3
stats-interval = 0.5
CONF
EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning -l 0,1 --file-prefix kc_svc_$ID --vdev net_null0"
start_listener send
NOTIFY_SOCKET=$WORK/send.sock "$ROOT$PREFIX/bin/keycast-send" $EAL -- --config "$WORK/send.conf" \
  --stats-json "$WORK/send.json" > "$WORK/send.log" 2>&1 || fail "keycast-send exited $?"
wait_msg send '^READY=1|STATUS=sending on port 0, 1 channel'
wait_msg send '^STATUS=t=.*sent=[1-9]'
wait_msg send '^STOPPING=1'
/usr/bin/python3 -c "import json,sys; f=json.load(open(sys.argv[1])); assert 2000 <= f['packets_sent'] <= 4000, f['packets_sent']" \
  "$WORK/send.json" || fail "rate/duration from the config file not applied"
echo "ok: send: $(grep -c . "$WORK/send.notify") messages, $(grep -c '^STATUS=t=' "$WORK/send.notify") status lines"
sed -i "s/^rate = 1000$/rate = fast/" "$WORK/send.conf"
set +e
"$ROOT$PREFIX/bin/keycast-send" $EAL -- --config "$WORK/send.conf" > "$WORK/bad.log" 2>&1
rc=$?
set -e
[ $rc -eq 2 ] || fail "bad config line: exit $rc, want 2"
grep -q "send.conf:4: .*rate" "$WORK/bad.log" || fail "bad config line not named: $(tail -n 2 "$WORK/bad.log")"
echo "ok: $(grep 'send.conf:4' "$WORK/bad.log")"
echo "PASS"
