#!/usr/bin/python3
"""Check what ipsec-secgw wrote during a verification run (Debian's /usr/bin/python3: scapy).

  verify.py out PLAIN_IN.pcap ESP_OUT.pcap SPI KEYHEX
      every captured frame is ESP with SPI, sequence numbers 1..N in order, and deciphers
      (Scapy, AES-GCM, KEYHEX = key || salt) to the IPv4 payload of the matching input frame.
  verify.py in PLAIN_REF.pcap PLAIN_OUT.pcap
      secgw deciphered every ESP input: the captured IPv4 payloads equal the reference plaintext.
  verify.py same PLAIN_IN.pcap PLAIN_OUT.pcap
      (bypass mode) every input frame was forwarded with its IPv4 payload unchanged.
Exits 0 and prints a one-line summary if all frames match, else exits 1 with the first problem.
"""
import sys

from scapy.all import IP, UDP, rdpcap
from scapy.layers.ipsec import ESP, SecurityAssociation


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main(argv):
    if len(argv) < 4 or argv[1] not in ("out", "in", "same"):
        sys.exit(__doc__)
    ref, got = rdpcap(argv[2]), rdpcap(argv[3])
    if len(got) != len(ref):
        fail("%d frames in, %d frames out" % (len(ref), len(got)))
    if argv[1] == "out":
        spi, key = int(argv[4], 0), bytes.fromhex(argv[5].replace(":", ""))
        sa = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key)
        for n, (r, g) in enumerate(zip(ref, got), 1):
            if ESP not in g:
                fail("frame %d is not ESP" % n)
            if g[ESP].spi != spi or g[ESP].seq != n:
                fail("frame %d: spi %d seq %d, expected spi %d seq %d" % (n, g[ESP].spi, g[ESP].seq, spi, n))
            try:
                d = sa.decrypt(g[IP])      # verifies the 16-byte ICV
            except Exception as e:       # scapy raises on ICV mismatch
                fail("frame %d does not decipher: %s" % (n, e))
            if bytes(d[IP].payload) != bytes(r[IP].payload) or d[IP].dst != r[IP].dst:
                fail("frame %d deciphers to something else than the input" % n)
        print("ok: %d frames enciphered correctly (Scapy deciphers them, ICV checked, seq 1..%d)" % (len(got), len(got)))
    else:
        for n, (r, g) in enumerate(zip(ref, got), 1):
            if UDP not in g or bytes(g[IP].payload) != bytes(r[IP].payload):
                fail("frame %d: deciphered output differs from the reference plaintext" % n)
        what = "forwarded unchanged (bypass)" if argv[1] == "same" else "deciphered to the reference plaintext"
        print("ok: %d frames %s" % (len(got), what))


if __name__ == "__main__":
    main(sys.argv)
