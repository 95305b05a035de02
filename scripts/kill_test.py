"""Durability under SIGKILL: nothing the daemon acknowledged is lost.

Starts `mechwatch serve` on a temporary socket and database, fits and finalizes a reference, then runs
several clients at once: scorers streaming pipelined score requests and one fitter streaming fit traces
into a second, collecting reference. Mid-stream the daemon is killed with SIGKILL. A new daemon is started
on the same database, and the script checks that every acknowledged event is stored with its per-site
scores, that every acknowledged fit trace is in the collecting reference (which then finalizes), and that
`PRAGMA integrity_check` is ok. Prints the counts; exits non-zero on any loss.

Usage: python3 scripts/kill_test.py [MECHWATCH_BINARY] [--clients N] [--seconds S]
"""
import argparse
import json
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("binary", nargs="?", default=".build/debug/mechwatch")
parser.add_argument("--clients", type=int, default=4, help="concurrent scoring clients (plus one fitting client)")
parser.add_argument("--seconds", type=float, default=1.5, help="how long the clients stream before the kill")
args = parser.parse_args()
binary = str(pathlib.Path(args.binary).resolve())
work = pathlib.Path(tempfile.mkdtemp(prefix="mw-kill-"))
sock_path, db_path = str(work / "d.sock"), str(work / "d.db")
rng = np.random.default_rng(0)


def start():
    p = subprocess.Popen([binary, "serve", "--socket", sock_path, "--database", db_path, "--alpha", "0.05",
                          "--log-level", "warning"], stderr=open(work / "serve.log", "a"), cwd=work)
    deadline = time.time() + 20
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            s.close()
            return p
        except OSError:
            if p.poll() is not None or time.time() > deadline:
                sys.exit(f"daemon did not start: {(work / 'serve.log').read_text()}")
            time.sleep(0.02)


def request(op, reference, id):
    sites = {"h1": rng.normal(size=16).round(5).tolist(), "h2": rng.normal(size=8).round(5).tolist()}
    return json.dumps({"op": op, "reference": reference, "id": id, "sites": sites}) + "\n"


def stream(op, reference, prefix, acked, stop, window=32):
    """Pipelines requests `window` at a time; records (id, reply) for every ok reply read."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rb")
    n = 0
    try:
        while not stop.is_set():
            ids = [f"{prefix}-{n + i}" for i in range(window)]
            n += window
            s.sendall("".join(request(op, reference, i) for i in ids).encode())
            for i in ids:
                line = f.readline()
                if not line:
                    return
                reply = json.loads(line)
                if reply.get("ok"):
                    acked.append((i, reply))
                else:
                    sys.exit(f"unexpected error reply: {reply}")
    except (OSError, ValueError):
        return  # the daemon died


def call(line):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(line.encode())
    reply = json.loads(s.makefile("rb").readline())
    s.close()
    return reply


daemon = start()
setup = socket.socket(socket.AF_UNIX)
setup.connect(sock_path)
setup.sendall("".join(request("fit", "scored", f"t-{i}") for i in range(400)).encode())
sf = setup.makefile("rb")
for _ in range(400):
    sf.readline()
setup.close()
assert call('{"op":"finalize","reference":"scored"}\n')["ok"]

stop = threading.Event()
scored = [[] for _ in range(args.clients)]
fitted = []
threads = [threading.Thread(target=stream, args=("score", "scored", f"c{k}", scored[k], stop)) for k in range(args.clients)]
threads.append(threading.Thread(target=stream, args=("fit", "collecting", "f", fitted, stop)))
for t in threads:
    t.start()
time.sleep(args.seconds)
daemon.send_signal(signal.SIGKILL)
daemon.wait()
stop.set()
for t in threads:
    t.join()

acked_events = {reply["event"]: id for acks in scored for id, reply in acks}
daemon = start()
db = sqlite3.connect(db_path)
stored = dict(db.execute("SELECT id, client_id FROM events"))
with_sites = {e for (e,) in db.execute("SELECT DISTINCT event_id FROM event_sites")}
fit_ids = {c for (c,) in db.execute(
    "SELECT client_id FROM fit_traces JOIN reference_models r ON r.id = reference_id WHERE r.name = 'collecting'")}
integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
db.close()
lost_events = [e for e, id in acked_events.items() if stored.get(e) != id or e not in with_sites]
lost_fits = [id for id, _ in fitted if id not in fit_ids]
finalized = call('{"op":"finalize","reference":"collecting"}\n')
daemon.send_signal(signal.SIGTERM)
daemon.wait()

print(f"kill test: {args.clients} scoring clients + 1 fitting client, SIGKILL after {args.seconds}s")
print(f"  events acknowledged {len(acked_events)}, found with scores {len(acked_events) - len(lost_events)}, "
      f"stored in all {len(stored)}")
print(f"  fit traces acknowledged {len(fitted)}, found {len(fitted) - len(lost_fits)}; "
      f"finalize after restart: {'ok' if finalized.get('ok') else finalized}")
print(f"  integrity_check: {integrity}")
failed = lost_events or lost_fits or integrity != "ok" or not finalized.get("ok") or not acked_events or not fitted
print("kill test: PASSED" if not failed else "kill test: FAILED")
sys.exit(1 if failed else 0)
