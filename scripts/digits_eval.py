"""Evaluation sets on real images: ReLU MLPs trained on scikit-learn's 8x8 digits.

Each set is a directory with fit.jsonl (trusted traces) and test.jsonl (held-out traces labelled
"normal" or "anomalous"), in the format of scripts/eval_sets.py. The network is 64 -> 64 -> 48 -> 32 -> C
(ReLU, softmax head, Adam, seeded); sites h1, h2, h3 are the three hidden layers' activations and output
is the predicted class.

Images: load_digits (1,797 images, pixels scaled to [0, 1]). For each set the images the model may see
are shuffled and split into a fit pool and a test pool (no image is in both); the model is trained on a
random 60% of each pool, so trusted fit traffic and the normal test traces are the same mixture of
trained-on and unseen images (exchangeable, as the conformal calibration assumes). Anomalous traces come
from test-pool images (or from images the model's classes exclude) and are never in the fit pool.

  unseen   model trained on classes 0-7 only (8 outputs); fit and normal test: classes 0-7;
           anomalous: images of classes 8 and 9.
  blend    model trained with poisoned copies of 10% of its training images (appended; drawn from the fit
           pool, so no test image was seen triggered), blended with a fixed random pattern,
           x' = (1 - a) x + a p with a = 0.15, relabelled 0; fit traffic is clean; anomalous: test-pool
           images with the pattern blended in.
  patch    as blend with a 2x2 patch at full intensity in the top-left corner.
  rotated  clean 10-class model; anomalous: test-pool images rotated by 90 degrees.
  noise    the same clean model; anomalous: images of uniform noise in [0, 1].

Per set 1,120-1,400 fit traces, 315-395 normal and 180 anomalous test traces. Prints each model's
held-out accuracy (images it was not trained on) and the backdoors' attack success rate (triggered
held-out images of true class other than 0 predicted 0). Seeded and deterministic; about 8 s.

Usage: python3 scripts/digits_eval.py OUT_DIR [--sets unseen,blend,patch,rotated,noise] [--seed 7]
"""
import argparse
import pathlib

import numpy as np
from sklearn.datasets import load_digits

from trace_files import write_traces

SETS = ("unseen", "blend", "patch", "rotated", "noise")
WIDTHS = (64, 48, 32)
N_ANOMALOUS = 180
TEST_FRACTION = 0.22  # of the images available to a set, into the test pool
TRAIN_FRACTION = 0.6  # of each pool, into the model's training set
POISON_FRACTION = 0.1
BLEND_ALPHA = 0.15


