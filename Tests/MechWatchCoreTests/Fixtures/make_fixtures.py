"""Reference values for MechWatchCore's tests, computed independently with numpy, scipy and scikit-learn.

Run from the repository root:  python3 Tests/MechWatchCoreTests/Fixtures/make_fixtures.py
Writes core_fixture.json beside this script. Seeded, so re-running reproduces the committed file.
"""
import json
import pathlib

import numpy as np
from scipy.stats import multivariate_normal, norm
from sklearn.covariance import ledoit_wolf

rng = np.random.default_rng(20261124)
sites = {"h1": 4, "h2": 3}
n_fit, n_test = 60, 8

fit, test, expected = {}, {}, {}
for name, d in sites.items():
    a = rng.normal(size=(d, d))
    cov = a @ a.T + 0.1 * np.eye(d)
    mean = rng.normal(size=d) * 3 + 10  # offset mean: exercises the shifted fourth-moment accumulators
    x = rng.multivariate_normal(mean, cov, size=n_fit)
    t = rng.multivariate_normal(mean, cov, size=n_test)
    t[-1] += 4.0  # one clearly shifted test vector
    shrunk, shrinkage = ledoit_wolf(x)  # centres with the sample mean, biased covariance
    mu = x.mean(axis=0)
    var = x.var(axis=0)  # biased, as MechWatch
    diff = t - mu
    maha = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(shrunk), diff)
    joint = -multivariate_normal(mean=mu, cov=shrunk).logpdf(t)
    # The independence term's variances are the shrunk covariance's diagonal.
    indep = -norm(loc=mu, scale=np.sqrt(np.diag(shrunk))).logpdf(t).sum(axis=1)
    fit[name] = x.tolist()
    test[name] = t.tolist()
    expected[name] = {
        "mean": mu.tolist(),
        "variances": var.tolist(),
        "sum_fourth_power_of_norms": float((np.sum((x - mu) ** 2, axis=1) ** 2).sum()),
        "shrinkage": float(shrinkage),
        "covariance": shrunk.flatten(order="F").tolist(),
        "mahalanobis": maha.tolist(),
        "joint_surprise": joint.tolist(),
        "independence_surprise": indep.tolist(),
    }

# Conformal p-values: p = (1 + #{c >= s}) / (n + 1), computed by brute force.
cal = rng.normal(size=25)
cal[3] = cal[7]  # a tie
queries = np.concatenate([cal[:3], [cal[7], -10.0, 10.0, 0.0]])
pvals = [(1 + np.sum(cal >= s)) / (len(cal) + 1) for s in queries]

# Transition (y given x) and output-conditioned terms, from a second generator so the values above
# stay as they were. y depends linearly on x; outputs 0-2 shift y's mean, output 3 is rare (fallback).
rng2 = np.random.default_rng(7)
n_t, p, q = 90, 4, 3
a = rng2.normal(size=(p, p))
x = rng2.normal(size=(n_t, p)) @ a + 2.0
coef = rng2.normal(size=(q, p))
labels = np.concatenate([np.repeat([0, 1, 2], 29), [3, 3, 3]])
class_shift = rng2.normal(size=(4, q)) * 2
y = x @ coef.T + class_shift[labels] + 0.3 * rng2.normal(size=(n_t, q))
tx = rng2.normal(size=(6, p)) @ a + 2.0
tl = np.array([0, 1, 2, 0, 3, 1])
ty = tx @ coef.T + class_shift[tl] + 0.3 * rng2.normal(size=(6, q))
ty[-1] += np.array([3.0, -3.0, 3.0])  # breaks the dependence
_, sy = ledoit_wolf(y)
mx, my = x.mean(0), y.mean(0)
# Ridge regression of y on x, its penalty chosen by generalised cross-validation, computed here from the
# definitions (hat matrix of the centred design, explicit residuals) rather than the eigenbasis the Swift
# code uses: lambda = tr(S_xx)/p * 10^k, k = -6, -5.75, ..., 2; GCV = (RSS/n) / (1 - df/n)^2.
xc, yc = x - mx, y - my
sxx = xc.T @ xc / n_t
best = None
for k in np.arange(-6, 2.0001, 0.25):
    lam = np.trace(sxx) / p * 10.0 ** k
    hat = xc @ np.linalg.solve(xc.T @ xc + n_t * lam * np.eye(p), xc.T)
    df = np.trace(hat)
    rss = np.sum((yc - hat @ yc) ** 2) / n_t
    gcv = rss / (1 - df / n_t) ** 2
    if best is None or gcv < best[0]:
        best = (gcv, lam)
