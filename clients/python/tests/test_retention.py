"""Retention in a running daemon: old events go (flagged ones kept longer), new ones stay."""
import sqlite3
import time

import numpy as np

from conftest import Daemon, fitted_reference
from mechwatch import Client


def test_the_daemon_prunes_old_events(tmp_path):
    daemon = Daemon(tmp_path).start()
    client, rng = fitted_reference(daemon, 1)
    client.score_arrays("r", {"h": rng.normal(size=(200, 4)) + np.where(np.arange(200)[:, None] < 20, 6.0, 0.0)},
                        ids=[f"old{j}" for j in range(200)])
    client.close()
    daemon.stop()
    # The first 200 events are now three weeks old.
    with sqlite3.connect(daemon.database) as db:
        db.execute("UPDATE events SET received_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-21 days')")
        old_flagged = db.execute("SELECT count(*) FROM events WHERE flagged = 1").fetchone()[0]
    assert old_flagged >= 20
    daemon.start("--retention-days", "7", "--retention-flagged-days", "30", "--log-summary-interval-s", "1")
    try:
        client = Client(daemon.socket)
        client.score_arrays("r", {"h": rng.normal(size=(50, 4))}, ids=[f"new{j}" for j in range(50)])
        client.close()
        deadline = time.time() + 15
        while time.time() < deadline:
            with sqlite3.connect(f"file:{daemon.database}?mode=ro", uri=True) as db:
                old = db.execute("SELECT count(*) FROM events WHERE client_id LIKE 'old%'").fetchone()[0]
            if old == old_flagged:
                break
            time.sleep(0.3)
        with sqlite3.connect(f"file:{daemon.database}?mode=ro", uri=True) as db:
            kept = dict(db.execute("SELECT substr(client_id, 1, 3), count(*) FROM events GROUP BY 1").fetchall())
            flagged_old = db.execute("SELECT count(*) FROM events WHERE client_id LIKE 'old%' AND flagged = 1").fetchone()[0]
            orphans = db.execute("SELECT count(*) FROM event_terms WHERE event_id NOT IN (SELECT id FROM events)").fetchone()[0]
        assert kept["old"] == flagged_old == old_flagged, kept  # unflagged old events went, flagged ones stay (30 days)
        assert kept["new"] == 50 and orphans == 0
        assert "pruned events" in daemon.log.read_text()
    finally:
        daemon.stop()


def test_a_reference_keeps_its_own_number_of_events(tmp_path):
    import subprocess
    from conftest import BINARY
    daemon = Daemon(tmp_path).start("--log-summary-interval-s", "1")
    try:
        rng = np.random.default_rng(2)
        client = Client(daemon.socket)
        client.fit_arrays("small", {"h": rng.normal(size=(300, 4))}, ids=[f"f{j}" for j in range(300)])
        run = subprocess.run([str(BINARY), "reference", "finalize", "small", "--max-events", "50", "--socket", daemon.socket],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        client.score_arrays("small", {"h": rng.normal(size=(120, 4))}, ids=[f"s{j}" for j in range(120)])
        client.close()
        deadline = time.time() + 15
        kept = None
        while time.time() < deadline:
            with sqlite3.connect(f"file:{daemon.database}?mode=ro", uri=True) as db:
                kept = db.execute("SELECT count(*), min(client_id) FROM events").fetchone()
            if kept[0] == 50:
                break
            time.sleep(0.2)
        assert kept[0] == 50, kept
    finally:
        daemon.stop()
