#!/usr/bin/env bash
# Builds keycast's Debian package: a Release build for prefix /usr in its own
# directory (build-pkg/, or BUILD_DIR) with only what the package holds (no
# tests, no benchmarks), then cpack -G DEB. Prints the path of the .deb.
# Extra arguments go to CMake, e.g. -DCMAKE_CXX_COMPILER_LAUNCHER=ccache.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-pkg}
mkdir -p "$BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DKEYCAST_BUILD_TESTS=OFF -DKEYCAST_BUILD_BENCH=OFF "$@" > "$BUILD_DIR/package-configure.log" 2>&1 \
  || { cat "$BUILD_DIR/package-configure.log"; exit 1; }
cmake --build "$BUILD_DIR" -j "$(nproc)" > "$BUILD_DIR/package-build.log" 2>&1 \
  || { tail -n 60 "$BUILD_DIR/package-build.log"; exit 1; }
rm -f "$BUILD_DIR"/keycast_*.deb
(cd "$BUILD_DIR" && cpack -G DEB > package-cpack.log 2>&1) || { cat "$BUILD_DIR/package-cpack.log"; exit 1; }
ls "$(cd "$BUILD_DIR" && pwd)"/keycast_*.deb
