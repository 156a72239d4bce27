#!/usr/bin/env python3
"""Watches L1's serial console while Bochs runs (boot-l1.sh starts it).

    console.py SERIAL OUTDIR BOCHS_PID TIMEOUT

Copies the console to OUTDIR/l1-console.txt and rebuilds OUTDIR's files from its `VMX-C NAME|DATA`
lines (stream.c) as they come; a file first seen in this boot starts empty, as it did in L1. Stops Bochs
(the process boot-l1.sh started, nothing else) at L1's end marker, after TIMEOUT wall seconds, or
when L1 hangs: no console line for VMX_HANG wall seconds (default 120) once /init runs, while
stream.c prints one every 10 s of L1's time (the kernel's boot before it is quiet: loglevel=3).
Exit status: L1's `VMX-L1-STATUS N`, or 90 when that never came (L1 died, hung or timed out).
"""

import os
import re
import signal
import sys
import time

serial, out, pid, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
CHUNK = re.compile(rb"VMX-C ([^/|]+)\|(.*)")
ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")
start = time.time()
console = open(os.path.join(out, "l1-console.txt"), "wb")
files = {}
status = None
init = False
pos, buf = 0, b""


def read_more():
    """Takes in what the console got since the last call; True once L1 said it is done."""
    global pos, buf, status, init
    done = False
    with open(serial, "rb") as f:
        f.seek(pos)
        data = f.read()
    pos += len(data)
    buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        line = line.rstrip(b"\r")
        console.write(line + b"\n")
        m = CHUNK.search(line)
        if m:
            name = m.group(1).decode(errors="replace")
            if name not in files:
                files[name] = open(os.path.join(out, name), "wb")
            files[name].write(ESCAPE.sub(lambda e: bytes([int(e.group(1), 16)]), m.group(2)))
            files[name].flush()
        m = re.search(rb"VMX-L1-STATUS (\d+)", line)
        if m:
            status = int(m.group(1))
        done = done or b"VMX-L1-DONE" in line
        init = init or b"VMX-L1: init reached" in line
    console.flush()
    return done


def alive():
    # Bochs is boot-l1.sh's child, not ours: once it exits it stays a zombie until we are done.
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


timed_out = hung = False
hang_limit = float(os.environ.get("VMX_HANG", "120"))
last_line, last_pos = time.time(), 0
while not read_more():
    if pos != last_pos:
        last_line, last_pos = time.time(), pos
    if init and time.time() - last_line > hang_limit:
        hung = True
        break
    if not alive():
        read_more()
        break
    if time.time() - start > limit:
        timed_out = True
        break
    time.sleep(0.5)
if timed_out:
    console.write(b"[host] console.py: timeout, stopping Bochs\n")
if hung:
    console.write(b"[host] console.py: L1 hung (no console line in %d s), stopping Bochs\n" % hang_limit)
for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
        os.kill(pid, sig)
        time.sleep(1)
    except OSError:
        break
console.write(b"[host] L1 ended: %s\n" % (b"status %d" % status if status is not None else b"no status line"))
sys.exit(90 if status is None else status)
