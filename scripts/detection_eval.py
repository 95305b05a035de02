"""Detection on the evaluation sets: the daemon's scorers against the strongest simple baselines, on the
same traces, in the same run.

Generates the five digits sets (scripts/digits_eval.py: unseen classes, blended and patch backdoor
triggers, rotated digits, noise images) and the three planted-mechanism sets (scripts/eval_sets.py:
backdoor, context, shift); starts `mechwatch serve` on a temporary socket and database; per set fits a
reference from fit.jsonl, finalizes it at alpha, scores test.jsonl through the daemon and reads the events
back from the store. The seven cross-layer sets of scripts/mechanism_sets.py (a relation between
sites broken while each site alone stays normal) are scored and reported too, not yet checked. The baselines
(scripts/detection_study.py) are computed in numpy on the same traces, estimated on the same fit traces less
the daemon's calibration split:
  kNN          all sites concatenated and standardised, distance to the 5th nearest trusted trace
  Mahalanobis  per-site Ledoit-Wolf Mahalanobis distance, summed over sites
  concat       Ledoit-Wolf Mahalanobis distance on all sites concatenated
  Lee          class-conditional Mahalanobis (Lee et al. 2018), summed over sites
  Lee-last     the same, last site only
  ECOD         Li et al. 2022, all coordinates
Per set and scorer: AUROC on the test traces; TPR at 1% and at 0.1% FPR (the daemon: p <= 0.01 or 0.001,
the 99th or 99.9th percentile of its calibration statistics, the latter through the extrapolated tail; a
baseline: above the 99th or 99.9th percentile of its statistic on the calibration split); and the daemon's flag rate on normal traces at alpha with a 95% Wilson interval.

--check exits non-zero unless, on every set, the default scorer's AUROC is at least the best baseline's
minus 0.005 and its false-positive rate is not significantly above alpha (the interval's lower end is at
most alpha: the conformal guarantee is P(p <= alpha) <= alpha; p-values are multiples of 1/(n+1), so the
observed rate sits somewhat below alpha).

Usage: python3 scripts/detection_eval.py BINARY [--work DIR] [--sets unseen,...,shift] [--seed 7] [--alpha 0.01] [--check]
                                              [--serve-arg=--model --serve-arg=subspace ...]
About 1 minute on 2 cores.
"""
import argparse
import json
import math
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import detection_study as study  # noqa: E402

DIGITS = ("unseen", "blend", "patch", "rotated", "noise")
PLANTED = ("backdoor", "context", "shift")
# Cross-layer mechanism sets (scripts/mechanism_sets.py): reported beside the others, not yet part of --check.
CROSS = ("pair3", "pair05", "pairrot", "recombined", "flipped", "rescaled", "decorrelated")
TOLERANCE = 0.005


def wilson(k, n, z=1.959964):
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def start_daemon(binary, work, alpha, extra=()):
    sock, db = str(work / "d.sock"), str(work / "d.db")
    for stale in work.glob("d.db*"):  # every run starts from an empty store
        stale.unlink()
    log = open(work / "serve.log", "w")
    p = subprocess.Popen([binary, "serve", "--socket", sock, "--database", db, "--alpha", str(alpha), "--log-level", "warning", *extra],
                         stdout=subprocess.DEVNULL, stderr=log, cwd=work)
    deadline = time.time() + 30
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(sock)
            return p, sock, db
        except OSError:
            if p.poll() is not None or time.time() > deadline:
                sys.exit(f"daemon did not start: {(work / 'serve.log').read_text()}")
            time.sleep(0.05)
        finally:
            s.close()


def daemon_scores(binary, sock, db, name, directory, alpha):
    """Fits, finalizes and scores one set through the daemon; returns {trace id: (score, p)} of its events."""
    run = lambda *a: subprocess.run([binary, *a, "--socket", sock], check=True, capture_output=True, text=True)  # noqa: E731
    run("send", str(directory / "fit.jsonl"), "--fit", "--reference", name)
    run("reference", "finalize", name, "--alpha", str(alpha))
    unlabelled = directory / "test.unlabelled.jsonl"
    with open(directory / "test.jsonl") as src, open(unlabelled, "w") as out:
        for line in src:
            row = json.loads(line)
            row.pop("label", None)
            out.write(json.dumps(row) + "\n")
    run("send", str(unlabelled), "--reference", name)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT e.client_id, e.score, e.p_value FROM events e JOIN reference_models r ON r.id = e.reference_id "
                           "WHERE r.name = ?", (name,)).fetchall()
    return {i: (s, p) for i, s, p in rows}


