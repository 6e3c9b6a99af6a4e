# Shared set-up for the integration tests: a PKI, key servers on loopback,
# a bridge with TAP devices for the DPDK processes, and cleanup of all of it
# on exit (even on failure). Sourced by the scenario scripts.
set -euo pipefail

# Each scenario runs in a session of its own. With sched_autogroup
# (kernel.sched_autogroup_enabled=1) the scheduler shares CPU time between
# sessions, and PostgreSQL's processes each open one. Run in the session of
# a shell that also ran CPU-bound jobs, the scenario's processes (dozens of
# threads waking every few hundred microseconds) shared those jobs' group,
# and that group was measured holding both CPUs of a 2-vCPU machine for
# seconds on end while its virtual runtime barely advanced: PostgreSQL,
# runnable, got no CPU at all (crash recovery took 14.9 s for 0.00 s of
# CPU, lease renewals came over 2 s late), and keyd and the receivers,
# waiting on it, timed out. In a session of its own the invoker's jobs are
# another group, as a CI runner's would be. The parent stays to pass on a
# stop (INT, TERM, HUP) and the exit status; env gives the scenario back the
# INT and QUIT that a background job of a script starts with ignored.
if [ "$(ps -o sid= -p $$ | tr -d ' ')" != "$$" ]; then
  setsid -w env --default-signal=INT,QUIT "$BASH" "$0" "$@" &
  scenario=$!
  trap 'kill -TERM "$scenario" 2>/dev/null || true' INT TERM HUP
  rc=0
  wait "$scenario" || rc=$?
  while kill -0 "$scenario" 2>/dev/null; do rc=0; wait "$scenario" || rc=$?; done
  exit "$rc"
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:?BUILD must name the CMake build dir}
KEYD=$BUILD/keyplane/keycast-keyd
CTL=$BUILD/keyplane/keycast-ctl
SEND=$BUILD/dataplane/keycast-send
RECV=$BUILD/dataplane/keycast-recv
PY=/usr/bin/python3
ID=$$
# On tmpfs: these scenarios compress key lifetimes about a hundredfold (1-2 s
# instead of minutes), but a shared disk's fsync stalls do not compress: one
# SQLite commit of the key server was measured at 1.6 s here, and the key
# server answers nobody while it waits, so receivers missed switches. A
# process crash keeps what tmpfs holds, which is all these tests kill; the
# store's durability on a real disk is tested by the key-plane suites.
WORK=$(mktemp -d /dev/shm/kc_int.XXXXXX)
BR=kib$ID
PIDS=()
TAPS=()
EAL="--no-huge -m 256 --no-pci --log-level=lib.eal:warning --log-level=pmd.net.tap:warning"

cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  for i in "${TAPS[@]:-}" "$BR"; do [ -n "$i" ] && ip link del "$i" 2>/dev/null || true; done
  rm -rf /var/run/dpdk/kci_*_$ID
  [ -n "${PG_DATA:-}" ] && as_postgres "$PGBIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
  if [ $rc -ne 0 ]; then
    echo "---- logs ($WORK) ----"
    for f in "$WORK"/*.log "$WORK"/*.json; do [ -f "$f" ] && { echo "== $f"; tail -n 25 "$f"; }; done
  fi
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"  # KEEP_WORK=1: keep every log for a post-mortem
  exit $rc
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "FAIL: needs root (TAP devices, bridge)"; exit 1; }
KEYCAST_CLIENT2_CHANNELS=${KEYCAST_CLIENT2_CHANNELS:-2} "$ROOT/scripts/make-certs.sh" "$WORK/pki" >/dev/null
PKI=$WORK/pki

# A private PostgreSQL 15 cluster for the scenario (pg_up), stopped by
# cleanup: initdb and the server run as the postgres user, data and socket
# under $WORK, a free port on 127.0.0.1; sets PG_URI and PG_PORT.
# PG_SYNC_COMMIT=on: a commit is acknowledged only once its WAL is written,
# for scenarios that crash the server (pg_stop immediate): with the default
# off, a crash may lose commits that keyd was already told had landed.
PGBIN=/usr/lib/postgresql/15/bin
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
pg_up() {
  local dir=$WORK/pg
  mkdir -p "$dir" && chown postgres: "$dir" && chmod 711 "$WORK"
  as_postgres "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --no-locale \
    > "$WORK/initdb.log" 2>&1 || { echo "FAIL: initdb"; cat "$WORK/initdb.log"; exit 1; }
  PG_DATA=$dir/data
  PG_PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PG_OPTS="-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off"
  PG_OPTS+=" -c synchronous_commit=${PG_SYNC_COMMIT:-off}"
  pg_start
  PG_URI=postgresql://postgres@127.0.0.1:$PG_PORT/postgres
}
# pg_start: (re)starts the cluster pg_up made, on the same port; returns
# once it accepts connections.
pg_start() {
  as_postgres "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/server.log" -w -t 60 -o "$PG_OPTS" start \
    > /dev/null || { echo "FAIL: postgres did not start"; tail -n 20 "$WORK/pg/server.log"; exit 1; }
}
# pg_stop [MODE]: stops it (pg_ctl -m MODE: fast, or immediate for a crash).
pg_stop() {
  as_postgres "$PGBIN/pg_ctl" -D "$PG_DATA" -m "${1:-fast}" -w -t 60 stop > /dev/null \
    || { echo "FAIL: postgres did not stop"; exit 1; }
}
# psql_q SQL: one query's rows, fields separated by '|'.
psql_q() { "$PGBIN/psql" "$PG_URI" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }

# start_keyd NAME ROLE [args...]: starts keyd on an ephemeral port; sets
# PORT_<NAME>. Channel policies are the caller's. KEYD_DB, KEYD_MK and
# KEYD_CERT replace the database, master key and certificate named after
# NAME (masters sharing one database share its master key).
start_keyd() {
  local name=$1 role=$2; shift 2
  local mk=${KEYD_MK:-$WORK/$name.mk} cert=${KEYD_CERT:-$name}
  [ -f "$mk" ] || "$KEYD" --gen-master-key "$mk" >/dev/null
  "$KEYD" --role "$role" --listen 127.0.0.1:0 --db "${KEYD_DB:-$WORK/$name.db}" \
    --master-key-file "$mk" --tls-cert "$PKI/$cert.crt" --tls-key "$PKI/$cert.key" \
    --tls-ca "$PKI/ca.crt" "$@" > "$WORK/$name.out" 2> "$WORK/$name.log" &
  PIDS+=($!)
  eval "PID_$name=$!"
  local port=""
  for _ in $(seq 1 100); do
    port=$(grep -o 'listening on port [0-9]*' "$WORK/$name.out" 2>/dev/null | grep -o '[0-9]*$' || true)
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { echo "FAIL: keyd $name did not start"; exit 1; }
  eval "PORT_$name=$port"
}

# restart_keyd NAME ROLE PORT [args...]: same database, same port.
restart_keyd() {
  local name=$1 role=$2 port=$3; shift 3
  "$KEYD" --role "$role" --listen 127.0.0.1:$port --db "$WORK/$name.db" \
    --master-key-file "$WORK/$name.mk" --tls-cert "$PKI/$name.crt" --tls-key "$PKI/$name.key" \
    --tls-ca "$PKI/ca.crt" "$@" > "$WORK/$name.out" 2>> "$WORK/$name.log" &
  PIDS+=($!)
  eval "PID_$name=$!"
  for _ in $(seq 1 100); do
    grep -q 'listening on port' "$WORK/$name.out" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "FAIL: keyd $name did not restart"; exit 1
}

ctl() { "$CTL" --server "127.0.0.1:$PORT_master" --tls-cert "$PKI/admin.crt" \
  --tls-key "$PKI/admin.key" --tls-ca "$PKI/ca.crt" "$@"; }
# mctl HOST:PORT [args...]: keycast-ctl as admin, against any key server.
mctl() { "$CTL" --server "$1" --tls-cert "$PKI/admin.crt" --tls-key "$PKI/admin.key" --tls-ca "$PKI/ca.crt" "${@:2}"; }

# drain_outbox PORT: waits until the slave on PORT has handed every billing
# event it took to the active master (its billing_outbox is 0), for up to
# 20 s; fails the scenario, with what is left, if it has not by then.
drain_outbox() {
  local left="" until=$((SECONDS + 20))
  while :; do
    left=$(mctl "127.0.0.1:$1" -o json status 2>/dev/null |
      $PY -c 'import json,sys; print(json.load(sys.stdin)["billing_outbox"])' 2>/dev/null) || left="(no answer)"
    [ "$left" = 0 ] && return 0
    [ "$SECONDS" -lt "$until" ] || break
    sleep 0.05
  done
  echo "FAIL: the slave on port $1 still holds billing events for the master after 20 s: outbox $left"
  exit 1
}

bridge_up() {
  ip link add name "$BR" type bridge
  ip link set "$BR" type bridge mcast_snooping 0
  sysctl -qw "net.ipv6.conf.$BR.disable_ipv6=1" || true
  ip link set "$BR" up
}

# Attach a TAP made by a DPDK process to the bridge as soon as it exists.
attach() {
  local ifc=$1
  for _ in $(seq 1 200); do
    ip link show "$ifc" >/dev/null 2>&1 && break
    sleep 0.05
  done
  ip link show "$ifc" >/dev/null 2>&1 || { echo "FAIL: $ifc did not appear"; exit 1; }
  sysctl -qw "net.ipv6.conf.$ifc.disable_ipv6=1" || true
  ip link set "$ifc" txqueuelen 10000
  ip link set "$ifc" master "$BR"
  ip link set "$ifc" up
}

# start_recv TAG CERT MAIN_LCORE [options...]: a receiver on its own TAP.
start_recv() {
  local tag=$1 cert=$2 main=$3; shift 3
  local ifc=kr${tag}$ID
  TAPS+=("$ifc")
  "$RECV" $EAL --file-prefix "kci_${tag}_$ID" -l 0,1 --main-lcore "$main" \
    --vdev "net_tap0,iface=$ifc" -- \
    --tls-cert "$PKI/$cert.crt" --tls-key "$PKI/$cert.key" --tls-ca "$PKI/ca.crt" \
    --deliver verify --replay-window 4096 --idle-sleep-us 50 --duration 300 \
    --stats-interval 2 --stats-json "$WORK/$tag.json" "$@" > "$WORK/$tag.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$tag=$!"
  attach "$ifc"
}

# start_send TAG MAIN_LCORE [options...]: a sender (sender certificate).
start_send() {
  local tag=$1 main=$2; shift 2
  local ifc=ks${tag}$ID
  TAPS+=("$ifc")
  "$SEND" $EAL --file-prefix "kci_${tag}_$ID" -l 0,1 --main-lcore "$main" \
    --vdev "net_tap0,iface=$ifc" -- \
    --tls-cert "$PKI/sender.crt" --tls-key "$PKI/sender.key" --tls-ca "$PKI/ca.crt" \
    --payload-size 256 --idle-sleep-us 100 --start-delay-ms "${START_DELAY_MS:-1500}" --stats-interval 2 \
    --stats-json "$WORK/$tag.json" "$@" > "$WORK/$tag.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$tag=$!"
  attach "$ifc"
}

# stop PID...: SIGINT (operator stop), then wait; drops them from cleanup.
stop() {
  for p in "$@"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" || { echo "FAIL: process $p exited with $?"; exit 1; }; done
  local keep=()
  for q in "${PIDS[@]}"; do
    local drop=0
    for p in "$@"; do [ "$q" = "$p" ] && drop=1; done
    [ $drop = 1 ] || keep+=("$q")
  done
  PIDS=("${keep[@]:-}")
}

# wait_exit PID: waits for a process that stops by itself (--count).
wait_exit() {
  wait "$1" || { echo "FAIL: process $1 exited with $?"; exit 1; }
  local keep=()
  for q in "${PIDS[@]}"; do [ "$q" = "$1" ] || keep+=("$q"); done
  PIDS=("${keep[@]:-}")
}
