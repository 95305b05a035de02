"""Writing trace files (one JSON trace per line, as `mechwatch send` reads them) for the evaluation-set scripts."""
import json

import numpy as np


def write_traces(path, hidden, outputs, labels=None, prefix="t"):
    """Writes trace i with sites h1, h2, ... from `hidden` (one (n, width) array per layer), its `output`
    from `outputs`, and `label` ("normal"/"anomalous") when `labels` is given; ids are PREFIX-i."""
    with open(path, "w") as f:
        for i in range(len(outputs)):
            t = {"id": f"{prefix}-{i}", "output": int(outputs[i]),
                 "sites": {f"h{k + 1}": np.round(h[i], 6).tolist() for k, h in enumerate(hidden)}}
            if labels is not None:
                t["label"] = labels[i]
            f.write(json.dumps(t) + "\n")


def holds_out(trace_id, fraction):
    """The daemon's calibration split (CalibrationSplit.holdsOut in ReferenceFitter.swift): FNV-1a over the
    id's UTF-8 bytes, then the SplitMix64 finaliser; held out when the top 53 bits fall below `fraction`."""
    m = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in trace_id.encode():
        h = ((h ^ b) * 0x100000001B3) & m
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & m
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & m
    h ^= h >> 31
    return (h >> 11) / float(1 << 53) < fraction
