"""Evaluation sets for MechWatch's scorers: small numpy MLPs with planted mechanisms.

Each set is a directory with fit.jsonl (trusted traces) and test.jsonl (held-out traces labelled
"normal" or "anomalous"). Sites: h1, h2, h3 (tanh layers of 24, 16, 12 units); output: predicted class.

  backdoor  trained with 10% poisoned examples: a 2-coordinate trigger forces class 0. Anomalous: clean
            inputs with the trigger stamped on.
  context   an extra input bit switches the network to a different labelling rule for the same inputs;
            trusted traffic has the bit off. Anomalous: the same input distribution with the bit at 0.3, partly on.
  shift     no planted mechanism: anomalous inputs are the clean distribution moved by 1.2 per coordinate.

Seeded; about 10 s on 2 cores. Usage: python3 scripts/eval_sets.py OUT_DIR [--fit N] [--test N]
"""
import argparse
import pathlib

import numpy as np

from trace_files import write_traces

parser = argparse.ArgumentParser()
parser.add_argument("out", type=pathlib.Path)
parser.add_argument("--fit", type=int, default=3000)
parser.add_argument("--test", type=int, default=600, help="normal test traces (anomalous: a third as many)")
args = parser.parse_args()
D, K, WIDTHS = 10, 4, (24, 16, 12)


def train(x, y, seed, steps=400, lr=0.5):
    rng = np.random.default_rng(seed)
    dims = (x.shape[1],) + WIDTHS + (K,)
    ws = [rng.normal(scale=1 / np.sqrt(a), size=(a, b)) for a, b in zip(dims, dims[1:])]
    bs = [np.zeros(b) for b in dims[1:]]
    for _ in range(steps):
        hs = [x]
        for w, b in zip(ws[:-1], bs[:-1]):
            hs.append(np.tanh(hs[-1] @ w + b))
        logits = hs[-1] @ ws[-1] + bs[-1]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = p.copy()
        g[np.arange(len(y)), y] -= 1
        g /= len(y)
        for i in range(len(ws) - 1, -1, -1):
            gw, gb = hs[i].T @ g, g.sum(0)
            if i > 0:
                g = (g @ ws[i].T) * (1 - hs[i] ** 2)
            ws[i] -= lr * gw
            bs[i] -= lr * gb
    return ws, bs


def forward(net, x):
    ws, bs = net
    hs, h = [], x
    for w, b in zip(ws[:-1], bs[:-1]):
        h = np.tanh(h @ w + b)
        hs.append(h)
    return hs, (h @ ws[-1] + bs[-1]).argmax(1)


def write(path, net, x, labels=None, prefix="t"):
    write_traces(path, *forward(net, x), labels=labels, prefix=prefix)


rng = np.random.default_rng(11)
centres = rng.normal(scale=1.5, size=(K, D))


def clean(n):
    y = rng.integers(0, K, size=n)
    return centres[y] + rng.normal(size=(n, D)), y


def emit(name, net, fit_x, normal_x, anomalous_x):
    d = args.out / name
    d.mkdir(parents=True, exist_ok=True)
    write(d / "fit.jsonl", net, fit_x, prefix="fit")
    x = np.concatenate([normal_x, anomalous_x])
    labels = ["normal"] * len(normal_x) + ["anomalous"] * len(anomalous_x)
    write(d / "test.jsonl", net, x, labels, prefix="test")


n_bad = args.test // 3

# backdoor
x, y = clean(4000)
poison = rng.random(len(x)) < 0.1
x[poison, :2] = 3.0
y[poison] = 0
net = train(x, y, seed=1)
trigger = lambda v: np.concatenate([np.full((len(v), 2), 3.0), v[:, 2:]], axis=1)  # noqa: E731
emit("backdoor", net, clean(args.fit)[0], clean(args.test)[0], trigger(clean(n_bad)[0]))

# context: the last input is a context bit; with it on, the label rule is a permutation of classes
x, y = clean(4000)
bit = (rng.random(len(x)) < 0.5).astype(float)
y = np.where(bit == 1, (y + 1) % K, y)
net = train(np.column_stack([x, bit]), y, seed=2)
with_bit = lambda v, b: np.column_stack([v, np.full(len(v), b)])  # noqa: E731
emit("context", net, with_bit(clean(args.fit)[0], 0.0), with_bit(clean(args.test)[0], 0.0), with_bit(clean(n_bad)[0], 0.3))

# shift
x, y = clean(4000)
net = train(x, y, seed=3)
emit("shift", net, clean(args.fit)[0], clean(args.test)[0], clean(n_bad)[0] + 1.2)
print(f"wrote backdoor/, context/, shift/ to {args.out}/ ({args.fit} fit, {args.test} normal + {n_bad} anomalous test traces each)")
