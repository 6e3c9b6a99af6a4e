#!/usr/bin/python3
"""Independent ESP implementation (Scapy) for the data-plane capture tests.

  decrypt PCAP[,PCAP] KEYFILE   decipher every ESP frame of a keycast capture
                                with Scapy; check the generator pattern; print
                                JSON; exit 1 unless every frame authenticates.
  build PCAP KEYFILE N GROUP    write N Scapy-built ESP frames (pattern payloads,
                                indexes 0..N-1, spread over the key-file keys).
  build-channels PCAP KEYFILE CHANNELS N
                                N frames per channel of a channels file, round
                                robin, each channel under its own keys (key lines
                                CHANNEL SPI HEXKEY), then 10 for no channel.
  plain PCAP N GROUP            write N plaintext IPv4/UDP frames (pattern payloads)
                                plus 2 that are not IPv4/UDP, for --ingest-port.
  badinput PCAP KEYFILE GROUP   write malformed / forged / replayed frames and
                                print the per-reason counts keycast-recv must
                                report (JSON).
"""
import json
import struct
import sys

from scapy.all import Ether, IP, UDP, Raw, IPv6, ARP, rdpcap, wrpcap  # noqa: F401
from scapy.layers.ipsec import ESP, SecurityAssociation

MASK = (1 << 64) - 1
MIX = 0x9E3779B97F4A7C15
SEED = 0xA5A5A5A55A5A5A5A
STEP = 0x0101010101010101


def pattern(index, n):
    """Same bytes as dataplane/pattern.cpp pattern_fill."""
    out = bytearray(struct.pack('<QQ', index, (index * MIX) & MASK))
    w = SEED
    while len(out) + 8 <= n:
        out += struct.pack('<Q', w)
        w = (w + STEP) & MASK
    rest = n - len(out)
    out += struct.pack('<Q', w)[:rest]
    return bytes(out[:n])


def load_keys(path, channel_of=None):
    """SPI -> keymat from 'SPI HEXKEY' and 'CHANNEL SPI HEXKEY' lines; channel_of,
    if given, gets SPI -> channel (1 for two-column lines)."""
    keys = {}
    for line in open(path):
        line = line.split('#', 1)[0].split()
        if len(line) in (2, 3):
            spi = int(line[-2], 0)
            keys[spi] = bytes.fromhex(line[-1])
            if channel_of is not None:
                channel_of[spi] = int(line[0], 0) if len(line) == 3 else 1
    return keys


def load_channels(path):
    """[(id, group, port)] from a keycast channels file."""
    out = []
    for line in open(path):
        f = line.split('#', 1)[0].split()
        if len(f) >= 2:
            g, p = f[1].rsplit(':', 1)
            out.append((int(f[0]), g, int(p)))
    return out


def sa_for(spi, keymat):
    return SecurityAssociation(ESP, spi=spi, crypt_algo='AES-GCM', crypt_key=keymat,
                               esn_en=True, esn=0)


def group_mac(ip):
    a = [int(x) for x in ip.split('.')]
    return '01:00:5e:%02x:%02x:%02x' % (a[1] & 0x7f, a[2], a[3])


def esp_frame(sa, group, port, seq, payload, src='10.0.0.1'):
    inner = IP(src=src, dst=group, flags='DF', ttl=16) / UDP(sport=5000, dport=port, chksum=0) / Raw(payload)
    inner = IP(bytes(inner))
    enc = sa.encrypt(inner, seq_num=seq & 0xffffffff, iv=struct.pack('!Q', seq), esn=seq >> 32)
    return Ether(dst=group_mac(group), src='02:00:00:00:00:01') / enc


