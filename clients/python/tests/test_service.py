"""Running as a service: the systemd unit verifies, the daemon notifies systemd, uses systemd's
directories, and reports metrics in the Prometheus text format."""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import BINARY, REPO, Daemon

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
