-- MechWatch store, schema version 3: reference ids are never reused.
-- A deleted reference's id is recorded here, and a new reference takes an id above every id in
-- reference_models and in this table. So a write still queued for a deleted reference can never land
-- in a reference created later under the same name (it fails its foreign key instead), and event and
-- trace ids in logs or exports keep pointing at one reference for good.
CREATE TABLE deleted_references (
    id         INTEGER PRIMARY KEY,          -- the deleted reference_models.id
    name       TEXT NOT NULL,
    deleted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
