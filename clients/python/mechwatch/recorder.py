"""Captures per-site activations of a model's forward pass through forward hooks.

Works with any module object that follows PyTorch's hook protocol: `model.named_modules()` yields
`(name, module)` pairs and `module.register_forward_hook(fn)` returns a handle with `.remove()`, `fn`
being called as `fn(module, inputs, output)`. torch is never imported here.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from .types import Trace

POOLS = ("mean", "last", "none")


class TraceRecorder:
    """Records the outputs of the named sub-modules during forward passes inside a `with` block.

    Each site's output is `(batch, width)` or `(batch, tokens, width)` (a tuple output uses its first
    element). `pool` reduces token positions: `mean`, `last`, or `none` (one trace per token, with
    `meta["position"]`). Outputs are moved to CPU float32 (without a copy when already so). Hooks are
    removed on exit, also after an exception. `traces()` describes the most recent forward pass."""

    def __init__(self, model, sites: Sequence[str], pool: str = "mean"):
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        if not sites:
            raise ValueError("sites: name at least one module")
        self.model = model
        self.sites = list(sites)
        self.pool = pool
        self._handles = []
        self._outputs: Dict[str, np.ndarray] = {}

    def __enter__(self):
        modules = dict(self.model.named_modules())
        missing = [s for s in self.sites if s not in modules]
        if missing:
            known = ", ".join(n for n in modules if n) or "(none)"
            raise KeyError(f"no module named {missing[0]!r} in the model; named modules: {known}")
        try:
            for name in self.sites:
                self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc):
        self._remove()
        return False

    def clear(self) -> None:
        """Forgets the recorded outputs."""
        self._outputs.clear()

    def traces(self, outputs=None, meta: Optional[dict] = None) -> List[Trace]:
        """One trace per batch element (per token with `pool="none"`) of the latest forward pass."""
        missing = [s for s in self.sites if s not in self._outputs]
        if missing:
            raise RuntimeError(f"site {missing[0]!r} recorded nothing: run the model inside the `with` block first")
        arrays = {s: self._outputs[s] for s in self.sites}
        batch = {a.shape[0] for a in arrays.values()}
        if len(batch) != 1:
            raise ValueError(f"sites disagree on the batch size: { {s: a.shape for s, a in arrays.items()} }")
        (n,) = batch
        if outputs is not None:
            outputs = _numpy(outputs).reshape(-1).tolist()
        traces = []
        for b in range(n):
            per_site = {s: a[b] for s, a in arrays.items()}
            label = None if outputs is None else int(outputs[b])
            if self.pool == "none" and any(v.ndim == 2 for v in per_site.values()):
                tokens = {v.shape[0] for v in per_site.values() if v.ndim == 2}
                if len(tokens) != 1:
                    raise ValueError("pool='none' needs every site to have the same number of tokens")
                for t in range(tokens.pop()):
                    traces.append(Trace(sites={s: (v[t] if v.ndim == 2 else v) for s, v in per_site.items()},
                                        output=label, meta={**(meta or {}), "index": b, "position": t}))
            else:
                traces.append(Trace(sites={s: self._pool(v) for s, v in per_site.items()}, output=label,
                                    meta=dict(meta or {})))
        return traces

    def _pool(self, v):
        if v.ndim == 1:
            return v
        if v.ndim != 2:
            raise ValueError(f"site output per element has shape {v.shape}; expected (width,) or (tokens, width)")
        return v.mean(axis=0) if self.pool == "mean" else v[-1]

    def _hook(self, name):
        def hook(module, inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            self._outputs[name] = _numpy(output)
        return hook

    def _remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []


def _numpy(x):
    """CPU float32 numpy view of a tensor or array; copies only when the device or dtype requires it."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach()
        if x.device.type != "cpu" or str(x.dtype) != "torch.float32":
            x = x.to(device="cpu", dtype=__import__("torch").float32)
        return x.numpy()
    return np.asarray(x, dtype=np.float32)
