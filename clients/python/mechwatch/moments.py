"""Moment shards in numpy: what MechWatch's streaming fit accumulates, computed from arrays of traces
wherever they are (a Dask worker, a Spark executor, a notebook), merged exactly, and written in the moment
shard file format that `mechwatch reference import` (the `import` op, `Client.import_reference`) takes.

A shard holds, for the fit traces of one reference: per site the count, mean, co-moment
`Σ(x−μ)(x−μ)ᵀ`, `Σ‖x−μ‖²(x−μ)` and `Σ‖x−μ‖⁴` (for Ledoit–Wolf shrinkage); per consecutive pair of sites the
cross co-moment; per output the count and mean and the pooled within-output co-moment; a sample of fit
traces chosen by a hash of their ids (the local terms' sample); and the held-out calibration traces, chosen
by another hash of the ids exactly as the daemon chooses them. Shards of disjoint traces merge by the
pairwise formulas of Chan, Golub & LeVeque (1979), so any engine can map over partitions and tree-reduce::

    shards = [MomentShard.from_arrays("mlp", part_sites, ids=part_ids) for part_sites, part_ids in parts]
    MomentShard.merge_all(shards).write("mlp.shard")
    Client().import_reference("mlp.shard")

The file format is documented in the README ("Moment shard files") and in the daemon's
`MomentShardFile.swift`; both sides compute the same SHA-256 checksum over the file's values.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

FORMAT = 1
MAXIMUM_COUNT = 1 << 53  # as the daemon: counts stay exact in a float64
_MASK = (1 << 64) - 1
SPLIT_SEED = 0xCBF29CE484222325
SAMPLE_SEED = SPLIT_SEED ^ 0x9E3779B97F4A7C15

SCHEMA = """
CREATE TABLE moment_shard (format INTEGER NOT NULL, reference TEXT NOT NULL, calibration_fraction REAL NOT NULL,
    alpha REAL NOT NULL, fit_count INTEGER NOT NULL, calibration_count INTEGER NOT NULL, sample_capacity INTEGER NOT NULL,
    written_at TEXT NOT NULL, checksum TEXT NOT NULL);
CREATE TABLE shard_sites (position INTEGER PRIMARY KEY, name TEXT NOT NULL, width INTEGER NOT NULL, count INTEGER NOT NULL,
    mean BLOB NOT NULL, comoment BLOB NOT NULL, third BLOB NOT NULL, fourth REAL NOT NULL, labelled INTEGER NOT NULL,
    within BLOB NOT NULL);
CREATE TABLE shard_transitions (position INTEGER PRIMARY KEY, comoment BLOB NOT NULL);
CREATE TABLE shard_outputs (position INTEGER NOT NULL, output INTEGER NOT NULL, count INTEGER NOT NULL, mean BLOB NOT NULL,
    PRIMARY KEY (position, output));
CREATE TABLE shard_sample (row INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, output INTEGER, vector BLOB NOT NULL);
CREATE TABLE shard_calibration (row INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, output INTEGER, vector BLOB NOT NULL);
"""
_TABLES = [("shard_sites", "position"), ("shard_transitions", "position"), ("shard_outputs", "position, output"),
           ("shard_sample", "row"), ("shard_calibration", "row")]


class ShardError(ValueError):
    """A moment shard file that cannot be read, or shards that do not belong together."""


def trace_hash(trace_id: str, seed: int) -> int:
    """The daemon's 64-bit hash of a trace id: FNV-1a over its UTF-8 bytes from `seed`, then SplitMix64's finaliser."""
    h = seed
    for b in trace_id.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & _MASK
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


def holds_out(trace_id: str, fraction: float) -> bool:
    """Whether the daemon holds the trace with this id out for calibration at `fraction`."""
    return (trace_hash(trace_id, SPLIT_SEED) >> 11) / float(1 << 53) < fraction


@dataclass
class SampledTrace:
    """One trace of a shard's sample: its key (`trace_hash` with the sample seed), id, output and values."""
    key: int
    trace_id: str
    output: Optional[int]
    vector: np.ndarray  # float32, the sites concatenated in site order

    def order(self):
        return (self.key, tuple(self.vector.tolist()), -(1 << 63) if self.output is None else self.output)


