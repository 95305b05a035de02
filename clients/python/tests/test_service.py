"""Running as a service: the systemd unit verifies, the daemon notifies systemd, uses systemd's
directories, and reports metrics in the Prometheus text format."""
import os
import shutil
import sqlite3
import signal
import socket
import subprocess
import time

import pytest

from conftest import BINARY, REPO, Daemon, fitted_reference

UNIT = REPO / "packaging" / "mechwatch.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies(tmp_path):
    # verify checks that ExecStart's binary exists: point it at the one under test.
    unit = tmp_path / "mechwatch.service"
    unit.write_text(UNIT.read_text().replace("ExecStart=/usr/local/bin/mechwatch", f"ExecStart={BINARY}"))
    # --man=no: the man page exists once `make install` has run, not in a test.
    run = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    problems = [line for line in run.stderr.splitlines() if "mechwatch.service" in line]
    assert run.returncode == 0 and not problems, run.stderr
    text = UNIT.read_text()
    for setting in ("Type=notify", "RuntimeDirectory=mechwatch", "StateDirectory=mechwatch", "NoNewPrivileges=yes",
                    "ProtectSystem=strict", "PrivateTmp=yes", "RestrictAddressFamilies=AF_UNIX"):
        assert setting in text


def test_ready_and_stopping_reach_systemd_and_its_directories_are_used(tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    run_dir, state_dir = tmp_path / "run", tmp_path / "state"
    run_dir.mkdir(mode=0o700)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), RUNTIME_DIRECTORY=str(run_dir), STATE_DIRECTORY=str(state_dir))
    for key in ("MECHWATCH_SOCKET", "MECHWATCH_CONFIG"):
        env.pop(key, None)
    daemon = subprocess.Popen([str(BINARY), "serve"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        ready = notify.recv(4096).decode()
        assert "READY=1" in ready and f"MAINPID={daemon.pid}" in ready
        # READY means accepting: the socket answers at once, in systemd's runtime directory.
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(run_dir / "mechwatch.sock"))
        s.close()
        assert (state_dir / "mechwatch.db").exists()
        daemon.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in notify.recv(4096).decode()
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        notify.close()


def test_prometheus_metrics_parse_and_count(daemon, tmp_path):
    from mechwatch import Client
    import numpy as np
    client = Client(daemon.socket)
    rng = np.random.default_rng(0)
    client.fit_arrays("m", {"h": rng.normal(size=(300, 4))}, ids=[f"f{j}" for j in range(300)])
    client.finalize("m")
    client.score_arrays("m", {"h": rng.normal(size=(40, 4)) + 3}, ids=[f"s{j}" for j in range(40)])
    client.close()
    text = subprocess.run([str(BINARY), "status", "--format", "prometheus", "--socket", daemon.socket],
                          capture_output=True, text=True, check=True).stdout
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith("# HELP ") or line.startswith("# TYPE "), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['mechwatch_events_scored_total{reference="m"}'] == samples['mechwatch_events_stored{reference="m"}'] == 40
    assert 0 < samples['mechwatch_events_flagged_total{reference="m"}'] == samples['mechwatch_flagged_stored{reference="m"}'] <= 40
    assert samples['mechwatch_references{state="active"}'] == 1
    assert samples['mechwatch_request_seconds_count{op="score_batch"}'] >= 1
    assert samples['mechwatch_scoring_pass_traces_count'] >= 1 and samples['mechwatch_commit_seconds_count'] >= 1
    assert samples["mechwatch_resident_bytes"] > 1e6 and samples["mechwatch_database_bytes"] > 0
    assert samples["mechwatch_connections"] >= 1  # the status request's own
    table = subprocess.run([str(BINARY), "status", "--socket", daemon.socket], capture_output=True, text=True, check=True).stdout
    assert "FLAG RATE" in table and "database " in table


def test_the_daemon_rewrites_its_metrics_file(tmp_path):
    prom = tmp_path / "mechwatch.prom"
    daemon = Daemon(tmp_path).start("--metrics-textfile", str(prom), "--metrics-interval-s", "1")
    try:
        deadline = time.time() + 10
        while not prom.exists() and time.time() < deadline:
            time.sleep(0.1)
        first = prom.read_text()
        assert "mechwatch_uptime_seconds" in first and "# TYPE mechwatch_request_seconds histogram" in first
        subprocess.run([str(BINARY), "status", "--socket", daemon.socket], check=True, capture_output=True)
        deadline = time.time() + 10
        while 'op="status"' not in prom.read_text() and time.time() < deadline:
            time.sleep(0.2)
        assert 'mechwatch_request_seconds_count{op="status"}' in prom.read_text()
        assert not (tmp_path / "mechwatch.prom.tmp").exists()
        promtool = shutil.which("promtool")
        if promtool:
            check = subprocess.run([promtool, "check", "metrics"], input=prom.read_text(), capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        daemon.stop()


def test_planted_links_at_the_metrics_file_are_never_followed(tmp_path):
    """Issue 20: a symlink planted at `PATH.tmp` (the old temporary name) or at any name beside the file,
    pointed at the daemon's own database, leaves the database whole: the temporary file is created
    exclusively under a random name and renamed over PATH (replacing a link there, not following it)."""
    prom = tmp_path / "textfile" / "mechwatch.prom"
    prom.parent.mkdir()
    daemon = Daemon(tmp_path)
    os.symlink(daemon.database, str(prom) + ".tmp")
    victim = tmp_path / "victim"
    victim.write_text("someone else's file")
    os.symlink(victim, prom)  # a link at PATH itself is replaced, not written through
    daemon.start("--metrics-textfile", str(prom), "--metrics-interval-s", "1")
    try:
        from mechwatch import Client
        fitted_reference(daemon, seed=4)
        deadline = time.time() + 10
        while (prom.is_symlink() or "mechwatch_uptime_seconds" not in prom.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        assert not prom.is_symlink() and "mechwatch_uptime_seconds" in prom.read_text()
        assert victim.read_text() == "someone else's file"
        time.sleep(1.5)  # another rewrite or two
        assert sorted(p.name for p in prom.parent.iterdir()) == ["mechwatch.prom", "mechwatch.prom.tmp"]
        assert oct(prom.stat().st_mode & 0o777) == "0o644"
        with Client(daemon.socket) as c:
            assert c.status()["references"][0]["name"] == "r"
    finally:
        daemon.stop()
    db = sqlite3.connect(daemon.database)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM reference_models").fetchone()[0] == 1
    db.close()


def test_a_reader_holding_a_snapshot_is_reported_and_the_log_shrinks_after(tmp_path):
    """Issue 20: a `sqlite3` reader inside BEGIN stops checkpoints; the daemon reports the lag (status,
    metrics, a warning once the log passes 64 MiB) and the log shrinks back to 64 MiB once it lets go."""
    import numpy as np
    from mechwatch import Client
    daemon = Daemon(tmp_path).start("--log-summary-interval-s", "1")
    reader = sqlite3.connect(daemon.database, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM reference_models").fetchone()
        rng = np.random.default_rng(0)
        with Client(daemon.socket) as c:
            for k in range(24):  # ~4 MB of fit traces each
                c.fit_arrays("wide", {"h": rng.normal(size=(500, 2048)).astype(np.float32)}, ids=[f"w{k}-{j}" for j in range(500)])
            wal = os.path.getsize(daemon.database + "-wal")
            assert wal > 64 << 20, wal
            deadline = time.time() + 10
            while c.status()["checkpoint_lag_frames"] == 0 and time.time() < deadline:
                time.sleep(0.2)
            status = c.status()
            assert status["checkpoint_lag_frames"] > 0 and status["wal_bytes"] > 64 << 20, status
            prom = subprocess.run([str(BINARY), "status", "--format", "prometheus", "--socket", daemon.socket],
                                  capture_output=True, text=True, check=True).stdout
            lag = [line for line in prom.splitlines() if line.startswith("mechwatch_checkpoint_lag_frames ")]
            assert lag and float(lag[0].split()[1]) > 0, prom
            reader.execute("COMMIT")
            deadline = time.time() + 10
            while c.status()["checkpoint_lag_frames"] > 0 and time.time() < deadline:
                time.sleep(0.2)
            assert c.status()["checkpoint_lag_frames"] == 0
            c.fit_arrays("wide", {"h": rng.normal(size=(1, 2048)).astype(np.float32)}, ids=["last"])  # restarts the log
            assert os.path.getsize(daemon.database + "-wal") <= 64 << 20
    finally:
        reader.close()
        daemon.stop()
    log = daemon.log.read_text()
    assert "cannot be checkpointed" in log and "checkpoints again" in log, log


def test_json_log_lines(tmp_path):
    daemon = Daemon(tmp_path).start("--log-format", "json")
    try:
        subprocess.run([str(BINARY), "status", "--socket", daemon.socket], check=True, capture_output=True)
    finally:
        daemon.stop()
    import json
    lines = [json.loads(line) for line in daemon.log.read_text().splitlines() if line.strip()]
    listening = [l for l in lines if l["message"] == "listening"]
    assert listening and listening[0]["level"] == "notice" and listening[0]["socket"] == daemon.socket
    assert all({"time", "level", "label", "message"} <= set(l) for l in lines)
