#!/bin/bash
# Metrics, alert rules and dashboard, end to end:
#  - contrib/prometheus/keycast-rules.yml passes `promtool check rules`, and
#    `promtool test rules` (keycast_rules_test.yml) sees each alert fire on
#    its fault and stay quiet beside it;
#  - contrib/grafana/keycast.json is JSON and every panel query parses as
#    PromQL;
#  - a master and a slave keyd, a keycast-send (keys from the master) and a
#    keycast-recv (keys from the slave) on TAP devices, each with --metrics
#    HOST:0: every endpoint's text passes `promtool check metrics` with no
#    complaint, /healthz answers 200 "ok", the key families carry the
#    expected values (traffic, SPIs, certificate expiry as openssl reads it);
#  - every keycast_* name in the dashboard and the rules is a family these
#    binaries export;
#  - the master stops: the slave's /healthz turns 503 with the reason and its
#    replication lag grows.
#
# usage: BUILD=build metrics_test.sh
source "$(dirname "$0")/../integration/lib.sh"
RULES=$ROOT/contrib/prometheus/keycast-rules.yml
DASH=$ROOT/contrib/grafana/keycast.json
fail() { echo "FAIL: $*"; exit 1; }

# 1. Rules and dashboard on their own.
promtool check rules "$RULES" > "$WORK/rules_check.log" 2>&1 || fail "promtool check rules: $(cat "$WORK/rules_check.log")"
echo "ok: $(grep -o 'SUCCESS.*' "$WORK/rules_check.log")"
promtool test rules "$ROOT/tests/service/keycast_rules_test.yml" > "$WORK/rules_test.log" 2>&1 ||
  fail "promtool test rules: $(cat "$WORK/rules_test.log")"
echo "ok: promtool test rules: $(grep -c 'alertname:' "$ROOT/tests/service/keycast_rules_test.yml") alert checks pass"
$PY -m json.tool "$DASH" > /dev/null || fail "$DASH is not JSON"
# Grafana's variables replaced, each panel query becomes a recording rule for
# promtool to parse.
n=$($PY - "$DASH" "$WORK/dashboard_rules.yml" <<'EOF'
import json, sys
exprs = []
def walk(panels):
    for p in panels:
        exprs.extend(t["expr"] for t in p.get("targets", []))
        walk(p.get("panels", []))
walk(json.load(open(sys.argv[1]))["panels"])
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        for var, val in (("$__rate_interval", "1m"), ("$__range", "1h"), ("$job", ".*"), ("$instance", ".*")):
            e = e.replace(var, val)
        f.write("      - record: dashboard:panel_%d\n        expr: %s\n" % (i, json.dumps(e)))
print(len(exprs))
EOF
)
promtool check rules "$WORK/dashboard_rules.yml" > "$WORK/dash_check.log" 2>&1 ||
  fail "dashboard queries: $(cat "$WORK/dash_check.log")"
echo "ok: dashboard: valid JSON, $n panel queries parse"

# 2. The four processes.
POLICY="1:lifetime=4000,p1=2000,p2=1000,grace=1000,origin=kms"
start_keyd master master --channel "$POLICY" --metrics 127.0.0.1:0
start_keyd slave slave --master "127.0.0.1:$PORT_master" --channel "$POLICY" --metrics 127.0.0.1:0
bridge_up
start_recv r1 client 0 --kms "127.0.0.1:$PORT_slave" --channel 1 --group 239.7.7.9:6009 --metrics 127.0.0.1:0
start_send s1 1 --kms "127.0.0.1:$PORT_master" --key-origin kms --channel 1 --group 239.7.7.9:6009 \
  --source 10.77.0.9 --rate 2000 --metrics 127.0.0.1:0

# metrics_addr NAME FILE: waits for "metrics listening on HOST:PORT" in FILE.
declare -A ADDR
metrics_addr() {
  for _ in $(seq 1 200); do
    ADDR[$1]=$(grep -o 'metrics listening on [^ ]*' "$2" 2>/dev/null | head -n 1 | cut -d' ' -f4 || true)
    [ -n "${ADDR[$1]}" ] && return 0
    sleep 0.05
  done
  fail "$1 printed no 'metrics listening on HOST:PORT'"
}
metrics_addr master "$WORK/master.out"
metrics_addr slave "$WORK/slave.out"
metrics_addr send "$WORK/s1.log"
metrics_addr recv "$WORK/r1.log"
echo "ok: metrics listening: master ${ADDR[master]}, slave ${ADDR[slave]}, send ${ADDR[send]}, recv ${ADDR[recv]}"

