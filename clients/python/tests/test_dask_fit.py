"""Distributed fitting on Dask (issue 13): Parquet partitions → moment shards on a LocalCluster's worker
processes → tree-merged → imported into a daemon equals the daemon fitting the same traces (1e-9 on the
moments, identical flags). `make test` sets MECHWATCH_REQUIRE_DASK=1 and installs dask, distributed and
pyarrow, so a missing one fails there instead of skipping."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BINARY, Daemon
from mechwatch import Client
from mechwatch.moments import MomentShard
from test_moments import assert_same_moments, assert_scored_alike, traces

try:
    from distributed import Client as DaskClient, LocalCluster

    from mechwatch.dask_fit import fit_parquet, write_partition
except ImportError as e:
    if os.environ.get("MECHWATCH_REQUIRE_DASK") == "1":
        raise RuntimeError(f"MECHWATCH_REQUIRE_DASK=1 but dask/distributed/pyarrow do not import: {e} "
                           "(pip install 'mechwatch[dask]')") from e
    pytest.skip(f"the dask extra is not installed for {sys.executable}: {e}", allow_module_level=True)


def write_partitions(directory, sites, outputs, ids, parts):
    """The traces in `parts` Parquet partitions under `directory`; their paths."""
    paths = []
    for k, rows in enumerate(np.array_split(np.arange(len(ids)), parts)):
        paths.append(str(directory / f"part-{k}.parquet"))
        write_partition(paths[-1], {s: v[rows] for s, v in sites.items()}, [ids[j] for j in rows], [outputs[j] for j in rows])
    return paths


def test_dask_fit_of_parquet_partitions_equals_the_daemon_fitting_them(tmp_path):
    rng = np.random.default_rng(21)
    sites, outputs, ids = traces(rng, 3000, 0)
    paths = write_partitions(tmp_path, sites, outputs, ids, 6)
    # A partition without rows counts for nothing.
    paths.append(str(tmp_path / "empty.parquet"))
    write_partition(paths[-1], {s: v[:0] for s, v in sites.items()}, [], [])

    # Worker processes import mechwatch from the same place as this test.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, DaskClient(cluster) as dask:
        assert len(dask.scheduler_info()["workers"]) == 2
        shard = fit_parquet(dask, paths, "dask", alpha=0.05, sample_size=300)  # the daemon's alpha (conftest)
    file = str(tmp_path / "dask.shard")
    shard.write(file)

    (tmp_path / "d").mkdir(mode=0o700)
    daemon = Daemon(tmp_path / "d").start("--local-sample-size", "300")
    try:
        with Client(daemon.socket) as c:
            c.fit_arrays("direct", sites, outputs=outputs, ids=ids, chunk=512)
        direct = str(tmp_path / "direct.shard")
        out = subprocess.run([str(BINARY), "reference", "export", "direct", direct, "--moments", "--sample", "300",
                              "--database", daemon.database], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert_same_moments(MomentShard.read(file), MomentShard.read(direct))

        probe, probe_outputs, probe_ids = traces(rng, 400, 50_000)
        probe["s2"][:40] += 3 * rng.normal(size=(40, probe["s2"].shape[1])).astype(np.float32)
        with Client(daemon.socket) as c:
            c.finalize("direct")
            assert c.import_reference(file)["reference"] == "dask"
            a = c.score_arrays("direct", probe, outputs=probe_outputs, ids=probe_ids)
            b = c.score_arrays("dask", probe, outputs=probe_outputs, ids=probe_ids)
        assert_scored_alike(a, b)
        assert sum(r.flagged for r in b[:40]) >= 30
    finally:
        daemon.stop()


def test_dask_fit_command_writes_and_imports_a_shard(tmp_path):
    rng = np.random.default_rng(22)
    sites, outputs, ids = traces(rng, 900, 0)
    paths = write_partitions(tmp_path, sites, outputs, ids, 3)
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = Daemon(tmp_path / "d").start()
    try:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        out = subprocess.run([sys.executable, "-m", "mechwatch.dask_fit", "--reference", "cmd", "--workers", "2",
                              "--out", str(tmp_path / "cmd.shard"), "--socket", daemon.socket, *paths],
                             capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "from 3 partitions" in out.stdout and "imported 'cmd': active" in out.stdout
        with Client(daemon.socket) as c:
            assert {r["name"]: r["state"] for r in c.status()["references"]}["cmd"] == "active"
        # The file exists now: a second run refuses to overwrite it.
        again = subprocess.run([sys.executable, "-m", "mechwatch.dask_fit", "--reference", "cmd", "--workers", "1",
                                "--out", str(tmp_path / "cmd.shard"), *paths], capture_output=True, text=True, timeout=300, env=env)
        assert again.returncode != 0 and "exists" in again.stderr
    finally:
        daemon.stop()


def test_partitions_that_do_not_hold_one_trace_per_row_are_refused(tmp_path):
    """Issue 20: ragged rows, null rows, null ids and fractional outputs are refused, naming the column,
    instead of being reshaped or converted."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mechwatch.dask_fit import shard_of_partition

    def partition(name, **columns):
        path = str(tmp_path / f"{name}.parquet")
        pq.write_table(pa.table(columns), path)
        return path

    ids = pa.array(["a", "b", "c", "d"])
    cases = {
        "ragged": (partition("ragged", trace_id=ids, h=pa.array([[1.0] * 3, [1.0] * 5, [1.0] * 3, [1.0] * 5])), "widths 3–5"),
        "null row": (partition("null", trace_id=ids, h=pa.array([[1.0, 2.0], None, [1.0, 2.0], [3.0, 4.0]])), "null in 1 rows"),
        "null id": (partition("noid", trace_id=pa.array(["a", None, "c", "d"]), h=pa.array([[1.0]] * 4)), "trace_id is null"),
        "fractional output": (partition("output", trace_id=ids, output=pa.array([1.7, 1.0, 2.0, None]), h=pa.array([[1.0]] * 4)),
                              "not whole numbers"),
    }
    for what, (path, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            shard_of_partition(path, "r", ["h"], calibration_fraction=0.2, alpha=0.05, sample_size=10)
    whole = partition("whole", trace_id=ids, output=pa.array([1.0, 2.0, None, 0.0]), h=pa.array([[1.0], [2.0], [3.0], [4.0]]))
    assert shard_of_partition(whole, "r", ["h"], calibration_fraction=0.2, alpha=0.05, sample_size=10) is not None
