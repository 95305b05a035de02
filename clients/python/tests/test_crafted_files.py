"""Hostile files given to `import` (issue 20): checksum-valid but inconsistent reference files and moment
shards, views that never end, a FIFO swapped in under the path, names no request could carry, NaN inside a
resealed file, a damaged stored reference at restart. Each is refused with `invalid_reference_file` (or
imported whole and scoring identically), the daemon keeps answering, and nothing is half-stored — also
after a restart. Options exercised: the daemon's defaults (local sample, full rank at these widths)."""
import os
import signal
import sqlite3
import threading
import time

import pytest

from conftest import Daemon
from crafted import cli, edited, make_exports
from mechwatch import Client, MechWatchError

NAN = "x'000000000000F87F'"  # float64 NaN, little-endian
INF = "x'000000000000F07F'"
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    directory = tmp_path_factory.mktemp("exports")
    source = Daemon(directory).start()
    try:
        files, probes = make_exports(source, directory)
        with Client(source.socket) as c:
            scores = [r.score for r in c.score_arrays("act", probes)]
    finally:
        source.stop()
    return files, probes, scores


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("target")).start()
    yield d
    d.stop()


def names(client):
    return {r["name"]: r["state"] for r in client.status()["references"]}


def refused(target, path, code="invalid_reference_file", contains="", name=None, seconds=10):
    """Imports `path` and expects `code`; the daemon answers status within a second afterwards and stores nothing."""
    with Client(target.socket, timeout=seconds + 5) as c:
        before = names(c)
        started = time.monotonic()
        with pytest.raises(MechWatchError) as e:
            c.import_reference(path, name=name)
        assert time.monotonic() - started < seconds, "the refusal took too long"
        assert e.value.code == code, e.value
        assert contains in str(e.value), e.value
        started = time.monotonic()
        assert names(c) == before
        assert time.monotonic() - started < 1.0
    return str(e.value)


