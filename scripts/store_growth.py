"""The store's size over a long run, with and without retention.

Starts `mechwatch serve` on a temporary socket and database with --max-events (default 20,000 per
reference; --max-events 0 for no retention), fits a reference (4 sites x 64), then scores traces as fast as
one client sends them (binary batches of 256) for --minutes, printing every --every seconds: events
scored so far, events kept, the database file with its WAL, and the free pages. With retention the size
levels off once the cap is reached (the daemon prunes once per --interval seconds and frees the pages).

Usage: python3 scripts/store_growth.py BINARY [--minutes 3] [--max-events 20000] [--every 15] [--interval 5]
"""
import argparse
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "clients" / "python"))
from mechwatch import Client  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("binary")
parser.add_argument("--minutes", type=float, default=3)
parser.add_argument("--max-events", type=int, default=20_000)
parser.add_argument("--every", type=float, default=15)
parser.add_argument("--interval", type=int, default=5, help="the daemon's --log-summary-interval-s (how often it prunes)")
args = parser.parse_args()

work = pathlib.Path(tempfile.mkdtemp(prefix="mw-growth-"))
sock, db = str(work / "d.sock"), str(work / "d.db")
daemon = subprocess.Popen([str(pathlib.Path(args.binary).resolve()), "serve", "--socket", sock, "--database", db,
                           "--max-events", str(args.max_events), "--log-summary-interval-s", str(args.interval),
                           "--log-level", "warning"], stderr=open(work / "serve.log", "w"))
try:
    deadline = time.time() + 20
    while not os.path.exists(sock):
        if daemon.poll() is not None or time.time() > deadline:
            sys.exit((work / "serve.log").read_text())
        time.sleep(0.05)
    rng = np.random.default_rng(0)
    sites = {f"h{k}": rng.normal(size=(2000, 64)).astype(np.float32) for k in range(4)}
    client = Client(sock)
    client.fit_arrays("r", sites, ids=[f"f{j}" for j in range(2000)])
    client.finalize("r")
    probe = {name: rng.normal(size=(256, 64)).astype(np.float32) for name in sites}

    def size():
        return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))

    print(f"max_events {args.max_events or 'none'}; 4 sites x 64; batches of 256")
    print(f"{'seconds':>8} {'scored':>9} {'kept':>8} {'db+wal MiB':>11} {'free pages':>11}")
    start, scored, next_report = time.time(), 0, 0.0
    while True:
        elapsed = time.time() - start
        if elapsed >= next_report:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                kept = con.execute("SELECT count(*) FROM events").fetchone()[0]
                free = con.execute("PRAGMA freelist_count").fetchone()[0]
            print(f"{elapsed:8.0f} {scored:9d} {kept:8d} {size() / 2**20:11.1f} {free:11d}", flush=True)
            next_report += args.every
        if elapsed >= args.minutes * 60:
            break
        client.score_arrays("r", probe, ids=[f"s{scored + j}" for j in range(256)])
        scored += 256
    client.close()
finally:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)
