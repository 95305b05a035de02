-- MechWatch store, schema version 6: a reference's own retention settings (set at finalize). NULL: the
-- daemon's retention_days, retention_flagged_days, max_events apply; 0: keep for good / no cap.
ALTER TABLE reference_models ADD COLUMN retention_days INTEGER CHECK (retention_days IS NULL OR retention_days >= 0);
ALTER TABLE reference_models ADD COLUMN retention_flagged_days INTEGER CHECK (retention_flagged_days IS NULL OR retention_flagged_days >= 0);
ALTER TABLE reference_models ADD COLUMN max_events INTEGER CHECK (max_events IS NULL OR max_events >= 0);
