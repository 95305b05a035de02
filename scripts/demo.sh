#!/usr/bin/env bash
# End-to-end demo: start the daemon on the default config, fit a reference from a small MLP's trusted
# traces, score normal and planted-anomaly traces, and show what was flagged and why.
set -euo pipefail
BIN=${1:-.build/debug/mechwatch}
OUT=.demo
REF=demo-mlp
mkdir -p "$OUT"

echo "== 1. traces of a small numpy MLP (scripts/demo_traces.py)"
python3 scripts/demo_traces.py "$OUT"

echo "== 2. mechwatch serve (Config/mechwatch.toml; log in $OUT/serve.log)"
if "$BIN" status >/dev/null 2>&1; then
    echo "a mechwatch daemon already answers on the default socket; stop it first (the demo starts its own)" >&2
    exit 1
fi
"$BIN" serve >"$OUT/serve.log" 2>&1 &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    "$BIN" status >/dev/null 2>&1 && break
    kill -0 $DAEMON 2>/dev/null || { cat "$OUT/serve.log"; exit 1; }
    sleep 0.1
done
"$BIN" status
"$BIN" reference delete "$REF" >/dev/null 2>&1 || true   # start the demo's reference afresh

echo "== 3. fit: stream trusted traces, then finalize (estimate + calibrate)"
"$BIN" send "$OUT/fit.jsonl" --fit --reference "$REF"
"$BIN" reference finalize "$REF"
"$BIN" reference show "$REF"

echo "== 4. score: stream live traces (normal, shifted, trigger)"
"$BIN" send "$OUT/live.jsonl" --reference "$REF"

echo "== 5. mechwatch flags --reference $REF --sort score --limit 10 (most anomalous first)"
"$BIN" flags --reference "$REF" --sort score --limit 10

TOP=$("$BIN" flags --reference "$REF" --sort score --limit 1 --format csv | tail -n 1 | cut -d, -f1)
echo "== 6. mechwatch event $TOP (the most anomalous)"
"$BIN" event "$TOP"

DB=$("$BIN" status --format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["database"])')
echo "== 7. the store, queried directly: sqlite3 $DB"
sqlite3 -header -column "$DB" "
  SELECT json_extract(e.meta, '\$.kind') AS kind, count(*) AS events, sum(e.flagged) AS flagged,
         round(avg(e.flagged), 3) AS flag_rate
  FROM events e JOIN reference_models r ON r.id = e.reference_id
  WHERE r.name = '$REF' GROUP BY kind ORDER BY kind;"
echo "(normal traces are drawn like the fit traces, so they are flagged at most at alpha = $(sed -n 's/^alpha *= *//p' Config/mechwatch.toml)"
echo " on average: p-values are ranks among the 596 calibration traces, so at alpha 0.01 about 0.8%; with the"
echo " calibration set's own sampling, 0 to 9 of 400 normal traces is the 95% range. See README for the schema.)"

echo "== 8. a report to look at: python -m mechwatch.report"
PYTHONPATH=clients/python python3 -m mechwatch.report --database "$DB" --reference "$REF" -o "$OUT/report.html"
echo "report written to $(pwd)/$OUT/report.html (open it in a browser)"
