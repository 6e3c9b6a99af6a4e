#!/usr/bin/python3
"""Interoperability of keycast's ESP with Scapy's independent implementation.

1. keycast builds frames (both suites, ESN carry across 2^32, many sizes);
   Scapy deciphers and authenticates every one and checks the payload.
2. Scapy builds frames with its own AES-GCM ESP; keycast accepts every one,
   and rejects Scapy frames with a corrupted ICV as auth_fail.
"""
import os
import subprocess
import sys
import tempfile

from scapy.all import Ether, IP, UDP, Raw, rdpcap, wrpcap, conf
from scapy.layers.ipsec import ESP, SecurityAssociation

conf.verb = 0
tool = sys.argv[1]
KEYS = [
    (0x1001, bytes.fromhex("000102030405060708090a0b0c0d0e0f"), bytes.fromhex("a0a1a2a3")),
    (0x1002, bytes.fromhex("101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"),
     bytes.fromhex("b0b1b2b3")),
]
SIZES = [0, 1, 2, 3, 4, 5, 64, 255, 256, 512, 1024, 1400, 1458]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def sa_for(spi, key, salt, esn_hi):
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key + salt,
                               esn_en=True, esn=esn_hi)


with tempfile.TemporaryDirectory() as d:
    keyfile = os.path.join(d, "keys.txt")
    with open(keyfile, "w") as f:
        for spi, key, salt in KEYS:
            f.write(f"{spi} {(key + salt).hex()}\n")

    # 1. keycast -> Scapy
    count, base = 200, 0xFFFFFF9C  # crosses the 2^32 boundary half way
    out = os.path.join(d, "keycast.pcap")
    subprocess.run([tool, "build", keyfile, out, str(count), str(base)], check=True)
    frames = rdpcap(out)
    check(len(frames) == count, f"expected {count} frames, got {len(frames)}")
    for k, fr in enumerate(frames):
        spi, key, salt = KEYS[k % len(KEYS)]
        seq = base + k
        check(fr[IP].proto == 50 and fr[IP].dst == "239.0.0.1", f"frame {k}: not ESP to group")
        check(fr[ESP].spi == spi and fr[ESP].seq == seq & 0xFFFFFFFF, f"frame {k}: SPI/seq")
        try:
            plain = sa_for(spi, key, salt, seq >> 32).decrypt(fr[IP])
        except Exception as e:  # Scapy raises on ICV failure
            check(False, f"frame {k}: Scapy could not authenticate: {e}")
            continue
        size = SIZES[k % len(SIZES)]
        want = bytes(((k * 31 + i) & 0xFF) for i in range(size))
        check(UDP in plain, f"frame {k}: no UDP inside")
        if UDP in plain:
            check(plain[UDP].dport == 5000 and plain[UDP].sport == 4000, f"frame {k}: ports")
            check(bytes(plain[UDP].payload) == want, f"frame {k}: payload differs")
    print(f"keycast->scapy: {count} frames checked")

    # 2. Scapy -> keycast
    sframes, expect = [], []
    for k in range(120):
        spi, key, salt = KEYS[k % len(KEYS)]
        seq = 0xFFFFFFC0 + k
        size = SIZES[k % len(SIZES)]
        payload = bytes(((k * 13 + i) & 0xFF) for i in range(size))
        inner = IP(src="192.168.0.9", dst="239.0.0.1") / UDP(sport=1234, dport=5000) / Raw(payload)
        sa = sa_for(spi, key, salt, seq >> 32)
        sa.seq_num = seq & 0xFFFFFFFF  # Scapy reads a seq_num argument of 0 as "unset"
        enc = sa.encrypt(inner, iv=seq.to_bytes(8, "big"))
        sframes.append(Ether(dst="01:00:5e:00:00:01") / enc)
        expect.append(f"ok {spi} {seq} {payload.hex()}")
    forged = sframes[5].copy()
    raw = bytearray(bytes(forged))
    raw[-1] ^= 0x01
    sframes.append(Ether(bytes(raw)))
    expect.append("drop auth_fail")
    inp = os.path.join(d, "scapy.pcap")
    wrpcap(inp, sframes)
    res = subprocess.run([tool, "open", keyfile, inp], check=True, capture_output=True, text=True)
    got = res.stdout.splitlines()
    check(len(got) == len(expect), f"keycast returned {len(got)} lines for {len(expect)} frames")
    for k, (g, e) in enumerate(zip(got, expect)):
        check(g == e, f"scapy frame {k}: keycast said {g[:60]!r}, expected {e[:60]!r}")
    print(f"scapy->keycast: {len(expect)} frames checked")

if failures:
    print("\n".join(failures[:30]))
    print(f"FAIL: {len(failures)} problems")
    sys.exit(1)
print("PASS")
