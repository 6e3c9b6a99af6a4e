#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + fuzzer) into
# build-fuzz/ and runs each for SECONDS (default 20) from the seed corpora in
# tests/fuzz/corpus/<name>. Fails on any crash, leak or timeout. New inputs go
# to build-fuzz/corpus/, never into the repository's seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEYCAST_FUZZ=ON -DKEYCAST_SANITIZE=address,undefined \
  -DKEYCAST_BUILD_DATAPLANE=OFF -DKEYCAST_BUILD_BENCH=OFF >/dev/null
targets=$(cd tests/fuzz && ls corpus)
ninja -C build-fuzz $(for t in $targets; do echo fuzz_$t; done) >/dev/null
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in $targets; do
  bin=$(find build-fuzz/tests/fuzz -name "fuzz_$t" -type f -executable | head -1)
  work=build-fuzz/corpus/$t
  mkdir -p "$work"
  log=build-fuzz/fuzz_$t.log
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz_$t: FAILED (log $log)"
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  echo "fuzz_$t: ${execs:-?} executions in ${secs}s, corpus $(ls "$work" | wc -l) inputs, no crash"
done
