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
    indep = -norm(loc=mu, scale=np.sqrt(var)).logpdf(t).sum(axis=1)
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

out = {
    "sites": [{"name": k, "width": v} for k, v in sites.items()],
    "fit": fit,
    "test": test,
    "expected": expected,
    "conformal": {"calibration": cal.tolist(), "queries": queries.tolist(), "p_values": [float(p) for p in pvals]},
}
path = pathlib.Path(__file__).with_name("core_fixture.json")
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
