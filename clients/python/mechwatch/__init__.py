"""Python client for the MechWatch daemon, and a forward-hook recorder for PyTorch models.

    from mechwatch import Client, TraceRecorder
    client = Client()
    with TraceRecorder(model, sites=["blocks.3.mlp"], pool="mean") as rec:
        logits = model(batch)
        results = client.score("gpt2-small", rec.traces(), outputs=logits.argmax(-1))
"""
from .client import Client, default_socket
from .errors import MechWatchConnectionError, MechWatchError, MechWatchProtocolError
from .recorder import TraceRecorder
from .types import FinalizeResult, FitResult, ScoreResult, Trace

__all__ = [
    "Client", "default_socket", "TraceRecorder", "Trace", "FitResult", "ScoreResult", "FinalizeResult",
    "MechWatchError", "MechWatchConnectionError", "MechWatchProtocolError",
]
__version__ = "0.2.0"


def __getattr__(name):
    # `Store` needs pandas (the `report` extra): imported on first use, so the client works without it.
    if name == "Store":
        from .store import Store
        return Store
    raise AttributeError(f"module 'mechwatch' has no attribute {name!r}")
