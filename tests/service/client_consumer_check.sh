#!/bin/bash
# client_consumer_check.sh ROOT PREFIX WORK — builds client_consumer.cpp the
# way a program of someone else's would, from nothing but the keycast
# installed under ROOT (a DESTDIR or an unpacked package) and
# `pkg-config --cflags --libs keycast-client`, then runs it against the
# keycast-keyd of the same ROOT. WORK is the caller's scratch directory.
set -euo pipefail
ROOT=$1 PREFIX=$2 WORK=$3
SRC=$(cd "$(dirname "$0")/../.." && pwd)
KEYD=
cleanup() {
  local rc=$?
  [ -n "$KEYD" ] && kill -KILL "$KEYD" 2>/dev/null || true
  [ $rc -ne 0 ] && [ -f "$WORK/consumer-keyd.log" ] && { echo "== keyd log"; tail -n 20 "$WORK/consumer-keyd.log"; }
  exit $rc
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; exit 1; }

pc=$(find "$ROOT$PREFIX/lib" -name keycast-client.pc)
[ "$(echo "$pc" | grep -c .)" -eq 1 ] || fail "want one keycast-client.pc under $ROOT$PREFIX/lib, found: $pc"
multiarch=$(gcc -print-multiarch)
[ "$pc" = "$ROOT$PREFIX/lib/$multiarch/pkgconfig/keycast-client.pc" ] || fail "keycast-client.pc at $pc"
# PKG_CONFIG_SYSROOT_DIR maps the .pc's /usr/... paths into ROOT, as for a
# cross build. It maps the system's openssl and libpcap paths too; those do
# not exist under ROOT, so their headers and libraries come from the
# compiler's default paths, where they are.
export PKG_CONFIG_SYSROOT_DIR=$ROOT PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --libs keycast-client) || fail "pkg-config keycast-client"
echo "ok: pkg-config --cflags --libs keycast-client: $flags"
case "$flags" in *"-I$ROOT$PREFIX/include/keycast"*) ;; *) fail "Cflags do not point into ROOT: $flags";; esac
# Only ROOT's headers: the source tree is on no include path here.
# shellcheck disable=SC2086
c++ -std=c++20 -O1 -o "$WORK/client_consumer" "$SRC/tests/service/client_consumer.cpp" $flags \
  > "$WORK/consumer-build.log" 2>&1 || fail "consumer does not build: $(tail -n 30 "$WORK/consumer-build.log")"
echo "ok: an out-of-tree program compiles and links against the installed client library"

bash "$SRC/scripts/make-certs.sh" "$WORK/consumer-pki" > /dev/null
"$ROOT$PREFIX/bin/keycast-keyd" --gen-master-key "$WORK/consumer-master.key" > /dev/null
"$ROOT$PREFIX/bin/keycast-keyd" --listen 127.0.0.1:0 --db "$WORK/consumer-keyd.db" --metrics "" \
  --master-key-file "$WORK/consumer-master.key" --channel 7 --tls-cert "$WORK/consumer-pki/master.crt" \
  --tls-key "$WORK/consumer-pki/master.key" --tls-ca "$WORK/consumer-pki/ca.crt" > "$WORK/consumer-keyd.log" 2>&1 &
KEYD=$!
port=
for _ in $(seq 200); do
  port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$WORK/consumer-keyd.log")
  [ -n "$port" ] && break
  kill -0 $KEYD 2>/dev/null || fail "keyd exited"
  sleep 0.05
done
[ -n "$port" ] || fail "keyd did not listen"
out=$(timeout 30 "$WORK/client_consumer" 127.0.0.1:$port "$WORK/consumer-pki/sender.crt" \
  "$WORK/consumer-pki/sender.key" "$WORK/consumer-pki/ca.crt" 7 2>&1) || fail "consumer: $out"
echo "$out" | grep -q "^channel 7 current spi 0x[0-9a-f]\{8\} from 127.0.0.1:$port$" || fail "consumer said: $out"
echo "ok: consumer: $out"