def _bottom(items: List[SampledTrace], capacity: int) -> List[SampledTrace]:
    """The `capacity` items of lowest key, ties (repeated ids) broken by values then output, as the daemon does."""
    items = sorted(items, key=lambda t: t.key)
    out: List[SampledTrace] = []
    i = 0
    while i < len(items) and len(out) < capacity:
        j = i + 1
        while j < len(items) and items[j].key == items[i].key:
            j += 1
        out.extend(sorted(items[i:j], key=SampledTrace.order) if j - i > 1 else items[i:j])
        i = j
    return out[:capacity]


@dataclass
class MomentShard:
    """The moments of one reference's fit traces (see the module's doc), with its calibration traces and sample."""
    name: str
    sites: List[Tuple[str, int]]
    calibration_fraction: float
    alpha: float
    count: int
    means: List[np.ndarray]
    comoments: List[np.ndarray]  # symmetric (width, width)
    thirds: List[np.ndarray]
    fourths: List[float]
    crosses: List[np.ndarray]  # (width of site k+1, width of site k)
    labelled: int
    within: List[np.ndarray]
    output_counts: Dict[int, int]
    output_means: Dict[int, List[np.ndarray]]
    sample_capacity: int
    sample: List[SampledTrace] = field(default_factory=list)
    calibration: List[Tuple[str, Optional[int], np.ndarray]] = field(default_factory=list)

    @classmethod
    def from_arrays(cls, name: str, sites: Mapping[str, np.ndarray], ids: Sequence[str],
                    outputs: Optional[Sequence[Optional[int]]] = None, calibration_fraction: float = 0.2,
                    alpha: float = 0.01, sample_size: int = 5000) -> "MomentShard":
        """The shard of the traces given as arrays: `sites` maps each site name (in the reference's site
        order) to an `(n, width)` array, row i of every array is trace `ids[i]` with output `outputs[i]`.
        The values are taken as float32, as the daemon stores them. `calibration_fraction` and `alpha` as the
        daemon's config (defaults 0.2 and 0.01); `sample_size` traces are kept for the local terms."""
        if not 0 < calibration_fraction < 1:
            raise ShardError(f"calibration_fraction: expected a number in (0, 1), got {calibration_fraction}")
        if not 0 < alpha < 1:
            raise ShardError(f"alpha: expected a number in (0, 1), got {alpha}")
        if not 0 <= sample_size <= 1 << 31:
            raise ShardError(f"sample_size: expected a number of traces from 0 to 2**31, got {sample_size}")
        if not sites:
            raise ShardError("sites: expected at least one site")
        names = list(sites)
        arrays = [np.asarray(sites[s], dtype=np.float32) for s in names]
        n = len(ids)
        for s, a in zip(names, arrays):
            if a.ndim != 2 or a.shape[0] != n or a.shape[1] == 0:
                raise ShardError(f"site {s!r}: expected an array of shape ({n}, width ≥ 1), got {a.shape}")
            if not np.isfinite(a).all():
                raise ShardError(f"site {s!r}: values must be finite in float32")
        for what, text in [("site name", s) for s in names] + [("trace id", str(i)) for i in ids]:
            b = text.encode("utf-8")
            if not 1 <= len(b) <= 256 or b"\0" in b:
                raise ShardError(f"{what} {text[:40]!r}: expected 1–256 bytes of text without NUL, as the daemon takes them")
        outputs = list(outputs) if outputs is not None else [None] * n
        if len(outputs) != n:
            raise ShardError(f"outputs: expected {n} values, got {len(outputs)}")
        outputs = [None if o is None else int(o) for o in outputs]
        held = np.array([holds_out(str(i), calibration_fraction) for i in ids], dtype=bool)
        fit = np.flatnonzero(~held)
        flat = np.concatenate(arrays, axis=1) if arrays else np.zeros((n, 0), np.float32)
        calibration = [(str(ids[j]), outputs[j], flat[j].copy()) for j in np.flatnonzero(held)]
        sample = _bottom([SampledTrace(trace_hash(str(ids[j]), SAMPLE_SEED), str(ids[j]), outputs[j], flat[j].copy())
                          for j in fit], sample_size)
        xs = [a[fit].astype(np.float64) for a in arrays]
        count = len(fit)
        means = [x.mean(axis=0) if count else np.zeros(x.shape[1]) for x in xs]
        centred = [x - m for x, m in zip(xs, means)]
        comoments = [d.T @ d for d in centred]
        norms = [np.einsum("ij,ij->i", d, d) for d in centred]
        thirds = [q @ d for q, d in zip(norms, centred)]
        fourths = [float(q @ q) for q in norms]
        crosses = [centred[k + 1].T @ centred[k] for k in range(len(xs) - 1)]
        labels = np.array([outputs[j] if outputs[j] is not None else -1 for j in fit])
        has = np.array([outputs[j] is not None for j in fit], dtype=bool)
        output_counts, output_means = {}, {}
        within = [np.zeros((x.shape[1], x.shape[1])) for x in xs]
        for label in sorted(set(labels[has].tolist())):
            rows = np.flatnonzero(has & (labels == label))
            output_counts[label] = len(rows)
            output_means[label] = [x[rows].mean(axis=0) for x in xs]
            for s, x in enumerate(xs):
                d = x[rows] - output_means[label][s]
                within[s] += d.T @ d
        return cls(name=name, sites=[(s, a.shape[1]) for s, a in zip(names, arrays)],
                   calibration_fraction=float(calibration_fraction), alpha=float(alpha), count=count, means=means,
                   comoments=comoments, thirds=thirds, fourths=fourths, crosses=crosses, labelled=int(has.sum()),
                   within=within, output_counts=output_counts, output_means=output_means, sample_capacity=int(sample_size),
                   sample=sample, calibration=calibration)

    def merge(self, other: "MomentShard") -> "MomentShard":
        """The shard of both shards' traces (disjoint traces of one reference: a calibration or sampled trace
        with the same id and values in both is refused): Chan et al.'s pairwise formulas, the third and
        fourth moments carried to the merged mean first. The sample keeps the smaller capacity."""
        if self.sites != other.sites or self.calibration_fraction != other.calibration_fraction:
            raise ShardError(f"shard of {other.name!r} differs from {self.name!r} in its sites, widths or calibration fraction; only shards of one reference merge")
        if self.count + other.count > MAXIMUM_COUNT:
            raise ShardError(f"the merged shard would count more than {MAXIMUM_COUNT} traces")
        mine = {(i, v.tobytes()) for i, _, v in self.calibration} | {(t.trace_id, t.vector.tobytes()) for t in self.sample}
        twice = next((i for i, _, v in other.calibration if (i, v.tobytes()) in mine), None) or \
            next((t.trace_id for t in other.sample if (t.trace_id, t.vector.tobytes()) in mine), None)
        if twice is not None:
            raise ShardError(f"trace {twice!r} (same id and values) is in both shards; shards must hold disjoint traces "
                             "(a shard merged twice would count its traces twice)")
        n1, n2 = self.count, other.count
        if n1 == 0 or n2 == 0:
            base = other if n1 == 0 else self
            means, comoments, thirds, fourths, crosses = base.means, base.comoments, base.thirds, base.fourths, base.crosses
        else:
            n = n1 + n2
            deltas = [m2 - m1 for m1, m2 in zip(self.means, other.means)]
            means = [m1 + d * (n2 / n) for m1, d in zip(self.means, deltas)]
            comoments = [c1 + c2 + (n1 * n2 / n) * np.outer(d, d) for c1, c2, d in zip(self.comoments, other.comoments, deltas)]
            thirds, fourths = [], []
            for s, mean in enumerate(means):
                t, f = 0, 0.0
                for shard, k in ((self, n1), (other, n2)):
                    tk, fk = _about(shard.comoments[s], shard.thirds[s], shard.fourths[s], k, shard.means[s] - mean)
                    t, f = t + tk, f + fk
                thirds.append(t)
                fourths.append(f)
            crosses = [c1 + c2 + (n1 * n2 / n) * np.outer(deltas[k + 1], deltas[k])
                       for k, (c1, c2) in enumerate(zip(self.crosses, other.crosses))]
        within = [w1 + w2 for w1, w2 in zip(self.within, other.within)]
        output_counts, output_means = dict(self.output_counts), {k: list(v) for k, v in self.output_means.items()}
        for label in sorted(other.output_counts):
            k2, m2 = other.output_counts[label], other.output_means[label]
            k1 = output_counts.get(label, 0)
            if k1 == 0:
                output_counts[label], output_means[label] = k2, list(m2)
                continue
            k = k1 + k2
            for s in range(len(self.sites)):
                d = m2[s] - output_means[label][s]
                within[s] = within[s] + (k1 * k2 / k) * np.outer(d, d)
                output_means[label][s] = output_means[label][s] + d * (k2 / k)
            output_counts[label] = k
        capacity = min(self.sample_capacity, other.sample_capacity)
        return MomentShard(name=self.name, sites=list(self.sites), calibration_fraction=self.calibration_fraction,
                           alpha=self.alpha, count=n1 + n2, means=means, comoments=comoments, thirds=thirds,
                           fourths=fourths, crosses=crosses, labelled=self.labelled + other.labelled, within=within,
                           output_counts=output_counts, output_means=output_means, sample_capacity=capacity,
                           sample=_bottom(self.sample + other.sample, capacity),
                           calibration=self.calibration + other.calibration)

    @staticmethod
    def merge_all(shards: Sequence["MomentShard"]) -> "MomentShard":
        """The shards merged pairwise, as a balanced tree (calibration traces in the shards' order)."""
        shards = list(shards)
        if not shards:
            raise ShardError("no shards to merge")
        while len(shards) > 1:
            shards = [shards[i].merge(shards[i + 1]) if i + 1 < len(shards) else shards[i] for i in range(0, len(shards), 2)]
        return shards[0]

    def write(self, path: str) -> None:
        """Writes the shard to a new moment shard file at `path` (which must not exist)."""
        if os.path.exists(path):
            raise ShardError(f"{path!r} exists; a moment shard file is always written new")
        db = sqlite3.connect(path)
        try:
            with db:
                db.executescript(SCHEMA)
                for s, (site, width) in enumerate(self.sites):
                    packed = np.triu_indices(width)
                    db.execute("INSERT INTO shard_sites VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (s, site, width, self.count, _f64(self.means[s]), _f64(self.comoments[s][packed]),
                                _f64(self.thirds[s]), float(self.fourths[s]), self.labelled, _f64(self.within[s][packed])))
                    for label in sorted(self.output_counts):
                        db.execute("INSERT INTO shard_outputs VALUES (?, ?, ?, ?)",
                                   (s, label, self.output_counts[label], _f64(self.output_means[label][s])))
                for k, c in enumerate(self.crosses):
                    db.execute("INSERT INTO shard_transitions VALUES (?, ?)", (k, _f64(c.ravel(order="F"))))
                for row, t in enumerate(self.sample):
                    db.execute("INSERT INTO shard_sample VALUES (?, ?, ?, ?)", (row, t.trace_id, t.output, _f32(t.vector)))
                for row, (trace_id, output, vector) in enumerate(self.calibration):
                    db.execute("INSERT INTO shard_calibration VALUES (?, ?, ?, ?)", (row, trace_id, output, _f32(vector)))
                db.execute("INSERT INTO moment_shard VALUES (?, ?, ?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), '')",
                           (FORMAT, self.name, self.calibration_fraction, self.alpha, self.count, len(self.calibration),
                            self.sample_capacity))
                db.execute("UPDATE moment_shard SET checksum = ?", (checksum(db),))
        except BaseException:
            db.close()
            os.unlink(path)
            raise
        db.close()

    @classmethod
    def read(cls, path: str) -> "MomentShard":
        """Reads and verifies (format, checksum) the moment shard file at `path`."""
        if not os.path.exists(path):
            raise ShardError(f"no file at {path!r}")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            try:
                header = db.execute("SELECT format, reference, calibration_fraction, alpha, fit_count, calibration_count, "
                                    "sample_capacity, checksum FROM moment_shard").fetchone()
            except sqlite3.DatabaseError as error:
                raise ShardError(f"{path!r} is not a moment shard file ({error})") from None
            if header is None:
                raise ShardError(f"{path!r}: table moment_shard has no row")
            fmt, name, fraction, alpha, count, _, capacity, recorded = header
            if fmt != FORMAT:
                raise ShardError(f"{path!r}: moment shard format {fmt}; this client reads format {FORMAT}")
            actual = checksum(db)
            if actual != recorded:
                raise ShardError(f"{path!r} is damaged: the checksum of its moments is {actual}, the file records {recorded}")
            sites, means, comoments, thirds, fourths, within, labelled = [], [], [], [], [], [], 0
            for _, site, width, _, mean, comoment, third, fourth, labelled, w in db.execute(
                    "SELECT * FROM shard_sites ORDER BY position"):
                sites.append((site, width))
                means.append(_from_f64(mean))
                comoments.append(_symmetric(_from_f64(comoment), width))
                thirds.append(_from_f64(third))
                fourths.append(fourth)
                within.append(_symmetric(_from_f64(w), width))
            crosses = [_from_f64(c).reshape(sites[k][1], sites[k + 1][1]).T
                       for k, c in db.execute("SELECT position, comoment FROM shard_transitions ORDER BY position")]
            output_counts, output_means = {}, {}
            for s, label, n, mean in db.execute("SELECT * FROM shard_outputs ORDER BY position, output"):
                output_counts[label] = n
                output_means.setdefault(label, []).append(_from_f64(mean))
            sample = [SampledTrace(trace_hash(i, SAMPLE_SEED), i, o, np.frombuffer(v, "<f4").copy())
                      for _, i, o, v in db.execute("SELECT * FROM shard_sample ORDER BY row")]
            calibration = [(i, o, np.frombuffer(v, "<f4").copy())
                           for _, i, o, v in db.execute("SELECT * FROM shard_calibration ORDER BY row")]
        finally:
            db.close()
        return cls(name=name, sites=sites, calibration_fraction=fraction, alpha=alpha, count=count, means=means,
                   comoments=comoments, thirds=thirds, fourths=fourths, crosses=crosses, labelled=labelled,
                   within=within, output_counts=output_counts, output_means=output_means, sample_capacity=capacity,
                   sample=sample, calibration=calibration)


