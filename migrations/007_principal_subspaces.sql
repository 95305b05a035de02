-- MechWatch store, schema version 7: principal-subspace references (issue 11).
-- A reference models each site either at full rank (as before) or in a principal subspace of rank r
-- (probabilistic PCA: the leading r eigenvectors of the site's covariance, and an isotropic residual
-- outside them). For a subspace reference, reference_sites' mean, variances, covariance and
-- output_covariance, reference_transitions and reference_outputs describe the site *coordinates in the
-- subspace* (rank wide), and reference_sample rows hold those coordinates (the sites' ranks summed);
-- the columns below hold the subspace itself. `width` stays the width of the traces' site.

-- 'full': every site at full rank; 'subspace': some or all sites in principal subspaces. While a
-- reference collects, 'subspace' means it keeps each site's co-moment only, its lower triangle packed in
-- Float64 (enough for the subspaces; the rest is fitted from the stored fit traces at finalize).
ALTER TABLE reference_models ADD COLUMN model TEXT NOT NULL DEFAULT 'full' CHECK (model IN ('full', 'subspace'));

-- Per site of a subspace reference (all NULL for a site kept at full rank):
ALTER TABLE reference_sites ADD COLUMN rank INTEGER CHECK (rank IS NULL OR (rank >= 1 AND rank < width));
ALTER TABLE reference_sites ADD COLUMN subspace_mean BLOB;       -- float64 x width: the site's mean
ALTER TABLE reference_sites ADD COLUMN subspace_basis BLOB;      -- float32 x width x rank, column-major, orthonormal columns
ALTER TABLE reference_sites ADD COLUMN subspace_eigenvalues BLOB; -- float64 x rank, descending
ALTER TABLE reference_sites ADD COLUMN residual_variance REAL;    -- mean variance outside the subspace
ALTER TABLE reference_sites ADD COLUMN total_variance REAL;       -- trace of the site's covariance
ALTER TABLE reference_sites ADD COLUMN site_variances BLOB;       -- float64 x width: per-coordinate variances (floored)

-- Each site of an active subspace reference: its rank (NULL: kept at full rank) and the fraction of its
-- variance the subspace holds (from the residual variance, which is floored), e.g.
--   SELECT reference, site, width, rank, round(explained, 3) FROM reference_subspaces;
CREATE VIEW reference_subspaces AS
SELECT r.name AS reference, s.position, s.name AS site, s.width, s.rank,
       CASE WHEN s.rank IS NULL OR s.total_variance <= 0 THEN 1.0
            ELSE max(0.0, 1.0 - s.residual_variance * (s.width - s.rank) / s.total_variance) END AS explained
FROM reference_sites s JOIN reference_models r ON r.id = s.reference_id
WHERE r.model = 'subspace' AND r.state = 'active';
