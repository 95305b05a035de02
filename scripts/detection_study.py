"""Baselines and candidate scorers on evaluation sets, in numpy alone (a study, not the daemon).

Reads SETS_DIR/<set>/fit.jsonl and test.jsonl (written by scripts/digits_eval.py or scripts/eval_sets.py),
holds out the daemon's calibration split of the fit traces (20%, by the daemon's hash of the trace id:
CalibrationSplit in ReferenceFitter.swift), estimates everything on the rest ("estimation" traces) and
reports, per set, AUROC on the test traces, TPR at 1% FPR (threshold: the 99th percentile of the
calibration traces' scores) and the FPR on clean test traces of the conformal rule p <= 0.01.

Baselines: kNN (all sites concatenated, standardised, distance to the 5th nearest estimation trace);
per-site Ledoit-Wolf Mahalanobis summed over sites (the daemon's `mahalanobis` scorer); class-conditional
Mahalanobis (Lee et al. 2018: means per predicted output, pooled within-output LW covariance, min over
classes; summed over sites, and last site only); ECOD (Li et al. 2022) on all coordinates with pyod's
current per-coordinate score max(U_skew, max(U_left, U_right)), fitted on the estimation traces, each query
counted in its own empirical CDF as in pyod (which refits on training and test traces together).

Candidates: per-term conformal tail probabilities (against the calibration traces, with the daemon's
exponential tail past the largest; the calibration traces' own use leave-one-out) combined by Fisher,
min-p, Cauchy (ACAT) or weighted Fisher, with weights chosen from pseudo-anomalies made from calibration
traces only (cross-site recombination, per-site noise, interpolation between traces of different
outputs). The combined statistic is calibrated conformally on the calibration traces again.
Terms: per-site Gaussian joint surprise (LW), transition (linear-Gaussian regression of each site on the
one before, jointly shrunk covariance, as TransitionModel.swift), output-conditioned Gaussian per site
(the trace's own output), per-site kNN distance (raw, standardised, or whitened top principal subspace of
the LW covariance at 95%/99% explained variance), and the concatenated standardised kNN distance; the
daemon's own terms (independence, interaction, dependence) for its current `mechanism` scorer. Term sets
(term_sets): knn-sites, local (+ concatenated kNN), output+local, gauss (joint, transition, output),
gauss+local, daemon (the daemon's `mechanism` terms), daemon+local; and two-stage rules (gauss|local,
daemon|local): Fisher within each group, each group calibrated, then Fisher / min-p / Cauchy across.
The ranking at the end gives each candidate's AUROC margin over the best of the five baselines on each
set, worst and mean, and a bootstrap standard error for the top five.

About 12 s for the five digits sets (one core); --sweep 2,3 about 20 s.

Family study (--families, family_report): each family of terms is Fisher-combined and the family statistic
calibrated conformally (leave-one-out on the calibration traces); family p-values are combined by
Bonferroni (min p x m), Cauchy or Fisher and calibrated again. Families (family_definitions): G (the
daemon's `mechanism` terms), Gr / Gj (with a fixed transition: ridge regression with a GCV penalty, or the
joint covariance shrunk with its own LW intensity), Gx (no transition terms), GxLW (Gx with the independence
variances taken from the LW covariance's diagonal), L (pca99 kNN per site + concatenated), W (kNN per site
under the LW Mahalanobis distance + concatenated kNN standardised by the LW diagonal), O, M, R, ...
The recommended default: "GxLW+W fisher" with K=1 (ties or beats the best baseline on all eight sets,
digits seeds 7-12). About 8 s per collection of eight sets.

Guard study (--guards, guard_report): the families statistic against min(p_f, w * p_T) with the transition
family, for w = 1, 3, 10, 30 (issue 21; the default took w = 10). With the sets of digits_eval.py (seed 7),
eval_sets.py and mechanism_sets.py in /tmp/d, /tmp/e, /tmp/m, about 10 s:
       python3 scripts/detection_study.py - --guards /tmp/d:unseen,blend,patch,rotated,noise --guards /tmp/e:backdoor,context,shift \
           --guards /tmp/m:pair3,pair05,pairrot,recombined,flipped,rescaled,decorrelated

Usage: python3 scripts/digits_baselines.py SETS_DIR [--sets unseen,blend,...] [--ks 1,5] [--sweep 2,3,10,20]
       python3 scripts/digits_baselines.py - --families /tmp/digits:unseen,blend,patch,rotated,noise --families /tmp/es:backdoor,context,shift
"""
import argparse
import json
import pathlib
import sys

import numpy as np
from sklearn.covariance import LedoitWolf
from scipy.stats import chi2, rankdata, skew
from sklearn.covariance import ledoit_wolf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import trace_files  # noqa: E402

ALPHA = 0.01
CAL_FRACTION = 0.2
KMAX = 20  # largest K the kNN terms may use


# ---------------------------------------------------------------------------------------------- data

def holds_out(trace_id, fraction=CAL_FRACTION):
    return trace_files.holds_out(trace_id, fraction)


class Traces:
    def __init__(self, rows, names):
        self.names = names
        self.ids = [r["id"] for r in rows]
        self.output = np.array([r.get("output", -1) for r in rows])
        # the daemon stores and fits float32-rounded activations
        self.sites = [np.array([r["sites"][s] for r in rows], np.float32).astype(np.float64) for s in names]
        self.label = np.array([r.get("label") == "anomalous" for r in rows])

    def take(self, idx):
        t = object.__new__(Traces)
        t.names, t.ids = self.names, [self.ids[i] for i in idx]
        t.output, t.label = self.output[idx], self.label[idx]
        t.sites = [s[idx] for s in self.sites]
        return t

    def __len__(self):
        return len(self.output)


def load(path):
    rows = [json.loads(line) for line in open(path)]
    return Traces(rows, list(rows[0]["sites"]))


# ---------------------------------------------------------------------------------------------- models

def chol_inv(cov):
    """Inverse Cholesky factor and log-determinant, with a tiny ridge if needed (as the daemon)."""
    ridge = 0.0
    scale = np.trace(cov) / len(cov)
    while True:
        try:
            lo = np.linalg.cholesky(cov + ridge * np.eye(len(cov)))
            break
        except np.linalg.LinAlgError:
            ridge = max(ridge * 10, 1e-10 * scale)
    return np.linalg.inv(lo), 2 * np.log(np.diag(lo)).sum()


