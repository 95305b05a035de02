"""Monitor a small MLP with MechWatch: record trusted traces, fit, finalize, then score a mix of normal
and anomalous inputs and print what was flagged.

Uses torch if installed, else the numpy stand-in modules (same hook protocol). Needs a running daemon:
    mechwatch serve &        # from the repository root
    python3 clients/python/examples/monitor_mlp.py [--socket PATH]
"""
import argparse

import numpy as np

from mechwatch import Client, TraceRecorder

parser = argparse.ArgumentParser()
parser.add_argument("--socket", default=None, help="daemon socket (default: $MECHWATCH_SOCKET or the daemon's default)")
parser.add_argument("--reference", default="example-mlp")
args = parser.parse_args()

rng = np.random.default_rng(0)
w1, w2, w3 = (0.4 * rng.normal(size=s) for s in ((10, 32), (32, 16), (16, 3)))
try:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3))
    with torch.no_grad():
        for layer, w in zip((model[0], model[2], model[4]), (w1, w2, w3)):
            layer.weight.copy_(torch.tensor(w.T, dtype=torch.float32))
            layer.bias.zero_()
    run = lambda x: model(torch.tensor(x, dtype=torch.float32)).detach().numpy()  # noqa: E731
    backend = "torch"
except ImportError:
    from mechwatch.numpy_modules import Linear, Sequential, Tanh

    model = Sequential(Linear(w1), Tanh(), Linear(w2), Tanh(), Linear(w3))
    run = model
    backend = "numpy stand-in"

sites = ["1", "3"]  # the two tanh layers
client = Client(args.socket)
try:
    client.delete(args.reference)  # start afresh
except Exception:
    pass

with TraceRecorder(model, sites=sites) as rec:
    logits = run(rng.normal(size=(2000, 10)))
    client.fit(args.reference, rec.traces(outputs=logits.argmax(-1)))
    final = client.finalize(args.reference, alpha=0.01)
    print(f"[{backend}] fitted '{args.reference}': {final.fit_traces} fit, {final.calibration_traces} calibration traces")

    mixes = {"normal": rng.normal(size=(200, 10)),
             "shifted": rng.normal(size=(20, 10)) + 2.5,
             "trigger": np.where(np.arange(10) < 3, 5.0, rng.normal(size=(20, 10)))}
    for kind, x in mixes.items():
        logits = run(x)
        results = client.score(args.reference, rec.traces(outputs=logits.argmax(-1), meta={"kind": kind}))
        flagged = [r for r in results if r.flagged]
        print(f"{kind:8s} {len(flagged):3d}/{len(results)} flagged"
              + (f"  e.g. event {flagged[0].event} p={flagged[0].p:.4f} score={flagged[0].score:.1f}" if flagged else ""))
print("explain one with: mechwatch event EVENT")
