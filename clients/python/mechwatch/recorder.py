"""Captures per-site activations of a model's forward pass through forward hooks.

Works with any module object that follows PyTorch's hook protocol: `model.named_modules()` yields
`(name, module)` pairs and `module.register_forward_hook(fn)` returns a handle with `.remove()`, `fn`
being called as `fn(module, inputs, output)`. torch is never imported here.

PyTorch's fused fast paths compute some modules without calling their submodules, so hooks inside them never
fire: `nn.TransformerEncoderLayer` in eval mode with autograd off (`torch._transformer_encoder_layer_fwd`), and
`nn.MultiheadAttention`, which never calls its `out_proj` as a module. The recorder watches those parents and,
when a site inside one recorded nothing although the parent ran, says so and how to get the activation.
"""
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from .types import Trace

POOLS = ("mean", "last", "none")


class TraceRecorder:
    """Records the outputs of the named sub-modules during forward passes inside a `with` block.

    Each site's output is `(batch, width)` or `(batch, tokens, width)` (a tuple output uses its first
    element). `pool` reduces token positions: `mean`, `last`, or `none` (one trace per token, with
    `meta["position"]`). Outputs are moved to CPU float32 (without a copy when already so). Hooks are
    removed on exit, also after an exception. `traces()` describes the most recent forward pass: when the model
    has `register_forward_pre_hook` (torch modules do), each call of `model` forgets the previous outputs, so a
    site the latest pass skipped is reported rather than served from an earlier pass."""

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
        self._nested: Dict[str, bool] = {}  # sites whose latest output was a nested (packed) tensor
        self._ran: Dict[str, dict] = {}  # watched fast-path parents that ran, with the mode they ran in
        self._kinds: Dict[str, str] = {}  # watched parent name -> "encoder_layer" | "mha"

    def __enter__(self):
        modules = dict(self.model.named_modules())
        missing = [s for s in self.sites if s not in modules]
        if missing:
            known = ", ".join(n for n in modules if n) or "(none)"
            raise KeyError(f"no module named {missing[0]!r} in the model; named modules: {known}")
        self._kinds = {}
        for site in self.sites:
            parts = site.split(".") if site else []
            for i in range(len(parts)):
                parent = ".".join(parts[:i])
                kind = _fast_path_kind(modules.get(parent))
                if kind:
                    self._kinds[parent] = kind
        try:
            pre = getattr(self.model, "register_forward_pre_hook", None)
            if pre is not None:
                self._handles.append(pre(self._new_pass))
            for name in self.sites:
                self._handles.append(modules[name].register_forward_hook(self._hook(name)))
            for parent in self._kinds:
                self._handles.append(modules[parent].register_forward_hook(self._parent_hook(parent)))
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
        self._nested.clear()
        self._ran.clear()

    def traces(self, outputs=None, meta: Optional[dict] = None) -> List[Trace]:
        """One trace per batch element (per token with `pool="none"`) of the latest forward pass."""
        nested = [s for s in self.sites if self._nested.get(s)]
        if nested:
            raise ValueError(
                f"site {nested[0]!r} produced a nested tensor (the batch packed without padding): nn.TransformerEncoder "
                "does this inside its fast path when given src_key_padding_mask in eval mode without autograd. Record "
                "the encoder itself (its output is padded back), build it with enable_nested_tensor=False, or run the "
                "forward pass under torch.enable_grad()")
        missing = [s for s in self.sites if s not in self._outputs]
        if missing:
            raise RuntimeError(self._why_nothing(missing[0]))
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
            if getattr(output, "is_nested", False):
                self._nested[name] = True
                self._outputs.pop(name, None)
                return
            self._nested.pop(name, None)
            self._outputs[name] = _numpy(output)
        return hook

    def _new_pass(self, module, inputs):
        self.clear()

    def _parent_hook(self, name):
        def hook(module, inputs, output):
            torch = sys.modules.get("torch")
            grad = bool(torch.is_grad_enabled()) if torch is not None else None
            self._ran[name] = {"training": bool(getattr(module, "training", False)), "grad": grad}
        return hook

    def _why_nothing(self, site: str) -> str:
        """Why `site` has no output: not run yet, or skipped by a fast path of a parent that did run."""
        parts = site.split(".") if site else []
        parents = [".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]  # innermost first
        mha = next((p for p in parents if self._kinds.get(p) == "mha"), None)
        ran = next((p for p in parents if p in self._ran), None)
        if ran is None:
            message = f"site {site!r} recorded nothing: run the model inside the `with` block first"
            if mha is not None:
                message += "; " + _mha_note(site, mha)
            return message
        if self._kinds[ran] == "mha":
            return f"site {site!r} recorded nothing although its parent {_name(ran)} (nn.MultiheadAttention) ran: " + \
                _mha_note(site, ran)
        state = self._ran[ran]
        if state["training"]:  # no fast path in train mode: the layer's forward simply did not call the site
            message = (f"site {site!r} recorded nothing although its parent {_name(ran)} (nn.TransformerEncoderLayer) "
                       "ran in train mode: its forward did not call that module")
            return message + ("; " + _mha_note(site, mha) if mha is not None else "")
        mode = "in eval mode" + (" with autograd off" if state["grad"] is False else "")
        message = (
            f"site {site!r} recorded nothing although its parent {_name(ran)} (nn.TransformerEncoderLayer) ran {mode}: "
            "the layer took PyTorch's fused fast path (torch._transformer_encoder_layer_fwd), which computes the "
            f"whole layer without calling its submodules, so hooks inside it never fire. Record {_name(ran)} itself, "
            "or make this forward pass take the regular path: run it under torch.enable_grad() (the fast path is "
            "skipped when autograd is on and a parameter or the input requires grad), or in train mode "
            "(model.train(), which also turns dropout on)")
        if _set_fastpath_enabled() is not None:
            message += ", or call torch.backends.mha.set_fastpath_enabled(False)"
        if mha is not None:
            message += "; and even on the regular path " + _mha_note(site, mha)
        return message

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


def _fast_path_kind(module) -> Optional[str]:
    """"encoder_layer" or "mha" for torch.nn's TransformerEncoderLayer / MultiheadAttention (or a subclass)."""
    if module is None:
        return None
    for cls in type(module).__mro__:
        if not getattr(cls, "__module__", "").startswith("torch.nn"):
            continue
        if cls.__name__ == "TransformerEncoderLayer":
            return "encoder_layer"
        if cls.__name__ == "MultiheadAttention":
            return "mha"
    return None


def _name(name: str) -> str:
    return repr(name) if name else "'' (the model itself)"


def _mha_note(site: str, mha: str) -> str:
    return (f"nn.MultiheadAttention computes its projections from their weights (F.multi_head_attention_forward "
            f"or its fused fast path) and never calls {site[len(mha) + 1:] if mha else site!r} as a module, so hooks "
            f"on it never fire. Record {_name(mha)} instead: its first output is the attention output after out_proj")


def _set_fastpath_enabled():
    """torch.backends.mha.set_fastpath_enabled where the installed torch has it (2.x), else None."""
    mha = sys.modules.get("torch.backends.mha") or getattr(getattr(sys.modules.get("torch"), "backends", None), "mha", None)
    return getattr(mha, "set_fastpath_enabled", None)
