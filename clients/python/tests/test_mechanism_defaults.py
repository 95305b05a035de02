"""Mechanism distinction on the shipped defaults (issue 21): `mechwatch serve` with no options but its socket
and database (default config: alpha 0.01, a local sample, full rank at these widths, the `mechanism` scorer,
hence the `guarded` combination), fitted and scored through the socket like a new user would. A relation
between two layers broken while each layer alone stays normal is flagged; normal traces are not."""
import pathlib
import sqlite3
import subprocess
import time

import numpy as np

from conftest import BINARY, accepting
from mechwatch import Client


def auroc(scores, labels):
    from scipy.stats import rankdata
    r = rankdata(scores)
    n1 = labels.sum()
    return (r[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * (~labels).sum())


def pair(rng, n, offset=0.0):
    """Two isotropic 8-wide sites, h2 = 2·h1 + N(0, 0.1²) (+ offset on every coordinate of h2)."""
    h1 = rng.normal(size=(n, 8))
    return {"h1": h1.astype(np.float32), "h2": (2 * h1 + 0.1 * rng.normal(size=(n, 8)) + offset).astype(np.float32)}


def test_a_broken_relation_between_two_normal_layers_is_flagged_on_the_defaults(tmp_path):
    socket, database = str(tmp_path / "d.sock"), str(tmp_path / "d.db")
    daemon = subprocess.Popen([str(BINARY), "serve", "--socket", socket, "--database", database],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"), cwd="/")
    try:
        deadline = time.time() + 20
        while not accepting(socket):
            assert daemon.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.02)
        rng = np.random.default_rng(0)
        with Client(socket) as c:
            c.fit_arrays("pair", pair(rng, 3000), ids=[f"f{j}" for j in range(3000)])
            reply = c.finalize("pair")
            assert reply.model == "full"
            normal = c.score_arrays("pair", pair(rng, 2000))
            broken = c.score_arrays("pair", pair(rng, 500, offset=3.0))
            subtle = c.score_arrays("pair", pair(rng, 500, offset=0.5))
        db = sqlite3.connect(database)
        combination, weight, alpha = db.execute("SELECT combination, transition_weight, alpha FROM reference_models").fetchone()
        db.close()
        assert (combination, weight, alpha) == ("families", 10.0, 0.01)  # the shipped default: guarded
        assert sum(r.flagged for r in broken) / 500 >= 0.99, sum(r.flagged for r in broken)
        assert sum(r.flagged for r in normal) / 2000 <= 0.02, sum(r.flagged for r in normal)
        labels = np.array([False] * 2000 + [True] * 500)
        a = auroc(-np.log([r.p for r in normal + subtle]), labels)
        assert a >= 0.99, a
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
