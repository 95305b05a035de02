"""The read-only Store (pandas DataFrames) and the HTML report, on stores written by a real daemon: one with a
reference fitted with outputs and scored with normal and shifted traffic, an empty one, and a version-1 store."""
import hashlib
import os
import pathlib
import re
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="the report extra is not installed: pip install 'mechwatch[report]'")
pytest.importorskip("matplotlib", reason="the report extra is not installed: pip install 'mechwatch[report]'")

from conftest import REPO  # noqa: E402
from mechwatch import Client, Trace  # noqa: E402
from mechwatch.report import build_report  # noqa: E402
from mechwatch.store import Store, term_layout  # noqa: E402

CLIENT_DIR = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ["P-values and scores against the calibration set", "Flag rate over time", "What drives the flags",
            "Most anomalous flagged events", "Per-site surprise over time"]
FIGURE = re.compile(r'<img class="figure" alt="[^"]*" src="data:image/png;base64,[A-Za-z0-9+/=]+">')


def mlp(rng, n, shift=0.0):
    """Three sites of a small tanh network and its predicted class; `shift` moves the first site."""
    w1 = np.linspace(-1, 1, 60).reshape(6, 10) * 0.7
    w2 = np.cos(np.arange(40)).reshape(10, 4)
    w3 = np.sin(np.arange(12)).reshape(4, 3)
    h1 = np.tanh(rng.normal(size=(n, 6)) @ w1)
    h1[:, :3] += shift
    h2 = np.tanh(h1 @ w2)
    logits = h2 @ w3 + 0.3 * rng.normal(size=(n, 3))
    return {"embed": h1, "mlp": h2, "head": logits}, logits.argmax(1)


@pytest.fixture
def populated(daemon):
    """A store with 'net' (fitted with outputs, scored: normal and shifted traffic), 'idle' (finalized, never
    scored) and 'pending' (still collecting)."""
    rng = np.random.default_rng(3)
    with Client(daemon.socket) as client:
        sites, outputs = mlp(rng, 1500)
        client.fit_arrays("net", sites, outputs=outputs)
        final = client.finalize("net", alpha=0.05)
        sites, outputs = mlp(rng, 300)
        normal = client.score_arrays("net", sites, outputs=outputs, meta={"kind": "normal"})
        sites, outputs = mlp(rng, 30, shift=1.5)
        traces = [Trace(sites={k: v[i] for k, v in sites.items()}, output=int(outputs[i]), id=f"shifted-{i}",
                        meta={"kind": "shifted"}) for i in range(30)]
        shifted = client.score("net", traces)
        idle_sites, idle_outputs = mlp(rng, 400)
        client.fit_arrays("idle", idle_sites, outputs=idle_outputs)
        client.finalize("idle")
        client.fit("pending", [{k: v[i] for k, v in idle_sites.items()} for i in range(20)])
    daemon.stop()  # the report also reads a live store; stopping makes the file final for the checksum below
    return daemon.database, final, normal, shifted


