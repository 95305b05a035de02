"""Client-side throughput at 12 sites x 768 floats: the Python client's JSON requests (`fit`, `score`) and
binary frames (`fit_arrays`, `score_arrays`, f32), next to the daemon's own CLI client on the same traces.

    mechwatch serve --socket /tmp/mw-bench/s.sock --database /tmp/mw-bench/b.db &
    python3 clients/python/examples/throughput.py --socket /tmp/mw-bench/s.sock --mechwatch .build/debug/mechwatch

Prints traces/s for each way of sending, and for `mechwatch send` (Swift client, JSON) on the same traces.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

from mechwatch import Client

parser = argparse.ArgumentParser()
parser.add_argument("--socket", required=True)
parser.add_argument("--mechwatch", required=True, help="path of the mechwatch binary")
parser.add_argument("--sites", type=int, default=12)
parser.add_argument("--width", type=int, default=768)
parser.add_argument("--fit", type=int, default=1500)
parser.add_argument("--score", type=int, default=1000)
args = parser.parse_args()

rng = np.random.default_rng(0)
names = [f"blocks.{i}.mlp" for i in range(args.sites)]


def traces(n):
    base = rng.normal(size=(n, args.width)).astype(np.float32)
    return [{s: base[i] + 0.1 * k for k, s in enumerate(names)} for i in range(n)]


client = Client(args.socket, batch_size=64)
for ref in ("bench-py", "bench-bin", "bench-cli"):
    try:
        client.delete(ref)
    except Exception:
        pass
fit, score = traces(args.fit), traces(args.score)
t = time.perf_counter()
client.fit("bench-py", fit)
fit_rate = args.fit / (time.perf_counter() - t)
client.finalize("bench-py")
t = time.perf_counter()
client.score("bench-py", score)
score_rate = args.score / (time.perf_counter() - t)

as_arrays = lambda data: {s: np.stack([t[s] for t in data]) for s in names}  # noqa: E731
t = time.perf_counter()
client.fit_arrays("bench-bin", as_arrays(fit), chunk=256)
bin_fit_rate = args.fit / (time.perf_counter() - t)
client.finalize("bench-bin")
t = time.perf_counter()
client.score_arrays("bench-bin", as_arrays(score), chunk=256)
bin_score_rate = args.score / (time.perf_counter() - t)

with tempfile.TemporaryDirectory() as d:
    for name, data in (("fit", fit), ("score", score)):
        with open(os.path.join(d, f"{name}.jsonl"), "w") as f:
            for i, tr in enumerate(data):
                f.write(json.dumps({"id": f"{name}-{i}", "sites": {k: v.tolist() for k, v in tr.items()}}) + "\n")
    cli = [args.mechwatch, "send", "--socket", args.socket, "--reference", "bench-cli"]
    t = time.perf_counter()
    subprocess.run(cli + [os.path.join(d, "fit.jsonl"), "--fit"], check=True, stdout=subprocess.DEVNULL)
    cli_fit = args.fit / (time.perf_counter() - t)
    subprocess.run([args.mechwatch, "reference", "finalize", "bench-cli", "--socket", args.socket], check=True,
                   stdout=subprocess.DEVNULL)
    t = time.perf_counter()
    subprocess.run(cli + [os.path.join(d, "score.jsonl")], check=True, stdout=subprocess.DEVNULL)
    cli_score = args.score / (time.perf_counter() - t)

print(f"{args.sites} sites x {args.width} floats")
print(f"{'':34s}{'fit traces/s':>14s}{'score traces/s':>16s}")
print(f"{'python Client.fit/score (JSON)':34s}{fit_rate:14.0f}{score_rate:16.0f}")
print(f"{'python fit_arrays/score_arrays':34s}{bin_fit_rate:14.0f}{bin_score_rate:16.0f}")
print(f"{'mechwatch send (Swift, JSON)':34s}{cli_fit:14.0f}{cli_score:16.0f}")
print(f"{'ratio python JSON / swift':34s}{fit_rate / cli_fit:14.2f}{score_rate / cli_score:16.2f}")
print(f"{'ratio python binary / swift':34s}{bin_fit_rate / cli_fit:14.2f}{bin_score_rate / cli_score:16.2f}")
