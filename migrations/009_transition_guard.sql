-- MechWatch store, schema version 9: transitions back in the default statistic (issue 21).
-- A reference finalized with a local sample combines its terms as `combination = 'families'` did (the
-- Gaussian site terms and the local terms, each family calibrated, Fisher across them, calibrated), then
-- guards that with the transition family (Fisher over its transition and dependence terms, calibrated):
-- the statistic is -log min(p_families, transition_weight * p_transitions), calibrated once more. NULL: no
-- guard (references finalized before this version). This version writes 10.
ALTER TABLE reference_models ADD COLUMN transition_weight REAL CHECK (transition_weight IS NULL OR transition_weight >= 1);