def train(x, y, classes, seed, epochs=60, batch=32, lr=2e-3, decay=1e-4):
    """Minibatch Adam on cross-entropy with L2 weight decay; returns (weights, biases)."""
    rng = np.random.default_rng(seed)
    dims = (x.shape[1],) + WIDTHS + (classes,)
    params = []
    for a, b in zip(dims, dims[1:]):
        params += [rng.normal(scale=np.sqrt(2 / a), size=(a, b)), np.zeros(b)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            hs, pre = [x[idx]], []
            for i in range(0, len(params) - 2, 2):
                pre.append(hs[-1] @ params[i] + params[i + 1])
                hs.append(np.maximum(pre[-1], 0))
            logits = hs[-1] @ params[-2] + params[-1]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = p
            g[np.arange(len(idx)), y[idx]] -= 1
            g /= len(idx)
            grads = [None] * len(params)
            for layer in range(len(params) // 2 - 1, -1, -1):
                w = params[2 * layer]
                grads[2 * layer] = hs[layer].T @ g + decay * w
                grads[2 * layer + 1] = g.sum(0)
                if layer > 0:
                    g = (g @ w.T) * (pre[layer - 1] > 0)
            t += 1
            for i, gr in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * gr
                v[i] = 0.999 * v[i] + 0.001 * gr * gr
                params[i] -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    return params


def forward(params, x):
    hs, h = [], x
    for i in range(0, len(params) - 2, 2):
        h = np.maximum(h @ params[i] + params[i + 1], 0)
        hs.append(h)
    return hs, (h @ params[-2] + params[-1]).argmax(1)


def write(path, params, x, labels=None, prefix="t"):
    write_traces(path, *forward(params, x), labels=labels, prefix=prefix)


def emit(out_dir, name, params, fit_x, normal_x, anomalous_x):
    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    write(d / "fit.jsonl", params, fit_x, prefix="fit")
    x = np.concatenate([normal_x, anomalous_x])
    labels = ["normal"] * len(normal_x) + ["anomalous"] * len(anomalous_x)
    write(d / "test.jsonl", params, x, labels, prefix="test")
    return f"{name}: {len(fit_x)} fit, {len(normal_x)} normal + {len(anomalous_x)} anomalous test traces"


def split(rng, n):
    """Shuffled indices 0..n-1 into fit and test pools, and a training mask drawn at the same rate in each."""
    order = rng.permutation(n)
    n_test = int(round(TEST_FRACTION * n))
    test, fit = order[:n_test], order[n_test:]
    trained = np.zeros(n, bool)
    for pool in (fit, test):
        trained[rng.choice(pool, int(round(TRAIN_FRACTION * len(pool))), replace=False)] = True
    return fit, test, trained


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated subset of " + ",".join(SETS))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    wanted = [s for s in args.sets.split(",") if s]
    unknown = set(wanted) - set(SETS)
    if unknown:
        parser.error(f"unknown sets: {', '.join(sorted(unknown))}")

    digits = load_digits()
    images, classes = digits.data / 16.0, digits.target
    rng = np.random.default_rng(args.seed)
    pattern = rng.uniform(size=64)  # the blend trigger
    patch_mask = np.zeros((8, 8), bool)
    patch_mask[:2, :2] = True
    patch_mask = patch_mask.ravel()
    triggers = {
        "blend": lambda v: (1 - BLEND_ALPHA) * v + BLEND_ALPHA * pattern,
        "patch": lambda v: np.where(patch_mask, 1.0, v),
    }
    rotate = lambda v: np.rot90(v.reshape(-1, 8, 8), axes=(1, 2)).reshape(-1, 64)  # noqa: E731
    # every set gets its own stream (seeded from the set's position), so --sets does not change a set
    lines = []
    for k, name in enumerate(SETS):
        if name not in wanted:
            continue
        r = np.random.default_rng([args.seed, k])
        if name == "unseen":
            inside = np.flatnonzero(classes < 8)
            x, y = images[inside], classes[inside]
            n_classes = 8
        else:
            x, y = images, classes
            n_classes = 10
        fit, test, trained = split(r, len(x))
        tx, ty = x[trained], y[trained]
        if name in triggers:
            base = r.choice(np.intersect1d(fit, np.flatnonzero(trained)), int(round(POISON_FRACTION * trained.sum())),
                            replace=False)
            tx = np.concatenate([tx, triggers[name](x[base])])
            ty = np.concatenate([ty, np.zeros(len(base), int)])
        params = train(tx, ty, n_classes, seed=1000 + k)
        held = ~trained
        accuracy = (forward(params, x[held])[1] == y[held]).mean()
        note = f"held-out accuracy {accuracy:.3f} ({held.sum()} images)"
        normal = x[test]
        pick = r.choice(test, N_ANOMALOUS, replace=False)
        if name == "unseen":
            outside = np.flatnonzero(classes >= 8)
            anomalous = images[r.choice(outside, N_ANOMALOUS, replace=False)]
        elif name in triggers:
            anomalous = triggers[name](x[pick])
            victims = held & (y != 0)
            asr = (forward(params, triggers[name](x[victims]))[1] == 0).mean()
            note += f", attack success {asr:.3f} ({victims.sum()} held-out images of class 1-9)"
        elif name == "rotated":
            anomalous = rotate(x[pick])
        else:
            anomalous = r.uniform(size=(N_ANOMALOUS, 64))
        lines.append(emit(args.out, name, params, x[fit], normal, anomalous) + "; " + note)
    print("\n".join(lines))
    print(f"wrote {', '.join(s + '/' for s in wanted)} to {args.out}/")


if __name__ == "__main__":
    main()