def test_store_frames_match_what_was_sent(populated):
    database, final, normal, shifted = populated
    with Store(database) as store:
        assert store.schema_version >= 4
        events = store.events()
        assert len(events) == len(normal) + len(shifted) == 330
        assert list(events.columns) == ["event", "reference", "id", "time", "score", "p", "flagged", "output", "scorer",
                                        "p_mahalanobis", "p_independence", "p_mechanism", "meta"]
        assert str(events["time"].dtype).startswith("datetime64") and str(events["time"].dt.tz) == "UTC"
        assert set(events["event"]) == {r.event for r in normal + shifted}
        by_event = events.set_index("event")
        for r in normal + shifted:
            assert by_event.loc[r.event, "flagged"] == r.flagged
            assert by_event.loc[r.event, "p"] == pytest.approx(r.p)
        assert (events["scorer"] == "mechanism").all() and events["p_mechanism"].between(0, 1).all()
        assert events["meta"].map(lambda m: m["kind"]).value_counts().to_dict() == {"normal": 300, "shifted": 30}
        assert list(events[events["meta"].map(lambda m: m["kind"]) == "shifted"]["id"]) == [f"shifted-{i}" for i in range(30)]
        assert events["output"].notna().all()

        flagged = store.events(reference="net", flagged=True)
        assert set(flagged["event"]) == {r.event for r in normal + shifted if r.flagged}
        assert sum(r.flagged for r in shifted) >= 25 and sum(r.flagged for r in normal) < 0.15 * 300
        assert len(store.events(flagged=False)) == 330 - len(flagged)
        assert store.events(since="2100-01-01").empty
        assert len(store.events(since=events["time"].min())) == 330
        assert store.events(reference="idle").empty

        terms = store.terms(reference="net")
        assert final.terms == 3 * 3 + 2 * 2 + 3 + 4  # site terms, two transitions, outputs, local per site and '*'
        assert (terms.groupby("event").size() == final.terms).all() and terms["event"].nunique() == 330
        layout = store.term_layout("net")
        assert list(zip(layout["kind"], layout["subject"])) == term_layout(["embed", "mlp", "head"], True, True, True)
        first = terms[terms["event"] == events["event"].iloc[0]]
        assert list(first["kind"]) == list(layout["kind"]) and list(first["subject"]) == list(layout["subject"])
        some = store.terms(event=flagged["event"].iloc[:2].tolist())
        assert len(some) == 2 * final.terms and some["flagged"].all()
        assert len(store.terms(event=int(flagged["event"].iloc[0]))) == final.terms

        sites = store.event_sites(reference="net")
        assert len(sites) == 330 * 3 and list(sites["site"].iloc[:3]) == ["embed", "mlp", "head"]

        refs = store.references().set_index("name")
        assert list(refs.index) == ["idle", "net", "pending"]
        net = refs.loc["net"]
        assert (net.state, net.scorer, net.combination, net.alpha) == ("active", "mechanism", "families", 0.05)
        assert net.fit_count == final.fit_traces and net.calibration_count == final.calibration_traces
        assert net.outputs and net.local_k == 1 and net.terms == final.terms and net.events == 330
        assert net.flagged == len(flagged) and net.sites == [("embed", 10), ("mlp", 4), ("head", 3)]
        assert refs.loc["pending", "state"] == "collecting" and pd.isna(refs.loc["pending", "finalized"])

        calibration = store.calibration("net")
        assert calibration.shape == (final.calibration_traces, final.terms)
        assert list(calibration["joint"].columns) == ["embed", "mlp", "head"]
        assert np.isfinite(calibration[("joint", "embed")]).all()
        assert store.calibration("pending").shape == (0, 0)
        assert len(store.calibration_scores("net")) == final.calibration_traces
        with pytest.raises(KeyError):
            store.calibration("absent")
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            store.query("DELETE FROM events")