lam = best[1]
b = (np.linalg.solve(sxx + lam * np.eye(p), xc.T @ yc / n_t)).T  # q x p
r = (yc - xc @ b.T).T @ (yc - xc @ b.T) / n_t  # in-sample residual covariance
cond = (1 - sy) * r + sy * np.trace(r) / q * np.eye(q)
resid = (ty - my) - (tx - mx) @ b.T
transition_nll = -multivariate_normal(mean=np.zeros(q), cov=cond).logpdf(resid)
means = {c: y[labels == c].mean(0) for c in range(4)}
within = sum((y[labels == c] - means[c]).T @ (y[labels == c] - means[c]) for c in range(4)) / n_t
pooled = (1 - sy) * within + sy * np.trace(within) / q * np.eye(q)
output_nll = [(-multivariate_normal(mean=means[c], cov=pooled).logpdf(v) if c != 3 else None) for v, c in zip(ty, tl)]

# Local terms: distance to the K-th nearest sample trace, per site under the shrunk covariance's Mahalanobis
# metric (whitened by the inverse of its Cholesky factor), and over all sites with each coordinate divided
# by its shrunk standard deviation; scikit-learn's exact NearestNeighbors.
from sklearn.neighbors import NearestNeighbors

rng3 = np.random.default_rng(11)
centres = rng3.normal(size=(3, 6)) * 4
lx = centres[rng3.integers(0, 3, size=200)] + rng3.normal(size=(200, 6)) @ np.diag([2, 1, 1, 0.5, 0.2, 0.1])
lq = np.concatenate([centres[rng3.integers(0, 3, size=6)] + rng3.normal(size=(6, 6)),
                     [(centres[0] + centres[1]) / 2, centres[2] + 6, np.zeros(6), centres[1]]])
l_shrunk, _ = ledoit_wolf(lx)
l_mean = lx.mean(0)
whiten = np.linalg.inv(np.linalg.cholesky(l_shrunk))
sample = lx[:150]
nn = NearestNeighbors(n_neighbors=3).fit((sample - l_mean) @ whiten.T)
local_whitened = nn.kneighbors((lq - l_mean) @ whiten.T)[0][:, 2]
scale = 1 / np.sqrt(np.diag(l_shrunk))
nn = NearestNeighbors(n_neighbors=3).fit((sample - l_mean) * scale)
local_standardised = nn.kneighbors((lq - l_mean) * scale)[0][:, 2]