def cmd_decrypt(pcap, keyfile):
    channel_of = {}
    keys = load_keys(keyfile, channel_of)
    sas = {spi: sa_for(spi, k) for spi, k in keys.items()}
    res = {'frames': 0, 'esp': 0, 'authenticated': 0, 'auth_fail': 0, 'unknown_spi': 0,
           'data': 0, 'control': 0, 'pattern_ok': 0, 'pattern_bad': 0, 'spis': [],
           'seq_repeats': 0}
    seen = set()
    indexes = set()
    res['index_repeats'] = 0
    pkts = [p for path in pcap.split(',') for p in rdpcap(path)]
    for pkt in pkts:
        res['frames'] += 1
        if not pkt.haslayer(ESP):
            continue
        res['esp'] += 1
        esp = pkt[ESP]
        sa = sas.get(esp.spi)
        if sa is None:
            res['unknown_spi'] += 1
            continue
        raw_esp = bytes(esp)
        seq = struct.unpack('!Q', raw_esp[8:16])[0]
        if (esp.spi, seq) in seen:
            res['seq_repeats'] += 1
        seen.add((esp.spi, seq))
        try:
            plain = sa.decrypt(pkt[IP].copy(), esn=seq >> 32)
        except Exception:
            res['auth_fail'] += 1
            continue
        res['authenticated'] += 1
        if esp.spi not in res['spis']:
            res['spis'].append(esp.spi)
        if plain.proto == 253:
            res['control'] += 1
            continue
        res['data'] += 1
        data = bytes(plain[UDP].payload)
        idx = struct.unpack('<Q', data[:8])[0]
        if data == pattern(idx, len(data)):
            res['pattern_ok'] += 1
            # Each channel's generator counts its own packet indexes.
            if (channel_of[esp.spi], idx) in indexes:
                res['index_repeats'] += 1
            indexes.add((channel_of[esp.spi], idx))
        else:
            res['pattern_bad'] += 1
    res['index_min'] = min(i for _, i in indexes) if indexes else None
    res['index_max'] = max(i for _, i in indexes) if indexes else None
    print(json.dumps(res))
    ok = (res['esp'] > 0 and res['authenticated'] == res['esp'] and res['pattern_bad'] == 0
          and res['seq_repeats'] == 0 and res['index_repeats'] == 0)
    return 0 if ok else 1