def test_report_has_every_section_and_figure(populated, tmp_path):
    database, final, normal, shifted = populated
    before = hashlib.sha256(pathlib.Path(database).read_bytes()).hexdigest()
    out = tmp_path / "report.html"
    env = dict(os.environ, PYTHONPATH=str(CLIENT_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "mechwatch.report", "--database", database, "-o", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert hashlib.sha256(pathlib.Path(database).read_bytes()).hexdigest() == before  # read-only
    for section in SECTIONS:
        assert page.count(f"<h3>{section}</h3>") == 1, section
    assert len(FIGURE.findall(page)) == 4 == page.count("<img")  # all four figures of 'net', all embedded
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)  # nothing external
    assert "<link" not in page and "<script" not in page
    assert database in page and "330 stored" in page
    assert "No events scored against this reference" in page  # idle
    assert "still collecting" in page  # pending
    strongest = min((r for r in normal + shifted if r.flagged), key=lambda r: (r.p, -r.score))
    assert f"<td class='num'>{strongest.event}</td>" in page

    only_idle = build_report(database, reference="idle")
    assert "No events scored" in only_idle and "<img" not in only_idle and "id='ref-net'" not in only_idle
    future = build_report(database, reference="net", since="2100-01-01T00:00:00Z")
    assert "No events scored against this reference since 2100-01-01" in future and "<img" not in future
    bad = subprocess.run([sys.executable, "-m", "mechwatch.report", "--database", database, "--reference", "absent",
                          "-o", str(tmp_path / "x.html")], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "no reference named 'absent'" in bad.stderr and "net" in bad.stderr


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium (or chromium-browser) is not on PATH: "
                                                "apt-get install -y chromium to render the report")
def test_report_renders_in_headless_chromium(populated, tmp_path):
    from matplotlib import image

    database = populated[0]
    page = tmp_path / "report.html"
    page.write_text(build_report(database))
    shot = tmp_path / "report.png"
    run = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri()],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shot.exists(), run.stderr[-2000:]
    pixels = image.imread(str(shot))
    assert pixels.shape[:2] == (3000, 1200)
    rgb = (pixels[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    colours = np.unique(rgb[::7], axis=0)
    assert len(colours) > 200, f"only {len(colours)} distinct colours: a blank or unstyled page"
    background = np.all(rgb == rgb[-1], axis=1).mean()  # the page's own background, bottom-right
    assert background < 0.9
    # The header band (dark) and figure content (the figures' white plus coloured marks) both rendered.
    top = (pixels[:40, :, :3].mean(axis=2) < 0.3).mean()
    assert top > 0.5


def test_empty_store(daemon, tmp_path):
    daemon.stop()
    with Store(daemon.database) as store:
        assert store.references().empty and list(store.references().columns)[:3] == ["name", "id", "state"]
        events = store.events()
        assert events.empty and "p_mechanism" in events.columns
        assert store.terms().empty and store.event_sites().empty
    page = build_report(daemon.database)
    assert "No references" in page and "0 stored" in page and "<img" not in page
    assert "<html" in page and page.rstrip().endswith("</html>")


def test_version_1_store(tmp_path):
    """A store the daemon's first schema wrote: no terms, scorer or local columns; read, and reported."""
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));"
                     + (REPO / "migrations" / "001_initial.sql").read_text()
                     + "INSERT INTO schema_migrations (version, name) VALUES (1, '001_initial');")
    rng = np.random.default_rng(0)
    calibration = np.sort(rng.chisquare(5, 100))
    db.execute("INSERT INTO reference_models (id, name, state, alpha, calibration_fraction, finalized_at, fit_count, "
               "calibration_count, calibration_scores) VALUES (1, 'old', 'active', 0.05, 0.2, '2025-01-01T00:00:00.000Z', "
               "400, 100, ?)", (calibration.astype("<f8").tobytes(),))
    for position, (name, width) in enumerate([("a", 3), ("b", 2)]):
        db.execute("INSERT INTO reference_sites (reference_id, position, name, width) VALUES (1, ?, ?, ?)", (position, name, width))
    for i in range(60):
        score = rng.chisquare(5) + (25 if i % 10 == 0 else 0)
        p = (1 + (calibration >= score).sum()) / 101
        db.execute("INSERT INTO events (id, reference_id, client_id, received_at, output, score, p_value, flagged, meta) "
                   "VALUES (?, 1, ?, ?, NULL, ?, ?, ?, NULL)",
                   (i + 1, f"e{i}", f"2025-01-02T{i // 6:02d}:{i % 6 * 10:02d}:00.000Z", score, p, int(p <= 0.05)))
        for position in range(2):
            db.execute("INSERT INTO event_sites VALUES (?, ?, ?, ?, ?)", (i + 1, position, score / 2, score, score + 1))
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.schema_version == 1
        events = store.events()
        assert len(events) == 60 and events["scorer"].isna().all() and events["p_mechanism"].isna().all()
        assert events["meta"].isna().all() and events["output"].isna().all()
        assert store.terms().empty
        ref = store.references().iloc[0]
        assert (ref["scorer"], ref["combination"], ref["terms"]) == ("mahalanobis", "fisher", 0) and pd.isna(ref["local_k"])
        assert store.calibration("old").shape[0] == 0
        assert len(store.calibration_scores("old")) == 100
    page = build_report(path)
    assert all(f"<h3>{s}</h3>" in page for s in SECTIONS)
    assert "keeps no per-term values" in page and len(FIGURE.findall(page)) == 3
