#!/usr/bin/env bash
# Build DPDK's ipsec-secgw example (Debian's dpdk-doc sources) against the installed libdpdk.
# The sources are copied into <repo>/build-secgw/ (git-ignored): DPDK code is never committed.
# Idempotent: unchanged sources are not re-copied, so make does not rebuild.
# Prints the path of the binary on success; on failure prints the reason and exits non-zero.
#
# One local patch is applied to the copy (see README.md): the example hard-codes
# rxmode.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM and exits if the port lacks it; the virtual
# ports used here (net_pcap, net_null) have no RX checksum offload. secgw never reads the
# checksum-offload mbuf flags, so requesting none changes nothing on the data path.
set -euo pipefail

die() { echo "secgw build: error: $*" >&2; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC=${DPDK_EXAMPLES:-/usr/share/dpdk/examples}
OUT=$REPO/build-secgw
APPDIR=$OUT/ipsec-secgw
BIN=$APPDIR/build/ipsec-secgw

[ -f "$SRC/ipsec-secgw/ipsec-secgw.c" ] || die "$SRC/ipsec-secgw not found (apt-get install dpdk-doc)"
command -v pkg-config >/dev/null || die "pkg-config not found"
pkg-config --exists libdpdk || die "pkg-config cannot find libdpdk (apt-get install libdpdk-dev)"
command -v make >/dev/null || die "make not found"
command -v "${CC:-cc}" >/dev/null || die "C compiler '${CC:-cc}' not found"

mkdir -p "$OUT"
STAGE=$(mktemp -d "$OUT/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

cp -r "$SRC/ipsec-secgw" "$STAGE/" || die "copy of $SRC/ipsec-secgw failed"
if [ -d "$SRC/common" ]; then cp -r "$SRC/common" "$STAGE/" || die "copy of $SRC/common failed"; fi
rm -rf "$STAGE/ipsec-secgw/test" "$STAGE/ipsec-secgw/build"

# Local patch (documented above and in README.md).
PATCHED=$STAGE/ipsec-secgw/ipsec-secgw.c
OLD='\.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,'
NEW='.offloads = 0, /* keycast bench: vdevs have no RX checksum offload */'
grep -q "$OLD" "$PATCHED" || die "patch target '$OLD' not found in ipsec-secgw.c (different DPDK version?)"
sed -i "s|$OLD|$NEW|" "$PATCHED"

# Sync the staged tree into build-secgw/, touching only files whose content changed.
( cd "$STAGE" && find . -type f ) | while read -r f; do
    if ! cmp -s "$STAGE/$f" "$OUT/$f"; then
        mkdir -p "$(dirname "$OUT/$f")"
        cp "$STAGE/$f" "$OUT/$f"
    fi
done

LOG=$OUT/build.log
# The example Makefile compiles all sources in one compiler call (a single job).
if ! make -s -j2 -C "$APPDIR" shared >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    die "make failed (full log: $LOG)"
fi
[ -x "$BIN" ] || die "build finished but $BIN is missing (log: $LOG)"
echo "$BIN"
