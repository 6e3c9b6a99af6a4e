#!/bin/bash
# The key-plane client library as installed: `cmake --install` into a scratch
# root, then a program outside the tree is built with pkg-config keycast-client
# from that root alone and fetches a key from the installed keycast-keyd.
set -euo pipefail
BUILD=${1:?usage: client_pkgconfig_test.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/kc_clientpc.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
ROOT=$WORK/root
DESTDIR=$ROOT cmake --install "$BUILD" > "$WORK/install.log"
PREFIX=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD/CMakeCache.txt")
for h in keyplane/client/client.hpp keyplane/protocol.hpp keyplane/tls.hpp common/key_record.hpp common/suite.hpp; do
  [ -f "$ROOT$PREFIX/include/keycast/$h" ] || { echo "FAIL: header $h not installed"; exit 1; }
done
# Every header an installed header includes is installed too.
for f in $(find "$ROOT$PREFIX/include/keycast" -name '*.hpp'); do
  for inc in $(sed -n 's/^#include "\(.*\)"$/\1/p' "$f"); do
    [ -f "$ROOT$PREFIX/include/keycast/$inc" ] || { echo "FAIL: $f includes $inc, not installed"; exit 1; }
  done
done
echo "ok: $(find "$ROOT$PREFIX/include/keycast" -name '*.hpp' | wc -l) public headers, every include resolved"
"$HERE/client_consumer_check.sh" "$ROOT" "$PREFIX" "$WORK"
echo "PASS"
