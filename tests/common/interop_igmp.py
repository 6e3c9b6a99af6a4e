#!/usr/bin/python3
"""The IGMP frames keycast builds, read by independent decoders: Scapy's IGMPv3
and IGMP layers (record types, groups, sources, checksums recomputed) and
tshark (checksums verified, message types).

usage: interop_igmp.py IGMP_TOOL
"""
import subprocess
import sys
import tempfile

from scapy.all import Dot1Q, Ether, IP, rdpcap
from scapy.contrib.igmp import IGMP
from scapy.contrib.igmpv3 import IGMPv3, IGMPv3mr

tool = sys.argv[1]
pcap = tempfile.mktemp(suffix=".pcap")
subprocess.run([tool, pcap], check=True)
pkts = rdpcap(pcap)
fails = []


def need(cond, what):
    if not cond:
        fails.append(what)


def checksums_ok(p):
    ip = p[IP]
    fresh = IP(bytes(ip))
    del fresh.chksum
    ok_ip = IP(bytes(fresh)).chksum == ip.chksum
    layer = p[IGMPv3] if p.haslayer(IGMPv3) else p[IGMP]
    again = layer.__class__(bytes(layer))
    del again.chksum
    return ok_ip and layer.__class__(bytes(again)).chksum == layer.chksum


need(len(pkts) == 6, f"{len(pkts)} frames, 6 expected")
want = [(4, 4, 5), (2, 2, 1), (3, 3, 6)]  # join TO_EX/ALLOW, current IS_EX/IS_IN, leave TO_IN/BLOCK
for i, p in enumerate(pkts[:3]):
    need(p[IP].dst == "224.0.0.22" and p[IP].ttl == 1 and p[IP].proto == 2, f"frame {i}: {p[IP].summary()}")
    need(p[Ether].dst == "01:00:5e:00:00:16", f"frame {i}: MAC {p[Ether].dst}")
    need(any(o.option == 20 for o in p[IP].options), f"frame {i}: no Router Alert")
    mr = p[IGMPv3mr]
    recs = [(r.rtype, r.maddr, list(r.srcaddrs)) for r in mr.records]
    need([r[0] for r in recs] == list(want[i]), f"frame {i}: record types {recs}")
    need([r[1] for r in recs] == ["239.1.1.1", "239.1.1.2", "232.1.1.1"], f"frame {i}: groups {recs}")
    need(recs[2][2] == ["10.0.0.1"] and recs[0][2] == [], f"frame {i}: sources {recs}")
    need(checksums_ok(p), f"frame {i}: checksum")
rep, leave = pkts[3], pkts[4]
need(rep[IGMP].type == 0x16 and rep[IGMP].gaddr == "239.1.1.1" and rep[IP].dst == "239.1.1.1", rep.summary())
need(leave[IGMP].type == 0x17 and leave[IGMP].gaddr == "239.1.1.1" and leave[IP].dst == "224.0.0.2", leave.summary())
need(checksums_ok(rep) and checksums_ok(leave), "v2 checksums")
tagged = pkts[5]
need(tagged.haslayer(Dot1Q) and tagged[Dot1Q].vlan == 301, f"vlan: {tagged.summary()}")
need(tagged[IGMPv3mr].records[0].maddr == "239.1.1.1" and checksums_ok(tagged), "tagged report")

out = subprocess.run(["tshark", "-r", pcap, "-o", "ip.check_checksum:TRUE", "-T", "fields",
                      "-e", "igmp.version", "-e", "igmp.type", "-e", "igmp.checksum.status",
                      "-e", "ip.checksum.status"], capture_output=True, text=True, check=True).stdout
rows = [r.split("\t") for r in out.strip().splitlines()]
print("tshark:", rows)
need(len(rows) == 6, f"tshark saw {len(rows)} frames")
need([r[0] for r in rows] == ["3", "3", "3", "2", "2", "3"], f"tshark versions {rows}")
# Wireshark's checksum status: 0 bad, 1 good, 2 not verified.
need(all(r[2] == "1" and r[3] == "1" for r in rows), f"tshark checksum status (IGMP, IP) {rows}")
if fails:
    print("FAIL:\n  " + "\n  ".join(fails))
    sys.exit(1)
print("PASS: 6 IGMP frames decode in Scapy and tshark with the intended records and valid checksums")
