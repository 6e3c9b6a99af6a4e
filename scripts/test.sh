#!/usr/bin/env bash
# From a fresh machine to a passing test suite: install dependencies, build with
# CMake and with Meson, run every test under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

echo "== setup"
scripts/setup.sh

echo "== cmake build"
scripts/build.sh

echo "== meson build (DPDK's build system; must stay in step with CMake)"
if [ -d build-meson ]; then
  meson setup --reconfigure build-meson >/dev/null
else
  meson setup build-meson >/dev/null
fi
ninja -C build-meson -j "$(nproc)" >/dev/null
echo "meson: built $(find build-meson -maxdepth 3 -type f -executable -name 'keycast-*' -o -maxdepth 3 -type f -executable -name 'test_*' | wc -l) executables"

echo "== tests"
cd build
ctest --output-on-failure --timeout 900
echo "== all tests passed in $(( $(date +%s) - start )) s"
