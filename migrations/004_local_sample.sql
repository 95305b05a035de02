-- MechWatch store, schema version 4: local evidence, and the two-family combination.
-- A reference finalized from this version on keeps a sample of its fit traces (at most
-- local_sample_size, drawn uniformly; calibration traces are never in it). A trace's `local` terms are
-- its distances to the local_k-th nearest sample trace: per site under the site's shrunk-covariance
-- Mahalanobis metric, and over all sites together (subject '*') with each coordinate standardised.

-- K of the local terms; NULL for a reference without a sample (finalized before this version, or with
-- local_sample_size = 0).
ALTER TABLE reference_models ADD COLUMN local_k INTEGER CHECK (local_k IS NULL OR local_k >= 1);
-- How the mechanism scorer combines term tail probabilities: 'fisher' (Fisher's method over every term;
-- references finalized before this version) or 'families' (Fisher within the Gaussian site family and
-- within the local family, each calibrated, then Fisher across the two; see the README).
ALTER TABLE reference_models ADD COLUMN combination TEXT NOT NULL DEFAULT 'fisher'
    CHECK (combination IN ('fisher', 'families'));

-- The sample: fit traces as received (float32, sites concatenated in site order, like fit_traces.vector).
CREATE TABLE reference_sample (
    reference_id INTEGER NOT NULL REFERENCES reference_models(id) ON DELETE CASCADE,
    row          INTEGER NOT NULL,
    vector       BLOB NOT NULL,
    PRIMARY KEY (reference_id, row)
) WITHOUT ROWID;
