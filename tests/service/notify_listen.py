#!/usr/bin/env python3
"""Stands in for systemd's notification socket: binds a datagram socket at
SOCKET and appends every sd_notify message to OUT as one line (the message's
newlines become '|'), until killed."""
import os
import socket
import sys

path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, "a", buffering=1) as f:
    f.write("listening\n")
    while True:
        msg = s.recv(4096).decode(errors="replace")
        f.write(msg.replace("\n", "|") + "\n")
