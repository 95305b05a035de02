"""Flag-rate drift: traffic exchangeable with the calibration set is not called drift; traffic moved by a
known amount is, in `mechwatch drift`, with the terms that moved, and in a warning in the daemon's log."""
import json
import subprocess
import time

import numpy as np

from conftest import BINARY, Daemon
from mechwatch import Client


def batch(rng, n, shift=0.0):
    h1 = rng.normal(size=(n, 6))
    h1[:, :3] += shift
    h2 = np.tanh(h1 @ rng.normal(size=(6, 4)) * 0.0 + h1[:, :4]) + 0.1 * rng.normal(size=(n, 4))
    return {"h1": h1, "h2": h2}


def drift(daemon):
    run = subprocess.run([str(BINARY), "drift", "r", "--format", "json", "--database", daemon.database],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_drift_is_found_where_it_is_and_not_where_it_is_not(tmp_path):
    daemon = Daemon(tmp_path).start("--log-summary-interval-s", "1")
    try:
        rng = np.random.default_rng(4)
        client = Client(daemon.socket)
        client.fit_arrays("r", batch(rng, 2000), ids=[f"f{j}" for j in range(2000)])
        client.finalize("r", alpha=0.01)
        client.score_arrays("r", batch(rng, 600), ids=[f"n{j}" for j in range(600)])
        calm = drift(daemon)
        assert calm["windows"][0]["events"] == 600 and not calm["windows"][0]["drift"], calm
        assert calm["moved_terms"] == [], calm
        client.score_arrays("r", batch(rng, 400, shift=2.5), ids=[f"s{j}" for j in range(400)])
        client.close()
        moved = drift(daemon)
        window = moved["windows"][0]
        assert window["events"] == 1000 and window["drift"] and window["p"] < 1e-6, moved
        subjects = {t["subject"] for t in moved["moved_terms"]}
        assert "h1" in subjects, moved["moved_terms"]
        deadline = time.time() + 10
        while "flag rate above alpha" not in daemon.log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        assert "flag rate above alpha" in daemon.log.read_text()
        assert "mechwatch drift r" in daemon.log.read_text()
        status = json.loads(subprocess.run([str(BINARY), "status", "--format", "json", "--socket", daemon.socket],
                                           capture_output=True, text=True, check=True).stdout)
        assert status["references"][0]["drift"] is True and status["references"][0]["recent_events"] == 1000
        metrics = subprocess.run([str(BINARY), "status", "--format", "prometheus", "--socket", daemon.socket],
                                 capture_output=True, text=True, check=True).stdout
        assert 'mechwatch_drift{reference="r"} 1' in metrics
    finally:
        daemon.stop()


def test_terms_constant_up_to_rounding_do_not_move(tmp_path):
    # Found by a hostile test: with no within-site correlation the interaction term is 0 up to rounding
    # noise, and comparing its tail probabilities with uniform called it moved on exchangeable traffic.
    daemon = Daemon(tmp_path).start()
    try:
        rng = np.random.default_rng(200)
        client = Client(daemon.socket)
        client.fit_arrays("r", {"a": rng.normal(size=(1500, 3)), "b": rng.normal(size=(1500, 2))}, ids=[f"f{j}" for j in range(1500)])
        client.finalize("r", alpha=0.01)
        client.score_arrays("r", {"a": rng.normal(size=(2500, 3)), "b": rng.normal(size=(2500, 2))}, ids=[f"n{j}" for j in range(2500)])
        client.close()
        report = drift(daemon)
        assert not report["windows"][0]["drift"] and report["moved_terms"] == [], report
    finally:
        daemon.stop()
