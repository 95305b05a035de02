#!/usr/bin/env python3
"""The scores MechWatch computes, in numpy alone, in-process, batch 256: the baseline of `make bench`.

Usage: bench/numpy_baseline.py DIR   (DIR as left by `mechwatch bench --keep DIR`)

Loads the reference `mechwatch bench` fitted (from DIR/bench.db, with Python's sqlite3), the probe batch
it scored (DIR/probes.*), and computes every term of the surprise account (the local terms by brute-force
nearest neighbours over the stored sample), the calibrated term probabilities, the mechanism combination
(Fisher over every term, or the two calibrated families, guarded by the transition family) and the three scorers' p-values, exactly as
documented in the README ("Scoring"), with numpy only: whitening by the inverse Cholesky factor as a
matrix product. A subspace reference (`model = 'subspace'`) is scored as documented too: each projected
site's coordinates `Uᵀ(x − μ)` and residual `(x − μ) − U z` in float32 (as the daemon computes them, so
scores agree to float32's resolution, not exactly), the model's terms on the coordinates, then the
residual terms and the full-vector independence term. It also times what a user would run instead:
plain per-layer Mahalanobis in float32 (full rank, whatever the reference's model).
It checks its scores against the events the daemon stored for the same traces (ids `check-*`), times
scoring (batch 256) and fitting the same statistics (batch 256 of synthetic float32 traces of the same
shape), and prints both beside MechWatch's figures from DIR/bench.json as ratios.
"""
import json
import math
import sqlite3
import sys
import time

import numpy as np

LOG_2PI = math.log(2 * math.pi)


def f64(blob):
    return np.frombuffer(blob, dtype="<f8")


