"""Read a MechWatch store (the daemon's SQLite database) into pandas DataFrames, for notebooks and reports.

    from mechwatch.store import Store
    store = Store("mechwatch.db")                 # opened read-only; the daemon may keep writing
    events = store.events(reference="mlp", since="2026-11-24")
    terms = store.terms(reference="mlp", event=events[events.flagged].event)

The store is opened with SQLite's `mode=ro`: nothing here ever writes to it. Stores of every schema version
are read; what an older version lacks comes back empty (no term table in version 1) or as missing values
(`scorer`, `p_mechanism`, ... of version-1 events; `combination`, `local_k` before version 4).

Needs pandas (`pip install 'mechwatch[report]'`); the rest of the package does not.
"""
import datetime as _dt
import json
import os
import sqlite3
import urllib.parse
from typing import Iterable, List, Optional, Tuple, Union

import numpy as np

try:
    import pandas as pd
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("mechwatch.store needs pandas: pip install 'mechwatch[report]' (or pip install pandas)") from e

__all__ = ["Store", "term_layout"]

Since = Union[None, str, _dt.datetime, "pd.Timestamp"]

EVENT_COLUMNS = ["event", "reference", "id", "time", "score", "p", "flagged", "output", "scorer",
                 "p_mahalanobis", "p_independence", "p_mechanism", "meta"]
TERM_COLUMNS = ["event", "reference", "time", "flagged", "term", "kind", "subject", "value", "p"]
SITE_COLUMNS = ["event", "reference", "time", "flagged", "position", "site", "mahalanobis", "joint_surprise",
                "independence_surprise"]
REFERENCE_COLUMNS = ["name", "id", "state", "alpha", "scorer", "combination", "fit_count", "calibration_count",
                     "created", "finalized", "local_k", "outputs", "sites", "terms", "events", "flagged"]
#: Term kinds whose anomalous side is the lower tail (explained nats), as in the daemon's TermLayout.
LOWER_TAIL_KINDS = ("interaction", "dependence")


def term_layout(sites: List[str], transitions: bool = True, outputs: bool = False, local: bool = False,
                residual: Iterable[str] = ()) -> List[Tuple[str, str]]:
    """The daemon's term order (`TermLayout`) as `(kind, subject)` pairs: per site independence, joint,
    interaction; per consecutive pair transition, dependence (subject `a→b`); per site output if the
    reference has outputs; per site local, then local `*`, if it has a local sample; residual per site
    modelled in a principal subspace (`residual`, in site order; schema version 7)."""
    terms = [(kind, s) for s in sites for kind in ("independence", "joint", "interaction")]
    if transitions:
        terms += [(kind, f"{a}→{b}") for a, b in zip(sites, sites[1:]) for kind in ("transition", "dependence")]
    if outputs:
        terms += [("output", s) for s in sites]
    if local:
        terms += [("local", s) for s in list(sites) + ["*"]]
    terms += [("residual", s) for s in residual]
    return terms


def _time_text(since: Since) -> Optional[str]:
    """`since` as the store's time text ('2026-11-24T22:10:58.123Z'), so it compares as text; naive = UTC."""
    if since is None:
        return None
    t = pd.Timestamp(since)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _times(values) -> "pd.Series":
    return pd.to_datetime(pd.Series(values, dtype="object"), utc=True, format="ISO8601")