def evaluate(name, directory, events, alpha):
    fit, test = study.load(directory / "fit.jsonl"), study.load(directory / "test.jsonl")
    st = study.SetStudy(fit, test)
    label = test.label
    score = np.array([events[i][0] for i in test.ids])
    p = np.array([events[i][1] for i in test.ids])
    rows = []
    flagged = int((p[~label] <= alpha).sum())
    rows.append({"scorer": "mechwatch (default)", "auroc": study.auroc(score, label), "tpr": float((p[label] <= 0.01).mean()),
                 "tpr01": float((p[label] <= 0.001).mean()), "fpr": flagged / int((~label).sum()), "fpr_ci": wilson(flagged, int((~label).sum()))})
    for baseline, result in study.baselines(st).items():
        rows.append({"scorer": baseline, "auroc": float(result.auroc), "tpr": float(result.tpr), "tpr01": float(result.tpr01),
                     "fpr": None, "fpr_ci": None})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--work", type=pathlib.Path, help="keep the sets, database and log here (default: a temporary directory)")
    parser.add_argument("--sets", default=",".join(DIGITS + PLANTED + CROSS))
    parser.add_argument("--seed", type=int, default=7, help="the digits sets' seed")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--check", action="store_true", help="exit non-zero if the default scorer loses (see above)")
    parser.add_argument("--json", type=pathlib.Path, help="also write the results as JSON here")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="an extra argument for `mechwatch serve` (repeatable), e.g. --serve-arg=--model --serve-arg=subspace")
    args = parser.parse_args()
    binary = str(pathlib.Path(args.binary).resolve())
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="mw-detect-"))
    work.mkdir(parents=True, exist_ok=True)
    names = args.sets.split(",")
    digits = [n for n in names if n in DIGITS]
    planted = [n for n in names if n in PLANTED]
    if digits:
        subprocess.run([sys.executable, str(HERE / "digits_eval.py"), str(work / "sets"), "--sets", ",".join(digits),
                        "--seed", str(args.seed)], check=True, capture_output=True)
    if planted:
        subprocess.run([sys.executable, str(HERE / "eval_sets.py"), str(work / "sets")], check=True, capture_output=True)
    if any(n in CROSS for n in names):
        subprocess.run([sys.executable, str(HERE / "mechanism_sets.py"), str(work / "sets")], check=True, capture_output=True)
    daemon, sock, db = start_daemon(binary, work, args.alpha, args.serve_arg)
    results, failures = {}, []
    try:
        for name in names:
            directory = work / "sets" / name
            events = daemon_scores(binary, sock, db, name, directory, args.alpha)
            rows = evaluate(name, directory, events, args.alpha)
            results[name] = rows
            ours, best = rows[0], max(rows[1:], key=lambda r: r["auroc"])
            print(f"\n{name}: {sum(1 for _ in open(directory / 'fit.jsonl'))} fit traces; alpha {args.alpha}")
            print(f"  {'scorer':<22} {'AUROC':>7} {'TPR@1%FPR':>10} {'TPR@0.1%':>9} {'FPR@alpha [95% Wilson]':>26}")
            for r in rows:
                fpr = f"{r['fpr']:.4f} [{r['fpr_ci'][0]:.4f}, {r['fpr_ci'][1]:.4f}]" if r["fpr"] is not None else ""
                print(f"  {r['scorer']:<22} {r['auroc']:>7.4f} {r['tpr']:>10.3f} {r['tpr01']:>9.3f} {fpr:>26}")
            margin = ours["auroc"] - best["auroc"]
            print(f"  margin over the best baseline ({best['scorer']}): {margin:+.4f}" + (" (reported, not checked)" if name in CROSS else ""))
            if name in CROSS:
                continue
            if margin < -TOLERANCE:
                failures.append(f"{name}: AUROC {ours['auroc']:.4f} < best baseline {best['scorer']} {best['auroc']:.4f} - {TOLERANCE}")
            if ours["fpr_ci"][0] > args.alpha:
                failures.append(f"{name}: false-positive rate {ours['fpr']:.4f} significantly above alpha {args.alpha} "
                                f"(95% interval {ours['fpr_ci']})")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    margins = {n: rows[0]["auroc"] - max(r["auroc"] for r in rows[1:]) for n, rows in results.items()}
    checked = {n: m for n, m in margins.items() if n not in CROSS}
    for label, group in (("checked sets", checked), ("cross-layer sets", {n: m for n, m in margins.items() if n in CROSS})):
        if group:
            worst = min(group, key=group.get)
            print(f"\nworst margin ({label}): {group[worst]:+.4f} ({worst}); mean {np.mean(list(group.values())):+.4f}")
    print(f"detection eval: {len(checked) - len({f.split(':')[0] for f in failures})} passed, {len({f.split(':')[0] for f in failures})} failed")
    for f in failures:
        print("FAILED", f)
    if args.check and failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
