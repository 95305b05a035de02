-- MechWatch store, schema version 5: recent flag rates, to compare with alpha.
-- On traffic exchangeable with a reference's calibration set, at most alpha of its events are flagged;
-- a rate well above alpha says the reference no longer describes the traffic. `mechwatch drift REF`
-- tests it (one-sided binomial test) and says which terms moved; this view gives the counts to plot.
CREATE VIEW recent_flag_rates AS
SELECT r.name AS reference, r.alpha,
       count(CASE WHEN e.received_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour') THEN 1 END) AS events_last_hour,
       count(CASE WHEN e.received_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 hour') AND e.flagged = 1 THEN 1 END) AS flagged_last_hour,
       count(e.id) AS events_last_day,
       count(CASE WHEN e.flagged = 1 THEN 1 END) AS flagged_last_day
FROM reference_models r
LEFT JOIN events e ON e.reference_id = r.id AND e.received_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')
WHERE r.state = 'active'
GROUP BY r.id;

-- A reference's events in arrival order (recent windows, and retention's max_events cut).
CREATE INDEX events_by_reference_and_id ON events (reference_id, id);
