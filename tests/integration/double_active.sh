#!/bin/bash
# Two master processes that both believe they lead, on one PostgreSQL
# database, with a kms-origin channel rotating every L = 2,000 ms (its next
# key made P1 = 1,200 ms before the switch).
#
# m1 leads with --failover-ms 600000: its lease is 400 s on its own clock,
# renewed every 100 s. The lease row is then made to run out in the
# database only (what a stalled clock, a paused VM or an operator's mistake
# could do): m2 (--failover-ms 1200, polling every 200 ms) takes it at the
# next epoch while m1, whose renewal is 100 s away, still believes it leads.
# Both are asked for the channel's keys (admin key requests, which write
# nothing) every few tens of ms while both rotate it: each one's timer mints
# the next generation, and whichever comes second gets the first's key from
# the database. Then m2 is paused across a mint, so that m1 mints first:
# the fence refuses its write and m1 stands down. A client's key request at
# m1 alone is answered not_active and booked nowhere; through m1,m2 it is
# booked once, at m2.
#
# Asserts: both answered as the active master at once (m1 at epoch 1, m2 at
# epoch 2) and m1 handed out keys meanwhile; every key either master handed
# out is the one the database holds under that SPI (unwrapped here with the
# master key); one key per SPI and per generation, and the generations'
# deadlines exactly L apart (no slot with two keys); m1 stood down
# (stepdowns >= 1, "active": false) because a write was refused; the
# refused client request was booked nowhere, and the same request re-sent
# through the list m1,m2 is billed once at m2.
#
# usage: BUILD=build double_active.sh [SAMPLE_MS]
source "$(dirname "$0")/lib.sh"
SAMPLE_MS=${1:-6000}
L=2000; P1=1200; P2=600
POL="lifetime=$L,p1=$P1,p2=$P2,grace=500,origin=kms"

pg_up
KEYD_DB=$PG_URI KEYD_MK=$WORK/masters.mk KEYD_CERT=master start_keyd m1 master --failover-ms 600000 --channel "1:$POL"

mctl() { "$CTL" --server "$1" --tls-cert "$PKI/admin.crt" --tls-key "$PKI/admin.key" --tls-ca "$PKI/ca.crt" \
  --timeout-ms 2000 "${@:2}"; }
mstat() {
  mctl "127.0.0.1:$1" -o json status 2>/dev/null | $PY -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join(str(s[f]) for f in sys.argv[1:]))' "${@:2}" || true
}
for _ in $(seq 1 100); do [ "$(mstat "$PORT_m1" active epoch)" = "True 1" ] && break; sleep 0.05; done
[ "$(mstat "$PORT_m1" active epoch)" = "True 1" ] || { echo "FAIL: m1 does not lead"; exit 1; }
KEYD_DB=$PG_URI KEYD_MK=$WORK/masters.mk KEYD_CERT=master start_keyd m2 master --failover-ms 1200 --channel "1:$POL"
[ "$(mstat "$PORT_m2" active)" = "False" ] || { echo "FAIL: m2 is not a standby"; exit 1; }

# Right after a mint (the newest key has just been made, L + P1 from its
# end), so that the next one is a full L away when both lead.
for _ in $(seq 1 400); do
  rem=$(psql_q "SELECT max(expires_wall_ms) - (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                FROM keys WHERE channel = 1 HAVING count(*) >= 2")
  [ -n "$rem" ] && [ "$rem" -gt $((L + P1 - 300)) ] && break
  sleep 0.02
done
psql_q "UPDATE leader SET expires_ms = 0 WHERE id = 1 RETURNING epoch" > /dev/null
echo "the lease row ran out in the database (m1 still holds 400 s on its own clock)"

