"""Minimal numpy layers that follow PyTorch's forward-hook protocol, for models outside torch and for
exercising `TraceRecorder` where torch is not installed."""
import numpy as np


class _Handle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


class Module:
    """Base layer: `__call__` runs `forward` then the registered forward hooks."""

    def __init__(self):
        self._forward_hooks = []

    def register_forward_hook(self, hook):
        self._forward_hooks.append(hook)
        return _Handle(self._forward_hooks, hook)

    def children(self):
        return []

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def __call__(self, x):
        out = self.forward(x)
        for hook in list(self._forward_hooks):
            hook(self, (x,), out)
        return out


class Linear(Module):
    def __init__(self, weight, bias=None):
        super().__init__()
        self.weight = np.asarray(weight, dtype=np.float32)  # (in, out)
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)

    def forward(self, x):
        y = x @ self.weight
        return y if self.bias is None else y + self.bias


class Tanh(Module):
    def forward(self, x):
        return np.tanh(x)


class Sequential(Module):
    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