# (what, base file, statements, expected substring of the refusal)
ACTIVE_CASES = [
    ("short transition", "active.mwref", ["UPDATE reference_transitions SET coefficients = substr(coefficients, 1, length(coefficients) - 8)"], "reference_transitions"),
    ("short mean", "active.mwref", ["UPDATE reference_sites SET mean = substr(mean, 1, length(mean) - 8) WHERE position = 1"], "reference_sites"),
    ("transition past last site", "active.mwref", ["UPDATE reference_transitions SET position = 5"], "reference_transitions"),
    ("output past last site", "active.mwref", ["UPDATE reference_outputs SET position = 9 WHERE output = 1 AND position = 0"], "reference_outputs"),
    ("terms not whole rows", "active.mwref", ["UPDATE reference_models SET calibration_terms = substr(calibration_terms, 1, length(calibration_terms) - 8)"], "calibration"),
    ("sample row too short", "active.mwref", ["UPDATE reference_sample SET vector = substr(vector, 1, length(vector) - 4) WHERE row = 3"], "reference_sample"),
    ("bogus subspace rank", "active.mwref", ["UPDATE reference_sites SET rank = 3 WHERE position = 0"], "reference_sites"),
    ("NaN mean", "active.mwref", [f"UPDATE reference_sites SET mean = CAST({NAN} || substr(mean, 9) AS BLOB) WHERE position = 0"], "finite"),
    ("Inf covariance", "active.mwref", [f"UPDATE reference_sites SET covariance = CAST({INF} || substr(covariance, 9) AS BLOB) WHERE position = 1"], "finite"),
    ("negative variance", "active.mwref", ["UPDATE reference_sites SET variances = CAST(x'000000000000F0BF' || substr(variances, 9) AS BLOB) WHERE position = 0"], "positive"),
    ("NaN calibration trace", "active.mwref", ["UPDATE fit_traces SET vector = CAST(x'0000C07F' || substr(vector, 5) AS BLOB) WHERE id = (SELECT min(id) FROM fit_traces)"], "not finite"),
    ("alpha out of range", "active.mwref", ["PRAGMA ignore_check_constraints = ON", "UPDATE reference_models SET alpha = 7"], "reference_models"),
    ("zeroblob sample", "active.mwref", ["UPDATE reference_sample SET vector = zeroblob(20000000) WHERE row = 0"], "reference_sample"),
    ("missing column", "active.mwref", ["ALTER TABLE reference_sites RENAME COLUMN shrinkage TO other"], "no column shrinkage"),
    ("endless view", "active.mwref", ["AFTER ALTER TABLE reference_sites RENAME TO s0", f"AFTER CREATE VIEW reference_sites AS {ENDLESS} SELECT s0.* FROM s0, c"], "is a view"),
    ("many references", "active.mwref", [f"INSERT INTO reference_models (id, name, state, alpha, calibration_fraction) {ENDLESS.replace('SELECT x + 1 FROM c', 'SELECT x + 1 FROM c WHERE x < 200000')} SELECT 100 + x, 'r' || x, 'collecting', 0.1, 0.2 FROM c"], "200001 references"),
    # Found by the hostile pass of issue 20 (each passed the first version of these checks):
    ("fit_count beyond the rows", "collecting.mwref", ["UPDATE reference_models SET fit_count = 9223372036854775807"], "reference_models"),
    ("fit_count off by one", "collecting.mwref", ["UPDATE reference_models SET fit_count = fit_count + 1"], "fit_count"),
    ("calibration_count below the rows", "active.mwref", ["UPDATE reference_models SET calibration_count = 0"], "calibration_count"),
    ("generated column", "active.mwref", ["AFTER ALTER TABLE fit_traces ADD COLUMN extra BLOB AS (zeroblob(900000000)) VIRTUAL"], "generated"),
    ("extra column", "active.mwref", ["ALTER TABLE reference_sites ADD COLUMN extra BLOB", "UPDATE reference_sites SET extra = zeroblob(1000)"], "does not write"),
    ("blob timestamp", "active.mwref", ["UPDATE reference_models SET created_at = x'00ff'"], "reference_models"),
    ("NaN calibration score", "active.mwref", ["UPDATE reference_models SET calibration_scores = CAST(substr(calibration_scores, 1, length(calibration_scores) - 8) || x'000000000000F87F' AS BLOB)"], "ascending"),
    ("unsorted calibration scores", "active.mwref", ["UPDATE reference_models SET calibration_scores = CAST(x'0000000000005940' || substr(calibration_scores, 9) AS BLOB)"], "ascending"),
    ("fit trace too short", "collecting.mwref", ["UPDATE fit_traces SET vector = substr(vector, 1, 8) WHERE id = (SELECT max(id) FROM fit_traces)"], "fit_traces"),
    ("NaN fit trace", "collecting.mwref", ["UPDATE fit_traces SET vector = CAST(x'0000C07F' || substr(vector, 5) AS BLOB) WHERE id = (SELECT max(id) FROM fit_traces)"], "finite"),
    ("bogus role", "collecting.mwref", ["PRAGMA ignore_check_constraints = ON", "UPDATE fit_traces SET role = 'other' WHERE id = (SELECT max(id) FROM fit_traces)"], "fit_traces"),
    ("rows of a model while collecting", "collecting.mwref", ["INSERT INTO reference_sample (reference_id, row, vector) SELECT id, 0, x'00' FROM reference_models"], "collecting"),
    ("shard endless view", "shard.mwshard", ["AFTER ALTER TABLE shard_sites RENAME TO s0", f"AFTER CREATE VIEW shard_sites AS {ENDLESS} SELECT s0.* FROM s0, c"], "is a view"),
    ("shard short mean", "shard.mwshard", ["UPDATE shard_sites SET mean = substr(mean, 1, 8) WHERE position = 1"], "shard_sites"),
    ("shard zeroblob calibration", "shard.mwshard", ["UPDATE shard_calibration SET vector = zeroblob(20000000) WHERE row = 0"], "shard_calibration"),
    ("shard calibration count", "shard.mwshard", ["DELETE FROM shard_calibration WHERE row = 0"], "calibration_count"),
]


@pytest.mark.parametrize("what,base,statements,contains", ACTIVE_CASES, ids=[c[0] for c in ACTIVE_CASES])
def test_inconsistent_file_is_refused_and_nothing_is_stored(exports, target, tmp_path, what, base, statements, contains):
    files, _, _ = exports
    path = edited(files[base], tmp_path / os.path.basename(base), *statements)
    refused(target, path, contains=contains, name="crafted")


def test_nothing_half_stored_survives_a_restart(exports, target, tmp_path):
    """After every refusal above (and these), a restart loads exactly the references there were."""
    files, _, _ = exports
    refused(target, edited(files["active.mwref"], tmp_path / "a.mwref",
                           "UPDATE reference_sample SET vector = substr(vector, 1, 4) WHERE row = 7"), name="half")
    target.stop()
    target.start()
    with Client(target.socket) as c:
        assert all(state != "unavailable" for state in names(c).values()), names(c)
        assert "half" not in names(c) and "crafted" not in names(c)


