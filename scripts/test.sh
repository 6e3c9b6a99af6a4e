#!/usr/bin/env bash
# From a fresh machine to a passing test suite: install dependencies, build with
# CMake and with Meson, run every test under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# One compiler cache for every tree below and for the next run: paths are
# taken relative to the checkout, so a fresh clone elsewhere still hits.
export CCACHE_BASEDIR=$(pwd) CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-20G}

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

echo "== install: CMake and Meson install the same files"
rm -rf build/install-check build-meson/install-check
DESTDIR=$(pwd)/build/install-check cmake --install build >/dev/null
DESTDIR=$(pwd)/build-meson/install-check meson install -C build-meson --no-rebuild >/dev/null
diff <(cd build/install-check && find . -type f | sort) <(cd build-meson/install-check && find . -type f | sort)
echo "install: $(cd build/install-check && find . -type f | wc -l) files from each"
rm -rf build/install-check build-meson/install-check

echo "== tests"
cd build
ctest --output-on-failure --timeout 900
cd ..

# ---- BEGIN sanitizers and fuzzing (see docs/security.md). Any sanitizer
# report fails the run.
echo "== sanitizers: ASan+UBSan build (build-asan), whole suite"
san_supp=$(pwd)/tests/sanitizers
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKEYCAST_SANITIZE=address,undefined -DKEYCAST_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$(nproc)" > build-asan/build.log 2>&1 || { tail -n 60 build-asan/build.log; exit 1; }
(
  cd build-asan
  export ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1:detect_stack_use_after_return=0
  export LSAN_OPTIONS=suppressions=$san_supp/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$san_supp/ubsan.supp
  ctest --output-on-failure --timeout 900
)
echo "== sanitizers: TSan, key table concurrency (build-tsan)"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKEYCAST_SANITIZE=thread -DKEYCAST_BUILD_BENCH=OFF >/dev/null
cmake --build build-tsan -j "$(nproc)" --target dataplane_unit_tests > build-tsan/build.log 2>&1 \
  || { tail -n 60 build-tsan/build.log; exit 1; }
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$san_supp/tsan.supp \
  build-tsan/tests/dataplane/dataplane_unit_tests --gtest_filter='KeyTable.*:SpiCache.*' --gtest_brief=1
echo "== fuzzing: every libFuzzer target, 15 s each"
scripts/fuzz.sh 15
# ---- END sanitizers and fuzzing
command -v ccache >/dev/null && ccache --show-stats 2>/dev/null | grep -E '^(Cacheable|  Hits|  Misses)' || true
echo "== all tests passed in $(( $(date +%s) - start )) s"