# One "MASTER SPI HEX" line per key a master handed out (current, next,
# and previous in its grace). m2 leads from its takeover to the end (it
# never stands down: checked below), so every answer m1 gives after m2 was
# seen leading is one given while both believed they led.
: > "$WORK/samples.txt"
sample() {  # sample NAME PORT: 0 when it answered
  local keys
  keys=$(mctl "127.0.0.1:$2" -o json wireshark-keys 1 2>/dev/null | $PY -c '
import json, sys
for k in json.load(sys.stdin):
    print(k["spi"], k["key"])' 2>/dev/null) || return 1
  [ -n "$keys" ] || return 1
  while read -r spi hex; do echo "$1 $spi $hex" >> "$WORK/samples.txt"; done <<<"$keys"
}
m2_leads=0 both=0 rounds=0
start=$(($(date +%s%N) / 1000000))
while [ $(($(date +%s%N) / 1000000 - start)) -lt "$SAMPLE_MS" ]; do
  rounds=$((rounds + 1))
  [ "$(mstat "$PORT_m2" active epoch)" = "True 2" ] && m2_leads=1
  if sample m1 "$PORT_m1" && [ $m2_leads = 1 ]; then both=$((both + 1)); fi
  sample m2 "$PORT_m2" || true
done
[ $m2_leads = 1 ] || { echo "FAIL: m2 did not take the lead"; exit 1; }
echo "m1 handed out keys after m2 was seen leading in $both of $rounds sampling rounds"

# m2 has minted first so far (its deadlines, read back from the database,
# fall a hair earlier), m1 getting m2's key back each time. Now m1 mints
# first: m2 is paused (SIGSTOP) across the next mint, m1's timer makes the
# next generation and the fence refuses the write.
rem=$(psql_q "SELECT max(expires_wall_ms) - (extract(epoch FROM clock_timestamp()) * 1000)::bigint
              FROM keys WHERE channel = 1")
# Mints come every L, the next one rem - P1 from now: one at least 300 ms off.
wait_ms=$((rem - P1 - 300))
[ "$wait_ms" -ge 100 ] || wait_ms=$((wait_ms + L))
sleep "$($PY -c "print($wait_ms / 1000)")"
kill -STOP "$PID_m2"
sleep 1
m1_after=$(mstat "$PORT_m1" active stepdowns)
kill -CONT "$PID_m2"
echo "m1 with m2 paused across a mint: active stepdowns = $m1_after"
[ "$m1_after" = "False 1" ] || { echo "FAIL: m1 did not stand down on its own refused mint"; exit 1; }

# A client's key request at m1 alone: billed, so a write, refused if m1
# still believes it leads; answered not_active in any case.
cctl() { "$CTL" --server "$1" --tls-cert "$PKI/client.crt" --tls-key "$PKI/client.key" --tls-ca "$PKI/ca.crt" \
  --timeout-ms 3000 "${@:2}"; }
if cctl "127.0.0.1:$PORT_m1" key 1 > "$WORK/c1.out" 2>&1; then
  echo "FAIL: m1 answered a client's key request after m2 took the lead"; cat "$WORK/c1.out"; exit 1
fi
echo "client at m1: $(tail -n 1 "$WORK/c1.out")"
cctl "127.0.0.1:$PORT_m1,127.0.0.1:$PORT_m2" key 1 > "$WORK/c2.out" 2>&1 \
  || { echo "FAIL: a client's key request through m1,m2 failed"; cat "$WORK/c2.out"; exit 1; }
mctl "127.0.0.1:$PORT_m1" -o json status > "$WORK/m1.json"
mctl "127.0.0.1:$PORT_m2" -o json status > "$WORK/m2.json"
mctl "127.0.0.1:$PORT_m2" billing --format json > "$WORK/billing.json"
psql_q "SELECT channel, spi, gen, epoch, expires_wall_ms, suite, encode(wrapped, 'hex') FROM keys ORDER BY channel, gen" \
  > "$WORK/keys.txt"
grep -c "leads no more" "$WORK/m1.log" > "$WORK/refused.txt" || true

$PY - "$WORK" "$both" "$L" <<'PYEOF'
import json, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
work, both, L = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fails = []
def need(cond, what):
    if not cond:
        fails.append(what)
m1, m2 = (json.load(open(f"{work}/{t}.json")) for t in ("m1", "m2"))
bill = {r["identity"]: r for r in json.load(open(f"{work}/billing.json"))["clients"]}
raw = open(f"{work}/masters.mk", "rb").read()
mk = raw if len(raw) == 32 else bytes.fromhex(raw.decode().strip())
db = {}
rows = [l.split("|") for l in open(f"{work}/keys.txt").read().split()]
for ch, spi, gen, epoch, exp, suite, blob in rows:
    ch, spi, gen, epoch, exp, suite, blob = int(ch), int(spi), int(gen), int(epoch), int(exp), int(suite), bytes.fromhex(blob)
    aad = b"keycast-key" + ch.to_bytes(4, "big") + spi.to_bytes(4, "big") + bytes([suite])
    need((ch, spi) not in db, f"channel {ch}: SPI {spi} twice in the database")
    db[(ch, spi)] = dict(gen=gen, epoch=epoch, exp=exp, key=AESGCM(mk).decrypt(blob[:12], blob[12:], aad).hex())
gens = sorted((v["gen"], v["exp"], spi) for (ch, spi), v in db.items() if ch == 1)
need(len({g for g, _, _ in gens}) == len(gens), f"a generation twice: {gens}")
for (g0, e0, s0), (g1, e1, s1) in zip(gens, gens[1:]):
    need(g1 == g0 + 1 and abs(e1 - e0 - L) <= 20 and s1 > s0,
         f"generations {g0} -> {g1} (SPI {s0} -> {s1}): deadlines {e1 - e0} ms apart, not {L}")
by_epoch = {}
for v in db.values():
    by_epoch[v["epoch"]] = by_epoch.get(v["epoch"], 0) + 1
print(f"database: {len(db)} keys, generations {gens[0][0]}..{gens[-1][0]}, made under epochs {by_epoch}")
seen = {"m1": {}, "m2": {}}
for line in open(f"{work}/samples.txt"):
    who, spi, hx = line.split()
    seen[who].setdefault(int(spi), set()).add(hx)
for who in ("m1", "m2"):
    for spi, hexes in sorted(seen[who].items()):
        d = db.get((1, spi))
        need(d is not None, f"{who} handed out SPI {spi}, which the database does not hold")
        need(len(hexes) == 1, f"{who} handed out {len(hexes)} different keys under SPI {spi}")
        if d:
            need(hexes == {d["key"]}, f"{who}: the key it handed out under SPI {spi} is not the database's")
common = set(seen["m1"]) & set(seen["m2"])
print(f"m1 handed out SPIs {sorted(seen['m1'])}, m2 {sorted(seen['m2'])}; both: {sorted(common)}")
need(both >= 1, "m1 handed out no key while m2 led")
need(len(seen["m1"]) >= 1, "m1 handed out no key")
print(f"m1: active={m1['active']} epoch={m1['epoch']} stepdowns={m1['stepdowns']} keys_made={m1['keys_made']}; "
      f"m2: active={m2['active']} epoch={m2['epoch']} takeovers={m2['takeovers']} keys_made={m2['keys_made']}")
need(not m1["active"] and m1["stepdowns"] >= 1, f"m1 did not stand down: {m1}")
need(m2["active"] and m2["epoch"] == 2 and m2["stepdowns"] == 0, f"m2: {m2}")
refused = int(open(f"{work}/refused.txt").read() or 0)
print(f"m1's log: {refused} refused write(s) ('leads no more')")
need(refused >= 1, "m1 stood down without a refused write")
c = bill.get("client", {"requests": 0})
print(f"client: billed requests {c['requests']} (1 answered, through m1,m2)")
need(c["requests"] == 1, f"client billed {c['requests']} requests, not 1")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS")
PYEOF