def cmd_build(pcap, keyfile, n, group):
    keys = load_keys(keyfile)
    gip, gport = group.rsplit(':', 1)
    spis = sorted(keys)
    per = (n + len(spis) - 1) // len(spis)
    frames = []
    for i in range(n):
        spi = spis[min(i // per, len(spis) - 1)]
        sa = sa_for(spi, keys[spi])
        # Crosses the 32-bit boundary (the ESN high word matters); skips a low
        # word of 0, which Scapy's encrypt() cannot express (seq_num=0 is falsy).
        seq = (1 << 32) - 3 + i
        if seq >= 1 << 32:
            seq += 1
        frames.append(esp_frame(sa, gip, int(gport), seq, pattern(i, 64 + (i % 50))))
    wrpcap(pcap, frames)
    print(json.dumps({'frames': n, 'spis': spis}))
    return 0


def cmd_build_channels(pcap, keyfile, chanfile, n):
    """n frames per channel, the channels interleaved round robin; each channel's
    first half under its lowest SPI, the rest under its next; then frames no
    receiver of these channels may deliver: 5 to a group no channel has, 5 to a
    channel's group on another UDP port."""
    channel_of = {}
    keys = load_keys(keyfile, channel_of)
    chans = load_channels(chanfile)
    frames = []
    for i in range(n):
        for cid, gip, gport in chans:
            spis = sorted(s for s in keys if channel_of[s] == cid)
            spi = spis[0] if i < n // 2 or len(spis) == 1 else spis[1]
            frames.append(esp_frame(sa_for(spi, keys[spi]), gip, gport, i + 1, pattern(i, 64 + (i % 50))))
    cid, gip, gport = chans[0]
    spi = min(s for s in keys if channel_of[s] == cid)
    for i in range(5):
        frames.append(esp_frame(sa_for(spi, keys[spi]), '239.254.254.254', gport, n + 1 + i, pattern(i, 64)))
        frames.append(esp_frame(sa_for(spi, keys[spi]), gip, gport + 1, n + 6 + i, pattern(i, 64)))
    wrpcap(pcap, frames)
    print(json.dumps({'frames': len(frames), 'channels': len(chans)}))
    return 0


def cmd_plain(pcap, n, group):
    """Plaintext IPv4/UDP frames with pattern payloads (for --ingest-port)."""
    gip, gport = group.rsplit(':', 1)
    frames = [Ether(dst=group_mac(gip), src='02:00:00:00:00:02') /
              IP(src='192.0.2.1', dst=gip, ttl=8) / UDP(sport=7000, dport=int(gport)) /
              Raw(pattern(i, 16 + (i * 7) % 300)) for i in range(n)]
    # Frames the sender must refuse: not UDP, not IPv4.
    frames.append(Ether() / IP(dst=gip) / Raw(b'tcp-ish'))
    frames.append(Ether() / IPv6() / UDP() / Raw(b'v6'))
    wrpcap(pcap, frames)
    print(json.dumps({'frames': n, 'refused': 2}))
    return 0


def cmd_badinput(pcap, keyfile, group):
    keys = load_keys(keyfile)
    gip, gport = group.rsplit(':', 1)
    gport = int(gport)
    spi = sorted(keys)[0]
    sa = sa_for(spi, keys[spi])
    frames, expect = [], {}

    def add(frame, reason):
        frames.append(frame)
        expect[reason] = expect.get(reason, 0) + 1

    good = esp_frame(sa, gip, gport, 1000, pattern(0, 64))
    gb = bytes(good)
    # One good packet first, so the window and key are exercised; delivered.
    frames.append(good)
    # Replayed sequence (exact duplicate of the good frame).
    add(Ether(gb), 'replay')
    # Bad ICV: flip a ciphertext bit (new sequence, so not a replay).
    f = bytearray(bytes(esp_frame(sa, gip, gport, 1001, pattern(1, 64))))
    f[60] ^= 0x01
    add(Ether(bytes(f)), 'auth_fail')
    # Bad ICV: flip a tag bit.
    f = bytearray(bytes(esp_frame(sa, gip, gport, 1002, pattern(2, 64))))
    f[-1] ^= 0x80
    add(Ether(bytes(f)), 'auth_fail')
    # Forged: right SPI, wrong key.
    forged = sa_for(spi, bytes(20))
    add(esp_frame(forged, gip, gport, 1003, pattern(3, 64)), 'auth_fail')
    # Unknown SPI.
    other = sa_for(0xdead, keys[spi])
    add(esp_frame(other, gip, gport, 1004, pattern(4, 64)), 'unknown_spi')
    # Truncated: IP total length says more than the frame holds.
    add(Ether(gb[:60]), 'truncated')
    # ESP too short for header + IV.
    ip = IP(src='10.0.0.1', dst=gip, proto=50) / Raw(b'\x00\x00\x01\x00\x00\x00\x00\x05')
    add(Ether(dst=group_mac(gip)) / ip, 'truncated')
    # Room for header and IV but not for a trailer and ICV.
    ip = IP(src='10.0.0.1', dst=gip, proto=50) / Raw(struct.pack('!LLQ', spi, 7, 7) + b'\x00' * 8)
    add(Ether(dst=group_mac(gip)) / ip, 'short_icv')
    # Ciphertext length not a multiple of 4.
    ip = IP(src='10.0.0.1', dst=gip, proto=50) / Raw(struct.pack('!LLQ', spi, 9, 9) + b'\x00' * 22)
    add(Ether(dst=group_mac(gip)) / ip, 'bad_length')
    # IV low word disagrees with the sequence number.
    ip = IP(src='10.0.0.1', dst=gip, proto=50) / Raw(struct.pack('!LLQ', spi, 10, 11) + b'\x00' * 20)
    add(Ether(dst=group_mac(gip)) / ip, 'iv_mismatch')
    # Bad IP header: IHL < 5.
    raw_ip = bytearray(bytes(IP(src='10.0.0.1', dst=gip, proto=50) / Raw(b'\x00' * 40)))
    raw_ip[0] = 0x44
    add(Ether(dst=group_mac(gip), type=0x0800) / Raw(bytes(raw_ip)), 'bad_ip_header')
    # Fragment.
    add(Ether(dst=group_mac(gip)) / IP(src='10.0.0.1', dst=gip, proto=50, flags='MF') / Raw(b'\x00' * 48), 'fragment')
    # Non-ESP traffic: plain UDP to the group, IPv6, ARP.
    add(Ether(dst=group_mac(gip)) / IP(src='10.0.0.1', dst=gip) / UDP(dport=gport) / Raw(b'x' * 32), 'not_esp')
    add(Ether(dst='33:33:00:00:00:01') / IPv6(dst='ff02::1') / UDP() / Raw(b'y' * 8), 'not_ipv4')
    add(Ether(dst='ff:ff:ff:ff:ff:ff') / ARP(), 'not_ipv4')
    # Runt frame.
    add(Ether(gb[:20]), 'not_ipv4')
    # Authentic (right key, ICV verifies) but a broken inside: hand-built ESP.
    def raw_esp(seq, plaintext):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        km = keys[spi]
        key, salt = km[:-4], km[-4:]
        iv = struct.pack('!Q', seq)
        aad = struct.pack('!LLL', spi, seq >> 32, seq & 0xffffffff)
        ct = AESGCM(key).encrypt(salt + iv, plaintext, aad)
        esp_bytes = struct.pack('!LL', spi, seq & 0xffffffff) + iv + ct
        return Ether(dst=group_mac(gip), src='02:00:00:00:00:01') / \
            IP(src='10.0.0.1', dst=gip, proto=50, flags='DF') / Raw(esp_bytes)
    udp = bytes(UDP(sport=5000, dport=gport, len=8 + 16, chksum=0)) + pattern(9, 16)  # 24 bytes
    add(raw_esp(2001, udp + b'\x01\x09' + b'\x02\x11'), 'bad_pad')        # pad bytes not 1,2
    add(raw_esp(2002, udp + b'\x00\x00' + b'\x02\x11'), 'bad_pad')        # pad zeros
    add(raw_esp(2003, udp + b'\x01\x02\x02\x06'), 'bad_next_header')                # TCP inside
    bad_len = bytes(UDP(sport=5000, dport=gport, len=8 + 40, chksum=0)) + pattern(9, 16)
    add(raw_esp(2004, bad_len + b'\x01\x02\x02\x11'), 'bad_inner')                  # UDP length lies
    add(raw_esp(2005, b'\x07\x01\x00\x00' + b'\x01\x02\x02\xfd'), 'bad_control')  # notice version 7
    # Authentic but for another group.
    add(esp_frame(sa, '239.9.9.9', gport, 1005, pattern(5, 64)), 'wrong_group')
    wrpcap(pcap, frames)
    malformed = sum(v for k, v in expect.items()
                    if k in ('bad_ip_header', 'truncated', 'short_icv', 'bad_length', 'iv_mismatch',
                             'bad_pad', 'bad_next_header', 'bad_inner', 'bad_control'))
    print(json.dumps({'delivered': 1, 'drops': expect, 'malformed': malformed}))
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd = argv[1]
    if cmd == 'decrypt' and len(argv) == 4:
        return cmd_decrypt(argv[2], argv[3])
    if cmd == 'build' and len(argv) == 6:
        return cmd_build(argv[2], argv[3], int(argv[4]), argv[5])
    if cmd == 'build-channels' and len(argv) == 6:
        return cmd_build_channels(argv[2], argv[3], argv[4], int(argv[5]))
    if cmd == 'plain' and len(argv) == 5:
        return cmd_plain(argv[2], int(argv[3]), argv[4])
    if cmd == 'badinput' and len(argv) == 5:
        return cmd_badinput(argv[2], argv[3], argv[4])
    print(__doc__)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