def test_a_view_where_no_table_is_read_imports_identically(exports, target, tmp_path):
    """schema_migrations is not read by an import: a file whose schema_migrations is an endless view still
    holds a valid reference, which imports and scores exactly as the original."""
    files, probes, scores = exports
    path = edited(files["active.mwref"], tmp_path / "v.mwref",
                  "AFTER ALTER TABLE schema_migrations RENAME TO m0", f"AFTER CREATE VIEW schema_migrations AS {ENDLESS} SELECT m0.* FROM m0, c")
    with Client(target.socket) as c:
        assert c.import_reference(path, name="viewed")["state"] == "active"
        assert [r.score for r in c.score_arrays("viewed", probes)] == scores
        c.delete("viewed")


def test_names_from_a_file_are_checked(exports, target, tmp_path):
    files, probes, scores = exports
    for bad in ['evil"} 1\nmechwatch_up 0 #/../ x', ""]:
        path = edited(files["active.mwref"], tmp_path / "n.mwref", ("UPDATE reference_models SET name = ?", (bad,)),
                      ("UPDATE reference_file SET reference = ?", (bad,)))
        refused(target, path, contains="not a valid name")
        os.unlink(path)
    path = edited(files["active.mwref"], tmp_path / "n.mwref", ("UPDATE reference_models SET name = ?", ('evil"} 1',)),
                  ("UPDATE reference_file SET reference = ?", ('evil"} 1',)))
    with Client(target.socket) as c:  # under a valid name it imports
        assert c.import_reference(path, name="renamed")["state"] == "active"
        assert [r.score for r in c.score_arrays("renamed", probes)] == scores
        c.delete("renamed")


def test_a_fifo_or_a_flipping_symlink_never_blocks_the_daemon(exports, target, tmp_path):
    """The path is opened without blocking and the descriptor checked: a FIFO is refused at once, and a
    symlink flipped between a regular file and a FIFO while imports run leaves the daemon answering."""
    files, _, _ = exports
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused(target, str(fifo), contains="not a regular file", seconds=2)
    link = tmp_path / "flip"
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            for destination in (files["active.mwref"], str(fifo)):
                tmp = tmp_path / "flip.new"
                os.symlink(destination, tmp)
                os.replace(tmp, link)
    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        with Client(target.socket, timeout=10) as c:
            for k in range(30):
                try:
                    c.import_reference(str(link), name=f"flip{k}")
                    c.delete(f"flip{k}")
                except MechWatchError as e:
                    assert e.code == "invalid_reference_file", e
                started = time.monotonic()
                c.status()
                assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        flipper.join()
    target.stop()
    target.start()


def test_merge_refuses_the_same_file_twice_and_a_planted_link(exports, tmp_path):
    files, _, _ = exports
    out = cli("reference", "merge", files["collecting.mwref"], files["collecting.mwref"], "--into", str(tmp_path / "m.mwref"))
    assert out.returncode == 65 and "holds too" in out.stderr, out.stderr
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    out = cli("reference", "merge", files["collecting.mwref"], "--into", str(tmp_path / "dangling"))
    assert out.returncode == 65 and "exists" in out.stderr, out.stderr
    assert not (tmp_path / "nowhere").exists()
    view = edited(files["collecting.mwref"], tmp_path / "view.mwref",
                  "AFTER ALTER TABLE fit_traces RENAME TO f0", f"AFTER CREATE VIEW fit_traces AS {ENDLESS} SELECT f0.* FROM f0, c")
    out = cli("reference", "merge", view, "--into", str(tmp_path / "m2.mwref"), timeout=20)
    assert out.returncode == 65 and "is a view" in out.stderr, out.stderr


def test_a_damaged_stored_reference_is_unavailable_at_every_restart(exports, tmp_path):
    """The daemon's own store edited behind its back (a blob shortened): each restart marks the reference
    unavailable and serves the others; delete removes it."""
    files, probes, scores = exports
    d = Daemon(tmp_path).start()
    try:
        with Client(d.socket) as c:
            c.import_reference(files["active.mwref"], name="one")
            c.import_reference(files["active.mwref"], name="two")
        d.stop()
        db = sqlite3.connect(d.database)
        db.execute("UPDATE reference_transitions SET coefficients = substr(coefficients, 1, 8) "
                   "WHERE reference_id = (SELECT id FROM reference_models WHERE name = 'one')")
        db.commit()
        db.close()
        for _ in range(2):
            d.start()
            with Client(d.socket) as c:
                assert names(c) == {"one": "unavailable", "two": "active"}
                assert [r.score for r in c.score_arrays("two", probes)] == scores
            d.stop()
        d.start()
        with Client(d.socket) as c:
            c.delete("one")
            assert names(c) == {"two": "active"}
    finally:
        d.stop()