def _about(comoment, third, fourth, n, e):
    """A part's `Σ‖x−c‖²(x−c)` and `Σ‖x−c‖⁴` about `c = μ − e`, from its moments about its mean `μ`
    (with `a = x − μ`, `Σa = 0`): `T + e·tr C + 2Ce + n‖e‖²e` and `F + 4eᵀCe + n‖e‖⁴ + 4eᵀT + 2‖e‖² tr C`."""
    ce, ee, trace = comoment @ e, float(e @ e), float(np.trace(comoment))
    return (third + e * trace + 2 * ce + n * ee * e,
            fourth + 4 * float(e @ ce) + n * ee * ee + 4 * float(e @ third) + 2 * ee * trace)


def checksum(db: sqlite3.Connection) -> str:
    """The SHA-256 (hex) of a shard file's header values and rows, as the daemon computes it."""
    h = hashlib.sha256()
    for row in db.execute("SELECT format, reference, calibration_fraction, alpha, fit_count, calibration_count, "
                          "sample_capacity FROM moment_shard"):
        _hash_row(h, row)
    for table, order in _TABLES:
        h.update(table.encode() + b"\0")
        for row in db.execute(f"SELECT * FROM {table} ORDER BY {order}"):
            _hash_row(h, row)
    return h.hexdigest()


def _hash_row(h, row) -> None:
    for v in row:
        if v is None:
            h.update(b"\0")
        elif isinstance(v, int):
            h.update(b"\1" + struct.pack("<q", v))
        elif isinstance(v, float):
            h.update(b"\2" + struct.pack("<d", v))
        elif isinstance(v, str):
            b = v.encode("utf-8")
            h.update(b"\3" + struct.pack("<Q", len(b)) + b)
        else:
            b = bytes(v)
            h.update(b"\4" + struct.pack("<Q", len(b)) + b)


def _f64(a) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _f32(a) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def _from_f64(b) -> np.ndarray:
    return np.frombuffer(b, "<f8").copy()


def _symmetric(packed: np.ndarray, width: int) -> np.ndarray:
    m = np.zeros((width, width))
    m[np.triu_indices(width)] = packed
    return m + np.triu(m, 1).T
