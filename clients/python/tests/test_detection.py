"""Detection on the evaluation sets (scripts/detection_eval.py): on every set the default scorer's AUROC is
at least the best simple baseline's (kNN, Mahalanobis, class-conditional Mahalanobis, ECOD, computed on the
same traces in the same run) minus 0.005, and its false-positive rate at alpha is not significantly above
alpha."""
import subprocess
import sys

from conftest import BINARY, REPO


def test_default_scorer_keeps_up_with_the_best_baseline_on_every_set(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "detection_eval.py"), str(BINARY), "--work", str(tmp_path), "--check"],
                         capture_output=True, text=True, timeout=900)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "detection eval: 8 passed, 0 failed" in run.stdout