# The 'families' combination, by brute force: term tail probabilities (leave-one-out for calibration
# traces), Fisher within the Gaussian family and within the local family, each family statistic's tail
# probability (leave-one-out again), Fisher across the families, and that statistic's tail probability.
# Term order: a/b independence, joint, interaction; a->b transition, dependence; a/b output; a, b, * local.
def tail_scale(asc, lower):
    n = len(asc)
    if n < 2:
        return 1.0
    k = min(n - 1, max(5, n // 10))
    vals = list(asc[:k + 1]) if lower else list(asc[::-1][:k + 1])
    thr = vals[k]
    mean_excess = sum(abs(v - thr) for v in vals[:k]) / k
    return max(mean_excess, 1e-9 * max(abs(asc[-1] - asc[0]), 1))


def tail_p(v, asc, scale, lower, excl):
    others = len(asc) - (1 if excl else 0)
    if others <= 0:
        return 1.0
    beyond = sum(1 for c in asc if (c <= v if lower else c >= v)) - (1 if excl else 0)
    if beyond > 0:
        return (1 + beyond) / (others + 1)
    if lower:
        extreme = (asc[1] if len(asc) > 1 else v) if excl else asc[0]
    else:
        extreme = (asc[-2] if len(asc) > 1 else v) if excl else asc[-1]
    excess = max(0.0, (extreme - v) if lower else (v - extreme))
    return max(np.exp(-excess / scale) / (others + 1), 1e-300)


rng4 = np.random.default_rng(5)
lower_tail = [False, False, True, False, False, True, False, True, False, False, False, False, False]
gaussian_family, local_family = [0, 1, 2, 3, 4, 5, 8, 9], [10, 11, 12]
cal_terms = rng4.gamma(3.0, 2.0, size=(40, 13))
cal_terms[5, 8] = np.nan  # an output fallback: no evidence
query_terms = rng4.gamma(3.0, 2.0, size=(5, 13))
query_terms[3, 10:] += 40  # far out locally
query_terms[4, 6] += 100   # a broken transition: reported, not combined
cols = [np.sort(cal_terms[~np.isnan(cal_terms[:, j]), j]) for j in range(13)]
scales = [tail_scale(cols[j], lower_tail[j]) for j in range(13)]


def term_ps(row, excl):
    return [1.0 if np.isnan(v) else tail_p(v, cols[j], scales[j], lower_tail[j], excl) for j, v in enumerate(row)]


cal_p = [term_ps(r, True) for r in cal_terms]
fam_stats = [[-2 * sum(np.log(p[j]) for j in fam) for p in cal_p] for fam in (gaussian_family, local_family)]
fam_sorted = [np.sort(f) for f in fam_stats]
fam_scales = [tail_scale(f, False) for f in fam_sorted]
finals = [sum(-2 * np.log(tail_p(fam_stats[f][i], fam_sorted[f], fam_scales[f], False, True)) for f in range(2))
          for i in range(len(cal_terms))]
final_sorted = np.sort(finals)
final_scale = tail_scale(final_sorted, False)
families_expected = []
for row in query_terms:
    p = term_ps(row, False)
    stat = sum(-2 * np.log(tail_p(-2 * sum(np.log(p[j]) for j in fam), fam_sorted[f], fam_scales[f], False, False))
               for f, fam in enumerate((gaussian_family, local_family)))
    families_expected.append([stat, tail_p(stat, final_sorted, final_scale, False, False)])

# The 'guarded' combination (issue 21): the families statistic's tail probability p_f (leave-one-out for
# calibration traces), the transition family's (a->b transition and dependence: Fisher, then its tail
# probability) p_t, the statistic -log min(p_f, 10 p_t), and its tail probability.
transition_family, weight = [6, 7], 10.0
t_stats = [-2 * sum(np.log(p[j]) for j in transition_family) for p in cal_p]
t_sorted = np.sort(t_stats)
t_scale = tail_scale(t_sorted, False)
guarded_cal = [max(-np.log(tail_p(finals[i], final_sorted, final_scale, False, True)),
                   -np.log(min(1.0, weight * tail_p(t_stats[i], t_sorted, t_scale, False, True)))) for i in range(len(cal_terms))]
guarded_sorted = np.sort(guarded_cal)
guarded_scale = tail_scale(guarded_sorted, False)
guarded_expected = []
for row, (stat, _) in zip(query_terms, families_expected):
    p = term_ps(row, False)
    t = -2 * sum(np.log(p[j]) for j in transition_family)
    g = max(-np.log(tail_p(stat, final_sorted, final_scale, False, False)),
            -np.log(min(1.0, weight * tail_p(t, t_sorted, t_scale, False, False))))
    guarded_expected.append([g, tail_p(g, guarded_sorted, guarded_scale, False, False)])

# Drift tests: the Beta-binomial upper tail P(X >= k) and the two-sample Kolmogorov-Smirnov test (scipy).
from scipy.stats import betabinom, ks_2samp, kstwobign

rng5 = np.random.default_rng(9)
beta_binomial_cases = [[k, n, a, b, float(betabinom.sf(k - 1, n, a, b))] for k, n, a, b in
                       [(1, 100, 3, 375), (20, 1000, 3, 375), (40, 1000, 3, 375), (100, 1000, 29, 572)]]
tied_a, tied_b = np.round(rng5.normal(size=400), 1), np.round(rng5.normal(loc=0.2, size=250), 1)  # many ties
tied_d = ks_2samp(tied_a, tied_b).statistic
# p from Kolmogorov's limiting distribution at sqrt(n m / (n + m)) D (scipy's ks_2samp "asymp" differs slightly).
tied_p = kstwobign.sf(np.sqrt(len(tied_a) * len(tied_b) / (len(tied_a) + len(tied_b))) * tied_d)

out = {
    "sites": [{"name": k, "width": v} for k, v in sites.items()],
    "fit": fit,
    "test": test,
    "expected": expected,
    "local": {"fit": lx.tolist(), "sample_count": 150, "queries": lq.tolist(), "k": 3,
              "whitened": local_whitened.tolist(), "standardised": local_standardised.tolist()},
    "drift": {"beta_binomial": beta_binomial_cases,
              "tied_a": tied_a.tolist(), "tied_b": tied_b.tolist(), "tied": [float(tied_d), float(tied_p)]},
    "families": {"calibration": [[None if np.isnan(v) else v for v in r] for r in cal_terms.tolist()],
                 "queries": query_terms.tolist(), "expected": families_expected, "guarded": guarded_expected},
    "conformal": {"calibration": cal.tolist(), "queries": queries.tolist(), "p_values": [float(p) for p in pvals]},
    "transition": {
        "fit_x": x.tolist(), "fit_y": y.tolist(), "fit_outputs": labels.tolist(),
        "test_x": tx.tolist(), "test_y": ty.tolist(), "test_outputs": tl.tolist(),
        "coefficients": b.flatten(order="F").tolist(), "conditional_covariance": cond.flatten(order="F").tolist(),
        "transition_surprise": transition_nll.tolist(), "output_surprise": output_nll,
        "output_minimum_count": 10,
    },
}
path = pathlib.Path(__file__).with_name("core_fixture.json")
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
