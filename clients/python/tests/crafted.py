"""Crafted reference files and moment shards for the hostile-input tests: a valid export, one table mutated,
the checksum recomputed as the daemon computes it (`Store.checksum(of:)`, `MomentShardFile.checksum`), so
only validation — not the checksum — stands between the file and the store."""
import hashlib
import shutil
import sqlite3
import subprocess

import numpy as np

from conftest import BINARY
from mechwatch import Client
from mechwatch.moments import _hash_row, checksum as shard_checksum

# The daemon's copy order and row order of a reference's tables (Store.referenceTables).
REFERENCE_TABLES = [("reference_models", "id", "id"), ("reference_sites", "reference_id", "position"),
                    ("reference_transitions", "reference_id", "position"), ("reference_outputs", "reference_id", "position, output"),
                    ("reference_sample", "reference_id", "row"), ("fit_traces", "reference_id", "id")]


def reseal(path):
    """Recomputes the checksum of the reference file (or moment shard) at `path` after an edit."""
    db = sqlite3.connect(path)
    try:
        if db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'moment_shard'").fetchone()[0]:
            db.execute("UPDATE moment_shard SET checksum = ?", (shard_checksum(db),))
        else:
            row = db.execute("SELECT id, state FROM reference_models").fetchone()
            if row is None:  # no reference to seal
                return
            rid, state = row
            h = hashlib.sha256()
            for table, key, order in REFERENCE_TABLES:
                extra = "AND role = 'calibration'" if table == "fit_traces" and state == "active" else ""
                h.update(table.encode() + b"\0")
                for row in db.execute(f"SELECT * FROM {table} WHERE {key} = ?1 {extra} ORDER BY {order}", (rid,)):
                    _hash_row(h, row)
            db.execute("UPDATE reference_file SET checksum = ?", (h.hexdigest(),))
        db.commit()
    finally:
        db.close()


def edited(base, target, *statements, reseal_it=True, tolerant=False):
    """A copy of `base` at `target` with `statements` run on it (each a string or (sql, params)), resealed;
    statements starting with `AFTER ` run after the reseal (a view that never ends would hang the reseal).
    `tolerant`: a file the reseal cannot read (a column renamed away) is left unsealed."""
    shutil.copyfile(base, target)

    def run(selected):
        db = sqlite3.connect(target)
        for s in selected:
            sql, params = (s, ()) if isinstance(s, str) else s
            db.execute(sql.removeprefix("AFTER "), params)
        db.commit()
        db.close()
    late = [s for s in statements if isinstance(s, str) and s.startswith("AFTER ")]
    run([s for s in statements if s not in late])
    if reseal_it:
        try:
            reseal(target)
        except sqlite3.Error:
            if not tolerant:
                raise
    run(late)
    return str(target)


def cli(*args, timeout=60):
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=timeout)


def make_exports(daemon, directory, seed=5):
    """Exports of `daemon`'s references: an active one with outputs and a local sample ('active.mwref'), a
    collecting one ('collecting.mwref') and its moment shard ('shard.mwshard'); and the probes to score."""
    rng = np.random.default_rng(seed)
    n = 600
    h1 = rng.normal(size=(n, 6)).astype(np.float32)
    h2 = (h1 @ rng.normal(size=(6, 5)) + 0.3 * rng.normal(size=(n, 5))).astype(np.float32)
    outputs = list(rng.integers(0, 3, n))
    with Client(daemon.socket) as c:
        c.fit_arrays("act", {"h1": h1, "h2": h2}, outputs=outputs, ids=[f"a{j}" for j in range(n)])
        c.finalize("act")
        c.fit_arrays("col", {"h1": h1, "h2": h2}, outputs=outputs, ids=[f"c{j}" for j in range(n)])
    files = {}
    for name, file, extra in [("act", "active.mwref", []), ("col", "collecting.mwref", []), ("col", "shard.mwshard", ["--moments"])]:
        path = directory / file
        out = cli("reference", "export", name, str(path), "--database", daemon.database, *extra)
        assert out.returncode == 0, out.stderr
        files[file] = str(path)
    probes = {"h1": rng.normal(size=(50, 6)).astype(np.float32), "h2": rng.normal(size=(50, 5)).astype(np.float32)}
    return files, probes
