"""Moment shards (issue 13): fitting apart and merging equals fitting together.

Three daemons each fit a third of the traces and export their collecting reference's moments
(`mechwatch reference export --moments`); `mechwatch reference merge` combines them; the result equals the
moments of one daemon that fitted every trace, and the numpy shards of `mechwatch.moments`, to 1e-9; the
reference a daemon estimates from the merged shard scores like the one fitted from the traces."""
import sqlite3
import subprocess

import numpy as np
import pytest

from conftest import BINARY, Daemon
from mechwatch import Client, MechWatchError
from mechwatch.moments import MomentShard, ShardError, checksum, holds_out

WIDTHS = (24, 16, 8)
MIXING = [np.random.default_rng(11).normal(size=(5, w)) for w in WIDTHS]
SAMPLE = 150  # the daemons' local_sample_size: smaller than the fit traces, so the sample's merge matters


def traces(rng, n, start):
    latent = rng.normal(size=(n, 5))
    sites = {f"s{i}": (latent @ m + 0.3 * rng.normal(size=(n, w)) + i).astype(np.float32)
             for i, (w, m) in enumerate(zip(WIDTHS, MIXING))}
    outputs = [int(o) if o < 4 else None for o in rng.integers(0, 5, n)]  # some unlabelled
    return sites, outputs, [f"t{start + j}" for j in range(n)]


def cli(*args, **kw):
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=120, **kw)


def part(sites, outputs, ids, rows):
    return {k: v[rows] for k, v in sites.items()}, [outputs[j] for j in rows], [ids[j] for j in rows]


def assert_close(a, b, what, rel=1e-9):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
    assert np.abs(a - b).max(initial=0) <= rel * scale, f"{what}: differs by {np.abs(a - b).max()} (scale {scale})"


def assert_scored_alike(a, b):
    """The same traces scored by two references: flags identical, scores within 1e-9 relative."""
    assert [r.flagged for r in a] == [r.flagged for r in b]
    assert np.allclose([r.score for r in b], [r.score for r in a], rtol=1e-9, atol=0)


def assert_same_moments(a: MomentShard, b: MomentShard):
    assert a.sites == b.sites and a.count == b.count and a.labelled == b.labelled
    assert a.output_counts == b.output_counts
    for s in range(len(a.sites)):
        assert_close(a.means[s], b.means[s], f"mean {s}")
        assert_close(a.comoments[s], b.comoments[s], f"comoment {s}")
        assert_close(a.thirds[s], b.thirds[s], f"third {s}")
        assert_close(a.fourths[s], b.fourths[s], f"fourth {s}")
        assert_close(a.within[s], b.within[s], f"within {s}")
        for label in a.output_counts:
            assert_close(a.output_means[label][s], b.output_means[label][s], f"output {label} mean {s}")
    for k in range(len(a.crosses)):
        assert_close(a.crosses[k], b.crosses[k], f"cross {k}")
    assert [t.trace_id for t in a.sample] == [t.trace_id for t in b.sample]
    assert sorted(c[0] for c in a.calibration) == sorted(c[0] for c in b.calibration)


def test_numpy_shards_merge_exactly():
    rng = np.random.default_rng(5)
    sites, outputs, ids = traces(rng, 3000, 0)
    whole = MomentShard.from_arrays("r", sites, ids, outputs, sample_size=200)
    parts = [MomentShard.from_arrays("r", *part(sites, outputs, ids, rows)[:1], part(sites, outputs, ids, rows)[2],
                                     part(sites, outputs, ids, rows)[1], sample_size=200)
             for rows in np.array_split(rng.permutation(3000), 5)]
    assert_same_moments(MomentShard.merge_all(parts), whole)
    # Against a direct two-pass computation of the fourth moment and the within-output co-moment.
    fit = [j for j in range(3000) if not holds_out(ids[j], 0.2)]
    x = sites["s0"][fit].astype(float)
    d = x - x.mean(0)
    assert_close(whole.fourths[0], float(((d * d).sum(1) ** 2).sum()), "fourth vs two-pass")
    assert whole.count == len(fit) and len(whole.calibration) == 3000 - len(fit)
    with pytest.raises(ShardError, match="differs"):
        whole.merge(MomentShard.from_arrays("r", {"s0": sites["s0"]}, ids))