class Gaussian:
    """Mean, floored variances and the LW-shrunk covariance of one site (SiteModel.swift)."""

    def __init__(self, x):
        self.mean = x.mean(0)
        var = x.var(0)
        self.var = np.maximum(var, var.mean() * 1e-6)
        self.cov, self.shrinkage = ledoit_wolf(x)
        self.inv, self.logdet = chol_inv(self.cov)
        self.p = x.shape[1]

    def maha(self, x):
        return (((x - self.mean) @ self.inv.T) ** 2).sum(1)

    def joint(self, x):
        return 0.5 * (self.maha(x) + self.logdet + self.p * np.log(2 * np.pi))

    def independence(self, x):
        return 0.5 * (((x - self.mean) ** 2 / self.var).sum(1) + np.log(self.var).sum() + self.p * np.log(2 * np.pi))


class Transition:
    """y | x ~ N(mu_y + B(x - mu_x), S_y|x) from the jointly shrunk covariance of (x, y)."""

    def __init__(self, x, y, gx, gy):
        px = x.shape[1]
        z = np.hstack([x, y])
        s = max(gx.shrinkage, gy.shrinkage)
        cov = np.cov(z, rowvar=False, bias=True)
        target = np.concatenate([np.full(px, np.trace(cov[:px, :px]) / px),
                                 np.full(y.shape[1], np.trace(cov[px:, px:]) / y.shape[1])])
        cov = (1 - s) * cov + s * np.diag(target)
        sxx, syx, syy = cov[:px, :px], cov[px:, :px], cov[px:, px:]
        self.b = np.linalg.solve(sxx, syx.T).T
        self.mx, self.my = gx.mean, gy.mean
        self.inv, self.logdet = chol_inv(syy - self.b @ syx.T)
        self.p = y.shape[1]

    def surprise(self, x, y):
        r = (y - self.my) - (x - self.mx) @ self.b.T
        return 0.5 * (((r @ self.inv.T) ** 2).sum(1) + self.logdet + self.p * np.log(2 * np.pi))


class OutputGaussian:
    """Per-output means (outputs seen at least 10 times) and the pooled within-output LW covariance."""

    def __init__(self, x, out, minimum=10):
        self.means = {c: x[out == c].mean(0) for c in np.unique(out) if (out == c).sum() >= minimum}
        resid = x.copy()
        for c in np.unique(out):
            resid[out == c] -= x[out == c].mean(0)
        cov, _ = ledoit_wolf(resid, assume_centered=True)
        self.inv, self.logdet = chol_inv(cov)
        self.p = x.shape[1]

    def maha_to(self, x, c):
        return (((x - self.means[c]) @ self.inv.T) ** 2).sum(1)

    def own(self, x, out):
        """Surprise under the trace's own output (NaN: fallback, no evidence)."""
        s = np.full(len(x), np.nan)
        for c in self.means:
            m = out == c
            if m.any():
                s[m] = 0.5 * (self.maha_to(x[m], c) + self.logdet + self.p * np.log(2 * np.pi))
        return s

    def nearest(self, x):
        return np.min([self.maha_to(x, c) for c in self.means], axis=0)


def nearest_distances(ref, query, kmax):
    """Sorted distances from each query row to its kmax nearest rows of ref (ref never holds the queries)."""
    rr = (ref ** 2).sum(1)
    out = np.empty((len(query), kmax))
    for s in range(0, len(query), 512):
        q = query[s:s + 512]
        d2 = (q ** 2).sum(1)[:, None] + rr[None, :] - 2 * q @ ref.T
        out[s:s + 512] = np.sqrt(np.maximum(np.sort(np.partition(d2, kmax - 1, axis=1)[:, :kmax], axis=1), 0))
    return out


def kth_distance(ref, query, k):
    return nearest_distances(ref, query, k)[:, k - 1]


class Spaces:
    """Per-site coordinate maps fitted on the estimation traces."""

    def __init__(self, est, gauss):
        self.maps = []
        for x, g in zip(est.sites, gauss):
            sd = np.sqrt(g.var)
            w, v = np.linalg.eigh(g.cov)
            w, v = w[::-1], v[:, ::-1]
            frac = np.cumsum(w) / w.sum()
            m = {"raw": lambda a: a,
                 "std": lambda a, mu=g.mean, sd=sd: (a - mu) / sd}
            for level in (0.95, 0.99):
                r = int(np.searchsorted(frac, level) + 1)
                m[f"pca{int(level * 100)}"] = lambda a, mu=g.mean, v=v[:, :r], w=w[:r]: ((a - mu) @ v) / np.sqrt(w)
                m[f"r{int(level * 100)}"] = r
            self.maps.append(m)


# ---------------------------------------------------------------------------------------------- calibration

