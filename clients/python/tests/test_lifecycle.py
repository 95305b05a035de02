"""Graceful shutdown, stale sockets, and a live daemon's socket."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading

from conftest import BINARY, Daemon


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
