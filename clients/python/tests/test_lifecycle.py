"""Graceful shutdown, stale sockets, a live daemon's socket, and serving while a reference is finalized."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time

import numpy as np

from conftest import BINARY, Daemon
from mechwatch import Client


def test_sigterm_answers_what_it_accepted_and_removes_the_socket(daemon):
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket)
    fit = [json.dumps({"op": "fit", "reference": "g", "id": f"t-{i}", "sites": {"a": [i % 7, i % 5, 1.0]}})
           for i in range(5000)]
    replies = []

    def read():
        f = s.makefile("rb")
        try:
            for row in f:
                replies.append(json.loads(row))
        except ConnectionResetError:
            pass  # requests still unread when the daemon closed are never answered (nor stored)

    reader = threading.Thread(target=read)
    reader.start()
    s.sendall(("\n".join(fit[:2000]) + "\n").encode())
    while len(replies) < 50:
        pass
    daemon.process.send_signal(signal.SIGTERM)
    try:
        s.sendall(("\n".join(fit[2000:]) + "\n").encode())
    except OSError:
        pass  # the daemon may already have closed the connection
    reader.join(30)
    assert daemon.process.wait(timeout=30) == 0
    assert not os.path.exists(daemon.socket)
    assert replies and all(r["ok"] for r in replies)
    db = sqlite3.connect(daemon.database)
    stored = {c for (c,) in db.execute("SELECT client_id FROM fit_traces")}
    assert {r["id"] for r in replies} <= stored
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path):
    path = str(tmp_path / "d.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a crash leaves behind
    first = Daemon(tmp_path).start()
    try:
        second = subprocess.run([str(BINARY), "serve", "--socket", path, "--database", str(tmp_path / "other.db")],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        assert "another daemon is accepting connections" in second.stderr
        assert os.path.exists(path)  # not stolen
    finally:
        first.stop()


def test_other_references_score_while_one_is_finalized(tmp_path):
    """Finalize estimates off the request loop: a reference of 4 sites × 512 (seconds of work) does not hold
    up scoring on another connection (before, every request waited for the whole estimate)."""
    daemon = Daemon(tmp_path).start("--model", "full")
    try:
        rng = np.random.default_rng(0)
        with Client(daemon.socket) as c:
            z = rng.normal(size=(3000, 16)).astype(np.float32)
            c.fit_arrays("big", {f"s{i}": z @ rng.normal(size=(16, 512)).astype(np.float32) + rng.normal(size=(3000, 512)).astype(np.float32)
                                 for i in range(4)}, ids=[f"t{j}" for j in range(3000)])
            c.fit_arrays("small", {"a": rng.normal(size=(500, 4)).astype(np.float32)}, ids=[f"s{j}" for j in range(500)])
            c.finalize("small")
        latencies, finished = [], threading.Event()

        def score():
            with Client(daemon.socket) as c:
                while not finished.is_set():
                    started = time.monotonic()
                    c.score_arrays("small", {"a": rng.normal(size=(1, 4)).astype(np.float32)})
                    latencies.append(time.monotonic() - started)
                    time.sleep(0.02)

        thread = threading.Thread(target=score)
        thread.start()
        started = time.monotonic()
        try:
            with Client(daemon.socket, timeout=600) as c:
                assert c.finalize("big").fit_traces > 2000
        finally:
            finalize = time.monotonic() - started
            finished.set()
            thread.join()
        # Scoring went on: replies kept coming, most of them at once (the store's single writer still commits
        # the finalized model in one transaction, which a few replies wait for).
        assert len(latencies) >= 10 * finalize / 2, (len(latencies), finalize)
        assert sorted(latencies)[len(latencies) // 2] < 0.25, sorted(latencies)[-5:]
    finally:
        daemon.stop()


def test_fits_that_fail_while_a_reference_is_finalized_are_not_in_its_model(tmp_path):
    """Fits pipelined just before a finalize fail to commit (another process holds the write lock past the
    busy timeout); the finalize then models exactly the stored fit traces (it once kept the failed ones too)."""
    daemon = Daemon(tmp_path).start("--busy-timeout-ms", "300", "--model", "full")
    try:
        rng = np.random.default_rng(3)
        with Client(daemon.socket) as c:
            c.fit_arrays("r", {"a": rng.normal(size=(500, 8)).astype(np.float32)}, ids=[f"t{j}" for j in range(500)])
        fits, finalize = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
        fits.connect(daemon.socket)
        finalize.connect(daemon.socket)
        lock = sqlite3.connect(daemon.database, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        bad = rng.normal(size=(300, 8)) * 50 + 100
        fits.sendall("".join(json.dumps({"op": "fit", "reference": "r", "id": f"bad{j}", "sites": {"a": bad[j].tolist()}}) + "\n"
                             for j in range(300)).encode())
        time.sleep(0.05)
        finalize.sendall(b'{"op":"finalize","reference":"r"}\n')
        time.sleep(1.0)  # past the busy timeout: the fits fail, and so may the finalize's own writes
        lock.execute("ROLLBACK")
        lock.close()
        fits.shutdown(socket.SHUT_WR)
        replies = [json.loads(line) for line in fits.makefile("rb")]
        finalized = json.loads(finalize.makefile("rb").readline())
        fits.close()
        finalize.close()
        assert len(replies) == 300 and any(r.get("error", {}).get("code") == "store_error" for r in replies)
        with sqlite3.connect(daemon.database) as db:
            stored = db.execute("SELECT state, fit_count FROM reference_models WHERE name = 'r'").fetchone()
        if finalized["ok"]:
            assert stored == ("active", finalized["fit_traces"])
        else:  # the lock outlasted the finalize's own writes: it stays collecting, and a retry models what is stored
            with Client(daemon.socket) as c:
                assert c.finalize("r").fit_traces == stored[1]
    finally:
        daemon.stop()


def test_status_counts_only_the_fit_traces_that_were_stored(tmp_path):
    """Fits whose write fails (another process holds the write lock past the busy timeout) answer
    store_error and drop out of the reference's counts in `status` (they stayed counted before)."""
    daemon = Daemon(tmp_path).start("--busy-timeout-ms", "300")
    try:
        rng = np.random.default_rng(4)
        with Client(daemon.socket) as c:
            c.fit_arrays("r", {"a": rng.normal(size=(500, 8)).astype(np.float32)}, ids=[f"t{j}" for j in range(500)])
        lock = sqlite3.connect(daemon.database, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            with Client(daemon.socket) as c:
                try:
                    c.fit_arrays("r", {"a": rng.normal(size=(200, 8)).astype(np.float32)}, ids=[f"u{j}" for j in range(200)])
                    failed = False
                except Exception as e:  # the batch's write failed: store_error
                    failed = "store_error" in str(e)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert failed
        with Client(daemon.socket) as c:
            reference = {r["name"]: r for r in c.status()["references"]}["r"]
        with sqlite3.connect(daemon.database) as db:
            stored = db.execute("SELECT fit_count, calibration_count FROM reference_models WHERE name = 'r'").fetchone()
        assert (reference["fit_traces"], reference["calibration_traces"]) == stored and sum(stored) == 500
    finally:
        daemon.stop()
