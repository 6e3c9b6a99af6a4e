"""Checks shared by the scenarios with two channels (kms-origin 1 from
sender s1, sender-origin 2 from sender s2), receiver r1 (client: both
channels) and r2 (client2: channel 2), run through a key-server failure.
Each check appends what it found wrong to `fails` and prints its figures."""


class Checks:
    def __init__(self):
        self.fails = []

    def need(self, cond, what):
        if not cond:
            self.fails.append(what)

    def receivers(self, n, rate, r1, r2, s1, s2):
        """Every packet from each channel's first deciphered one, with the
        sender's keys: a receiver started before a sender-origin channel's
        first key exists may miss its first tenth of a second."""
        for tag, r in (("r1", r1), ("r2", r2)):
            print(f"{tag}: packets_ok={r['packets_ok']} lost={r['lost']} duplicated={r['duplicated']} "
                  f"corrupted={r['corrupted']} auth_fail={r['auth_fail']} unknown_spi={r['unknown_spi']} "
                  f"kms_requests={r['kms_requests']} kms_ok={r['kms_ok']} kms_errors={r['kms_errors']}")
            for k in ("lost", "duplicated", "corrupted", "auth_fail", "replay", "malformed"):
                self.need(r[k] == 0, f"{tag}: {k} = {r[k]}")
        start_allowance = rate // 10
        for tag, r, chans in (("r1", r1, ((1, s1), (2, s2))), ("r2", r2, ((2, s2),))):
            by_ch = {c["channel"]: c for c in r.get("channels", [])}
            for ch, s in chans:
                c = by_ch.get(ch, {})
                self.need(c.get("lost") == 0, f"{tag} channel {ch}: lost {c.get('lost')}")
                self.need(c.get("packets_ok", 0) >= n - start_allowance,
                          f"{tag} channel {ch}: packets_ok {c.get('packets_ok')} < {n} - {start_allowance}")
                # The first key of a channel may be the one whose packets were
                # dropped at start-up; every later one must be the sender's.
                got, want = c.get("spi_list", []), s["spi_list"]
                self.need(got == want or got == want[1:], f"{tag} channel {ch}: SPIs {got} != sender's {want}")

    def ledger(self, bill, r1, r2, s1, s2):
        """Each client is billed its receiver's acknowledged key requests and
        the bytes sent under the epochs it held, exactly."""
        for who, r, sent in (("client", r1, s1["bytes_sent"] + s2["bytes_sent"]), ("client2", r2, s2["bytes_sent"])):
            b = bill.get(who)
            self.need(b is not None, f"{who}: no billing row")
            if b:
                print(f"{who}: billed requests {b['requests']} (receiver acknowledged {r['kms_ok']}), "
                      f"bytes {b['bytes']} (sent under its epochs {sent})")
                self.need(b["requests"] == r["kms_ok"],
                          f"{who}: billed {b['requests']} requests != {r['kms_ok']} acknowledged")
                self.need(b["bytes"] == sent, f"{who}: billed {b['bytes']} B != {sent} B sent")

    def verdict(self):
        if self.fails:
            print("FAIL:\n  " + "\n  ".join(self.fails))
            return 1
        print("PASS")
        return 0
