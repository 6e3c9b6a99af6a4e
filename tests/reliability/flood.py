#!/usr/bin/python3
"""Hostile traffic for keycast-recv, built with raw bytes (fast enough for
tens of thousands of frames) and AES-GCM from python3-cryptography.

  flood.py PCAP KEYFILE N GROUP SEED   write N good frames (indexes 0..N-1,
      key = first key-file line) interleaved with corrupted, truncated,
      replayed, too-old (beyond the replay window) and forged-SPI / wrong-key
      frames; print the exact per-reason counts keycast-recv must report.
"""
import json
import random
import struct
import sys
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'dataplane'))
from esp_tool import pattern, load_keys, group_mac  # noqa: E402

WINDOW = 4096  # keycast-recv default --replay-window


def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff


def frame(spi, keymat, seq, payload, group, port):
    key, salt = keymat[:-4], keymat[-4:]
    udp = struct.pack('!HHHH', 5000, port, 8 + len(payload), 0) + payload
    padlen = (-(len(udp) + 2)) % 4
    plain = udp + bytes(range(1, padlen + 1)) + bytes([padlen, 17])
    iv = struct.pack('!Q', seq)
    aad = struct.pack('!LLL', spi, seq >> 32, seq & 0xffffffff)
    ct = AESGCM(key).encrypt(salt + iv, plain, aad)
    esp = struct.pack('!LL', spi, seq & 0xffffffff) + iv + ct
    dst = bytes(int(x) for x in group.split('.'))
    src = bytes([10, 0, 0, 1])
    hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(esp), 0, 0x4000, 16, 50, 0, src, dst)
    hdr = hdr[:10] + struct.pack('!H', csum(hdr)) + hdr[12:]
    mac = bytes(int(x, 16) for x in group_mac(group).split(':'))
    return mac + bytes([2, 0, 0, 0, 0, 1]) + b'\x08\x00' + hdr + esp


def write_pcap(path, frames):
    with open(path, 'wb') as f:
        f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack('<IIII', i // 1000000, i % 1000000, len(fr), len(fr)))
            f.write(fr)


def main(path, keyfile, n, group, seed):
    rnd = random.Random(seed)
    keys = load_keys(keyfile)
    spi = sorted(keys)[0]
    km = keys[spi]
    gip, gport = group.rsplit(':', 1)
    gport = int(gport)
    base = (1 << 32) + 100000  # crosses nothing, but exercises the ESN high word
    expect = {'auth_fail': 0, 'truncated': 0, 'replay': 0, 'unknown_spi': 0}
    out = []
    good = []
    wrong_key = bytes(len(km))
    for i in range(n):
        fr = frame(spi, km, base + i, pattern(i, 64 + i % 200), gip, gport)
        good.append(fr)
        r = rnd.random()
        if r < 0.10:  # corrupted copy first (same seq): ICV fails, window untouched
            b = bytearray(fr)
            b[rnd.randrange(50, len(b))] ^= 1 << rnd.randrange(8)
            out.append(bytes(b))
            expect['auth_fail'] += 1
        elif r < 0.20:  # truncated copy: IP total length longer than the frame
            out.append(fr[:rnd.randrange(40, len(fr))])
            expect['truncated'] += 1
        elif r < 0.30:  # forged SPI (not held)
            out.append(frame(0x10000 + rnd.randrange(1 << 20), km, base + i, pattern(i, 64), gip, gport))
            expect['unknown_spi'] += 1
        elif r < 0.35:  # right SPI, wrong key, fresh sequence ahead of the stream
            out.append(frame(spi, wrong_key, base + n + 10 + i, pattern(i, 64), gip, gport))
            expect['auth_fail'] += 1
        out.append(fr)
        if i > 0 and rnd.random() < 0.10:  # replay of an earlier delivered frame
            out.append(good[rnd.randrange(max(0, i - 3000), i)])
            expect['replay'] += 1
        if i > WINDOW + 10 and rnd.random() < 0.05:
            # authentic, never sent before, but older than the window: dropped
            out.append(frame(spi, km, base - 1 - rnd.randrange(1 << 16) - i, pattern(n + i, 64), gip, gport))
            expect['replay'] += 1
    write_pcap(path, out)
    print(json.dumps({'frames': len(out), 'good': n, 'delivered': n, 'drops': expect}))
    return 0


if __name__ == '__main__':
    if len(sys.argv) != 6:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])))
