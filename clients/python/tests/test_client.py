import numpy as np
import pytest

from mechwatch import Client, MechWatchConnectionError, MechWatchError, Trace


def gaussian_traces(rng, n, shift=0.0):
    """h1: 6 correlated coordinates; h2 = tanh of a projection of h1, plus noise."""
    a = np.linspace(-1, 1, 36).reshape(6, 6) + np.eye(6)
    b = np.linspace(-0.5, 0.5, 18).reshape(6, 3)
    h1 = rng.normal(size=(n, 6)) @ a
    h1[:, :3] += shift
    h2 = np.tanh(h1 @ b) + 0.05 * rng.normal(size=(n, 3))
    return [{"h1": h1[i], "h2": h2[i]} for i in range(n)]


def test_fit_finalize_score(daemon):
    rng = np.random.default_rng(0)
    with Client(daemon.socket, batch_size=64) as client:
        assert client.server_version
        fitted = client.fit("py", gaussian_traces(rng, 600), ids=[f"t-{i}" for i in range(600)])
        assert len(fitted) == 600
        held_out = sum(r.held_out for r in fitted)
        assert 80 < held_out < 160
        final = client.finalize("py")
        assert final.fit_traces + final.calibration_traces == 600
        assert final.calibration_traces == held_out
        assert set(final.shrinkage) == {"h1", "h2"}
        assert final.scorer == "mechanism" and final.terms == 3 * 2 + 2 + 3  # site terms, one transition pair, local h1 h2 *

        normal = client.score("py", gaussian_traces(rng, 400), outputs=np.zeros(400, dtype=int))
        shifted = client.score("py", [Trace(sites=s, meta={"kind": "shifted"}) for s in gaussian_traces(rng, 20, 6.0)])
        assert all(r.flagged for r in shifted)
        assert all(0 < r.p <= 1 for r in normal)
        assert sum(r.flagged for r in normal) < 0.15 * 400
        assert len({r.event for r in normal + shifted}) == 420
        status = client.status()
        assert status["events"] == 420
        assert status["references"][0]["name"] == "py"


def test_errors_carry_code_and_message(daemon):
    rng = np.random.default_rng(1)
    client = Client(daemon.socket)
    with pytest.raises(MechWatchError) as e:
        client.score("absent", gaussian_traces(rng, 1))
    assert e.value.code == "unknown_reference"
    client.fit("r", gaussian_traces(rng, 200))
    with pytest.raises(MechWatchError) as e:
        client.score("r", gaussian_traces(rng, 1))
    assert e.value.code == "reference_not_active"
    assert client.finalize("r", alpha=0.05, scorer="mahalanobis").scorer == "mahalanobis"
    traces = gaussian_traces(rng, 3)
    traces[1] = {"h1": traces[1]["h1"][:4], "h2": traces[1]["h2"]}
    with pytest.raises(MechWatchError) as e:
        client.score("r", traces, ids=["a", "b", "c"])
    assert e.value.code == "wrong_width" and e.value.id == "b" and "expects 6" in e.value.message
    assert e.value.results[0] is not None and e.value.results[1] is None and e.value.results[2] is not None
    bad = {"h1": np.full(6, np.nan), "h2": np.zeros(3)}
    with pytest.raises(MechWatchError) as e:
        client.score("r", [bad])
    assert e.value.code == "non_finite_value"
    # The connection is still usable.
    assert client.score("r", gaussian_traces(rng, 1))[0].event > 0
    client.close()


def test_connection_errors_are_clear(tmp_path, daemon):
    with pytest.raises(MechWatchConnectionError, match="no daemon socket"):
        Client(str(tmp_path / "missing.sock")).status()
    client = Client(daemon.socket)
    assert client.status()["ok"]
    daemon.stop()
    with pytest.raises(MechWatchConnectionError):
        client.status()
    daemon.start()
    assert client.status()["ok"]  # reconnects after the daemon comes back


def test_the_same_arrays_fitted_from_two_processes_give_the_same_scores(tmp_path):
    """Issue 21: default ids hash the trace, not the process: two processes fitting the same arrays into
    two daemons store the same calibration split, and every score and flag agrees."""
    import subprocess
    import sys
    import textwrap
    from conftest import Daemon
    script = textwrap.dedent("""
        import sys, json, numpy as np
        from mechwatch import Client
        rng = np.random.default_rng(3)
        fit = {"h1": rng.normal(size=(1200, 6)), "h2": rng.normal(size=(1200, 4))}
        probe = {"h1": rng.normal(size=(300, 6)) * 1.3, "h2": rng.normal(size=(300, 4))}
        with Client(sys.argv[1]) as c:
            c.fit_arrays("r", fit)
            reply = c.finalize("r")
            scored = c.score_arrays("r", probe)
        print(json.dumps([reply.calibration_traces, [[r.score, r.p, r.flagged] for r in scored]]))
    """)
    outputs = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        d = Daemon(tmp_path / str(k)).start()
        try:
            run = subprocess.run([sys.executable, "-c", script, d.socket], capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
            outputs.append(run.stdout)
        finally:
            d.stop()
    assert outputs[0] == outputs[1]