class Reference:
    """A finalized reference as stored (see migrations/), with precomputed inverse factors."""

    def __init__(self, db, name="bench"):
        ref_id, alpha, scorer, maha, indep, terms, self.local_k, self.combination, model, self.transition_weight = db.execute(
            "SELECT id, alpha, scorer, calibration_scores, calibration_independence, calibration_terms, local_k, combination, model, "
            "transition_weight FROM reference_models WHERE name = ?", (name,)).fetchone()
        self.subspace = model == "subspace"
        self.full_widths = [w for (w,) in db.execute("SELECT width FROM reference_sites WHERE reference_id = ? ORDER BY position", (ref_id,))]
        self.full_offsets = np.cumsum([0] + self.full_widths)[:-1]
        self.projections = []
        for rank, mean, basis, s2, var, w in db.execute(
                "SELECT rank, subspace_mean, subspace_basis, residual_variance, site_variances, width FROM reference_sites "
                "WHERE reference_id = ? ORDER BY position", (ref_id,)):
            if rank is None:
                self.projections.append(None)
                continue
            v = f64(var)
            self.projections.append(dict(mean=f64(mean).astype(np.float32), mean64=f64(mean), s2=s2, inv_var=1 / v,
                                         U=np.frombuffer(basis, dtype="<f4").reshape(rank, w).T.copy(),
                                         indep_c=0.5 * (np.log(v).sum() + w * LOG_2PI),
                                         res_c=0.5 * (w - rank) * (LOG_2PI + math.log(s2))))
        self.alpha, self.scorer = alpha, scorer
        rows = db.execute("SELECT name, width, mean, variances, covariance, output_covariance FROM reference_sites "
                          "WHERE reference_id = ? ORDER BY position", (ref_id,)).fetchall()
        rows = [(r[0], len(f64(r[2]))) + tuple(r[2:]) for r in rows]  # the model's widths (a projected site: its rank)
        self.names = [r[0] for r in rows]
        self.widths = [r[1] for r in rows]
        self.offsets = np.cumsum([0] + self.widths)[:-1]
        self.sites = []
        for name, p, mean, var, cov, out_cov in rows:
            L = np.linalg.cholesky(f64(cov).reshape(p, p))  # symmetric: row/column order agree
            site = dict(mean=f64(mean), inv_var=1 / f64(var), W=np.linalg.inv(L),
                        joint_c=2 * np.log(np.diag(L)).sum() + p * LOG_2PI,
                        indep_c=0.5 * (np.log(f64(var)).sum() + p * LOG_2PI))
            if out_cov is not None:
                Lo = np.linalg.cholesky(f64(out_cov).reshape(p, p))
                site.update(Wo=np.linalg.inv(Lo), out_c=2 * np.log(np.diag(Lo)).sum() + p * LOG_2PI, out_means={})
            self.sites.append(site)
        for pos, label, mean in db.execute("SELECT position, output, mean FROM reference_outputs WHERE reference_id = ?", (ref_id,)):
            self.sites[pos]["out_means"][label] = f64(mean)
        self.transitions = []
        for pos, coef, ccov in db.execute("SELECT position, coefficients, conditional_covariance FROM reference_transitions "
                                          "WHERE reference_id = ? ORDER BY position", (ref_id,)):
            px, py = self.widths[pos], self.widths[pos + 1]
            Lc = np.linalg.cholesky(f64(ccov).reshape(py, py))
            self.transitions.append(dict(B=f64(coef).reshape(px, py).T.copy(), W=np.linalg.inv(Lc),
                                         c=2 * np.log(np.diag(Lc)).sum() + py * LOG_2PI))
        self.outputs = "Wo" in self.sites[0]
        self.kinds = []
        for _ in self.names:
            self.kinds += ["independence", "joint", "interaction"]
        self.kinds += ["transition", "dependence"] * len(self.transitions)
        if self.outputs:
            self.kinds += ["output"] * len(self.names)
        if self.local_k is not None:
            self.kinds += ["local"] * (len(self.names) + 1)
        self.kinds += ["residual"] * sum(p is not None for p in self.projections)
        if self.local_k is not None:
            sample = np.stack([np.frombuffer(v, dtype="<f4") for (v,) in db.execute(
                "SELECT vector FROM reference_sample WHERE reference_id = ? ORDER BY row", (ref_id,))]).astype(np.float64)
            self.spaces = [self.site_space(s, sample) for s in range(len(self.sites))]
            if not self.subspace:  # a subspace reference's `*` sums the sites' squared distances instead
                scale = 1 / np.sqrt(np.concatenate([1 / site["inv_var"] for site in self.sites]))
                mean = np.concatenate([site["mean"] for site in self.sites])
                self.spaces.append((lambda X, m=mean, f=scale: (X - m) * f, ((sample - mean) * scale).astype(np.float32)))
        self.lower = np.array([k in ("interaction", "dependence") for k in self.kinds])
        T = len(self.kinds)
        cal = f64(terms).reshape(-1, T)
        self.cal_sorted = [np.sort(c[~np.isnan(c)]) for c in cal.T]
        self.scales = [tail_scale(s, lo) for s, lo in zip(self.cal_sorted, self.lower)]
        # The mechanism statistic of each calibration trace, with leave-one-out probabilities at every level.
        loo_p = np.ones_like(cal)
        for j in range(T):
            v = cal[:, j]
            ok = ~np.isnan(v)
            loo_p[ok, j] = tail_p(v[ok], self.cal_sorted[j], self.scales[j], self.lower[j], exclude_self=True)
        if self.combination == "families":
            gaussian = [j for j, k in enumerate(self.kinds) if k in ("independence", "joint", "interaction", "output", "residual")]
            local = [j for j, k in enumerate(self.kinds) if k == "local"]
            self.families = []
            final = np.zeros(len(cal))
            for members in (gaussian, local):
                stat = -2 * np.log(loo_p[:, members]).sum(1)
                srt = np.sort(stat)
                sc = tail_scale(srt, False)
                final -= 2 * np.log(tail_p(stat, srt, sc, False, exclude_self=True))
                self.families.append((members, srt, sc))
            loo = final
            if self.transition_weight is not None:
                # Guarded by the transition family: -log min(p_families, weight * p_transitions) (migration 009).
                srt = np.sort(final)
                self.guard = (srt, tail_scale(srt, False))
                loo = -np.log(tail_p(final, srt, self.guard[1], False, exclude_self=True))
                members = [j for j, k in enumerate(self.kinds) if k in ("transition", "dependence")]
                if members:
                    stat = -2 * np.log(loo_p[:, members]).sum(1)
                    tsrt = np.sort(stat)
                    self.transition_family = (members, tsrt, tail_scale(tsrt, False))
                    pt = tail_p(stat, tsrt, self.transition_family[2], False, exclude_self=True)
                    loo = np.maximum(loo, -np.log(np.minimum(1, self.transition_weight * pt)))
                else:
                    self.transition_family = None
        else:
            loo = -2 * np.log(loo_p).sum(1)
        self.cal_mechanism = np.sort(loo)
        self.mechanism_scale = tail_scale(self.cal_mechanism, False)
        self.cal_maha, self.cal_indep = np.sort(f64(maha)), np.sort(f64(indep))

    def site_space(self, s, sample):
        """Site s's whitened space (inverse Cholesky factor) and the sample's coordinates in it."""
        site, lo = self.sites[s], self.offsets[s]
        f = lambda X: (X[:, lo:lo + self.widths[s]] - site["mean"]) @ site["W"].T  # noqa: E731
        return (f, f(sample).astype(np.float32))

    def local_terms(self, X):
        """Distance from each row of X to its local_k-th nearest sample trace in each space (for a subspace
        reference, `*` under the sum of the sites' squared distances)."""
        out, total, exact_rows = [], 0, []
        k = self.local_k
        for f, ref in self.spaces:
            q = f(X).astype(np.float32)
            d2 = (q * q).sum(1)[:, None] + (ref * ref).sum(1)[None, :] - 2 * q @ ref.T
            total = total + d2
            idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
            exact = np.sort(((q[:, None, :].astype(np.float64) - ref[idx].astype(np.float64)) ** 2).sum(2), axis=1)
            out.append(np.sqrt(exact[:, -1]))
            exact_rows.append((q.astype(np.float64), ref.astype(np.float64)))
        if self.subspace:
            idx = np.argpartition(total, k - 1, axis=1)[:, :k]
            exact = sum(((q[:, None, :] - ref[idx]) ** 2).sum(2) for q, ref in exact_rows)
            out.append(np.sqrt(np.sort(exact, axis=1)[:, -1]))
        return np.column_stack(out)

    def project(self, X):
        """X in the model's layout (each projected site's subspace coordinates), and per projected site
        (independence, residual surprise, residual part of the Mahalanobis distance)."""
        parts, extras = [], []
        for s, p in enumerate(self.projections):
            x = X[:, self.full_offsets[s]:self.full_offsets[s] + self.full_widths[s]]
            if p is None:
                parts.append(x)
                continue
            c64 = x - p["mean64"]
            c = c64.astype(np.float32)
            z = c @ p["U"]
            r = (c - z @ p["U"].T).astype(np.float64)
            maha = np.einsum("ij,ij->i", r, r) / p["s2"]
            extras.append((0.5 * np.einsum("ij,ij,j->i", c64, c64, p["inv_var"]) + p["indep_c"], 0.5 * maha + p["res_c"], maha))
            parts.append(z.astype(np.float64))
        return np.hstack(parts), extras

    def terms(self, X, labels):
        """Every term of each row of X (traces × total width, float64), in the stored term order."""
        if self.subspace:
            X, extras = self.project(X)
        m, S = len(X), len(self.sites)
        out = np.empty((m, len(self.kinds)))
        centred = []
        for s, site in enumerate(self.sites):
            c = X[:, self.offsets[s]:self.offsets[s] + self.widths[s]] - site["mean"]
            centred.append(c)
            z = c @ site["W"].T
            maha = np.einsum("ij,ij->i", z, z)
            out[:, 3 * s] = 0.5 * np.einsum("ij,ij,j->i", c, c, site["inv_var"]) + site["indep_c"]
            out[:, 3 * s + 1] = 0.5 * (maha + site["joint_c"])
            out[:, 3 * s + 2] = out[:, 3 * s] - out[:, 3 * s + 1]
            if s == 0:
                self.last_maha = np.zeros((m, S))
            self.last_maha[:, s] = maha
        base = 3 * S
        for k, t in enumerate(self.transitions):
            r = centred[k + 1] - centred[k] @ t["B"].T
            z = r @ t["W"].T
            out[:, base + 2 * k] = 0.5 * (np.einsum("ij,ij->i", z, z) + t["c"])
            out[:, base + 2 * k + 1] = out[:, 3 * (k + 1) + 1] - out[:, base + 2 * k]
        if self.outputs:
            base += 2 * len(self.transitions)
            for s, site in enumerate(self.sites):
                known = np.array([l in site["out_means"] for l in labels])
                means = np.stack([site["out_means"].get(l, site["mean"]) for l in labels])
                c = X[:, self.offsets[s]:self.offsets[s] + self.widths[s]] - means
                z = c @ site["Wo"].T
                out[:, base + s] = np.where(known, 0.5 * (np.einsum("ij,ij->i", z, z) + site["out_c"]), np.nan)
        if self.local_k is not None:
            local = self.local_terms(X)
            first = self.kinds.index("local")
            out[:, first:first + local.shape[1]] = local
        if self.subspace:
            first = self.kinds.index("residual")
            for k, s in enumerate(s for s, p in enumerate(self.projections) if p is not None):
                independence, residual, maha = extras[k]
                out[:, 3 * s] = independence
                out[:, 3 * s + 1] += residual
                out[:, 3 * s + 2] = out[:, 3 * s] - out[:, 3 * s + 1]
                out[:, first + k] = residual
                self.last_maha[:, s] += maha
        return out

    def score(self, X, labels):
        """(term values, term probabilities, {scorer: statistic}, {scorer: p-value}) of each trace."""
        t = self.terms(X, labels)
        p = np.ones_like(t)
        for j in range(t.shape[1]):
            ok = ~np.isnan(t[:, j])
            p[ok, j] = tail_p(t[ok, j], self.cal_sorted[j], self.scales[j], self.lower[j], exclude_self=False)
        if self.combination == "families":
            mechanism = np.zeros(len(t))
            for members, srt, sc in self.families:
                mechanism -= 2 * np.log(tail_p(-2 * np.log(p[:, members]).sum(1), srt, sc, False, exclude_self=False))
            if self.transition_weight is not None:
                mechanism = -np.log(tail_p(mechanism, *self.guard, False, exclude_self=False))
                if self.transition_family is not None:
                    members, tsrt, tsc = self.transition_family
                    pt = tail_p(-2 * np.log(p[:, members]).sum(1), tsrt, tsc, False, exclude_self=False)
                    mechanism = np.maximum(mechanism, -np.log(np.minimum(1, self.transition_weight * pt)))
        else:
            mechanism = -2 * np.log(p).sum(1)
        stats = {"mahalanobis": self.last_maha.sum(1), "independence": t[:, 0:3 * len(self.sites):3].sum(1), "mechanism": mechanism}
        cal = {"mahalanobis": self.cal_maha, "independence": self.cal_indep}
        pv = {k: (1 + len(cal[k]) - np.searchsorted(cal[k], v, "left")) / (len(cal[k]) + 1) for k, v in stats.items() if k in cal}
        pv["mechanism"] = tail_p(mechanism, self.cal_mechanism, self.mechanism_scale, False, exclude_self=False)
        return t, p, stats, pv