def test_daemon_shards_merge_to_the_reference_of_all_traces(tmp_path):
    rng = np.random.default_rng(8)
    sites, outputs, ids = traces(rng, 2400, 0)
    daemons = []
    for name in ("a", "b", "c", "all"):
        (tmp_path / name).mkdir(mode=0o700)
        daemons.append(Daemon(tmp_path / name).start("--local-sample-size", str(SAMPLE)))
    try:
        for daemon, rows in zip(daemons, np.array_split(np.arange(2400), 3)):
            s, o, i = part(sites, outputs, ids, rows)
            with Client(daemon.socket) as c:
                c.fit_arrays("mlp", s, outputs=o, ids=i, chunk=300)
        with Client(daemons[3].socket) as c:
            c.fit_arrays("mlp", sites, outputs=outputs, ids=ids, chunk=500)
        files = []
        for name, daemon in zip(("a", "b", "c", "all"), daemons):
            files.append(str(tmp_path / f"{name}.shard"))
            out = cli("reference", "export", "mlp", files[-1], "--moments", "--database", daemon.database)
            assert out.returncode == 0, out.stderr
            assert "exported the moments of 'mlp'" in out.stdout
        merged = str(tmp_path / "merged.shard")
        out = cli("reference", "merge", *files[:3], "--into", merged)
        assert out.returncode == 0, out.stderr
        assert "merged 3 moment shards" in out.stdout

        # The merged moments equal one daemon's and numpy's, to 1e-9.
        one = MomentShard.read(files[3])
        assert_same_moments(MomentShard.read(merged), one)
        assert_same_moments(one, MomentShard.from_arrays("mlp", sites, ids, outputs, calibration_fraction=0.2))

        # Numpy shards merge with the daemons' (same format, same checksum).
        mixed = str(tmp_path / "mixed.shard")
        s, o, i = part(sites, outputs, ids, np.arange(1600, 2400))
        MomentShard.from_arrays("mlp", s, i, o, calibration_fraction=0.2).write(str(tmp_path / "numpy.shard"))
        assert cli("reference", "merge", files[0], files[1], str(tmp_path / "numpy.shard"), "--into", mixed).returncode == 0
        assert_same_moments(MomentShard.read(mixed), one)

        # The reference estimated from the merged shard scores like the one fitted from every trace.
        probe, probe_outputs, probe_ids = traces(rng, 300, 10_000)
        probe["s1"][:30] += 2 * rng.normal(size=(30, WIDTHS[1])).astype(np.float32)
        with Client(daemons[3].socket) as c:
            fitted = c.finalize("mlp")
            imported = c.import_reference(merged, name="merged")
            assert imported["state"] == "active" and imported["fit_traces"] == fitted.fit_traces
            assert imported["calibration_traces"] == fitted.calibration_traces
            a = c.score_arrays("mlp", probe, outputs=probe_outputs, ids=probe_ids)
            b = c.score_arrays("merged", probe, outputs=probe_outputs, ids=probe_ids)
        # Equal up to the rounding of summing in another order (p-values in the tail are continuous).
        assert_scored_alike(a, b)
        assert np.allclose([r.p for r in b], [r.p for r in a], rtol=1e-9, atol=0)
        assert sum(r.flagged for r in b[:30]) >= 25

        # And a restart keeps it as imported.
        daemons[3].stop()
        daemons[3].start("--local-sample-size", str(SAMPLE))
        with Client(daemons[3].socket) as c:
            again = c.score_arrays("merged", probe, outputs=probe_outputs, ids=probe_ids)
        assert [r.score for r in again] == [r.score for r in b]
    finally:
        for d in daemons:
            d.stop()