# get NAME PATH OUT: GET http://ADDR[NAME]PATH, body to OUT; prints the status.
get() {
  $PY - "${ADDR[$1]}" "$2" "$3" <<'EOF'
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", sys.argv[2])
    r = c.getresponse()
    open(sys.argv[3], "wb").write(r.read())
    print(r.status)
except OSError as e:
    open(sys.argv[3], "w").write(str(e))
    print(0)
EOF
}
# value FILE SERIES: the sample's value ("" if absent); SERIES as written.
value() { awk -v s="$2" 'index($0, s " ") == 1 { print substr($0, length(s) + 2); exit }' "$1"; }

# Healthy once the keys are there: the slave subscribed, both data-plane
# processes hold channel 1's current key, and the receiver delivers.
healthy() {
  for n in master slave send recv; do
    [ "$(get $n /healthz "$WORK/$n.health")" = 200 ] || return 1
  done
  get recv /metrics "$WORK/recv.prom" > /dev/null
  [ "$(value "$WORK/recv.prom" keycast_recv_packets_total)" -gt 0 ] 2>/dev/null
}
ok=0
for _ in $(seq 1 300); do healthy && { ok=1; break; }; sleep 0.1; done
if [ $ok = 0 ]; then
  for n in master slave send recv; do echo "$n /healthz: $(cat "$WORK/$n.health" 2>/dev/null)"; done
  fail "not healthy and delivering within 30 s"
fi
for n in master slave send recv; do
  [ "$(cat "$WORK/$n.health")" = ok ] || fail "$n /healthz body: $(cat "$WORK/$n.health")"
done
echo "ok: /healthz 200 ok on all four, the receiver delivers"

# 3. Every endpoint passes promtool's linter, silently.
for n in master slave send recv; do
  [ "$(get $n /metrics "$WORK/$n.prom")" = 200 ] || fail "$n /metrics: $(head -c 200 "$WORK/$n.prom")"
  promtool check metrics < "$WORK/$n.prom" > "$WORK/$n.lint" 2>&1 || fail "$n: promtool check metrics: $(cat "$WORK/$n.lint")"
  [ -s "$WORK/$n.lint" ] && fail "$n: promtool check metrics complained: $(cat "$WORK/$n.lint")"
  echo "ok: $n: promtool check metrics clean, $(grep -c '^# TYPE ' "$WORK/$n.prom") families, $(grep -vc '^#' "$WORK/$n.prom") samples"
done

