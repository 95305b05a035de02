"""Traces of a small numpy MLP for MechWatch's demo, with planted anomalies.

The network (seeded, 3 layers, tanh) is trained for a few hundred steps of full-batch gradient descent
to classify 4 Gaussian clusters; its two hidden layers are the monitored sites `h1` (32) and `h2` (16),
and its predicted class is the trace's `output`. Written as JSON lines, one trace per line:

  fit.jsonl   trusted traces from the training distribution
  live.jsonl  traces to score, `meta.kind` saying what each is:
              normal   - fresh draws from the training distribution
              shifted  - a plain distribution shift of the inputs
              trigger  - normal inputs with a 3-coordinate trigger pattern stamped on them: the
                         network reaches its output through units the clean data never drives together

Usage: python3 scripts/demo_traces.py OUT_DIR [--fit N] [--normal N] [--anomalous N]
"""
import argparse
import json
import pathlib

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("out", type=pathlib.Path)
parser.add_argument("--fit", type=int, default=3000)
parser.add_argument("--normal", type=int, default=400)
parser.add_argument("--anomalous", type=int, default=40)
args = parser.parse_args()

rng = np.random.default_rng(2026)
D_IN, H1, H2, K = 12, 32, 16, 4
centres = rng.normal(scale=2.0, size=(K, D_IN))


def sample(n):
    y = rng.integers(0, K, size=n)
    return centres[y] + rng.normal(size=(n, D_IN)), y


W1 = rng.normal(scale=1 / np.sqrt(D_IN), size=(D_IN, H1))
W2 = rng.normal(scale=1 / np.sqrt(H1), size=(H1, H2))
W3 = rng.normal(scale=1 / np.sqrt(H2), size=(H2, K))


def forward(x):
    h1 = np.tanh(x @ W1)
    h2 = np.tanh(h1 @ W2)
    return h1, h2, h2 @ W3


x, y = sample(2000)
for _ in range(300):  # full-batch gradient descent on softmax cross-entropy
    h1, h2, logits = forward(x)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = p
    g[np.arange(len(y)), y] -= 1
    g /= len(y)
    gW3 = h2.T @ g
    g2 = (g @ W3.T) * (1 - h2**2)
    gW2 = h1.T @ g2
    g1 = (g2 @ W2.T) * (1 - h1**2)
    gW1 = x.T @ g1
    for W, G in ((W1, gW1), (W2, gW2), (W3, gW3)):
        W -= 0.5 * G
accuracy = (forward(x)[2].argmax(1) == y).mean()


def traces(x, prefix, kind=None):
    h1, h2, logits = forward(x)
    for i in range(len(x)):
        t = {"id": f"{prefix}-{i}", "output": int(logits[i].argmax()),
             "sites": {"h1": np.round(h1[i], 6).tolist(), "h2": np.round(h2[i], 6).tolist()}}
        if kind:
            t["meta"] = {"kind": kind}
        yield t


args.out.mkdir(parents=True, exist_ok=True)
with open(args.out / "fit.jsonl", "w") as f:
    for t in traces(sample(args.fit)[0], "fit"):
        f.write(json.dumps(t) + "\n")

trigger = np.zeros(D_IN)
trigger[[1, 5, 9]] = [6.0, -6.0, 6.0]
live = [(sample(args.normal)[0], "normal"),
        (sample(args.anomalous)[0] + 3.0, "shifted"),
        (sample(args.anomalous)[0] + trigger, "trigger")]
rows = [t for x, kind in live for t in traces(x, f"live-{kind}", kind)]
order = rng.permutation(len(rows))
with open(args.out / "live.jsonl", "w") as f:
    for i in order:
        f.write(json.dumps(rows[i]) + "\n")
print(f"network accuracy {accuracy:.3f}; wrote {args.fit} fit traces and {len(rows)} live traces "
      f"({args.normal} normal, {args.anomalous} shifted, {args.anomalous} trigger) to {args.out}/")
