"""Seeded, bounded fuzz of `import` with crafted files (issue 20): take a valid export (an active reference
file with outputs and a local sample, a collecting one, a moment shard), mutate one table, recompute the
checksum as the daemon does, import it, and check.

Mutations, one per file: delete or duplicate a row; a blob truncated, extended, zeroed, replaced by a
20 MB zeroblob, NULL, text, or with NaN/Inf/huge written at a random aligned offset; an integer or real
set to -1, 0, 2^62, 1e308, NULL or text; a text set empty, 300 bytes long or with a NUL; a column renamed
away; a column added (stored, or generated as a 50 MB zeroblob); the table replaced by a view that never
ends (not resealed: the view is made after); an extra table.
Check constraints are off while editing, so values the schema forbids get in too.

Invariants (a failure names the seed, the iteration and the mutation):
  F1  each import answers within 30 s with either ok or a specific refusal: invalid_reference_file,
      reference_too_large or cannot_finalize — never store_error, internal_error or a dropped connection;
  F2  an ok import is active or collecting as the original; an active one scores the probes (unless a site
      was renamed or resized: then `unknown_site`, `missing_site` or `wrong_width`) with finite scores and p
      in [0, 1]; if the mutation left the model's rows alone (it touched only rows the model
      does not read) the scores equal the original's exactly;
  F3  `status` answers within 1 s after every import;
  F4  every 25 imports: SIGTERM exits within 5 s, the restart succeeds, no reference is unavailable, and the
      references are exactly those imported ok and not deleted since (nothing half-stored).

Usage: python3 scripts/file_fuzz.py BINARY [--seed N] [--seconds S]   (default 60 s)
Prints counts of outcomes by mutation kind and `file fuzz: N passed, M failed`; exit 1 on any failure.
"""
import argparse
import collections
import os
import pathlib
import random
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    os.environ["MECHWATCH_BIN"] = str(pathlib.Path(args.binary).resolve())
    sys.path[:0] = [str(REPO / "clients" / "python"), str(REPO / "clients" / "python" / "tests")]
    from crafted import edited, make_exports  # noqa: E402
    from conftest import Daemon  # noqa: E402
    from mechwatch import Client, MechWatchError  # noqa: E402

    work = pathlib.Path(tempfile.mkdtemp(prefix="mechwatch-file-fuzz-"))
    (work / "source").mkdir()
    (work / "target").mkdir()
    source = Daemon(work / "source").start()
    try:
        files, probes = make_exports(source, work / "source")
        with Client(source.socket) as c:
            original = [r.score for r in c.score_arrays("act", probes)]
    finally:
        source.stop()
    target = Daemon(work / "target").start()
    rng = random.Random(args.seed)
    outcomes = collections.Counter()
    failures = []
    imported = set()
    deadline = time.time() + args.seconds
    k = 0
    while time.time() < deadline and len(failures) < 6:
        k += 1
        base = rng.choice(sorted(files))
        path = work / f"f{k}{pathlib.Path(base).suffix}"
        mutation, statements, model_untouched = mutate(files[base], rng)
        try:
            edited(files[base], path, *statements, tolerant=True)
        except sqlite3.Error:
            outcomes[(mutation, "not applicable")] += 1
            continue
        name = f"i{k}"
        try:
            with Client(target.socket, timeout=30) as c:
                started = time.monotonic()
                try:
                    reply = c.import_reference(str(path), name=name)
                    outcome = "ok"
                except MechWatchError as e:
                    reply, outcome = None, e.code
                if outcome not in ("ok", "invalid_reference_file", "reference_too_large", "cannot_finalize"):
                    failures.append(f"F1 iteration {k} ({base}: {mutation}): {outcome}: {e}")
                if time.monotonic() - started > 30:
                    failures.append(f"F1 iteration {k} ({base}: {mutation}): took {time.monotonic() - started:.1f} s")
                if outcome == "ok":
                    imported.add(name)
                    expected = "active" if base != "collecting.mwref" else "collecting"
                    if reply.get("state") != expected:
                        failures.append(f"F2 iteration {k} ({base}: {mutation}): state {reply.get('state')}")
                    try:
                        scored = c.score_arrays(name, probes) if expected == "active" else None
                    except MechWatchError as e:  # a site renamed or resized: the probes no longer fit it
                        if e.code not in ("unknown_site", "missing_site", "wrong_width"):
                            raise
                        scored = None
                    if scored is not None:
                        if not all(r.score == r.score and abs(r.score) != float("inf") and 0 <= r.p <= 1 for r in scored):
                            failures.append(f"F2 iteration {k} ({base}: {mutation}): non-finite scores or p")
                        if base == "active.mwref" and model_untouched and [r.score for r in scored] != original:
                            failures.append(f"F2 iteration {k} ({base}: {mutation}): scores differ from the original's")
                    if rng.random() < 0.7:
                        c.delete(name)
                        imported.discard(name)
                started = time.monotonic()
                c.status()
                if time.monotonic() - started > 1:
                    failures.append(f"F3 iteration {k} ({base}: {mutation}): status took {time.monotonic() - started:.2f} s")
        except (OSError, MechWatchError) as e:
            failures.append(f"F1 iteration {k} ({base}: {mutation}): {type(e).__name__}: {e}")
            if target.process.poll() is not None:
                failures.append(f"the daemon died: {target.log.read_text()[-2000:]}")
                break
        outcomes[(mutation, outcome)] += 1
        path.unlink(missing_ok=True)
        if k % 25 == 0:
            started = time.monotonic()
            target.stop()
            if time.monotonic() - started > 5:
                failures.append(f"F4 iteration {k}: SIGTERM took {time.monotonic() - started:.1f} s")
            target.start()
            with Client(target.socket) as c:
                states = {r["name"]: r["state"] for r in c.status()["references"]}
            if set(states) != imported or "unavailable" in states.values():
                failures.append(f"F4 iteration {k}: after restart {states}, expected {sorted(imported)}")
    target.stop()
    for f in failures:
        print("FAILED", f)
    kinds = collections.defaultdict(collections.Counter)
    for (mutation, outcome), n in outcomes.items():
        kinds[mutation.split(":")[0]][outcome] += n
    for kind in sorted(kinds):
        print(f"  {kind:<22} " + ", ".join(f"{o} {n}" for o, n in sorted(kinds[kind].items())))
    total = sum(outcomes.values())
    print(f"file fuzz (seed {args.seed}, {k} files): {total - len(failures)} passed, {len(failures)} failed")
    if failures:
        print(f"kept {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


# Tables a reference file's model is built from; a mutation elsewhere leaves the scores as they were.
MODEL_TABLES = {"reference_models", "reference_sites", "reference_transitions", "reference_outputs", "reference_sample"}


def mutate(path, rng):
    """A random mutation of one table of the file at `path`: (its description, the SQL, whether the rows an
    active reference's model is built from are untouched)."""
    db = sqlite3.connect(path)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    table = rng.choice(tables)
    columns = [(r[1], r[2]) for r in db.execute(f"SELECT * FROM pragma_table_info('{table}')")]
    try:
        rows = [r[0] for r in db.execute(f"SELECT rowid FROM {table}")]
        has_rowid = True
    except sqlite3.OperationalError:  # a WITHOUT ROWID table: rows picked by their first column
        rows, has_rowid = [], False
    db.close()
    untouched = table not in MODEL_TABLES
    pre = ["PRAGMA ignore_check_constraints = ON", "PRAGMA foreign_keys = OFF"]
    where = f"rowid = {rng.choice(rows)}" if rows else "0" if has_rowid else \
        f"{columns[0][0]} = (SELECT {columns[0][0]} FROM {table} ORDER BY random() LIMIT 1)"
    kind = rng.choice(["delete", "duplicate", "blob", "number", "text", "rename", "view", "extra", "column"])
    if kind == "delete":
        return f"delete:{table}", pre + [f"DELETE FROM {table} WHERE {where}"], untouched
    if kind == "duplicate":
        names = ", ".join(c for c, _ in columns)
        return f"duplicate:{table}", pre + [f"INSERT OR IGNORE INTO {table} ({names}) SELECT {names} FROM {table} WHERE {where}"], untouched
    if kind == "rename":
        column = rng.choice(columns)[0]
        return f"rename:{table}.{column}", pre + [f"ALTER TABLE {table} RENAME COLUMN {column} TO renamed_{column}"], False
    if kind == "view":
        return f"view:{table}", [f"AFTER ALTER TABLE {table} RENAME TO moved",
                                 f"AFTER CREATE VIEW {table} AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                                 "SELECT moved.* FROM moved, c"], False
    if kind == "column":  # a stored column the daemon does not write, or a generated one no table has
        if rng.random() < 0.5:
            return f"column:{table}", [f"ALTER TABLE {table} ADD COLUMN extra BLOB", f"UPDATE {table} SET extra = zeroblob(100000)"], False
        return f"column generated:{table}", [f"AFTER ALTER TABLE {table} ADD COLUMN extra BLOB AS (zeroblob(50000000)) VIRTUAL"], False
    if kind == "extra":
        return "extra table", ["CREATE TABLE extra (x BLOB)", "INSERT INTO extra VALUES (zeroblob(1000))"], True
    typed = [c for c, t in columns if (t.upper() == "BLOB") == (kind == "blob") and (t.upper() == "TEXT") == (kind == "text")]
    if not typed:
        return f"none:{table}", pre, True
    column = rng.choice(typed)
    if kind == "blob":
        choice = rng.choice(["truncate", "extend", "zero", "zeroblob", "null", "text", "nan", "inf", "huge"])
        value = {"truncate": f"substr({column}, 1, max(0, length({column}) - {rng.choice([1, 4, 8, 64])}))",
                 "extend": f"CAST({column} || zeroblob({rng.choice([1, 4, 8])}) AS BLOB)",
                 "zero": f"zeroblob(length({column}))", "zeroblob": "zeroblob(20000000)", "null": "NULL", "text": "'abc'"}.get(choice)
        if value is None:
            pattern = {"nan": struct.pack("<d", float("nan")), "inf": struct.pack("<d", float("inf")), "huge": struct.pack("<d", 1e300)}[choice]
            offset = 8 * rng.randrange(0, 4)
            value = f"CAST(substr({column}, 1, {offset}) || x'{pattern.hex()}' || substr({column}, {offset + 9}) AS BLOB)"
        return f"blob {choice}:{table}.{column}", pre + [f"UPDATE {table} SET {column} = {value} WHERE {where}"], untouched
    if kind == "number":
        value = rng.choice(["-1", "0", str(2 ** 62), "1e308", "NULL", "'text'", "-1e-300"])
        return f"number:{table}.{column}={value}", pre + [f"UPDATE {table} SET {column} = {value} WHERE {where}"], untouched
    value = rng.choice(["''", "'" + "x" * 300 + "'", "CAST(x'610062' AS TEXT)", "'collecting'", "'active'", "'fit'", "NULL"])
    return f"text:{table}.{column}={value[:12]}", pre + [f"UPDATE {table} SET {column} = {value} WHERE {where}"], untouched


if __name__ == "__main__":
    main()