# 4. The key families.
VERSION=$(cat "$ROOT/VERSION")
need() {  # need NAME SERIES TEST (a bash arithmetic test on v)
  local v
  v=$(value "$WORK/$1.prom" "$2")
  [ -n "$v" ] || fail "$1: no sample $2"
  awk -v v="$v" "BEGIN { exit !($3) }" || fail "$1: $2 = $v, want $3"
}
need master 'keycast_build_info{version="'"$VERSION"'",protocol="1",role="master"}' 'v == 1'
need slave 'keycast_build_info{version="'"$VERSION"'",protocol="1",role="slave"}' 'v == 1'
need send 'keycast_build_info{version="'"$VERSION"'",role="send"}' 'v == 1'
need recv 'keycast_build_info{version="'"$VERSION"'",role="recv"}' 'v == 1'
need master 'keycast_key_remaining_seconds{channel="1",role="current"}' 'v > 0 && v <= 4'
need slave 'keycast_key_remaining_seconds{channel="1",role="current"}' 'v > 0 && v <= 4'
for c in master slave; do
  for f in "server:$PKI/$c.crt" "ca:$PKI/ca.crt"; do
    want=$(date -d "$(openssl x509 -noout -enddate -in "${f#*:}" | cut -d= -f2)" +%s)
    need $c "keycast_tls_cert_expiry_timestamp_seconds{cert=\"${f%%:*}\"}" "v == $want"
  done
done
need master 'keycast_replication_slave_queued_bytes{slave="slave"}' 'v >= 0'
need master 'keycast_replication_slave_entitlement_lag{slave="slave"}' 'v == 0'
need slave keycast_replication_lag_seconds 'v == 0'
need slave keycast_master_connected 'v == 1'
need master 'keycast_requests_total{type="generate_request"}' 'v >= 1'
need send keycast_send_packets_total 'v > 0'
need send 'keycast_send_channel_packets_total{channel="1"}' 'v > 0'
need send 'keycast_send_current_spi{channel="1"}' 'v >= 256'
need send 'keycast_send_drops_total{reason="tx_dropped"}' 'v >= 0'
need send 'keycast_nic_tx_packets_total{port="0"}' 'v > 0'
need send 'keycast_nic_xstat{port="0",name="tx_good_packets"}' 'v > 0'
need recv 'keycast_recv_channel_packets_total{channel="1"}' 'v > 0'
need recv 'keycast_recv_current_spi{channel="1"}' 'v >= 256'
need recv 'keycast_recv_drops_total{reason="unknown_spi"}' 'v >= 0'
need recv 'keycast_recv_drops_total{reason="auth_fail"}' 'v == 0'
need recv 'keycast_nic_rx_packets_total{port="0"}' 'v > 0'
need recv 'keycast_nic_link_up{port="0"}' 'v == 1'
need recv 'keycast_recv_kms_requests_total{channel="1"}' 'v >= 1'
need recv 'keycast_recv_kms_ok_total{channel="1"}' 'v >= 1'
need recv 'keycast_recv_channel_refused{channel="1"}' 'v == 0'
need recv 'keycast_recv_keys_late_total{channel="1"}' 'v >= 0'
echo "ok: key families: build info, key remaining time, certificate expiry = openssl's notAfter, replication, traffic, SPIs, receivers' key requests, NIC stats and xstats"

# 5. What the dashboard and the rules name, the binaries export.
cat "$WORK"/{master,slave,send,recv}.prom | awk '/^# TYPE / { print $3 }' | sort -u > "$WORK/families"
$PY - "$WORK/families" "$DASH" "$RULES" <<'EOF' || fail "dashboard or rules name families nobody exports"
import json, re, sys
families = set(open(sys.argv[1]).read().split())
exprs = []
def walk(panels):
    for p in panels:
        exprs.extend(t["expr"] for t in p.get("targets", []))
        walk(p.get("panels", []))
walk(json.load(open(sys.argv[2]))["panels"])
rules = open(sys.argv[3]).read()
bad = 0
for where, text in [("dashboard", "\n".join(exprs)), ("rules", rules)]:
    names = set(re.findall(r"\bkeycast_[a-z0-9_]+", text))
    for n in sorted(names - families):
        print("%s names %s, which no binary exports" % (where, n))
        bad += 1
    print("ok: %s names %d keycast families, all exported" % (where, len(names)))
sys.exit(1 if bad else 0)
EOF

# 6. The master goes away: the slave says why it is unhealthy, and its lag grows.
kill -TERM "$PID_master"
wait "$PID_master" || fail "master exited $?"
code=0
for _ in $(seq 1 100); do
  code=$(get slave /healthz "$WORK/slave.health")
  [ "$code" = 503 ] && break
  sleep 0.1
done
[ "$code" = 503 ] || fail "slave /healthz $code after the master stopped"
[ "$(cat "$WORK/slave.health")" = "no session with the master" ] || fail "slave /healthz body: $(cat "$WORK/slave.health")"
get slave /metrics "$WORK/slave1.prom" > /dev/null
sleep 1
get slave /metrics "$WORK/slave2.prom" > /dev/null
lag1=$(value "$WORK/slave1.prom" keycast_replication_lag_seconds)
lag2=$(value "$WORK/slave2.prom" keycast_replication_lag_seconds)
awk -v a="$lag1" -v b="$lag2" 'BEGIN { exit !(b - a >= 0.9) }' || fail "slave lag $lag1 then $lag2 one second later"
echo "ok: master stopped: slave /healthz 503 '$(cat "$WORK/slave.health")', lag $lag1 s then $lag2 s"
echo "PASS"