def good_shard(tmp_path, sites, outputs, ids):
    path = tmp_path / "good.shard"
    MomentShard.from_arrays("mlp", sites, ids, outputs).write(str(path))
    return path


def edited_copy(source, path, *sql, checksummed=True):
    """A copy of the shard file `source` changed by `sql`; with `checksummed`, its checksum recomputed (so
    only the values' own checks can refuse it)."""
    path.write_bytes(source.read_bytes())
    with sqlite3.connect(path) as db:
        for q in sql:
            db.execute(q)
        if checksummed:
            db.execute("UPDATE moment_shard SET checksum = ?", (checksum(db),))
    return str(path)


def test_bad_shards_and_misuse_are_refused_clearly(tmp_path):
    rng = np.random.default_rng(9)
    sites, outputs, ids = traces(rng, 600, 0)
    good = good_shard(tmp_path, sites, outputs, ids)
    damaged = edited_copy(good, tmp_path / "damaged.shard", "UPDATE shard_sites SET fourth = fourth * 1.0000001 WHERE position = 1",
                          checksummed=False)
    other = tmp_path / "other.shard"
    MomentShard.from_arrays("mlp", {"s0": sites["s0"]}, ids).write(str(other))

    (tmp_path / "d").mkdir(mode=0o700)
    daemon = Daemon(tmp_path / "d").start()
    try:
        with Client(daemon.socket) as c:
            with pytest.raises(MechWatchError) as e:
                c.import_reference(str(damaged))
            assert e.value.code == "invalid_reference_file" and "damaged" in str(e.value)
            assert c.import_reference(str(good), name="m1", alpha=0.2, scorer="mahalanobis")["alpha"] == 0.2
            with pytest.raises(MechWatchError) as e:
                c.import_reference(str(good), name="m1")
            assert e.value.code == "reference_exists"
            c.fit_arrays("coll", sites, outputs=outputs, ids=ids)
            c.finalize("coll")
        ref = tmp_path / "coll.mwref"
        assert cli("reference", "export", "coll", str(ref), "--database", daemon.database).returncode == 0
        with Client(daemon.socket) as c:
            with pytest.raises(MechWatchError) as e:
                c.import_reference(str(ref), name="x", alpha=0.1)
            assert e.value.code == "invalid_field" and "moment shard files only" in str(e.value)
        out = cli("reference", "export", "coll", str(tmp_path / "x.shard"), "--moments", "--database", daemon.database)
        assert out.returncode != 0 and "export moments before finalize" in out.stderr
        out = cli("reference", "merge", str(good), str(other), "--into", str(tmp_path / "bad.shard"))
        assert out.returncode == 65 and "differs" in out.stderr
        out = cli("reference", "merge", str(good), str(ref), "--into", str(tmp_path / "bad.shard"))
        assert out.returncode == 65 and "are moment shards" in out.stderr
        assert not (tmp_path / "bad.shard").exists()
    finally:
        daemon.stop()
    with pytest.raises(ShardError, match="damaged"):
        MomentShard.read(str(damaged))


def test_a_fully_shrunk_site_scores_alike_from_a_shard(tmp_path):
    """Independent unit-variance sites: Ledoit–Wolf shrinks them fully, the interaction term is exactly 0
    (it was rounding noise whose calibrated probability differed between the shard and the traces)."""
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = Daemon(tmp_path / "d").start("--local-sample-size", "100")
    try:
        rng = np.random.default_rng(5)
        ids = [f"t{j}" for j in range(1500)]
        sites = {"a": rng.normal(size=(1500, 5)).astype(np.float32), "b": rng.normal(size=(1500, 3)).astype(np.float32)}
        outputs = [int(x) for x in rng.integers(0, 6, 1500)]
        with Client(daemon.socket) as c:
            c.fit_arrays("u", sites, outputs=outputs, ids=ids)
            shard = str(tmp_path / "u.shard")
            out = cli("reference", "export", "u", shard, "--moments", "--database", daemon.database)
            assert out.returncode == 0, out.stderr
            c.import_reference(shard, name="imported")
            finalized = c.finalize("u")
            assert finalized.shrinkage["a"] == 1.0
            probe = {"a": rng.normal(size=(200, 5)).astype(np.float32), "b": rng.normal(size=(200, 3)).astype(np.float32)}
            probe_outputs = [int(x) for x in rng.integers(0, 3, 200)]
            a = c.score_arrays("u", probe, outputs=probe_outputs)
            b = c.score_arrays("imported", probe, outputs=probe_outputs)
        assert_scored_alike(a, b)
    finally:
        daemon.stop()


