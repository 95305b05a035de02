"""The command line as a newcomer meets it: summaries that add up, specific errors, distinct exit codes."""
import json
import subprocess

import numpy as np

from conftest import BINARY


def cli(*args, **kw):
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=120, **kw)


def traces(path, n, seed, shift=0.0, nan_at=None, junk_at=None, label=None):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for j in range(n):
            if j == junk_at:
                f.write("this is not json\n")
                continue
            h1 = rng.normal(size=4) + shift
            row = {"id": f"{path.stem}-{j}", "sites": {"h1": h1.tolist(), "h2": (2 * h1[:2] + 0.1 * rng.normal(size=2)).tolist()}}
            line = json.dumps(row)
            if j == nan_at:
                line = line.replace(str(row["sites"]["h1"][0]), "NaN", 1)
            if label:
                row["label"] = label
                line = json.dumps(row)
            f.write(line + "\n")


def test_send_summary_adds_up_and_nan_reaches_the_daemon(daemon, tmp_path):
    fit = tmp_path / "fit.jsonl"
    traces(fit, 300, 1, nan_at=5, junk_at=7)
    run = cli("send", str(fit), "--fit", "--reference", "r", "--socket", daemon.socket)
    assert run.returncode == 65, run.stderr
    assert "line 8: not a JSON object; skipped" in run.stderr
    assert "non_finite_value" in run.stderr and "null" not in run.stderr
    assert run.stdout.startswith("fit 'r': 300 lines read, 1 skipped (not JSON); sent 299: stored 298, rejected 1"), run.stdout
    again = cli("send", str(fit), "--fit", "--reference", "r2", "--socket", daemon.socket, "--format", "json")
    summary = json.loads(again.stdout)
    assert summary["read"] == summary["skipped"] + summary["sent"] == 300
    assert summary["sent"] == summary["stored"] + summary["rejected"] + summary["unanswered"]


def test_exit_codes_tell_failures_apart(daemon, tmp_path):
    fit = tmp_path / "fit.jsonl"
    traces(fit, 400, 2)
    assert cli("send", str(fit), "--fit", "--reference", "r", "--socket", daemon.socket).returncode == 0
    assert cli("reference", "finalize", "r", "--socket", daemon.socket).returncode == 0
    unknown = cli("flags", "--reference", "nosuch", "--database", daemon.database)
    assert unknown.returncode == 66 and "no reference named 'nosuch'; known: r" in unknown.stderr
    assert cli("event", "999999", "--database", daemon.database).returncode == 66
    assert cli("reference", "finalize", "nosuch", "--socket", daemon.socket).returncode == 66
    assert cli("reference", "finalize", "r", "--socket", daemon.socket).returncode == 65  # already active
    down = cli("status", "--socket", str(tmp_path / "none.sock"))
    assert down.returncode == 69
    assert "No such file or directory" in down.stderr and "connect(descriptor" not in down.stderr and "errno" not in down.stderr
    assert cli("flags", "--limit", "0", "--database", daemon.database).returncode == 64


def test_eval_csv_and_reference_list_json(daemon, tmp_path):
    fit, test = tmp_path / "fit.jsonl", tmp_path / "test.jsonl"
    traces(fit, 400, 3)
    assert cli("send", str(fit), "--fit", "--reference", "r", "--socket", daemon.socket).returncode == 0
    assert cli("reference", "finalize", "r", "--socket", daemon.socket).returncode == 0
    traces(test, 50, 4, label="normal")
    csv = cli("eval", str(test), "--reference", "r", "--database", daemon.database, "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    lines = csv.stdout.strip().splitlines()
    assert lines[0] == "scorer,auroc,tpr,fpr,fpr_ci_lower,fpr_ci_upper,normal,anomalous,alpha,tpr_at_1pct,tpr_at_0.1pct" and len(lines) == 4
    listed = json.loads(cli("reference", "list", "--format", "json", "--database", daemon.database).stdout)
    assert all(site["shrinkage"] is not None for site in listed[0]["sites"])


def test_query_commands_find_the_daemons_database(daemon, tmp_path):
    # No --database and no database where the config says: the daemon on the socket says where its is.
    import os
    fit = tmp_path / "fit.jsonl"
    traces(fit, 300, 5)
    assert cli("send", str(fit), "--fit", "--reference", "r", "--socket", daemon.socket).returncode == 0
    # STATE_DIRECTORY: the default database's place, empty here, whatever a demo left in /var/lib/mechwatch.
    env = dict(os.environ, MECHWATCH_SOCKET=daemon.socket, STATE_DIRECTORY=str(tmp_path / "state"))
    env.pop("MECHWATCH_CONFIG", None)
    listed = cli("reference", "list", "--format", "json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["name"] for r in json.loads(listed.stdout)] == ["r"]
    bad = cli("flags", "--config", str(tmp_path / "missing.toml"))
    assert bad.returncode == 78 and "no such file" in bad.stderr and "Usage" not in bad.stderr
