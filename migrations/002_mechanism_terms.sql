-- MechWatch store, schema version 2: the surprise account (mechanism distinction).
-- References keep transition and output-conditioned statistics and the calibration of every term;
-- events keep every term's value and calibrated tail probability.

-- Which statistic's p-value flags: 'mahalanobis' (version 1's), 'independence', 'mechanism' (default
-- for references finalized from now on). References finalized by version 1 stay 'mahalanobis'.
ALTER TABLE reference_models ADD COLUMN scorer TEXT NOT NULL DEFAULT 'mahalanobis'
    CHECK (scorer IN ('mahalanobis', 'independence', 'mechanism'));
-- Calibration traces' term values: float64, row-major [calibration traces x terms] (term order: see
-- event_terms.term); NULL for references finalized by version 1 (recomputed from their stored
-- calibration traces when loaded).
ALTER TABLE reference_models ADD COLUMN calibration_terms BLOB;
-- Calibration traces' independence statistic (sum of mean-field surprises), float64 ascending.
ALTER TABLE reference_models ADD COLUMN calibration_independence BLOB;
-- Pooled within-output covariance of the site (float64 x width^2, column-major, shrunk); NULL when the
-- fit traces carried no outputs.
ALTER TABLE reference_sites ADD COLUMN output_covariance BLOB;

-- The linear-Gaussian conditional of site position+1 given site position.
CREATE TABLE reference_transitions (
    reference_id           INTEGER NOT NULL REFERENCES reference_models(id) ON DELETE CASCADE,
    position               INTEGER NOT NULL,  -- the earlier site's position
    coefficients           BLOB NOT NULL,     -- float64, width(position+1) x width(position), column-major
    conditional_covariance BLOB NOT NULL,     -- float64, width(position+1)^2, column-major
    PRIMARY KEY (reference_id, position)
) WITHOUT ROWID;

-- Per-output means of each site (outputs seen at least 10 times in fitting).
CREATE TABLE reference_outputs (
    reference_id INTEGER NOT NULL REFERENCES reference_models(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,            -- site position
    output       INTEGER NOT NULL,
    mean         BLOB NOT NULL,               -- float64 x width
    PRIMARY KEY (reference_id, position, output)
) WITHOUT ROWID;

-- Every term of an event's surprise account. kind: independence, joint, interaction (per site),
-- transition, dependence (per consecutive pair; subject 'a→b'), output (per site). value in nats
-- (NULL for an output term that fell back: output absent or too rare); p its calibrated tail
-- probability (upper tail; lower tail for interaction and dependence, the explained nats).
CREATE TABLE event_terms (
    event_id INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    term     INTEGER NOT NULL,               -- position in the reference's term order
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,                  -- site name, or 'earlier→later' for transition terms
    value    REAL,
    p        REAL NOT NULL,
    PRIMARY KEY (event_id, term)
) WITHOUT ROWID;

-- Statistics of each scorer per event, so scorers can be compared on stored traffic. From this version
-- on, events.score and events.p_value are those of the reference's scorer (named in events.scorer;
-- NULL for events scored by version 1, whose score is the Mahalanobis sum).
ALTER TABLE events ADD COLUMN scorer TEXT;           -- the scorer that decided `flagged`
ALTER TABLE events ADD COLUMN p_mahalanobis REAL;
ALTER TABLE events ADD COLUMN p_independence REAL;
ALTER TABLE events ADD COLUMN p_mechanism REAL;

-- Terms with event, reference and flag, e.g. "which transition breaks most often this week":
--   SELECT subject, count(*) FROM event_term_scores WHERE kind = 'dependence' AND p <= 0.01
--   AND time >= date('now', '-7 days') GROUP BY subject ORDER BY 2 DESC;
CREATE VIEW event_term_scores AS
SELECT t.event_id AS event, r.name AS reference, e.received_at AS time, t.term, t.kind, t.subject,
       t.value, t.p, e.flagged
FROM event_terms t
JOIN events e ON e.id = t.event_id
JOIN reference_models r ON r.id = e.reference_id;
