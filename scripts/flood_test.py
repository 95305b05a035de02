"""Backpressure under a flood: 8 clients stream score requests as fast as they can for a few seconds;
the daemon's resident memory must stay bounded (it stops reading sockets while it is busy, and never
drops an accepted trace). Prints peak RSS against the reference's size; exits non-zero over the bound.

Usage: python3 scripts/flood_test.py [MECHWATCH_BINARY] [--clients 8] [--seconds 4] [--sites 12] [--width 768]
"""
import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("binary", nargs="?", default=".build/debug/mechwatch")
parser.add_argument("--clients", type=int, default=8)
parser.add_argument("--seconds", type=float, default=4)
parser.add_argument("--sites", type=int, default=12)
parser.add_argument("--width", type=int, default=768)
parser.add_argument("--fit", type=int, default=160)
args = parser.parse_args()
work = pathlib.Path(tempfile.mkdtemp(prefix="mw-flood-"))
sock_path = str(work / "d.sock")
rng = np.random.default_rng(0)
names = [f"blocks.{i}.mlp" for i in range(args.sites)]


def line(op, id):
    v = rng.normal(size=args.width).round(4)
    return json.dumps({"op": op, "reference": "flood", "id": id,
                       "sites": {n: (v + k).tolist() for k, n in enumerate(names)}}) + "\n"


daemon = subprocess.Popen([str(pathlib.Path(args.binary).resolve()), "serve", "--socket", sock_path,
                           "--database", str(work / "d.db"), "--alpha", "0.05", "--log-level", "warning"], cwd=work)
while not os.path.exists(sock_path):
    time.sleep(0.02)


def rss_kib(field):
    for row in open(f"/proc/{daemon.pid}/status"):
        if row.startswith(field):
            return int(row.split()[1])


s = socket.socket(socket.AF_UNIX)
s.connect(sock_path)
f = s.makefile("rb")
for i in range(args.fit):
    s.sendall(line("fit", f"t-{i}").encode())
    f.readline()
s.sendall(b'{"op":"finalize","reference":"flood"}\n')
finalized = json.loads(f.readline())
if not finalized.get("ok"):
    daemon.kill()
    sys.exit(f"finalize failed: {finalized}")
baseline = rss_kib("VmRSS:")
payload = [line("score", f"s-{i}").encode() for i in range(64)]

stop = threading.Event()
sent = [0] * args.clients
acked = [0] * args.clients


def flood(k):
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock_path)
    reader_done = threading.Event()

    def reader():
        cf = c.makefile("rb")
        while cf.readline():
            acked[k] += 1
        reader_done.set()

    threading.Thread(target=reader, daemon=True).start()
    while not stop.is_set():
        c.sendall(payload[sent[k] % 64])
        sent[k] += 1
    c.shutdown(socket.SHUT_WR)
    reader_done.wait(120)
    c.close()


threads = [threading.Thread(target=flood, args=(k,)) for k in range(args.clients)]
for t in threads:
    t.start()
peak_sampled = 0
deadline = time.time() + args.seconds
while time.time() < deadline:
    peak_sampled = max(peak_sampled, rss_kib("VmRSS:"))
    time.sleep(0.05)
stop.set()
for t in threads:
    t.join()
peak = rss_kib("VmHWM:")
daemon.send_signal(signal.SIGTERM)
daemon.wait()

# Active reference without outputs (README, "Memory"): sites S(2d² + 2d) + transitions (S − 1)·3d² doubles.
reference_mib = (args.sites * (2 * args.width ** 2 + 2 * args.width) + (args.sites - 1) * 3 * args.width ** 2) * 8 / 2 ** 20
trace_kib = len(payload[0]) / 1024
bound_mib = 2 * (reference_mib + 64) + baseline / 1024  # reference + 64 MiB of queues, doubled, over idle
print(f"flood: {args.clients} clients, {args.seconds}s, {args.sites}x{args.width} floats ({trace_kib:.0f} KiB JSON per trace)")
print(f"  sent {sum(sent)} traces, every one answered: {sum(sent) == sum(acked)} ({sum(acked)} replies)")
print(f"  daemon RSS after fitting {baseline / 1024:.0f} MiB; peak during flood {peak / 1024:.0f} MiB (sampled {peak_sampled / 1024:.0f});"
      f" active reference {reference_mib:.0f} MiB; bound {bound_mib:.0f} MiB")
ok = sum(sent) == sum(acked) and peak / 1024 <= bound_mib
print("flood test: PASSED" if ok else "flood test: FAILED")
sys.exit(0 if ok else 1)
