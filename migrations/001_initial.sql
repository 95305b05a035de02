-- MechWatch store, schema version 1.
-- Applied by the daemon at start-up inside one transaction and recorded in schema_migrations.
-- Times are UTC ISO-8601 text with milliseconds ('2026-11-24T22:10:58.123Z').
-- Vectors are little-endian blobs: float64 for fitted statistics, float32 for stored traces.

-- A reference: trusted behaviour learned from fit traces, then used to score new ones.
-- state: 'collecting' (accepting fit traces) -> 'active' (finalized, scoring).
CREATE TABLE reference_models (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    state                TEXT NOT NULL CHECK (state IN ('collecting', 'active')),
    alpha                REAL NOT NULL CHECK (alpha > 0 AND alpha < 1),
    calibration_fraction REAL NOT NULL CHECK (calibration_fraction > 0 AND calibration_fraction < 1),
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finalized_at         TEXT,
    fit_count            INTEGER NOT NULL DEFAULT 0,  -- traces in the fitted moments
    calibration_count    INTEGER NOT NULL DEFAULT 0,  -- traces held out for calibration
    calibration_scores   BLOB                         -- float64, ascending; set when active
);

-- The sites (layers) of a reference in the order fixed by its first fit trace, and their fitted
-- statistics once the reference is active (NULL while collecting).
CREATE TABLE reference_sites (
    reference_id INTEGER NOT NULL REFERENCES reference_models(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,          -- 0-based site order
    name         TEXT NOT NULL,
    width        INTEGER NOT NULL CHECK (width > 0),
    shrinkage    REAL,                      -- Ledoit-Wolf intensity in [0, 1]
    mean         BLOB,                      -- float64 x width
    variances    BLOB,                      -- float64 x width (floored, for the independence term)
    covariance   BLOB,                      -- float64 x width^2, column-major, shrunk
    PRIMARY KEY (reference_id, position),
    UNIQUE (reference_id, name)
) WITHOUT ROWID;

-- Trusted traces received for a reference. role 'fit' rows are replayed into the moments after a
-- restart and deleted at finalize; role 'calibration' rows are the held-out set and are kept.
CREATE TABLE fit_traces (
    id           INTEGER PRIMARY KEY,
    reference_id INTEGER NOT NULL REFERENCES reference_models(id) ON DELETE CASCADE,
    client_id    TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('fit', 'calibration')),
    output       INTEGER,
    vector       BLOB NOT NULL,             -- float32, sites concatenated in site order
    received_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX fit_traces_by_reference ON fit_traces (reference_id, role, id);

-- One scored trace. client_id is the id the client sent (not unique: clients may repeat ids).
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,       -- the event number replies and the CLI show
    reference_id INTEGER NOT NULL REFERENCES reference_models(id) ON DELETE CASCADE,
    client_id    TEXT NOT NULL,
    received_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    output       INTEGER,
    score        REAL NOT NULL,             -- sum over sites of the squared Mahalanobis distance
    p_value      REAL NOT NULL,             -- conformal p-value against the calibration scores
    flagged      INTEGER NOT NULL CHECK (flagged IN (0, 1)),  -- p_value <= the reference's alpha
    meta         TEXT                       -- the client's meta object, as JSON
);
CREATE INDEX events_by_reference ON events (reference_id, flagged, id);
CREATE INDEX events_by_time ON events (received_at);

-- Per-site terms of each event, in nats where a surprise.
CREATE TABLE event_sites (
    event_id              INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    position              INTEGER NOT NULL,  -- reference_sites.position
    mahalanobis           REAL NOT NULL,     -- squared distance under the shrunk covariance
    joint_surprise        REAL NOT NULL,     -- -log N(x; mean, shrunk covariance)
    independence_surprise REAL NOT NULL,     -- -sum log N(x_i; mean_i, variance_i)
    PRIMARY KEY (event_id, position)
) WITHOUT ROWID;

-- Flagged events, newest first when ordered by event DESC.
CREATE VIEW flagged_events AS
SELECT e.id AS event, r.name AS reference, e.client_id AS id, e.received_at AS time,
       e.score, e.p_value AS p, e.output, e.meta
FROM events e JOIN reference_models r ON r.id = e.reference_id
WHERE e.flagged = 1;

-- Per-site terms with site names, e.g. "which site scores highest on flagged events".
CREATE VIEW event_site_scores AS
SELECT es.event_id AS event, r.name AS reference, s.name AS site, es.position,
       es.mahalanobis, es.joint_surprise, es.independence_surprise,
       es.independence_surprise - es.joint_surprise AS explained_interaction, e.flagged
FROM event_sites es
JOIN events e ON e.id = es.event_id
JOIN reference_models r ON r.id = e.reference_id
JOIN reference_sites s ON s.reference_id = e.reference_id AND s.position = es.position;

-- Window aggregates: events, flags and scores per reference per hour.
CREATE VIEW hourly_summary AS
SELECT r.name AS reference, substr(e.received_at, 1, 13) || ':00Z' AS hour,
       count(*) AS events, sum(e.flagged) AS flagged,
       round(avg(e.flagged), 4) AS flag_rate, avg(e.score) AS mean_score, max(e.score) AS max_score
FROM events e JOIN reference_models r ON r.id = e.reference_id
GROUP BY r.name, hour;
