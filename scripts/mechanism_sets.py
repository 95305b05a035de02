"""Cross-layer mechanism sets (issue 21): anomalies in the relation between sites while every site alone
stays normal — the change a monitor of single layers cannot see. Each set is a directory with fit.jsonl and
test.jsonl as scripts/eval_sets.py writes them (sites h1, h2[, h3]; output: the sign pattern of h1's first
two coordinates, so class-conditional baselines have classes).

  pair3, pair05  two isotropic 8-wide sites, h2 = 2·h1 + N(0, 0.1²): h2 offset by +3 (30 conditional σ)
                 or +0.5 (5 conditional σ) on every coordinate (the issue's two-site case)
  pairrot        the same pair with h2 = 2·R·h1 + noise for a random rotation R (each site alone unchanged)
  recombined     a chain h2 = tanh(h1 A) + 0.1ε, h3 = h2 B + 0.1ε: the middle site from another trace
  flipped        the same chain with the last transition's sign flipped (h3 = −h2 B + 0.1ε)
  rescaled       the chain with h2 scaled by 1.3 before h3 is computed (every site moves a little)
  decorrelated   a chain with correlated sites; h2's coordinates each from another trace (marginals kept)

Seeded. Usage: python3 scripts/mechanism_sets.py OUT_DIR [--fit N] [--test N] [--seed S]
"""
import argparse
import pathlib

import numpy as np

from trace_files import write_traces

parser = argparse.ArgumentParser()
parser.add_argument("out", type=pathlib.Path)
parser.add_argument("--fit", type=int, default=2000)
parser.add_argument("--test", type=int, default=600, help="normal test traces (anomalous: a third as many)")
parser.add_argument("--seed", type=int, default=21)
args = parser.parse_args()
rng = np.random.default_rng(args.seed)
SETS = ("pair3", "pair05", "pairrot", "recombined", "flipped", "rescaled", "decorrelated")


def outputs(h1):
    return (h1[:, 0] > 0).astype(int) + 2 * (h1[:, 1] > 0).astype(int)


def emit(name, fit, normal, anomalous):
    d = args.out / name
    d.mkdir(parents=True, exist_ok=True)
    write_traces(d / "fit.jsonl", fit, outputs(fit[0]), prefix="fit")
    test = [np.concatenate([a, b]) for a, b in zip(normal, anomalous)]
    labels = ["normal"] * len(normal[0]) + ["anomalous"] * len(anomalous[0])
    write_traces(d / "test.jsonl", test, outputs(test[0]), labels=labels, prefix="test")


def pair(n, offset=0.0, rotation=None):
    h1 = rng.normal(size=(n, 8))
    base = h1 if rotation is None else h1 @ rotation
    return [h1, 2 * base + 0.1 * rng.normal(size=(n, 8)) + offset]


A, B = rng.normal(size=(8, 8)) / np.sqrt(8), rng.normal(size=(8, 6)) / np.sqrt(8)
mix = rng.normal(size=(8, 8)) / np.sqrt(8)


def chain(n, sign=1.0, scale=1.0, recombine=False, correlated=False, decorrelate=False):
    h1 = rng.normal(size=(n, 8))
    if correlated:
        h1 = h1 @ (np.eye(8) + mix)
    h2 = np.tanh(h1 @ A) * (3 if correlated else 1) + 0.1 * rng.normal(size=(n, 8))
    if correlated:
        h2 = h2 @ (np.eye(8) + mix)
    if recombine:
        h2 = chain(n, correlated=correlated)[1]
    if decorrelate:
        h2 = np.column_stack([h2[rng.permutation(n), j] for j in range(h2.shape[1])])
    h3 = sign * (scale * h2) @ B + 0.1 * rng.normal(size=(n, 6))
    return [h1, scale * h2, h3]


n, bad = args.test, args.test // 3
q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
emit("pair3", pair(args.fit), pair(n), pair(bad, offset=3.0))
emit("pair05", pair(args.fit), pair(n), pair(bad, offset=0.5))
emit("pairrot", pair(args.fit), pair(n), pair(bad, rotation=q))
emit("recombined", chain(args.fit), chain(n), chain(bad, recombine=True))
emit("flipped", chain(args.fit), chain(n), chain(bad, sign=-1.0))
emit("rescaled", chain(args.fit), chain(n), chain(bad, scale=1.3))
emit("decorrelated", chain(args.fit, correlated=True), chain(n, correlated=True), chain(bad, correlated=True, decorrelate=True))
