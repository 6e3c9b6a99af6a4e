#!/usr/bin/env python3
"""Failover time of keyd masters sharing one database.

Two keycast-keyd masters on one database (an SQLite file on tmpfs, or a
private PostgreSQL 15 cluster with fsync on); the active one is SIGKILLed
(no clean release: its lease has to run out) KILLS times, each time
restarted as the new standby. Measured: from the SIGKILL to the moment the
standby's /metrics says keycast_master_active 1, polled every 2 ms. The
design bound is 5/6 of --failover-ms (lease 2/3, standby poll 1/6).

usage: failover.py --build DIR [--kills 10] [--failover-ms 3000]
                   [--backend sqlite|postgres] [--json OUT]
"""
import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGBIN = "/usr/lib/postgresql/15/bin"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Postgres:
    """A private cluster as the key-plane tests start one (root: runs as postgres)."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(work, 0o711)  # postgres must reach its directory
        self.data = os.path.join(self.dir, "data")
        self.run(f"{PGBIN}/initdb -D {self.data} -A trust -U postgres --no-sync -E UTF8 --no-locale")
        self.port = free_port()
        # The server's defaults for durability (fsync, synchronous commit): a
        # takeover is timed as production would see it.
        self.run(f"{PGBIN}/pg_ctl -D {self.data} -l {self.dir}/server.log -w -t 60 "
                 f"-o '-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1' start")
        self.uri = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, cmd):
        subprocess.run(["/usr/sbin/runuser", "-u", "postgres", "--", "sh", "-c", cmd], cwd="/", check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        try:
            self.run(f"{PGBIN}/pg_ctl -D {self.data} -m immediate -w stop")
        except subprocess.CalledProcessError:
            pass


class Keyd:
    def __init__(self, args, log):
        self.log = open(log, "ab")
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log)
        self.port = self.metrics = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (self.port is None or self.metrics is None):
            line = self.p.stdout.readline().decode()
            if not line:
                break
            if "listening on port " in line:
                self.port = int(line.rsplit(" ", 1)[1])
            elif "metrics listening on " in line:
                self.metrics = int(line.rsplit(":", 1)[1])
        if self.port is None or self.metrics is None:
            raise RuntimeError(f"keyd did not start (see {log})")

    def active(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=2) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("keycast_master_active "):
                        return line.split()[1] == "1"
        except OSError:
            return None
        return None

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--failover-ms", type=int, default=3000)
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--json")
    a = ap.parse_args()
    keyd = os.path.join(a.build, "keyplane", "keycast-keyd")
    work = tempfile.mkdtemp(prefix="kc_failover.", dir="/dev/shm")
    pg = None
    procs = []
    try:
        pki = os.path.join(work, "pki")
        subprocess.run([os.path.join(ROOT, "scripts", "make-certs.sh"), pki], check=True, stdout=subprocess.DEVNULL)
        mk = os.path.join(work, "mk")
        subprocess.run([keyd, "--gen-master-key", mk], check=True, stdout=subprocess.DEVNULL)
        if a.backend == "postgres":
            pg = Postgres(work)
            db = pg.uri
        else:
            db = os.path.join(work, "shared.db")
        args = [keyd, "--db", db, "--master-key-file", mk, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                "--failover-ms", str(a.failover_ms), "--tls-cert", f"{pki}/master.crt", "--tls-key",
                f"{pki}/master.key", "--tls-ca", f"{pki}/ca.crt", "--channel", "1:origin=kms"]
        log = os.path.join(work, "keyd.log")

        def wait_for(pred, timeout_s=60):
            end = time.monotonic() + timeout_s
            while time.monotonic() < end:
                if pred():
                    return True
                time.sleep(0.002)
            return False

        first = Keyd(args, log)
        procs.append(first)
        if not wait_for(lambda: first.active()):
            raise RuntimeError("the first master never led")
        standby = Keyd(args, log)
        procs.append(standby)
        active = first
        times = []
        for _ in range(a.kills):
            if not wait_for(lambda: standby.active() is False):
                raise RuntimeError("the standby never answered")
            active.kill()
            t0 = time.monotonic()
            if not wait_for(lambda: standby.active()):
                raise RuntimeError("no takeover within 60 s")
            times.append((time.monotonic() - t0) * 1000)
            procs.remove(active)
            active, standby = standby, Keyd(args, log)
            procs.append(standby)
        times.sort()
        p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
        out = {"backend": a.backend, "failover_ms": a.failover_ms, "kills": a.kills,
               "bound_ms": a.failover_ms * 5 // 6, "p50_ms": round(statistics.median(times), 1),
               "p99_ms": round(p99, 1), "max_ms": round(times[-1], 1), "all_ms": [round(t, 1) for t in times]}
        print(f"failover ({a.backend}, --failover-ms {a.failover_ms}, {a.kills} SIGKILLs): "
              f"p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, max {out['max_ms']} ms "
              f"(bound 5/6 = {out['bound_ms']} ms)")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        for p in procs:
            p.stop()
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
