#!/bin/bash
# keycast's Debian package as scripts/package.sh builds it (a Release build
# for /usr in BUILD_DIR/package; a rebuild is incremental):
#  - it holds exactly what `cmake --install` of that build installs: binaries
#    in /usr/bin, man pages, units in /usr/lib/systemd/system, the service
#    user, /etc/keycast (all conffiles), docs, the client library, its headers
#    and keycast-client.pc;
#  - Depends (from dpkg-shlibdeps) names IPsec-MB and DPDK's EAL, Recommends
#    dpdk; postinst creates the user, reloads systemd and starts nothing;
#  - apt resolves its install on this machine (simulated, nothing installed);
#  - unpacked, its binaries run with the system's shared libraries and a
#    program outside the tree builds against its client library.
set -euo pipefail
BUILD=${1:?usage: package_test.sh BUILD_DIR}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/kc_package.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
fail() { echo "FAIL: $*"; exit 1; }

# The developer's compiler launcher (ccache), if the main build has one.
extra=()
for v in CMAKE_C_COMPILER_LAUNCHER CMAKE_CXX_COMPILER_LAUNCHER; do
  l=$(sed -n "s/^$v:[A-Z]*=//p" "$BUILD/CMakeCache.txt")
  [ -n "$l" ] && extra+=("-D$v=$l")
done
t0=$(date +%s)
deb=$(BUILD_DIR=$BUILD/package "$SRC/scripts/package.sh" "${extra[@]}") || fail "package.sh: $deb"
version=$(cat "$SRC/VERSION")
[ "$(basename "$deb")" = "keycast_${version}_$(dpkg --print-architecture).deb" ] || fail "package name: $deb"
echo "ok: $(basename "$deb"), $(( $(stat -c %s "$deb") / 1024 )) KiB, built in $(( $(date +%s) - t0 )) s"

# Contents: the same files as an install of the same build, and the ones named here.
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's#^\./#/#' | sort > "$WORK/deb.list"
DESTDIR=$WORK/install cmake --install "$BUILD/package" > /dev/null
(cd "$WORK/install" && find . -type f -o -type l) | sed 's#^\./#/#' | sort > "$WORK/install.list"
diff "$WORK/install.list" "$WORK/deb.list" > "$WORK/list.diff" || fail "package != install (< install, > package):
$(cat "$WORK/list.diff")"
ma=$(gcc -print-multiarch)
for f in /usr/bin/keycast-{send,recv,keyd,ctl} \
         /usr/share/man/man1/keycast-{send,recv,ctl}.1.gz /usr/share/man/man8/keycast-keyd.8.gz \
         /usr/lib/systemd/system/keycast-{keyd.service,send@.service,recv@.service} \
         /usr/lib/sysusers.d/keycast.conf /etc/keycast/keyd.conf /etc/keycast/{send,recv}/example.{conf,env} \
         /usr/lib/$ma/pkgconfig/keycast-client.pc /usr/lib/$ma/libkeycast_keyplane_client.a \
         /usr/lib/$ma/libkeycast_common.a /usr/include/keycast/keyplane/client/client.hpp \
         /usr/share/doc/keycast/operator-guide.md; do
  grep -qx "$f" "$WORK/deb.list" || fail "$f not in the package"
done
grep -q "^ExecStart=/usr/bin/keycast-keyd " <(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/keycast-keyd.service) \
  || fail "keycast-keyd.service does not run /usr/bin/keycast-keyd"
echo "ok: $(wc -l < "$WORK/deb.list") files, the same as cmake --install"

# Control: dependencies, conffiles, maintainer scripts.
depends=$(dpkg-deb -f "$deb" Depends)
for d in libipsec-mb librte-eal libssl libsqlite3 libsystemd; do
  echo "$depends" | grep -q "\b$d" || fail "Depends lacks $d: $depends"
done
[ "$(dpkg-deb -f "$deb" Recommends)" = dpdk ] || fail "Recommends: $(dpkg-deb -f "$deb" Recommends)"
desc=$(dpkg-deb -f "$deb" Description)
[ "$(echo "$desc" | sed -n 2p)" != " $(echo "$desc" | head -n 1)" ] || fail "Description repeats its summary: $desc"
echo "ok: Depends: $depends"
dpkg-deb -e "$deb" "$WORK/control"
diff <(grep '^/etc/' "$WORK/deb.list") <(sort "$WORK/control/conffiles") \
  || fail "conffiles are not every file in /etc"
for s in postinst postrm; do
  [ -x "$WORK/control/$s" ] || fail "$s missing or not executable"
  sh -n "$WORK/control/$s" || fail "$s: syntax"
  grep -Eq 'systemctl +(start|restart|enable|try-restart)' "$WORK/control/$s" && fail "$s starts a service"
done
# postinst run with stand-ins for systemd-sysusers and systemctl that log their arguments.
mkdir "$WORK/stubs"
for t in systemd-sysusers systemctl; do
  printf '#!/bin/sh\necho "%s $*" >> "%s"\n' "$t" "$WORK/stubs.log" > "$WORK/stubs/$t"
  chmod +x "$WORK/stubs/$t"
done
PATH=$WORK/stubs:$PATH "$WORK/control/postinst" configure || fail "postinst configure: exit $?"
want="systemd-sysusers keycast.conf"
[ -d /run/systemd/system ] && want="$want
systemctl daemon-reload"
[ "$(cat "$WORK/stubs.log")" = "$want" ] || fail "postinst ran: $(cat "$WORK/stubs.log"), want: $want"
echo "ok: $(wc -l < "$WORK/control/conffiles") conffiles; postinst: sysusers, daemon-reload, starts nothing"

# apt resolves the install (simulation only: -s installs nothing).
apt-get install -s "$deb" > "$WORK/apt.log" 2>&1 || fail "apt-get -s: $(tail -n 20 "$WORK/apt.log")"
grep -q "^Inst keycast " "$WORK/apt.log" || fail "apt-get -s would not install keycast: $(tail -n 20 "$WORK/apt.log")"
echo "ok: apt-get install -s: $(grep -c '^Inst ' "$WORK/apt.log") package(s) to install, $(grep '^Inst keycast ' "$WORK/apt.log")"

# Unpacked: the binaries find their shared libraries on the system.
dpkg-deb -x "$deb" "$WORK/x"
for b in send recv keyd ctl; do
  env -u LD_LIBRARY_PATH ldd "$WORK/x/usr/bin/keycast-$b" | grep -q 'not found' && fail "keycast-$b: $(ldd "$WORK/x/usr/bin/keycast-$b" | grep 'not found')"
  out=$(env -u LD_LIBRARY_PATH "$WORK/x/usr/bin/keycast-$b" --version) || fail "keycast-$b --version"
  [[ "$out" == "keycast-$b $version "* ]] || fail "keycast-$b --version: $out"
done
echo "ok: unpacked binaries run: $(env -u LD_LIBRARY_PATH "$WORK/x/usr/bin/keycast-ctl" --version)"
"$SRC/tests/service/client_consumer_check.sh" "$WORK/x" /usr "$WORK"
echo "PASS"