def plain_mahalanobis(ref, X):
    """What a user would run instead: per-layer Mahalanobis in float32 with precomputed inverse factors,
    full rank. For a subspace reference the factors come from the probes' own covariance (ridge 1e-3):
    the timing is the same whatever the values."""
    def factor(s):
        if not ref.subspace:
            return ref.sites[s]["mean"], ref.sites[s]["W"]
        x = X[:, ref.full_offsets[s]:ref.full_offsets[s] + ref.full_widths[s]]
        cov = np.cov(x, rowvar=False) + 1e-3 * np.eye(x.shape[1])
        return x.mean(0), np.linalg.inv(np.linalg.cholesky(cov))
    spaces = []
    for s in range(len(ref.full_widths)):
        mean, W = factor(s)
        spaces.append((ref.full_offsets[s], ref.full_widths[s], mean.astype(np.float32), W.T.astype(np.float32)))

    def score(X):
        X = X.astype(np.float32)
        return sum(np.einsum("ij,ij->i", z, z) for z in ((X[:, o:o + w] - m) @ wt for o, w, m, wt in spaces))
    return score


def tail_scale(asc, lower):
    """Mean excess of the most extreme 10% (at least 5) over the threshold they exceed."""
    n = len(asc)
    if n < 2:
        return 1.0
    k = min(n - 1, max(5, n // 10))
    vals = asc[:k + 1] if lower else asc[::-1][:k + 1]
    mean_excess = np.abs(vals[:k] - vals[k]).mean()
    return max(mean_excess, 1e-9 * max(abs(asc[-1] - asc[0]), 1))


def tail_p(v, asc, scale, lower, exclude_self):
    """Conformal tail probability with the exponential tail beyond the calibration range."""
    n = len(asc)
    others = n - (1 if exclude_self else 0)
    if others <= 0:
        return np.ones_like(v)
    beyond = (np.searchsorted(asc, v, "right") if lower else n - np.searchsorted(asc, v, "left")) - (1 if exclude_self else 0)
    floor = 1 / (others + 1)
    if lower:
        extreme = (asc[1] if n > 1 else v) if exclude_self else asc[0]
        excess = np.maximum(0, extreme - v)
    else:
        extreme = (asc[-2] if n > 1 else v) if exclude_self else asc[-1]
        excess = np.maximum(0, v - extreme)
    tail = np.maximum(floor * np.exp(-excess / scale), 1e-300)
    return np.where(beyond > 0, (1 + beyond) / (others + 1), tail)


def fit_statistics(widths, batches, labels_of):
    """Streams the statistics a reference is estimated from: per-site count, mean and co-moment, the
    fourth-moment accumulators about a shift, cross co-moments of consecutive sites, and per-output means
    with the pooled within-output co-moment (derived from the total and the output means)."""
    offsets = np.cumsum([0] + widths)
    S = len(widths)
    n = 0
    s1 = [np.zeros(p) for p in widths]
    s2 = [np.zeros((p, p)) for p in widths]
    cross = [np.zeros((widths[k], widths[k + 1])) for k in range(S - 1)]
    shift = None
    q2 = np.zeros(S)
    qa = [np.zeros(p) for p in widths]
    class_sums = [dict() for _ in widths]
    class_counts = {}
    for b, X in enumerate(batches):
        X = X.astype(np.float64)
        labels = labels_of(b)
        if shift is None:
            shift = [X[0, offsets[s]:offsets[s + 1]].copy() for s in range(S)]
        n += len(X)
        onehot_labels, inverse = np.unique(labels, return_inverse=True)
        onehot = np.zeros((len(onehot_labels), len(X)))
        onehot[inverse, np.arange(len(X))] = 1
        for label, c in zip(onehot_labels, onehot.sum(1)):
            class_counts[label] = class_counts.get(label, 0) + c
        for s in range(S):
            x = X[:, offsets[s]:offsets[s + 1]]
            s1[s] += x.sum(0)
            s2[s] += x.T @ x
            a = x - shift[s]
            q = np.einsum("ij,ij->i", a, a)
            q2[s] += q @ q
            qa[s] += q @ a
            sums = onehot @ x
            for label, row in zip(onehot_labels, sums):
                class_sums[s][label] = class_sums[s].get(label, 0) + row
            if s + 1 < S:
                cross[s] += x.T @ X[:, offsets[s + 1]:offsets[s + 2]]
    stats = []
    for s in range(S):
        mean = s1[s] / n
        comoment = s2[s] - n * np.outer(mean, mean)
        within = s2[s] - sum(np.outer(v, v) / class_counts[c] for c, v in class_sums[s].items())
        stats.append((mean, comoment, within))
    return stats, cross


def fit_subspace_statistics(widths, batches):
    """What a subspace reference streams: per site the co-moment about a shift (Float64; the daemon keeps
    its lower triangle) and the sum."""
    offsets = np.cumsum([0] + widths)
    shift, n = None, 0
    s1 = [np.zeros(p) for p in widths]
    s2 = [np.zeros((p, p)) for p in widths]
    for X in batches:
        if shift is None:
            shift = [X[:, offsets[s]:offsets[s + 1]].astype(np.float64).mean(0) for s in range(len(widths))]
        n += len(X)
        for s in range(len(widths)):
            a = X[:, offsets[s]:offsets[s + 1]].astype(np.float64) - shift[s]
            s1[s] += a.sum(0)
            s2[s] += a.T @ a
    return s1, s2


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    bench = json.load(open(f"{directory}/bench.json"))
    dtype = {"f16": "<f2", "f32": "<f4", "f64": "<f8"}[bench["dtype"]]
    width = bench["sites"] * bench["width"]
    X = np.fromfile(bench["probes"], dtype=dtype).astype(np.float64).reshape(-1, width)
    labels = bench["probe_outputs"]
    db = sqlite3.connect(bench["database"])
    ref = Reference(db)

    # Identical scores: compare with what the daemon stored for the same traces.
    _, _, stats, pv = ref.score(X, labels)
    stored = dict(((cid, (score, p)) for cid, score, p in db.execute(
        "SELECT client_id, score, p_value FROM events WHERE client_id LIKE 'check-%'")))
    mine_score = stats[ref.scorer]
    mine_p = pv[ref.scorer]
    rel = max(abs(mine_score[j] - stored[f"check-{j}"][0]) / max(abs(stored[f"check-{j}"][0]), 1e-12) for j in range(len(X)))
    # A subspace reference's float32 products differ from numpy's in summation order: scores agree to 1e-4.
    rtol = 1e-4 if ref.subspace else 1e-9
    same_p = sum(math.isclose(mine_p[j], stored[f"check-{j}"][1], rel_tol=rtol) for j in range(len(X)))
    print(f"numpy {np.__version__}: {ref.scorer} scores of {len(X)} probe traces ({'subspace' if ref.subspace else 'full-rank'} reference) "
          f"vs the daemon's stored events: max relative difference {rel:.2e}; p-values equal (rel. {rtol:g}) in {same_p}/{len(X)}")
    if rel > (1e-4 if ref.subspace else 1e-6) or same_p < len(X) - 2:
        sys.exit("numpy baseline: the scores differ from MechWatch's; the comparison would be meaningless")

    # Score throughput, batch 256.
    batch = X[:256]
    bl = labels[:256]
    ref.score(batch, bl)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < 5:
        ref.score(batch, bl)
        done += len(batch)
    score_rate = done / (time.perf_counter() - start)
    plain = plain_mahalanobis(ref, X)
    plain(batch)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < 5:
        plain(batch)
        done += len(batch)
    plain_rate = done / (time.perf_counter() - start)

    # Fit throughput: the same statistics over the same number of traces, batch 256.
    rng = np.random.default_rng(0)
    widths = [bench["width"]] * bench["sites"]
    pool = [rng.standard_normal((256, width), dtype=np.float32) for _ in range(4)]
    pool_labels = [rng.integers(0, 10, 256) for _ in range(4)]
    # Timed on at most 20,000 traces and at most ~1 GiB of them (the rate is per trace either way).
    fit_traces = min(20_000, max(256, (1 << 30) // (4 * width)))
    count = fit_traces // 256
    start = time.perf_counter()
    if ref.subspace:
        fit_subspace_statistics(widths, (pool[b % 4] for b in range(count)))
    else:
        fit_statistics(widths, (pool[b % 4] for b in range(count)), lambda b: pool_labels[b % 4])
    fit_rate = count * 256 / (time.perf_counter() - start)

    print(f"numpy in-process (BLAS threads: all cores unless OPENBLAS_NUM_THREADS is set): "
          f"score {score_rate:.0f} traces/s, fit {fit_rate:.0f} traces/s; plain per-layer Mahalanobis (float32) "
          f"{plain_rate:.0f} traces/s\n")
    rows = [
        ("end-to-end score / numpy score", bench["score_traces_per_s"] / score_rate, ">= 1.0"),
        ("end-to-end / plain float32 Mahalanobis", bench["score_traces_per_s"] / plain_rate, ">= 1.0 (issue 11)"),
        ("in-process core / numpy score", bench["core_traces_per_s"] / score_rate, ">= 1.5"),
        ("fit (end-to-end) / numpy fit", bench["fit_traces_per_s"] / fit_rate, ">= 1.0"),
    ]
    print(f"{'ratio':34}{'measured':>10}   target")
    for name, value, target in rows:
        print(f"{name:34}{value:10.2f}   {target}")
    print(f"{'p99 latency at half load':34}{bench['half_p99_ms']:9.1f}ms   <= 10 ms")
    bound = 2 * (bench["reference_bytes"] + bench["in_flight_bytes"])
    print(f"{'peak RSS / 2x(reference+in flight)':34}{bench['peak_rss_bytes'] / bound:10.2f}   <= 1.0")


if __name__ == "__main__":
    main()