def test_an_import_cut_short_by_sigkill_is_gone_after_restart(exports, tmp_path):
    """SIGKILL while a large collecting file is copied in chunks: the restart removes the unfinished import."""
    files, _, _ = exports
    big = edited(files["collecting.mwref"], tmp_path / "big.mwref",
                 f"INSERT INTO fit_traces (reference_id, client_id, role, output, vector) {ENDLESS.replace('SELECT x + 1 FROM c', 'SELECT x + 1 FROM c WHERE x < 400000')} "
                 "SELECT reference_id, 'x' || x, role, output, vector FROM fit_traces, c WHERE fit_traces.id = (SELECT min(id) FROM fit_traces)",
                 "UPDATE reference_models SET fit_count = (SELECT count(*) FROM fit_traces WHERE role = 'fit'), "
                 "calibration_count = (SELECT count(*) FROM fit_traces WHERE role = 'calibration')")
    d = Daemon(tmp_path).start()
    try:
        thread = threading.Thread(target=lambda: pytest.raises(Exception, Client(d.socket, timeout=60).import_reference, big, name="big"))
        thread.start()
        deadline = time.time() + 30
        while time.time() < deadline:  # until the first chunks are committed
            db = sqlite3.connect(d.database)
            pending = db.execute("SELECT count(*) FROM pending_imports").fetchone()[0]
            db.close()
            if pending:
                break
            time.sleep(0.01)
        assert pending, "the import never started copying"
        d.process.send_signal(signal.SIGKILL)
        d.process.wait()
        thread.join()
        d.start()
        with Client(d.socket) as c:
            assert names(c) == {}
        db = sqlite3.connect(d.database)
        assert db.execute("SELECT count(*) FROM fit_traces").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM pending_imports").fetchone()[0] == 0
        db.close()
        # SIGTERM during such an import stops it promptly.
        thread = threading.Thread(target=lambda: pytest.raises(Exception, Client(d.socket, timeout=60).import_reference, big, name="big"))
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - started < 5, "SIGTERM took too long during an import"
        thread.join()
    finally:
        d.stop()


def test_calibration_traces_count_against_the_budget_before_they_are_read(exports, tmp_path):
    """A valid shard with 300,000 calibration traces needs ~100 MB to calibrate: under a 64 MB budget it
    is refused from its header, at once; the file as exported (a few hundred) imports."""
    files, _, _ = exports
    many = edited(files["shard.mwshard"], tmp_path / "many.mwshard",
                  f"INSERT INTO shard_calibration (row, trace_id, output, vector) {ENDLESS.replace('SELECT x + 1 FROM c', 'SELECT x + 1 FROM c WHERE x < 300000')} "
                  "SELECT 1000000 + x, 'k' || x, output, vector FROM shard_calibration, c WHERE row = 0",
                  "UPDATE moment_shard SET calibration_count = (SELECT count(*) FROM shard_calibration)")
    d = Daemon(tmp_path).start("--max-reference-bytes", str(64 << 20))
    try:
        message = refused(d, many, code="reference_too_large", contains="calibration traces", name="many", seconds=5)
        assert "max_reference_bytes" in message
        with Client(d.socket) as c:
            assert c.import_reference(files["shard.mwshard"], name="few")["state"] == "active"
            status = c.status()
            assert status["memory_bytes"] == sum(r["memory_bytes"] for r in status["references"])
    finally:
        d.stop()


def test_a_reference_fitted_with_extreme_values_loads_after_a_restart(tmp_path):
    """The sequence fuzz found a reference fitted at float32's edge marked unavailable after a restart by
    the first version of these checks, which refused infinite calibration values the daemon makes itself;
    the checks now refuse NaN and unsorted scores only. A reference fitted on ±3e38 reloads and scores alike."""
    import numpy as np
    d = Daemon(tmp_path).start()
    try:
        rng = np.random.default_rng(1)
        with Client(d.socket) as c:
            values = rng.normal(size=(40, 4)).astype(np.float32)
            values[rng.random((40, 4)) < 0.3] = -3e38
            values[:8] = -3e38
            c.fit_arrays("edge", {"h2": values}, ids=[f"e{j}" for j in range(40)])
            c.finalize("edge", alpha=0.2)
            before = [r.p for r in c.score_arrays("edge", {"h2": values[:5]})]
        d.stop()
        d.start()
        with Client(d.socket) as c:
            assert names(c) == {"edge": "active"}, c.status()
            assert [r.p for r in c.score_arrays("edge", {"h2": values[:5]})] == before
    finally:
        d.stop()
