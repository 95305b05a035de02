"""Binary frames from the Python client: numpy batches through `fit_batch`/`score_batch`."""
import numpy as np
import pytest

from mechwatch import Client, MechWatchError

from test_client import gaussian_traces


def arrays(traces):
    return {name: np.stack([t[name] for t in traces]) for name in traces[0]}


def active(daemon, reference, rng, n=400, **fit_options):
    """A client, and `reference` fitted from `n` traces with binary frames and finalized."""
    client = Client(daemon.socket)
    client.fit_arrays(reference, arrays(gaussian_traces(rng, n)), **fit_options)
    client.finalize(reference)
    return client


def test_arrays_match_json_requests(daemon):
    rng = np.random.default_rng(3)
    with Client(daemon.socket) as client:
        fit = gaussian_traces(rng, 600)
        fitted = client.fit_arrays("bin", arrays(fit), ids=[f"f{i}" for i in range(600)], chunk=128)
        assert [r.id for r in fitted] == [f"f{i}" for i in range(600)]
        assert 80 < sum(r.held_out for r in fitted) < 160
        assert client.finalize("bin").fit_traces + sum(r.held_out for r in fitted) == 600

        test = gaussian_traces(rng, 50) + gaussian_traces(rng, 10, 6.0)
        outputs = [i % 3 for i in range(60)]
        by_json = client.score("bin", test, outputs=outputs)
        by_frame = client.score_arrays("bin", arrays(test), outputs=outputs, chunk=16)
        assert len(by_frame) == 60
        # The same float32 values reach the scorer either way, so the scores are identical.
        assert [(r.score, r.p, r.flagged) for r in by_frame] == [(r.score, r.p, r.flagged) for r in by_json]
        assert all(r.flagged for r in by_frame[50:])
        assert len({r.event for r in by_json + by_frame}) == 120


@pytest.mark.parametrize("dtype", ["f16", "f64"])
def test_other_dtypes(daemon, dtype):
    rng = np.random.default_rng(4)
    client = active(daemon, "d", rng, dtype=dtype)
    results = client.score_arrays("d", arrays(gaussian_traces(rng, 20) + gaussian_traces(rng, 5, 6.0)), dtype=dtype)
    assert [r.flagged for r in results[20:]] == [True] * 5
    assert sum(r.flagged for r in results[:20]) < 10


def test_refused_chunk_keeps_the_others(daemon):
    rng = np.random.default_rng(5)
    client = active(daemon, "r", rng)
    test = arrays(gaussian_traces(rng, 30))
    test["h1"][14, 2] = np.inf  # in the second chunk of 10
    with pytest.raises(MechWatchError) as e:
        client.score_arrays("r", test, ids=[f"s{i}" for i in range(30)], chunk=10)
    assert e.value.code == "non_finite_value" and "id 's14'" in e.value.message and "h1[2]" in e.value.message
    results = e.value.results
    assert len(results) == 30
    assert all(r is not None for r in results[:10]) and all(r is None for r in results[10:20])
    # The frame already in flight behind the refused one was still scored and stored.
    assert all(r is not None for r in results[20:])
    assert client.status()["events"] == 20


def test_layout_errors(daemon):
    rng = np.random.default_rng(6)
    client = active(daemon, "w", rng, n=300)
    test = arrays(gaussian_traces(rng, 4))
    with pytest.raises(MechWatchError) as e:
        client.score_arrays("w", {"h1": test["h1"][:, :4], "h2": test["h2"]})
    assert e.value.code == "wrong_width" and "h1" in e.value.message
    with pytest.raises(MechWatchError) as e:
        client.score_arrays("w", {"h1": test["h1"]})
    assert e.value.code == "missing_site"
    with pytest.raises(ValueError, match="disagree"):
        client.score_arrays("w", {"h1": test["h1"], "h2": test["h2"][:3]})
    with pytest.raises(ValueError, match="dtype"):
        client.score_arrays("w", test, dtype="bf16")
    with pytest.raises(ValueError, match="expected an \\(n, width\\) array"):
        client.score_arrays("w", {"h1": test["h1"][0], "h2": test["h2"]})
    assert client.score_arrays("w", test)[0].event > 0  # the connection is still in step