def test_export_reads_one_snapshot_while_the_daemon_fits(tmp_path):
    """The shard's fit and calibration traces are those of one moment: a prefix of a stream fitted in order."""
    import threading
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = Daemon(tmp_path / "d").start()
    try:
        rng = np.random.default_rng(1)
        with Client(daemon.socket) as c:
            for k in range(10):
                c.fit_arrays("r", {"h": rng.normal(size=(2000, 64)).astype(np.float32)}, ids=[f"t{k * 2000 + j}" for j in range(2000)])
        stop, sent = threading.Event(), [20_000]

        def fit_more():
            with Client(daemon.socket) as c:
                while not stop.is_set():
                    c.fit_arrays("r", {"h": rng.normal(size=(200, 64)).astype(np.float32)}, ids=[f"t{sent[0] + j}" for j in range(200)])
                    sent[0] += 200

        thread = threading.Thread(target=fit_more)
        thread.start()
        try:
            out = cli("reference", "export", "r", str(tmp_path / "r.shard"), "--moments", "--database", daemon.database)
        finally:
            stop.set()
            thread.join()
        assert out.returncode == 0, out.stderr
        shard = MomentShard.read(str(tmp_path / "r.shard"))
        last = max(int(i[1:]) for i, _, _ in shard.calibration)
        held = [holds_out(f"t{j}", 0.2) for j in range(sent[0])]
        nxt = next((j for j in range(last + 1, sent[0]) if held[j]), sent[0])
        # Every trace up to the last calibration trace is in, none from the next calibration trace on.
        assert held[:last + 1].count(False) <= shard.count < held[:nxt].count(False) + 1, (shard.count, last, nxt)
        assert len(shard.calibration) == held[:last + 1].count(True)
    finally:
        daemon.stop()