def tail_scale(values):
    """Mean excess of the most extreme 10% (at least 5) over the threshold they exceed (SurpriseTerms.swift)."""
    v = np.sort(values)[::-1]
    n = len(v)
    k = min(n - 1, max(5, n // 10))
    return max((v[:k] - v[k]).mean(), 1e-9 * max(v[0] - v[-1], 1))


def tail_p(cal, values, loo=False):
    """Upper-tail conformal probability of each value against cal, with the exponential tail past the max.
    loo: values are cal itself, each ranked against the others."""
    cal = np.asarray(cal)
    srt = np.sort(cal)
    n = len(srt) - (1 if loo else 0)
    beyond = len(srt) - np.searchsorted(srt, values, side="left") - (1 if loo else 0)
    scale = tail_scale(cal)
    p = (1 + beyond) / (n + 1)
    zero = beyond <= 0
    if zero.any():
        extreme = srt[-2] if loo else srt[-1]
        p[zero] = np.maximum(np.exp(-np.maximum(values[zero] - extreme, 0) / scale) / (n + 1), 1e-300)
    return p


def auroc(scores, label):
    r = rankdata(scores)
    n1, n0 = label.sum(), (~label).sum()
    return (r[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


class Result:
    """A scorer's statistic on calibration and test traces, and the metrics."""

    def __init__(self, cal, test, label):
        cal, test = np.nan_to_num(cal, nan=np.inf), np.nan_to_num(test, nan=np.inf)
        self.auroc = auroc(test, label)
        thr = np.quantile(cal, 1 - ALPHA)
        self.tpr = (test[label] > thr).mean()
        # At 0.1% FPR: above the calibration statistics' 99.9th percentile (with a few hundred calibration
        # traces, about their largest: a noisy figure, reported as the published monitors report it).
        self.tpr01 = (test[label] > np.quantile(cal, 0.999)).mean()
        p = (1 + (cal[None, :] >= test[:, None]).sum(1)) / (len(cal) + 1)
        self.fpr = (p[~label] <= ALPHA).mean()


# ---------------------------------------------------------------------------------------------- one set

COMBINE = {
    "fisher": lambda p, w: -2 * (w * np.log(p)).sum(1),
    "minp": lambda p, w: -np.log(p.min(1)),
    "cauchy": lambda p, w: (w * np.tan((0.5 - np.minimum(p, 1 - 1e-12)) * np.pi)).sum(1),
}


class SetStudy:
    def __init__(self, fit, test, seed=0):
        self.rng = np.random.default_rng(seed)
        cal_mask = np.array([holds_out(i) for i in fit.ids])
        self.est, self.cal, self.test = fit.take(np.flatnonzero(~cal_mask)), fit.take(np.flatnonzero(cal_mask)), test
        self.label = test.label
        est = self.est
        self.gauss = [Gaussian(x) for x in est.sites]
        self.trans = [Transition(est.sites[i], est.sites[i + 1], self.gauss[i], self.gauss[i + 1])
                      for i in range(len(est.sites) - 1)]
        self.outg = [OutputGaussian(x, est.output) for x in est.sites]
        self.spaces = Spaces(est, self.gauss)
        cat = np.hstack(est.sites)
        self.cat_mean, self.cat_sd = cat.mean(0), np.sqrt(np.maximum(cat.var(0), cat.var(0).mean() * 1e-6))
        self.ref = {}  # nearest-neighbour distances: (space, site, group) per site, group for the concatenation
        self.pseudo = self.make_pseudo()
        self.cache = {}

    # --- pseudo-anomalies from calibration traces only
    def make_pseudo(self):
        cal, rng = self.cal, self.rng
        n, s = len(cal), len(cal.sites)
        out = {}
        # cross-site recombination: sites up to a cut from one trace, the rest from a trace of another output
        j = np.array([rng.choice(np.flatnonzero(cal.output != cal.output[i]) if (cal.output != cal.output[i]).any()
                                 else np.arange(n)) for i in range(n)])
        cut = rng.integers(1, s, size=n)
        sites = [np.where((k < cut)[:, None], x, x[j]) for k, x in enumerate(cal.sites)]
        out["recombine"] = (sites, cal.output[j])
        # per-site noise: one site gets Gaussian noise of half its coordinates' sd, ReLU-clipped at 0
        which = rng.integers(0, s, size=n)
        sites = []
        for k, x in enumerate(cal.sites):
            noisy = x + rng.normal(size=x.shape) * 0.5 * np.sqrt(self.gauss[k].var)
            if (np.hstack(cal.sites) >= 0).all():
                noisy = np.maximum(noisy, 0)
            sites.append(np.where((which == k)[:, None], noisy, x))
        out["noise"] = (sites, cal.output)
        # interpolation between traces of different outputs, every site
        lam = rng.uniform(0.3, 0.7, size=n)[:, None]
        sites = [lam * x + (1 - lam) * x[j] for x in cal.sites]
        out["interpolate"] = (sites, np.where(lam[:, 0] >= 0.5, cal.output, cal.output[j]))
        return out

    def mapped(self, space, k, x):
        return self.spaces.maps[k][space](x)

    def knn_site(self, space, k, group, K):
        key = (space, k, group)
        if key not in self.ref:
            x = self.group(group)[0][k]
            self.ref[key] = nearest_distances(self.mapped(space, k, self.est.sites[k]), self.mapped(space, k, x), KMAX)
        return self.ref[key][:, K - 1]

    def knn_cat(self, group, K):
        if group not in self.ref:
            z = lambda sites: (np.hstack(sites) - self.cat_mean) / self.cat_sd  # noqa: E731
            self.ref[group] = nearest_distances(z(self.est.sites), z(self.group(group)[0]), KMAX)
        return self.ref[group][:, K - 1]

    def group(self, name):
        """Sites and outputs of "cal", "test" or a pseudo-anomaly type."""
        if name in ("cal", "test"):
            t = getattr(self, name)
            return t.sites, t.output
        return self.pseudo[name]

    # --- every term on one group of traces ("cal", "test", or a pseudo type)
    def terms(self, group, space, K):
        key = (group, space, K)
        if key in self.cache:
            return self.cache[key]
        sites, out = self.group(group)
        s = len(sites)
        T = {}
        for k in range(s):
            T[f"joint.h{k + 1}"] = self.gauss[k].joint(sites[k])
            T[f"indep.h{k + 1}"] = self.gauss[k].independence(sites[k])
            T[f"interaction.h{k + 1}"] = -(T[f"indep.h{k + 1}"] - T[f"joint.h{k + 1}"])  # low explained = high
            T[f"output.h{k + 1}"] = self.outg[k].own(sites[k], out)
            T[f"knn.h{k + 1}"] = self.knn_site(space, k, group, K)
        for k in range(s - 1):
            T[f"trans.h{k + 1}h{k + 2}"] = self.trans[k].surprise(sites[k], sites[k + 1])
            T[f"dependence.h{k + 1}h{k + 2}"] = -(T[f"joint.h{k + 2}"] - T[f"trans.h{k + 1}h{k + 2}"])
        T["knn.cat"] = self.knn_cat(group, K)
        self.cache[key] = T
        return T

    def pvalues(self, names, space, K):
        """Tail probabilities: calibration (leave-one-out), test, and each pseudo group."""
        cal = self.terms("cal", space, K)
        res = {}
        for g in ["cal", "test"] + list(self.pseudo):
            T = self.terms(g, space, K)
            cols = []
            for n in names:
                c = cal[n]
                ok = ~np.isnan(c)
                v = T[n]
                p = np.ones(len(v))
                good = ~np.isnan(v)
                p[good] = tail_p(c[ok], v[good], loo=(g == "cal"))
                cols.append(p)
            res[g] = np.column_stack(cols)
        return res

    def combined(self, names, rule, space, K, weights=None):
        P = self.pvalues(names, space, K)
        w = np.ones(len(names)) if weights is None else weights(P)
        return {g: COMBINE[rule](p, w) for g, p in P.items()}, w

    def two_stage(self, groups, rule, space, K):
        """Fisher within each group of terms, each group's statistic calibrated conformally (leave-one-out on
        the calibration traces), then `rule` across the groups' p-values."""
        stats = [self.combined(names, "fisher", space, K)[0] for names in groups]
        P = {g: np.column_stack([tail_p(st["cal"], st[g], loo=(g == "cal")) for st in stats]) for g in stats[0]}
        return {g: COMBINE[rule](p, np.ones(len(groups))) for g, p in P.items()}

    # --- weights from pseudo-anomalies (no anomalies used)
    @staticmethod
    def auc_weights(P):
        cal = P["cal"]
        w = np.zeros(cal.shape[1])
        groups = [g for g in P if g not in ("cal", "test")]
        for g in groups:
            lab = np.r_[np.zeros(len(cal), bool), np.ones(len(P[g]), bool)]
            for j in range(cal.shape[1]):
                a = auroc(-np.log(np.r_[cal[:, j], P[g][:, j]]), lab)
                w[j] += max(0.0, 2 * a - 1) / len(groups)
        return w / w.sum() * len(w) if w.sum() > 0 else np.ones_like(w)

    @staticmethod
    def select_weights(P):
        """Greedy forward selection of terms (equal weights, Fisher), maximising the worst pseudo-type AUROC."""
        cal = P["cal"]
        groups = [g for g in P if g not in ("cal", "test")]

        def worst(sel):
            w = np.zeros(cal.shape[1])
            w[sel] = 1
            c = COMBINE["fisher"](cal, w)
            return min(auroc(np.r_[c, COMBINE["fisher"](P[g], w)], np.r_[np.zeros(len(c), bool), np.ones(len(P[g]), bool)])
                       for g in groups)
        sel, best = [], -1
        while len(sel) < cal.shape[1]:
            cand = [(worst(sel + [j]), j) for j in range(cal.shape[1]) if j not in sel]
            score, j = max(cand)
            if score <= best + 1e-4:
                break
            sel, best = sel + [j], score
        w = np.zeros(cal.shape[1])
        w[sel] = 1
        return w

    def result(self, stat):
        return Result(stat["cal"], stat["test"], self.label)


# ---------------------------------------------------------------------------------------------- the study

def term_sets(n_sites):
    h = [f"h{k + 1}" for k in range(n_sites)]
    tr = [f"trans.{a}{b}" for a, b in zip(h, h[1:])]
    knn = [f"knn.{s}" for s in h]
    output = [f"output.{s}" for s in h]
    gauss = [f"joint.{s}" for s in h] + tr + output
    daemon = ([f"{t}.{s}" for s in h for t in ("indep", "joint", "interaction")]
              + [f"{t}.{a}{b}" for a, b in zip(h, h[1:]) for t in ("trans", "dependence")] + output)
    return {"knn-sites": knn, "local": knn + ["knn.cat"], "output+local": output + knn + ["knn.cat"],
            "gauss+local": gauss + knn + ["knn.cat"], "daemon+local": daemon + knn + ["knn.cat"],
            "gauss": gauss, "daemon": daemon}


TWO_STAGE = {"gauss|local": ("gauss", "local"), "daemon|local": ("daemon", "local")}


def baselines(st):
    est = st.est
    rows = {}
    rows["kNN concat std K=5"] = {g: st.knn_cat(g, 5) for g in ("cal", "test")}
    rows["LW Mahalanobis sum"] = {g: sum(m.maha(x) for m, x in zip(st.gauss, getattr(st, g).sites)) for g in ("cal", "test")}
    # Ledoit-Wolf Mahalanobis on all sites concatenated: sees every cross-site relation a Gaussian can hold
    lw = LedoitWolf().fit(np.hstack(est.sites))

    def concat_maha(sites):
        z = np.hstack(sites) - lw.location_
        return np.einsum("ij,jk,ik->i", z, lw.precision_, z)
    rows["LW Mahalanobis concat"] = {g: concat_maha(getattr(st, g).sites) for g in ("cal", "test")}
    rows["Lee class-cond sum"] = {g: sum(o.nearest(x) for o, x in zip(st.outg, getattr(st, g).sites)) for g in ("cal", "test")}
    rows["Lee class-cond last"] = {g: st.outg[-1].nearest(getattr(st, g).sites[-1]) for g in ("cal", "test")}
    # ECOD on all coordinates, fitted on the estimation traces; each query counted in its own ECDF (pyod)
    ref = np.sort(np.hstack(est.sites), axis=0)
    n = len(ref)
    sk = np.sign(skew(np.hstack(est.sites), axis=0))
    sk = np.nan_to_num(sk)

    def ecod(x):
        left = np.column_stack([np.searchsorted(ref[:, j], x[:, j], side="right") for j in range(x.shape[1])])
        right = n - np.column_stack([np.searchsorted(ref[:, j], x[:, j], side="left") for j in range(x.shape[1])])
        ul, ur = -np.log((1 + left) / (n + 1)), -np.log((1 + right) / (n + 1))
        us = ul * -1 * np.sign(sk - 1) + ur * np.sign(sk + 1)
        return np.maximum(us, np.maximum(ul, ur)).sum(1)  # pyod >= 1.1 (the paper: max(us, (ul + ur) / 2))
    rows["ECOD"] = {g: ecod(np.hstack(getattr(st, g).sites)) for g in ("cal", "test")}
    results = {}
    for k, v in rows.items():
        results[k] = st.result(v)
        results[k].stat = v
    return results


RULES = ("fisher", "minp", "cauchy", "wfisher", "selfisher")


def candidates(st, Ks, spaces=("raw", "std", "pca95", "pca99")):
    sets = term_sets(len(st.est.sites))
    rows = {}

    def combine(tset, space, K, label):
        for rule in RULES:
            weights = {"wfisher": st.auc_weights, "selfisher": st.select_weights}.get(rule)
            stat, w = st.combined(sets[tset], "fisher" if weights else rule, space, K, weights)
            r = st.result(stat)
            r.weights, r.stat = dict(zip(sets[tset], w)), stat
            rows[f"{label} {rule}"] = r

    for space in spaces:
        for K in Ks:
            T = {g: st.terms(g, space, K) for g in ("cal", "test")}
            for s in range(len(st.est.sites)):
                n = f"knn.h{s + 1}"
                rows[f"term knn[{space},K={K}] h{s + 1}"] = st.result({g: T[g][n] for g in T})
            for tset in sets:
                if tset not in ("gauss", "daemon"):
                    combine(tset, space, K, f"{tset}[{space},K={K}]")
            for label, parts in TWO_STAGE.items():
                for rule in ("fisher", "minp", "cauchy"):
                    stat = st.two_stage([sets[t] for t in parts], rule, space, K)
                    r = rows[f"{label}[{space},K={K}] {rule}"] = st.result(stat)
                    r.stat = stat
    for tset in ("gauss", "daemon"):  # no kNN term: independent of the space
        combine(tset, spaces[0], Ks[0], tset)
    return rows


def bootstrap_margin(stat, best, label, reps=300, seed=0):
    """Paired, stratified bootstrap over test traces: standard error of AUROC(candidate) - AUROC(best)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(label), np.flatnonzero(~label)
    out = []
    for _ in range(reps):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        lab = label[idx]
        out.append(auroc(stat[idx], lab) - auroc(best[idx], lab))
    return np.std(out)


# ---------------------------------------------------------------------------------------------- families

def lw_intensity(z, target_diag):
    """Ledoit-Wolf shrinkage intensity of the covariance of z towards diag(target_diag) (any diagonal target):
    min(1, beta / delta), beta = mean over rows of ||z_i z_i' - S||_F^2 / n, delta = ||S - F||_F^2."""
    zc = z - z.mean(0)
    n = len(zc)
    cov = zc.T @ zc / n
    delta = ((cov - np.diag(target_diag)) ** 2).sum()
    # sum_i ||z_i z_i' - S||^2 = sum_i ||z_i||^4 - n ||S||^2
    beta = (((zc ** 2).sum(1) ** 2).sum() - n * (cov ** 2).sum()) / n ** 2
    return float(min(1.0, max(beta, 0.0) / delta)) if delta > 0 else 1.0


class RidgeTransition:
    """Fixed transition: y | x ~ N(my + B (x - mx), R) with B the ridge regression of y on x, penalty by
    generalised cross-validation (one penalty shared by all outputs, log grid over the squared singular
    values), and R the Ledoit-Wolf-shrunk covariance of the in-sample residuals (their own intensity)."""

    def __init__(self, x, y, grid=np.logspace(-6, 2, 33)):
        self.mx, self.my = x.mean(0), y.mean(0)
        xc, yc = x - self.mx, y - self.my
        n = len(x)
        u, d, vt = np.linalg.svd(xc, full_matrices=False)
        uty = u.T @ yc
        base = (yc ** 2).sum() - (uty ** 2).sum()  # the part of y outside span(x): no penalty reaches it
        best = None
        for lam in grid * (d ** 2).mean():
            f = d ** 2 / (d ** 2 + lam)
            rss = base + (((1 - f)[:, None] * uty) ** 2).sum()
            gcv = rss / n / (1 - f.sum() / n) ** 2
            if best is None or gcv < best[0]:
                best = (gcv, lam)
        self.lam = best[1]
        self.b = (vt.T @ ((d / (d ** 2 + self.lam))[:, None] * uty)).T
        r = yc - xc @ self.b.T
        cov, self.shrinkage = ledoit_wolf(r, assume_centered=True)
        self.inv, self.logdet = chol_inv(cov)
        self.p = y.shape[1]

    def surprise(self, x, y):
        r = (y - self.my) - (x - self.mx) @ self.b.T
        return 0.5 * (((r @ self.inv.T) ** 2).sum(1) + self.logdet + self.p * np.log(2 * np.pi))


class JointLWTransition(Transition):
    """Fixed transition: as Transition, but the joint covariance of (x, y) is shrunk (to the same block-wise
    scaled identity) with the joint vector's own Ledoit-Wolf intensity, not the larger of the two sites'."""

    def __init__(self, x, y, gx, gy):
        px = x.shape[1]
        z = np.hstack([x, y])
        cov = np.cov(z, rowvar=False, bias=True)
        target = np.concatenate([np.full(px, np.trace(cov[:px, :px]) / px),
                                 np.full(y.shape[1], np.trace(cov[px:, px:]) / y.shape[1])])
        s = self.shrinkage = lw_intensity(z, target)
        cov = (1 - s) * cov + s * np.diag(target)
        sxx, syx, syy = cov[:px, :px], cov[px:, :px], cov[px:, px:]
        self.b = np.linalg.solve(sxx, syx.T).T
        self.mx, self.my = gx.mean, gy.mean
        self.inv, self.logdet = chol_inv(syy - self.b @ syx.T)
        self.p = y.shape[1]


def family_terms(st, group, K, space="pca99"):
    """All terms of one group ("cal" or "test"), with the fixed transitions' terms added:
    trans{r,j}.hkhk+1 (ridge-GCV / joint-LW transition) and dependence{r,j}.hkhk+1 = -(joint.hk+1 - trans)."""
    T = dict(st.terms(group, space, K))
    if not hasattr(st, "trans_fixed"):
        est = st.est
        st.trans_fixed = {
            "r": [RidgeTransition(est.sites[i], est.sites[i + 1]) for i in range(len(est.sites) - 1)],
            "j": [JointLWTransition(est.sites[i], est.sites[i + 1], st.gauss[i], st.gauss[i + 1])
                  for i in range(len(est.sites) - 1)]}
    sites = st.group(group)[0]
    for v, models in st.trans_fixed.items():
        for k, m in enumerate(models):
            a, b = f"h{k + 1}", f"h{k + 2}"
            T[f"trans{v}.{a}{b}"] = m.surprise(sites[k], sites[k + 1])
            T[f"dependence{v}.{a}{b}"] = -(T[f"joint.{b}"] - T[f"trans{v}.{a}{b}"])
    T["maha.sum"] = sum(g.maha(x) for g, x in zip(st.gauss, sites))
    # robust variants: the independence term with the variances of the LW-shrunk covariance (its diagonal,
    # floored at s * mean variance, not at 1e-6 * mean variance: near-dead units no longer explode), and the
    # concatenated kNN standardised the same way, or on the per-site whitened principal coordinates
    for k, g in enumerate(st.gauss):
        d = np.diag(g.cov)
        T[f"indeplw.h{k + 1}"] = 0.5 * (((sites[k] - g.mean) ** 2 / d).sum(1) + np.log(d).sum() + g.p * np.log(2 * np.pi))
        T[f"interactionlw.h{k + 1}"] = -(T[f"indeplw.h{k + 1}"] - T[f"joint.h{k + 1}"])
    # off-subspace energy per site: the LW Mahalanobis norm of the component outside the whitened principal
    # subspace the kNN term uses (the directions holding the last 1% (pca99) / 5% (pca95) of the variance)
    if not hasattr(st, "eig"):
        st.eig = []
        for g in st.gauss:
            w, v = np.linalg.eigh(g.cov)
            st.eig.append((w[::-1], v[:, ::-1]))
    for k, (g, (w, v)) in enumerate(zip(st.gauss, st.eig)):
        z2 = ((sites[k] - g.mean) @ v) ** 2 / w
        for level in (95, 99):
            r = st.spaces.maps[k][f"r{level}"]
            T[f"resid{level}.h{k + 1}"] = z2[:, r:].sum(1)
        key = ("white", k, group)
        if key not in st.ref:
            wt = lambda a: ((a - g.mean) @ v) / np.sqrt(w)  # noqa: E731
            st.ref[key] = nearest_distances(wt(st.est.sites[k]), wt(sites[k]), KMAX)
        T[f"knn.white.h{k + 1}"] = st.ref[key][:, K - 1]
    for name, f in (("catlw", lambda ss: np.hstack([(x - g.mean) / np.sqrt(np.diag(g.cov)) for x, g in zip(ss, st.gauss)])),
                    (f"cat{space}", lambda ss: np.hstack([st.mapped(space, k, x) for k, x in enumerate(ss)]))):
        key = (name, group)
        if key not in st.ref:
            st.ref[key] = nearest_distances(f(st.est.sites), f(sites), KMAX)
        T[f"knn.{name}"] = st.ref[key][:, K - 1]
    return T


def family_definitions(n_sites):
    """Families of terms: each family's statistic is Fisher over its terms' conformal p-values (a single
    term: the term itself), then calibrated conformally on the calibration traces."""
    h = [f"h{k + 1}" for k in range(n_sites)]
    pairs = [f"{a}{b}" for a, b in zip(h, h[1:])]
    site_terms = [f"{t}.{s}" for s in h for t in ("indep", "joint", "interaction")]
    output = [f"output.{s}" for s in h]

    def daemon(v=""):
        return site_terms + [f"{t}{v}.{p}" for p in pairs for t in ("trans", "dependence")] + output
    return {
        "G": daemon(),             # the daemon's `mechanism` terms (current transition)
        "Gr": daemon("r"),         # ... with the ridge-GCV transition
        "Gj": daemon("j"),         # ... with the joint-LW transition
        "Gx": site_terms + output,  # ... with no transition terms at all
        "L": [f"knn.{s}" for s in h] + ["knn.cat"],
        "O": output,
        "M": ["maha.sum"],
        "T": [f"trans.{p}" for p in pairs],
        "TD": [f"{t}.{p}" for p in pairs for t in ("trans", "dependence")],  # the daemon's transition family
        "Tr": [f"transr.{p}" for p in pairs],
        # robust variants (family_terms): the independence/interaction terms on the LW covariance's diagonal
        "GxLW": [f"{t}.{s}" for s in h for t in ("indeplw", "joint", "interactionlw")] + output,
        "GLW": ([f"{t}.{s}" for s in h for t in ("indeplw", "joint", "interactionlw")]
                + [f"{t}.{p}" for p in pairs for t in ("trans", "dependence")] + output),
        # local families: per-site kNN in the full LW-whitened space (every eigendirection) + concatenated kNN
        # standardised by the LW diagonal (W); the same with the 1e-6-floored standardisation (Wcs); per-site
        # kNN in the pca99 subspace alone (Ls); the off-subspace energy of each site (R)
        "W": [f"knn.white.{s}" for s in h] + ["knn.catlw"],
        "Wcs": [f"knn.white.{s}" for s in h] + ["knn.cat"],
        "Ls": [f"knn.{s}" for s in h],
        "R": [f"resid99.{s}" for s in h],
    }


def family_pvalues(st, K, space="pca99"):
    """Per family: the family statistic's conformal p-value on calibration (leave-one-out) and test traces."""
    Tc, Tt = family_terms(st, "cal", K, space), family_terms(st, "test", K, space)
    out = {}
    for fam, names in family_definitions(len(st.est.sites)).items():
        stat = {}
        for g, T in (("cal", Tc), ("test", Tt)):
            cols = []
            for n in names:
                c, v = Tc[n], T[n]
                ok, good = ~np.isnan(c), ~np.isnan(v)
                p = np.ones(len(v))
                p[good] = tail_p(c[ok], v[good], loo=(g == "cal"))
                cols.append(p)
            stat[g] = COMBINE["fisher"](np.column_stack(cols), np.ones(len(names)))
        out[fam] = {g: tail_p(stat["cal"], stat[g], loo=(g == "cal")) for g in stat}
        out[fam]["stat"] = stat
    return out


FAMILY_COMBOS = ["G", "Gr", "Gj", "Gx", "GxLW", "L", "W", "M",
                 "G+L", "Gr+L", "Gj+L", "G+L+O", "Gr+L+O", "G+M", "G+M+L", "M+L", "M+L+O", "L+O",
                 "G+M+L+O", "Gx+L", "Gx+M+L", "Gr+M+L", "G+Tr+L",
                 "GxLW+W", "GxLW+Wcs", "GxLW+W+O", "Gx+W", "GLW+W", "G+W", "Gr+W", "Gj+W", "GxLW+Ls+R", "GxLW+Ls",
                 "M+W", "GxLW+M+W", "GxLW+TD+W", "GxLW+T+W", "TD"]
FAMILY_RULES = ("bonf", "cauchy", "fisher")


def family_candidates(st, K, space="pca99", combos=FAMILY_COMBOS):
    """Candidates from family p-values: min-p x (number of families) (Bonferroni), Cauchy (ACAT, equal
    weights) or Fisher across the families; each combined statistic calibrated conformally again by Result
    (on the calibration traces' leave-one-out values). r.fpr_direct: the FPR on clean test traces of the
    uncalibrated rule "combined p <= alpha" (Bonferroni: min p x m; Cauchy: the Cauchy tail of the mean)."""
    P = family_pvalues(st, K, space)
    rows = {}
    for combo in combos:
        fams = combo.split("+")
        for rule in FAMILY_RULES if len(fams) > 1 else ("fisher",):
            p = {g: np.column_stack([P[f][g] for f in fams]) for g in ("cal", "test")}
            if rule == "bonf":
                stat = {g: -np.log(np.minimum(1, p[g].min(1) * len(fams))) for g in p}
                direct = np.minimum(1, p["test"].min(1) * len(fams))
            elif rule == "cauchy":
                stat = {g: COMBINE["cauchy"](p[g], np.ones(len(fams)) / len(fams)) for g in p}
                direct = 0.5 - np.arctan(stat["test"]) / np.pi
            else:
                stat = {g: COMBINE["fisher"](p[g], np.ones(len(fams))) for g in p}
                direct = chi2.sf(stat["test"], 2 * len(fams))
            r = st.result(stat)
            r.stat = stat
            r.fpr_direct = (direct[~st.label] <= ALPHA).mean()
            rows[f"{combo} {rule}" if len(fams) > 1 else combo] = r
    return rows


def family_report(collections, Ks=(1, 3, 5), space="pca99", top=25, quiet=False, detail="GxLW+W fisher [K=1]"):
    """collections: {label: [(set name, set directory)]}; each collection is one full run (e.g. the digits
    sets of one seed plus the planted sets). Ranks every (K, candidate) by its worst AUROC margin over the
    best of the five baselines, over all sets of all collections."""
    margins, tpr, fpr, fprd, cols = {}, {}, {}, {}, []
    for label, sets in collections.items():
        for name, d in sets:
            fit, test = load(pathlib.Path(d) / "fit.jsonl"), load(pathlib.Path(d) / "test.jsonl")
            st = SetStudy(fit, test)
            base = baselines(st)
            best = max(r.auroc for r in base.values())
            best_t = max(r.tpr for r in base.values())
            col = f"{label}:{name}"
            cols.append(col)
            if not quiet:
                family_terms(st, "cal", Ks[0], space)
                shr = [(round(max(st.gauss[i].shrinkage, st.gauss[i + 1].shrinkage), 4), round(m.shrinkage, 4))
                       for i, m in enumerate(st.trans_fixed["j"])]
                print(f"{col}: best baseline {max(base, key=lambda k: base[k].auroc)} {best:.4f}; transition "
                      f"shrinkage (daemon, joint-LW) {shr}; ridge-GCV penalty "
                      f"{[float(f'{m.lam:.3g}') for m in st.trans_fixed['r']]}", flush=True)
            for K in Ks:
                for k, r in family_candidates(st, K, space).items():
                    key = f"{k} [K={K}]" if set(k.split(" ")[0].split("+")) & {"L", "W", "Wcs", "Ls"} else k
                    if key in margins and col in margins[key]:
                        continue
                    if key == detail:
                        print(f"  {detail} on {col}: AUROC {r.auroc:.4f} (best baseline {best:.4f}), TPR@1% {r.tpr:.3f} "
                              f"(best baseline {best_t:.3f}), FPR@.01 {r.fpr:.3f} (uncalibrated rule {r.fpr_direct:.3f})")
                    margins.setdefault(key, {})[col] = r.auroc - best
                    tpr.setdefault(key, {})[col] = r.tpr - best_t
                    fpr.setdefault(key, {})[col] = r.fpr
                    fprd.setdefault(key, {})[col] = r.fpr_direct
    rank = sorted(margins, key=lambda k: -min(margins[k].values()))
    print(f"\n{'candidate':26s} {'worst':>7s} {'mean':>7s} " + " ".join(f"{c[-9:]:>9s}" for c in cols)
          + "  wdTPR  maxFPR meanFPR maxFPRdir")
    for k in rank[:top] + [k for k in ("G", "M") if k not in rank[:top]]:
        m = [margins[k][c] for c in cols]
        print(f"{k:26s} {min(m):7.4f} {np.mean(m):7.4f} " + " ".join(f"{v:9.4f}" for v in m)
              + f"  {min(tpr[k].values()):5.3f}  {max(fpr[k].values()):6.3f} {np.mean(list(fpr[k].values())):7.4f}"
              + f" {max(fprd[k].values()):9.3f}")
    return margins, tpr, fpr, fprd


def guard_report(collections, weights=(1, 3, 10, 30)):
    """The study behind the `guarded` default (issue 21): the families statistic (GxLW+W Fisher, calibrated
    to p_f) against min(p_f, w * p_T) for transition families T (TD: transition and dependence terms; T:
    transition only) and Fisher(p_f, p_T), each calibrated again; AUROC and TPR@1% margins over the best
    baseline per set."""
    rows, cols = {}, []
    for label, sets in collections.items():
        for name, d in sets:
            S = SetStudy(load(pathlib.Path(d) / "fit.jsonl"), load(pathlib.Path(d) / "test.jsonl"))
            base = baselines(S)
            best, best_t = max(r.auroc for r in base.values()), max(r.tpr for r in base.values())
            P = family_pvalues(S, 1)
            f = {g: -2 * np.log(np.column_stack([P["GxLW"][g], P["W"][g]])).sum(1) for g in ("cal", "test")}
            pf = {g: tail_p(f["cal"], f[g], loo=(g == "cal")) for g in f}
            candidates = {"families": f}
            for t in ("TD", "T"):
                for w in weights:
                    candidates[f"min(pf,{w}x{t})"] = {g: -np.log(np.minimum(pf[g], np.minimum(1, w * P[t][g]))) for g in f}
                candidates[f"fisher(pf,{t})"] = {g: -2 * np.log(pf[g]) - 2 * np.log(P[t][g]) for g in f}
            for k, stat in candidates.items():
                r = S.result(stat)
                rows.setdefault(k, []).append((r.auroc - best, r.tpr - best_t))
            cols.append(name)
    print(f"{'candidate':18s} {'worst':>7s} " + " ".join(f"{c[:8]:>8s}" for c in cols))
    for k, v in rows.items():
        print(f"{k:18s} {min(x[0] for x in v):+7.4f} " + " ".join(f"{x[0]:+8.4f}" for x in v))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--sets", default="unseen,blend,patch,rotated,noise")
    parser.add_argument("--ks", default="1,5", help="neighbours for the candidate kNN terms in the tables")
    parser.add_argument("--sweep", default="", help="also rank (not tabulate) candidates with these K, e.g. 2,3,10,20")
    parser.add_argument("--top", type=int, default=30, help="candidates listed in the ranking")
    parser.add_argument("--weights", action="store_true", help="print the pseudo-anomaly weights")
    parser.add_argument("--families", action="append", default=[], metavar="DIR:SET,SET",
                        help="family-level study instead (family_report); repeatable, one collection each, e.g. "
                             "--families /tmp/digits:unseen,blend,patch,rotated,noise --families /tmp/es:backdoor,context,shift "
                             "(SETS_DIR is then ignored); --ks gives the K values (default here 1,3,5)")
    parser.add_argument("--guards", action="append", default=[], metavar="DIR:SET,SET",
                        help="the study of the guarded combination instead (guard_report), e.g. --guards /tmp/ms:pair3,recombined")
    args = parser.parse_args()
    if args.guards:
        cols = {}
        for spec in args.guards:
            d, _, sets = spec.rpartition(":")
            cols[d] = [(n, pathlib.Path(d) / n) for n in sets.split(",") if n]
        guard_report(cols)
        return 0
    if args.families:
        cols = {}
        for spec in args.families:
            d, _, sets = spec.rpartition(":")
            cols[d] = [(n, pathlib.Path(d) / n) for n in sets.split(",") if n]
        family_report(cols, Ks=tuple(int(k) for k in args.ks.split(",")) if args.ks != "1,5" else (1, 3, 5), top=args.top)
        return 0
    names = [s for s in args.sets.split(",") if s]
    shown = [int(k) for k in args.ks.split(",") if k]
    Ks = sorted(set(shown) | {int(k) for k in args.sweep.split(",") if k})
    if max(Ks) > KMAX or min(Ks) < 1:
        parser.error(f"K must be in 1..{KMAX}")
    base, cand, studies = {}, {}, {}
    for name in names:
        fit, test = load(args.dir / name / "fit.jsonl"), load(args.dir / name / "test.jsonl")
        st = studies[name] = SetStudy(fit, test)
        base[name] = baselines(st)
        cand[name] = candidates(st, Ks=Ks)
        ranks = [(m["r95"], m["r99"]) for m in st.spaces.maps]
        print(f"\n== {name}: {len(st.est)} estimation + {len(st.cal)} calibration fit traces; "
              f"{(~st.label).sum()} normal + {st.label.sum()} anomalous test; PCA ranks (95%, 99%) per site {ranks}")
        print(f"{'scorer':44s} {'AUROC':>7s} {'TPR@1%':>7s} {'FPR@.01':>8s}")
        for k, r in list(base[name].items()) + [("--", None)] + list(cand[name].items()):
            if r is None:
                print("-" * 69)
            elif k in base[name] or "K=" not in k or any(f"K={K}]" in k for K in shown):
                print(f"{k:44s} {r.auroc:7.4f} {r.tpr:7.3f} {r.fpr:8.3f}")
                if args.weights and k.endswith(("wfisher", "selfisher")):
                    print("    " + " ".join(f"{t}={w:.2f}" for t, w in r.weights.items() if w > 0))

    print("\n== margin against the best baseline (per set: candidate - max over the 5 baselines)")
    best_a = {n: max(base[n], key=lambda k, n=n: base[n][k].auroc) for n in names}
    best_t = {n: max(r.tpr for r in base[n].values()) for n in names}
    print("best baseline AUROC: " + ", ".join(f"{n} {base[n][best_a[n]].auroc:.4f} ({best_a[n]})" for n in names))
    print("best baseline TPR@1%: " + ", ".join(f"{n} {best_t[n]:.3f}" for n in names))
    summary = []
    for k in cand[names[0]]:
        if k.startswith("term"):
            continue
        da = [cand[n][k].auroc - base[n][best_a[n]].auroc for n in names]
        dt = [cand[n][k].tpr - best_t[n] for n in names]
        summary.append((min(da), k, da, dt, max(cand[n][k].fpr for n in names)))
    summary.sort(key=lambda t: -t[0])
    print(f"{'candidate':44s} {'worst':>7s} {'mean':>7s} " + " ".join(f"{n[:7]:>7s}" for n in names)
          + "  worst dTPR@1%  max FPR@.01")
    for i, (worst, k, da, dt, fpr) in enumerate(summary):
        if i < args.top or k == "daemon fisher":
            print(f"{k:44s} {worst:7.4f} {np.mean(da):7.4f} " + " ".join(f"{d:7.4f}" for d in da)
                  + f"  {min(dt):13.3f}  {fpr:11.3f}")
    print("\nbootstrap standard error of each per-set margin (300 paired resamples of the test traces):")
    for worst, k, da, dt, fpr in summary[:5]:
        se = [bootstrap_margin(cand[n][k].stat["test"], base[n][best_a[n]].stat["test"], studies[n].label)
              for n in names]
        print(f"{k:44s} " + " ".join(f"{d:+.4f}±{e:.4f}" for d, e in zip(da, se)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
