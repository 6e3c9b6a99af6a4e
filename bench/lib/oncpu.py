#!/usr/bin/env python3
"""Run a DPDK process and measure how long its worker lcore threads were on a CPU.

usage: oncpu.py OUT.json -- COMMAND [ARGS...]

The machine running the benchmarks is shared, so wall-clock rates understate what a core does.
Every 5 ms this samples /proc/PID/task/TID/schedstat (first field: ns on a CPU) of the threads
named lcore-worker-N / rte-worker-N / dpdk-worker-N (DPDK's worker lcore threads). A worker
stops accumulating time once it has stopped (it blocks in the EAL), so the last sample taken
before the process exits is its total. Writes {"rc", "wall_s", "workers": {name: oncpu_ns}}.
"""
import json
import os
import re
import subprocess
import sys
import time

WORKER = re.compile(r"^(lcore-worker|rte-worker|dpdk-worker)-?\d+")


def sample(pid, acc):
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            if not WORKER.match(name):
                continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        acc[name] = max(acc.get(name, 0), ns)


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, cmd = sys.argv[1], sys.argv[3:]
    acc = {}
    t0 = time.monotonic()
    p = subprocess.Popen(cmd)
    while p.poll() is None:
        sample(p.pid, acc)
        time.sleep(0.005)
    wall = time.monotonic() - t0
    with open(out, "w") as f:
        json.dump({"rc": p.returncode, "wall_s": wall, "workers": acc}, f)
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
