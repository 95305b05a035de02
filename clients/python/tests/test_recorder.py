"""TraceRecorder with torch when it is installed, else with the numpy stand-in modules."""
import numpy as np
import pytest

from mechwatch import Client, TraceRecorder
from mechwatch.numpy_modules import Linear, Sequential, Tanh

try:
    import torch
except ImportError:
    torch = None


def numpy_model():
    rng = np.random.default_rng(3)
    return Sequential(Linear(0.3 * rng.normal(size=(5, 8))), Tanh(), Linear(0.5 * rng.normal(size=(8, 4))), Tanh())


def test_records_named_sites_per_batch_element():
    model = numpy_model()
    x = np.random.default_rng(4).normal(size=(7, 5))
    with TraceRecorder(model, sites=["1", "3"]) as rec:
        out = model(x)
        traces = rec.traces(outputs=out.argmax(-1))
    assert len(traces) == 7
    assert traces[2].sites["1"].shape == (8,) and traces[2].sites["3"].shape == (4,)
    np.testing.assert_allclose(traces[2].sites["3"], out[2], rtol=1e-6)
    assert traces[2].output == int(out[2].argmax())
    assert traces[0].sites["1"].dtype == np.float32


def test_pooling_over_tokens():
    model = numpy_model()
    x = np.random.default_rng(5).normal(size=(2, 3, 5))  # batch 2, 3 tokens
    for pool, expect in (("mean", lambda h: h.mean(0)), ("last", lambda h: h[-1])):
        with TraceRecorder(model, sites=["1"], pool=pool) as rec:
            model(x)
            t = rec.traces()
        hidden = np.tanh(x @ model.layers[0].weight)
        assert len(t) == 2
        np.testing.assert_allclose(t[1].sites["1"], expect(hidden[1]), rtol=1e-5)
    with TraceRecorder(model, sites=["1"], pool="none") as rec:
        model(x)
        t = rec.traces()
    assert len(t) == 6 and t[4].meta == {"index": 1, "position": 1}


def test_hooks_removed_even_after_errors():
    model = numpy_model()
    with pytest.raises(RuntimeError):
        with TraceRecorder(model, sites=["1", "3"]):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks for _, m in model.named_modules())
    with pytest.raises(KeyError, match="no module named 'nope'"):
        TraceRecorder(model, sites=["nope"]).__enter__()
    with pytest.raises(ValueError):
        TraceRecorder(model, sites=["1"], pool="max")


@pytest.mark.skipif(torch is None, reason="torch not installed; the numpy stand-in tests above cover the recorder")
def test_torch_model():
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    with TraceRecorder(model, sites=["1", "2"]) as rec:
        out = model(torch.randn(3, 5))
        traces = rec.traces(outputs=out.argmax(-1))
    assert len(traces) == 3 and traces[0].sites["1"].shape == (8,)
    assert not model[1]._forward_hooks


def test_recorded_traces_stream_to_the_daemon(daemon):
    model = numpy_model()
    rng = np.random.default_rng(6)
    with Client(daemon.socket) as client, TraceRecorder(model, sites=["1", "3"]) as rec:
        out = model(rng.normal(size=(300, 5)))
        client.fit("np-mlp", rec.traces(outputs=out.argmax(-1)))
        client.finalize("np-mlp", alpha=0.05)
        model(rng.normal(size=(50, 5)))
        normal = client.score("np-mlp", rec.traces())
        model(rng.normal(size=(10, 5)) + 4.0)
        far = client.score("np-mlp", rec.traces())
    assert len(normal) == 50
    assert sum(r.flagged for r in far) >= 8
