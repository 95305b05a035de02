"""Scorers compared on the planted-mechanism evaluation sets (scripts/eval_sets.py, generated here)."""
import json
import pathlib
import subprocess
import sys

import pytest

from conftest import BINARY, REPO

ALPHA = 0.05


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from conftest import Daemon

    root = tmp_path_factory.mktemp("eval")
    subprocess.run([sys.executable, str(REPO / "scripts" / "eval_sets.py"), str(root)], check=True, capture_output=True)
    daemon = Daemon(root).start()
    out = {}
    try:
        for name in ("backdoor", "context", "shift"):
            cli = [str(BINARY)]
            subprocess.run(cli + ["send", str(root / name / "fit.jsonl"), "--fit", "--reference", name, "--socket", daemon.socket],
                           check=True, capture_output=True)
            subprocess.run(cli + ["reference", "finalize", name, "--alpha", str(ALPHA), "--socket", daemon.socket],
                           check=True, capture_output=True)
            report = subprocess.run(cli + ["eval", str(root / name / "test.jsonl"), "--reference", name,
                                           "--database", daemon.database, "--format", "json"],
                                    check=True, capture_output=True, text=True).stdout
            out[name] = {r["scorer"]: r for r in json.loads(report)}
    finally:
        daemon.stop()
    return out


@pytest.mark.parametrize("name", ["backdoor", "context", "shift"])
def test_mechanism_is_at_least_as_good_as_each_baseline(results, name):
    r = results[name]
    assert r["mechanism"]["auroc"] >= r["mahalanobis"]["auroc"]
    assert r["mechanism"]["auroc"] >= r["independence"]["auroc"]


@pytest.mark.parametrize("name", ["backdoor", "context"])
def test_mechanism_is_strictly_better_where_a_mechanism_is_planted(results, name):
    r = results[name]
    assert r["mechanism"]["auroc"] > max(r["mahalanobis"]["auroc"], r["independence"]["auroc"])


@pytest.mark.parametrize("name", ["backdoor", "context", "shift"])
def test_false_positive_rate_is_consistent_with_alpha(results, name):
    # The default scorer's observed FPR on clean held-out traces; the interval covers test sampling only,
    # not the calibration set's own sampling, so baselines are reported (README), not asserted.
    r = results[name]["mechanism"]
    low, high = r["fpr_ci"]
    assert low <= ALPHA <= high, f"FPR {r['fpr']} with 95% interval {r['fpr_ci']} excludes alpha"