def _meta(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class Store:
    """A read-only view of a MechWatch database. `path`: the database file (`mechwatch.db`)."""

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no MechWatch database at {self.path}")
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._db.execute("PRAGMA query_only = 1")
        self.schema_version = self._schema_version()
        self._columns = {t: self._table_columns(t) for t in ("events", "reference_models", "reference_sites")}
        self._tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}

    # -- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _schema_version(self) -> int:
        try:
            row = self._db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        except sqlite3.OperationalError as e:
            raise ValueError(f"{self.path} is not a MechWatch database (no schema_migrations: {e})") from None
        return int(row[0] or 0)

    def _table_columns(self, table: str) -> set:
        return {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}

    def _has(self, table: str, column: Optional[str] = None) -> bool:
        if column is None:
            return table in self._tables
        return column in self._columns.get(table, set())

    def query(self, sql: str, params: Iterable = ()) -> "pd.DataFrame":
        """Any read-only SQL (the store's tables and views, see the README's "The store") as a DataFrame."""
        cursor = self._db.execute(sql, tuple(params))
        names = [d[0] for d in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=names)

    @staticmethod
    def _filters(reference, since, flagged=None, event=None, alias="e"):
        conditions, params = [], []
        if reference is not None:
            conditions.append("r.name = ?")
            params.append(reference)
        if since is not None:
            conditions.append(f"{alias}.received_at >= ?")
            params.append(_time_text(since))
        if flagged is not None:
            conditions.append(f"{alias}.flagged = ?")
            params.append(1 if flagged else 0)
        if event is not None:
            ids = [int(event)] if np.ndim(event) == 0 else [int(x) for x in event]
            if not ids:
                conditions.append("0")
            else:
                conditions.append(f"{alias}.id IN ({','.join('?' * len(ids))})")
                params += ids
        return (" WHERE " + " AND ".join(conditions)) if conditions else "", params

    # -- events ------------------------------------------------------------------------------------

    def events(self, reference: Optional[str] = None, since: Since = None, flagged: Optional[bool] = None) -> "pd.DataFrame":
        """Scored events, oldest first: event (number), reference, id (the client's), time (UTC), score, p,
        flagged, output, scorer, p_mahalanobis, p_independence, p_mechanism (missing for version-1
        events), meta (the client's meta object, parsed). `since`: ISO time or datetime (naive = UTC)."""
        optional = [f"e.{c}" if self._has("events", c) else f"NULL AS {c}"
                    for c in ("scorer", "p_mahalanobis", "p_independence", "p_mechanism")]
        where, params = self._filters(reference, since, flagged)
        rows = self._db.execute(f"""
            SELECT e.id, r.name, e.client_id, e.received_at, e.score, e.p_value, e.flagged, e.output,
                   {', '.join(optional)}, e.meta
            FROM events e JOIN reference_models r ON r.id = e.reference_id{where} ORDER BY e.id""", params).fetchall()
        frame = pd.DataFrame(rows, columns=EVENT_COLUMNS)
        frame["event"] = frame["event"].astype("int64")
        frame["time"] = _times(frame["time"])
        for c in ("score", "p", "p_mahalanobis", "p_independence", "p_mechanism"):
            frame[c] = frame[c].astype("float64")
        frame["flagged"] = frame["flagged"].astype(bool)
        frame["output"] = frame["output"].astype("Int64")
        frame["meta"] = [_meta(m) for m in frame["meta"]]
        return frame

    def terms(self, reference: Optional[str] = None, since: Since = None, event=None) -> "pd.DataFrame":
        """Every term of each event's surprise account (`event_terms`), one row per event and term:
        event, reference, time, flagged, term (position in the reference's term order), kind, subject (site
        or `a→b`), value (nats; missing for an output term that fell back), p (its tail probability).
        `event`: one event number or several. Empty for a version-1 store (no terms)."""
        if not self._has("event_terms"):
            return self._typed_terms(pd.DataFrame([], columns=TERM_COLUMNS))
        where, params = self._filters(reference, since, event=event)
        rows = self._db.execute(f"""
            SELECT t.event_id, r.name, e.received_at, e.flagged, t.term, t.kind, t.subject, t.value, t.p
            FROM event_terms t JOIN events e ON e.id = t.event_id JOIN reference_models r ON r.id = e.reference_id
            {where} ORDER BY t.event_id, t.term""", params).fetchall()
        return self._typed_terms(pd.DataFrame(rows, columns=TERM_COLUMNS))

    @staticmethod
    def _typed_terms(frame):
        frame["event"] = frame["event"].astype("int64")
        frame["time"] = _times(frame["time"])
        frame["flagged"] = frame["flagged"].astype(bool)
        frame["term"] = frame["term"].astype("int64")
        frame["value"] = frame["value"].astype("float64")
        frame["p"] = frame["p"].astype("float64")
        return frame

    def event_sites(self, reference: Optional[str] = None, since: Since = None, event=None) -> "pd.DataFrame":
        """Per event and site (`event_sites`, every schema version): event, reference, time, flagged,
        position, site, mahalanobis (squared distance), joint_surprise, independence_surprise (nats)."""
        where, params = self._filters(reference, since, event=event)
        rows = self._db.execute(f"""
            SELECT es.event_id, r.name, e.received_at, e.flagged, es.position, s.name, es.mahalanobis,
                   es.joint_surprise, es.independence_surprise
            FROM event_sites es JOIN events e ON e.id = es.event_id JOIN reference_models r ON r.id = e.reference_id
            JOIN reference_sites s ON s.reference_id = e.reference_id AND s.position = es.position
            {where} ORDER BY es.event_id, es.position""", params).fetchall()
        frame = pd.DataFrame(rows, columns=SITE_COLUMNS)
        frame["event"] = frame["event"].astype("int64")
        frame["time"] = _times(frame["time"])
        frame["flagged"] = frame["flagged"].astype(bool)
        frame["position"] = frame["position"].astype("int64")
        for c in ("mahalanobis", "joint_surprise", "independence_surprise"):
            frame[c] = frame[c].astype("float64")
        return frame

    # -- references --------------------------------------------------------------------------------

    def _reference_row(self, name: str):
        row = self._db.execute("SELECT id FROM reference_models WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KeyError(f"no reference named {name!r} in {self.path}")
        return int(row[0])

    def _sites(self, reference_id: int) -> List[Tuple[str, int]]:
        return [(n, int(w)) for n, w in self._db.execute(
            "SELECT name, width FROM reference_sites WHERE reference_id = ? ORDER BY position", (reference_id,))]

    def _layout_flags(self, reference_id: int, sites) -> Tuple[bool, bool, bool, List[str]]:
        """(transitions, outputs, local, residual sites) of a reference's term layout, as the daemon derives them."""
        transitions = outputs = local = False
        residual = []
        if self._has("reference_sites", "rank"):
            residual = [name for (name,) in self._db.execute(
                "SELECT name FROM reference_sites WHERE reference_id = ? AND rank IS NOT NULL ORDER BY position", (reference_id,))]
        if self._has("reference_transitions"):
            transitions = self._db.execute("SELECT count(*) FROM reference_transitions WHERE reference_id = ?",
                                           (reference_id,)).fetchone()[0] > 0
        if self._has("reference_sites", "output_covariance"):
            outputs = self._db.execute("""SELECT output_covariance IS NOT NULL FROM reference_sites
                                          WHERE reference_id = ? ORDER BY position LIMIT 1""", (reference_id,)).fetchone()
            outputs = bool(outputs and outputs[0])
        if not outputs and self._has("reference_outputs"):
            outputs = self._db.execute("SELECT count(*) FROM reference_outputs WHERE reference_id = ?",
                                       (reference_id,)).fetchone()[0] > 0
        if self._has("reference_models", "local_k"):
            local = self._db.execute("SELECT local_k IS NOT NULL FROM reference_models WHERE id = ?",
                                     (reference_id,)).fetchone()[0] == 1
        return transitions, outputs, local, residual

    def term_layout(self, reference: str) -> "pd.DataFrame":
        """The reference's term order: term (position), kind, subject. Empty for a collecting reference or
        one finalized by schema version 1 (whose terms are recomputed by the daemon, not stored)."""
        rid = self._reference_row(reference)
        state = self._db.execute("SELECT state FROM reference_models WHERE id = ?", (rid,)).fetchone()[0]
        sites = self._sites(rid)
        if state != "active" or self.schema_version < 2:
            return pd.DataFrame({"term": pd.Series([], dtype="int64"), "kind": [], "subject": []})
        terms = term_layout([s for s, _ in sites], *self._layout_flags(rid, sites))
        return pd.DataFrame({"term": np.arange(len(terms), dtype="int64"), "kind": [k for k, _ in terms],
                             "subject": [s for _, s in terms]})

    def references(self) -> "pd.DataFrame":
        """One row per reference, by name: name, id, state, alpha, scorer, combination, fit_count,
        calibration_count, created, finalized (UTC), local_k (missing without a local sample), outputs (fitted
        with outputs), sites (list of (name, width)), terms (its term count; 0 unless active), events and
        flagged (stored events)."""
        optional = [f"m.{c}" if self._has("reference_models", c) else f"{default} AS {c}"
                    for c, default in (("scorer", "'mahalanobis'"), ("combination", "'fisher'"), ("local_k", "NULL"))]
        rows = self._db.execute(f"""
            SELECT m.name, m.id, m.state, m.alpha, {', '.join(optional)}, m.fit_count, m.calibration_count,
                   m.created_at, m.finalized_at,
                   (SELECT count(*) FROM events e WHERE e.reference_id = m.id),
                   (SELECT count(*) FROM events e WHERE e.reference_id = m.id AND e.flagged = 1)
            FROM reference_models m ORDER BY m.name""").fetchall()
        records = []
        for (name, rid, state, alpha, scorer, combination, local_k, fit, cal, created, finalized, events, flagged) in rows:
            sites = self._sites(rid)
            _, outputs, _, _ = self._layout_flags(rid, sites)
            terms = len(self.term_layout(name)) if state == "active" else 0
            records.append([name, rid, state, alpha, scorer, combination, fit, cal, created, finalized, local_k,
                            outputs, sites, terms, events, flagged])
        frame = pd.DataFrame(records, columns=REFERENCE_COLUMNS)
        frame["created"] = _times(frame["created"])
        frame["finalized"] = _times(frame["finalized"])
        frame["local_k"] = frame["local_k"].astype("Int64")
        for c in ("id", "fit_count", "calibration_count", "terms", "events", "flagged"):
            frame[c] = frame[c].astype("int64")
        frame["alpha"] = frame["alpha"].astype("float64")
        frame["outputs"] = frame["outputs"].astype(bool)
        return frame

    def calibration(self, reference: str) -> "pd.DataFrame":
        """The calibration traces' term values (`reference_models.calibration_terms`): one row per calibration
        trace, one column per term in the reference's term order, columns a MultiIndex (kind, subject)
        (`cal["joint"]` is every site's joint term). NaN: no value (an output term that fell back). No rows
        for a collecting reference or one finalized by schema version 1."""
        layout = self.term_layout(reference)
        columns = pd.MultiIndex.from_arrays([layout["kind"].tolist(), layout["subject"].tolist()], names=["kind", "subject"])
        blob = None
        if self._has("reference_models", "calibration_terms"):
            blob = self._db.execute("SELECT calibration_terms FROM reference_models WHERE name = ?", (reference,)).fetchone()[0]
        if blob is None or len(layout) == 0:
            return pd.DataFrame(np.zeros((0, len(layout))), columns=columns)
        flat = np.frombuffer(blob, dtype="<f8")
        if flat.size % len(layout):
            raise ValueError(f"reference {reference!r}: calibration_terms holds {flat.size} values, not a multiple of "
                             f"its {len(layout)} terms")
        return pd.DataFrame(flat.reshape(-1, len(layout)).astype("float64"), columns=columns)

    def calibration_scores(self, reference: str) -> "pd.DataFrame":
        """The calibration traces' Mahalanobis sums (`calibration_scores`) and, from schema version 2, their
        independence statistics (`calibration_independence`), each ascending (so not row-aligned)."""
        rid = self._reference_row(reference)
        independence = "calibration_independence" if self._has("reference_models", "calibration_independence") else "NULL"
        scores, indep = self._db.execute(f"SELECT calibration_scores, {independence} FROM reference_models WHERE id = ?",
                                         (rid,)).fetchone()
        m = np.frombuffer(scores, dtype="<f8") if scores is not None else np.zeros(0)
        i = np.frombuffer(indep, dtype="<f8") if indep is not None else np.full(len(m), np.nan)
        if len(i) != len(m):
            i = np.resize(np.append(i, np.full(max(0, len(m) - len(i)), np.nan)), len(m))
        return pd.DataFrame({"mahalanobis": m.astype("float64"), "independence": i.astype("float64")})
