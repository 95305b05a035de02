"""Reference files across daemons: `mechwatch reference export` on one, `mechwatch reference import` (the
`import` op) on another that keeps running; the copy scores bit-identically. Damaged files, name clashes
and relative paths get specific errors."""
import sqlite3
import subprocess

import numpy as np

from conftest import BINARY, Daemon
from mechwatch import Client


def traces(rng, n, widths):
    latent = rng.normal(size=(n, 6))
    return {f"h{i}": (latent @ mix + 0.2 * rng.normal(size=(n, w))).astype(np.float32)
            for i, (w, mix) in enumerate(zip(widths, MIXING))}, list(rng.integers(0, 3, n))


WIDTHS = (40, 24)
MIXING = [np.random.default_rng(1).normal(size=(6, w)) for w in WIDTHS]


def cli(*args):
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=60)


def test_exported_reference_scores_identically_on_another_daemon(tmp_path):
    (tmp_path / "a").mkdir(mode=0o700)
    (tmp_path / "b").mkdir(mode=0o700)
    a, b = Daemon(tmp_path / "a").start(), Daemon(tmp_path / "b").start()
    try:
        rng = np.random.default_rng(3)
        sites, outputs = traces(rng, 1500, WIDTHS)
        with Client(a.socket) as c:
            c.fit_arrays("mlp", sites, outputs=outputs)
            # Every site in a principal subspace, so the file carries projections too.
            assert c.finalize("mlp", model="subspace").model == "subspace"
        file = tmp_path / "mlp.mwref"
        out = cli("reference", "export", "mlp", str(file), "--database", a.database)
        assert out.returncode == 0, out.stderr
        assert cli("reference", "export", "mlp", str(file), "--database", a.database).returncode != 0  # never overwrites

        # A relative path is made absolute by the CLI; the daemon imports while it runs.
        out = subprocess.run([str(BINARY), "reference", "import", file.name, "--as", "copy", "--socket", b.socket],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "imported 'copy'" in out.stdout

        probe, probe_outputs = traces(rng, 200, WIDTHS)
        probe["h0"][:20] += 3 * rng.normal(size=(20, WIDTHS[0])).astype(np.float32)
        with Client(a.socket) as c:
            original = c.score_arrays("mlp", probe, outputs=probe_outputs)
        with Client(b.socket) as c:
            copy = c.score_arrays("copy", probe, outputs=probe_outputs)
            assert {r["name"]: r["state"] for r in c.status()["references"]}["copy"] == "active"
        assert [(r.score, r.p, r.flagged) for r in original] == [(r.score, r.p, r.flagged) for r in copy]
        assert sum(r.flagged for r in copy[:20]) >= 15

        # A restart of the importing daemon keeps the copy.
        b.stop()
        b.start()
        with Client(b.socket) as c:
            again = c.score_arrays("copy", probe, outputs=probe_outputs)
        assert [(r.score, r.p) for r in again] == [(r.score, r.p) for r in original]

        # The name is taken now.
        out = cli("reference", "import", str(file), "--as", "copy", "--socket", b.socket)
        assert out.returncode == 65, out.stderr
        assert "'copy' exists" in out.stderr, out.stderr

        # The Python client's import (path made absolute).
        with Client(b.socket) as c:
            reply = c.import_reference(str(file), name="copy2")
            assert reply["state"] == "active" and reply["model"] == "subspace"
            assert [r.score for r in c.score_arrays("copy2", probe, outputs=probe_outputs)] == [r.score for r in original]

        # A damaged file is refused, naming the file and the mismatch; nothing is created.
        db = sqlite3.connect(file)
        db.execute("UPDATE reference_sites SET shrinkage = shrinkage + 1e-12 WHERE position = 0")
        db.commit()
        db.close()
        out = cli("reference", "import", str(file), "--as", "broken", "--socket", b.socket)
        assert out.returncode == 65, out.stderr
        assert "damaged" in out.stderr and "checksum" in out.stderr, out.stderr
        with Client(b.socket) as c:
            assert "broken" not in {r["name"] for r in c.status()["references"]}
    finally:
        a.stop()
        b.stop()


def test_import_needs_a_reference_file(daemon):
    out = cli("reference", "import", "/nonexistent/file.mwref", "--socket", daemon.socket)
    assert out.returncode == 65, out.stderr
    assert "/nonexistent/file.mwref" in out.stderr, out.stderr
    # A plain MechWatch database is not a reference file.
    out = cli("reference", "import", daemon.database, "--as", "x", "--socket", daemon.socket)
    assert out.returncode == 65 and "not a reference file" in out.stderr, out.stderr


def test_shards_merged_fit_as_all_traces_on_one_daemon(tmp_path):
    """Three collecting shards exported, merged and imported fit the same reference as every trace sent to
    one reference, local sample included (chosen by a hash of the trace ids; 300 of about 1,440 fit traces)."""
    (tmp_path / "d").mkdir(mode=0o700)
    d = Daemon(tmp_path / "d").start("--local-sample-size", "300")
    try:
        rng = np.random.default_rng(5)
        sites, outputs = traces(rng, 1800, WIDTHS)
        ids = [f"t-{k}" for k in range(1800)]
        with Client(d.socket) as c:
            for shard in range(3):
                part = slice(600 * shard, 600 * (shard + 1))
                c.fit_arrays(f"shard{shard}", {k: v[part] for k, v in sites.items()}, outputs=outputs[part], ids=ids[part])
            c.fit_arrays("all", sites, outputs=outputs, ids=ids)
        files = []
        for shard in range(3):
            files.append(str(tmp_path / f"shard{shard}.mwref"))
            out = cli("reference", "export", f"shard{shard}", files[-1], "--database", d.database)
            assert out.returncode == 0, out.stderr
        merged = str(tmp_path / "merged.mwref")
        out = cli("reference", "merge", *files, "--into", merged, "--as", "merged")
        assert out.returncode == 0, out.stderr
        assert "collecting reference 'merged'" in out.stdout, out.stdout
        out = cli("reference", "import", merged, "--socket", d.socket)
        assert out.returncode == 0 and "collecting" in out.stdout, out.stderr
        with Client(d.socket) as c:
            a, m = c.finalize("all"), c.finalize("merged")
            assert (a.fit_traces, a.calibration_traces) == (m.fit_traces, m.calibration_traces)
            probe, probe_outputs = traces(rng, 100, WIDTHS)
            all_scores = c.score_arrays("all", probe, outputs=probe_outputs)
            merged_scores = c.score_arrays("merged", probe, outputs=probe_outputs)
        for x, y in zip(all_scores, merged_scores):
            assert abs(x.score - y.score) <= 1e-9 * max(1.0, abs(x.score)), (x, y)
            assert x.flagged == y.flagged
        # Shards of different layouts do not merge; an active reference is not a shard.
        other = str(tmp_path / "all.mwref")
        assert cli("reference", "export", "all", other, "--database", d.database).returncode == 0
        out = cli("reference", "merge", files[0], other, "--into", str(tmp_path / "bad.mwref"))
        assert out.returncode == 65 and "only collecting references" in out.stderr, out.stderr
    finally:
        d.stop()
