"""Reference values for the principal-subspace tests (SubspaceTests.swift), computed with numpy.

Run from the repository root:  python3 Tests/MechWatchCoreTests/Fixtures/make_subspace_fixture.py
Writes subspace_fixture.json beside this script. Seeded, so re-running reproduces the committed file.

One site of width 40: 6 latent directions of decreasing strength plus isotropic noise, mean far from 0
(exercises WideMoments' shift). Expected: the biased covariance (np.cov, bias=True), its eigenvalues
(np.linalg.eigh), the rank the documented rule picks (SiteProjection: enough variance, and no strong direction left), the residual variance, the top-r eigenvectors,
and for probe vectors the squared norm of their subspace coordinates, the residual energy outside the
subspace and the independence and residual surprises, all in float64. The fit and probe vectors are
float32 values (in their shortest decimal form, exact when read as Float).
"""
import json
import pathlib

import numpy as np

rng = np.random.default_rng(20261129)
d, latent, n = 40, 6, 1000
fraction, edge, max_rank = 0.99, 4.0, 12
mixing = rng.normal(size=(d, latent)) * np.linspace(4.0, 1.0, latent)
mean = rng.normal(size=d) * 5 + 50
x = rng.normal(size=(n, latent)) @ mixing.T + 0.3 * rng.normal(size=(n, d)) + mean
x = x.astype(np.float32).astype(np.float64)  # traces are stored as float32
probes = rng.normal(size=(6, latent)) @ mixing.T + 0.3 * rng.normal(size=(6, d)) + mean
probes[-1] += 2.0 * rng.normal(size=d)  # off the subspace
probes[-2] += 3.0 * mixing[:, 0]        # far along the subspace
probes = probes.astype(np.float32).astype(np.float64)

mu = x.mean(axis=0)
cov = np.cov(x, rowvar=False, bias=True)
values, vectors = np.linalg.eigh(cov)
values, vectors = values[::-1], vectors[:, ::-1]
total = np.trace(cov)
k = min(max_rank, d - 1)
rank = k
for i in range(k - 1):
    captured = values[:i + 1].sum()
    if captured >= fraction * total and values[i + 1] <= edge * (total - captured) / (d - i - 1):
        rank = i + 1
        break
kept = values[:rank]
sigma2 = (total - kept.sum()) / (d - rank)
basis = vectors[:, :rank]
variances = x.var(axis=0)
c = probes - mu
z = c @ basis
res = c - z @ basis.T
energy = (res ** 2).sum(axis=1)
independence = 0.5 * ((c ** 2) / variances).sum(axis=1) + 0.5 * (np.log(variances).sum() + d * np.log(2 * np.pi))
residual_surprise = 0.5 * energy / sigma2 + 0.5 * (d - rank) * (np.log(2 * np.pi) + np.log(sigma2))

out = {
    "width": d, "fraction": fraction, "max_rank": max_rank,
    # float32 values in their shortest decimal form: read back as Float they are exact.
    "fit": [[float(str(np.float32(v))) for v in row] for row in x],
    "probes": [[float(str(np.float32(v))) for v in row] for row in probes],
    "mean": mu.tolist(), "covariance": cov.flatten(order="F").tolist(),
    "eigenvalues": values[:rank].tolist(), "rank": rank, "residual_variance": sigma2, "total_variance": total,
    "basis": basis.flatten(order="F").tolist(), "variances": variances.tolist(),
    "coordinate_norms": (z ** 2).sum(axis=1).tolist(), "residual_energy": energy.tolist(),
    "independence": independence.tolist(), "residual_surprise": residual_surprise.tolist(),
}
path = pathlib.Path(__file__).with_name("subspace_fixture.json")
path.write_text(json.dumps(out) + "\n")
print(f"wrote {path}: rank {rank}, explained {kept.sum() / total:.4f}")
