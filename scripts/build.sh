#!/usr/bin/env bash
# Configures and builds keycast with CMake into build/ (Release-like, with debug info).
# Extra arguments go to CMake, e.g. -DKEYCAST_SANITIZE=address,undefined.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
