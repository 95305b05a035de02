-- MechWatch store, schema version 8: imports written in chunks (issue 20).
-- A reference imported from a file (a reference file or a moment shard) is copied into the store a
-- bounded chunk per commit, so other writes go between them. While its id is listed here the import is
-- unfinished: the daemon hides the reference from every listing, removes it if the import fails, and
-- at start-up removes any left by a daemon that stopped mid-import. The last chunk's commit removes the
-- row, and with it the reference appears whole.
CREATE TABLE pending_imports (
    reference_id INTEGER PRIMARY KEY REFERENCES reference_models(id) ON DELETE CASCADE
);