def test_hostile_shards_and_paths_are_refused_and_the_daemon_lives(tmp_path):
    import os
    rng = np.random.default_rng(2)
    sites, outputs, ids = traces(rng, 600, 0)
    good = good_shard(tmp_path, sites, outputs, ids)

    def edited(name, *sql):
        return edited_copy(good, tmp_path / name, *sql)

    fifo = str(tmp_path / "fifo.shard")
    os.mkfifo(fifo)
    cases = {
        edited("cap.shard", "UPDATE moment_shard SET sample_capacity = 4611686018427387904"): "sample_capacity",
        edited("counts.shard", "UPDATE shard_outputs SET count = 9223372036854775807 WHERE output = 0"): "shard_outputs",
        edited("huge.shard", "UPDATE moment_shard SET fit_count = 4611686018427387904",
               "UPDATE shard_sites SET count = 4611686018427387904"): "fit_count",
        edited("mean.shard", "UPDATE shard_sites SET mean = CAST(x'000000000000f07f' || substr(mean, 9) AS BLOB) WHERE position = 0"): "finite",
        edited("two.shard", "INSERT INTO moment_shard SELECT * FROM moment_shard"): "more than one row",
        fifo: "not a regular file",
        str(tmp_path / "missing.shard"): "No such file",
    }
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = Daemon(tmp_path / "d").start()
    try:
        with Client(daemon.socket) as c:
            for path, message in cases.items():
                with pytest.raises(MechWatchError) as e:
                    c.import_reference(path, name="x")
                assert e.value.code == "invalid_reference_file" and message in str(e.value), (path, str(e.value))
            with pytest.raises(MechWatchError) as e:
                c.import_reference(str(good), name="x", alpha=1e-300)
            assert e.value.code == "cannot_finalize" and "calibration traces" in str(e.value)
            assert "x" not in {r["name"] for r in c.status()["references"]}
        # The CLI: a shard merged with itself, a bad name, --sample without --moments.
        out = cli("reference", "merge", str(good), str(good), "--into", str(tmp_path / "twice.shard"))
        assert out.returncode == 65 and "disjoint" in out.stderr and not (tmp_path / "twice.shard").exists()
        out = cli("reference", "merge", str(good), "--into", str(tmp_path / "n.shard"), "--as", "bad name!")
        assert out.returncode == 64 and "--as" in out.stderr
        out = cli("reference", "merge", str(good), str(tmp_path / "missing.shard"), "--into", str(tmp_path / "m.shard"))
        assert out.returncode == 66 and "No such file" in out.stderr
        out = cli("reference", "merge", str(good), "--into", str(good))
        assert out.returncode == 65 and "exists" in out.stderr
        out = cli("reference", "export", "r", str(tmp_path / "e.shard"), "--sample", "5", "--database", daemon.database)
        assert out.returncode == 64 and "--moments" in out.stderr
    finally:
        assert daemon.stop() == 0
    with pytest.raises(ShardError, match="disjoint"):
        MomentShard.read(str(good)).merge(MomentShard.read(str(good)))


@pytest.mark.parametrize("seed", range(4))  # seed 2 failed before ties were tolerated
def test_a_numpy_shard_of_tied_data_flags_as_the_daemon(tmp_path, seed):
    """One-hot units, probes that repeat trusted traces: term values tie exactly in exact arithmetic; numpy and
    the daemon round differently, and a calibrated rank must not depend on it (scores moved by up to 134%
    before ties within rounding were counted as ties)."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(4)[rng.integers(0, 4, 1000)]
    sites = {"s0": onehot.astype(np.float32), "s1": (rng.normal(size=(1000, 2)) + onehot[:, :2]).astype(np.float32)}
    ids = [f"onehot-{j}" for j in range(1000)]
    outputs = [int(o) if o < 3 else None for o in rng.integers(0, 4, 1000)]
    shard = str(tmp_path / "numpy.shard")
    MomentShard.from_arrays("tied", sites, ids, outputs, alpha=0.05).write(shard)
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = Daemon(tmp_path / "d").start("--model", "full", "--local-sample-size", "150")
    try:
        with Client(daemon.socket) as c:
            c.fit_arrays("tied", sites, outputs=outputs, ids=ids)
            c.finalize("tied")
            c.import_reference(shard, name="numpy")
            noise = (np.arange(300) < 40)[:, None]
            probes = {k: (v[:300] + noise * rng.normal(size=v[:300].shape) * v.std()).astype(np.float32) for k, v in sites.items()}
            a = c.score_arrays("tied", probes, outputs=outputs[:300])
            b = c.score_arrays("numpy", probes, outputs=outputs[:300])
        assert_scored_alike(a, b)
    finally:
        daemon.stop()


def test_trace_ids_with_nul_are_refused_on_the_wire_and_in_shards(tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = Daemon(tmp_path / "d").start()
    try:
        with Client(daemon.socket) as c:
            with pytest.raises(MechWatchError) as e:
                c.fit_arrays("r", {"h": np.zeros((2, 3), np.float32)}, ids=["a", "b\x00c"])
            assert e.value.code == "invalid_field" and "NUL" in str(e.value)
    finally:
        daemon.stop()
    with pytest.raises(ShardError, match="NUL"):
        MomentShard.from_arrays("r", {"h": np.zeros((2, 3), np.float32)}, ["a", "b\x00c"])
