"""Seeded, bounded state-machine fuzz of `mechwatch serve`: random pipelined request sequences on several
connections, checked against a model of what the daemon must have done.

Each *sequence* opens 1-4 connections; each connection writes its whole pipeline (JSON `fit`, `score`,
`finalize`, `delete`, `status`, binary `fit`/`score`/`fit_batch`/`score_batch` in f16/f32/f64, edge values,
malformed and oversized lines, bad binary headers) in one `sendall`, then reads every reply. References are
`r0 r1 r2` with small random layouts (1-3 sites, widths 1-8), sometimes conflicting with the existing one.
Every few sequences the daemon is SIGKILLed and restarted on the same database (alternating small and
default limits), and the store is checked; at the end once more.

Invariants (a failure names the seed, the sequence, and the requests and replies that broke it):
  I1  the daemon stays up; every request gets exactly one JSON reply line with a boolean "ok", in request
      order, echoing the request's id (null only where the id cannot be read); no reply is missing (a
      timeout is a failure), none is extra. After an `unframeable` reply the connection is closed and
      nothing after it is executed.
  I2  protocol errors are specific: a line over max_message_bytes gets `line_too_long` (and only that line is
      skipped), a line of exactly the limit is not "too long", broken JSON `malformed_json`, a payload of
      the wrong size `payload_mismatch`, an unknown dtype `invalid_field`, a header with payload_bytes over
      the limit, invalid, or given twice `unframeable`.
  I3  values that are NaN, +-Inf, overflow a double (1e400) or lie outside float32's range (1e39, 3.5e38,
      1e300) are refused in fits and scores; finite values inside float32's range (0, +-1e-30, +-3e38,
      subnormals) are accepted.
  I4  per connection, requests take effect in order. On a connection alone (exact model): every reply is
      the one the model predicts (ok, or the specific error: unknown_reference, reference_not_active,
      reference_not_collecting, missing/unknown_site, wrong_width, cannot_finalize exactly when the
      acknowledged fit/calibration counts are too few for alpha), and an ok finalize reports exactly the
      acknowledged fit and calibration traces. With other connections racing: an ok finalize counts at
      least what this connection had acknowledged for the reference (plus what existed before the
      sequence), unless another connection deleted it.
  I5  fit replies are consistent: count, per-trace ids and roles (the role is the documented id hash),
      `calibration` = number of calibration roles. Score replies carry an integer event, a numeric score
      and p in [0, 1] (never null) and a boolean flag; score_batch's `flagged` = flagged results.
  I6  after each sequence `status` agrees with the model (references, states, fit/calibration counts, and
      the layout in `reference_sites`); for references no connection finalized or deleted, the counts
      grew by exactly the acknowledged traces.
  I7  SIGKILL + restart on the same database starts, answers status, and keeps every reference's state and
      counts. The store (read-only sqlite3): integrity_check ok; every fit_traces vector has 4 x the
      reference's total width bytes and no Inf/NaN; an active reference has no 'fit' rows; every
      acknowledged fit trace not deleted since (nor, for role fit, finalized) is stored once, under its
      reference, with its role and exactly the float32 values sent; every acknowledged event not deleted
      since is in `events` under its reference with its score, p and per-site rows; nothing a refused
      request or a request after `unframeable` carried is stored.

Usage: python3 scripts/sequence_fuzz.py BINARY [--seed N] [--sequences N] [--seconds S]
Starts sequences for --seconds (default 60; about 65 s in all on 2 cores), or until --sequences ran; prints each
failed sequence (up to 6) with its requests and replies, then counts of sequences and requests by kind and
`sequence fuzz: N passed, M failed`. Exit status 0 if every invariant held, 1 otherwise. The binary is copied
into the temporary directory first (kept on failure, with the daemon's log). A seed fixes the requests a
connection alone sends; where connections race, the daemon's interleaving (and so the model the next
sequences are steered by) can differ from run to run.
"""
import argparse
import collections
import copy
import json
import math
import pathlib
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import trace_files  # noqa: E402

REFS = ["r0", "r1", "r2"]
SITES = ["h0", "h1", "h2"]
FRACTION = 0.3            # --calibration-fraction of the daemon (constant over the run: refs keep theirs)
DEFAULT_ALPHA = 0.2
SMALL = {"max_message_bytes": 4096, "max_payload_bytes": 65536}
DEFAULT = {"max_message_bytes": 16777216, "max_payload_bytes": 67108864}
REPLY_TIMEOUT = 20.0
SITE_CODES = {"missing_site", "unknown_site", "wrong_width"}
DTYPES = {"f16": np.float16, "f32": np.float32, "f64": np.float64}

# Edge values: (text as JSON, value) in float32's range, and outside it / not finite.
JSON_OK = ["0", "-0.0", "1e-30", "-1e-30", "3e38", "-3e38", "1e20", "-1e20", "1e-40", "1.4e-45", "1e-50", "-1", "1E+2",
           "123456789012345678901234567890"]
JSON_BAD = ["1e39", "-1e39", "3.5e38", "1e300", "1e400", "-1e400", "NaN", "Infinity", "-Infinity"]
BIN_OK = {"f64": [0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38, 1e20, 1e-40, 1e-300],
          "f32": [0.0, 1e-30, -1e-30, 3e38, -3e38, -1e20, 1e-40, 1.4e-45, 3.4028234663852886e38],
          "f16": [0.0, 65504.0, -65504.0, 6e-8, 1e-5]}
BIN_BAD = {"f64": [1e39, -1e39, 1e300, math.inf, math.nan], "f32": [math.inf, -math.inf, math.nan],
           "f16": [math.inf, math.nan]}


def holds_out(trace_id, fraction=FRACTION):
    return trace_files.holds_out(trace_id, fraction)


def finalizable(fit, cal, alpha):
    return fit >= 2 and cal > 0 and 1 / (cal + 1) <= alpha


# ---------------------------------------------------------------------------------------------- model

@dataclass
class Ref:
    layout: list                 # [(site, width)] in the reference's order
    state: str = "collecting"
    fit: int = 0
    cal: int = 0

    def width(self):
        return sum(w for _, w in self.layout)


@dataclass
class Req:
    kind: str                    # fit fit_batch score score_batch finalize delete status malformed too_long
    id: str                      # at_limit payload_mismatch bad_dtype unframeable
    wire: bytes
    ref: str = None
    layout: list = None          # as sent
    traces: list = field(default_factory=list)   # [(trace id, float32 vector in `layout` order)]
    bad: bool = False            # carries a value that must be refused
    alpha: float = None
    fmt: str = "json"            # json or a dtype
    note: str = ""
    after_unframeable: bool = False
    reply: dict = None
    raw: str = None
    missing: str = None          # why no reply was read

    def describe(self):
        parts = [self.kind]
        if self.ref:
            parts.append(self.ref)
        if self.layout:
            parts.append("[" + ",".join(f"{s}:{w}" for s, w in self.layout) + "]")
        if self.kind in ("fit_batch", "score_batch", "fit", "score"):
            parts.append(f"{self.fmt} x{len(self.traces)}")
        if self.alpha is not None:
            parts.append(f"alpha={self.alpha}")
        if self.note:
            parts.append(f"({self.note})")
        return " ".join(parts) + f" id={self.id}"

    def code(self):
        return None if not self.reply or self.reply.get("ok") is not False else (self.reply.get("error") or {}).get("code")


def layout_matches(a, b):
    return sorted(a) == sorted(b)


# ---------------------------------------------------------------------------------------------- daemon

class Daemon:
    def __init__(self, binary, work):
        self.binary, self.work = binary, work
        self.socket, self.db = str(work / "d.sock"), str(work / "d.db")
        self.log = work / "serve.log"
        self.process, self.limits, self.starts = None, SMALL, 0

    def start(self, limits):
        self.limits, self.starts = limits, self.starts + 1
        with open(self.log, "a") as log:
            log.write(f"--- start {self.starts} {limits}\n")
        command = [self.binary, "serve", "--socket", self.socket, "--database", self.db,
                   "--alpha", str(DEFAULT_ALPHA), "--calibration-fraction", str(FRACTION), "--log-level", "warning",
                   "--max-message-bytes", str(limits["max_message_bytes"]),
                   "--max-payload-bytes", str(limits["max_payload_bytes"])]
        try:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(self.log, "a"), cwd=self.work)
        except OSError as e:
            return f"daemon did not start: {e}"
        deadline = time.time() + 30
        while not self.accepting():
            if self.process.poll() is not None or time.time() > deadline:
                return f"daemon did not start (rc {self.process.poll()}): {self.log_tail()}"
            time.sleep(0.02)
        return None

    def accepting(self):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        if self.process:
            self.process.wait()

    def stop(self):
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n=6):
        lines = self.log.read_text(errors="replace").splitlines()
        return " | ".join(lines[-n:])

    def call(self, obj):
        """One request on a fresh connection; the reply, or None."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(REPLY_TIMEOUT)
                s.connect(self.socket)
                s.sendall((json.dumps(obj) + "\n").encode())
                return json.loads(s.makefile("rb").readline())
        except (OSError, ValueError):
            return None

    def read_store(self):
        return sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)


# ---------------------------------------------------------------------------------------------- generation

class Generator:
    """Builds requests; `pred` is a connection's optimistic view of the daemon's state (steering only)."""

    def __init__(self, rng, nprng, limits):
        self.g, self.np, self.limits = rng, nprng, limits

    def new_layout(self):
        names = self.g.sample(SITES, self.g.randint(1, 3))
        return [(s, self.g.randint(1, 8)) for s in names]

    def conflicting(self, layout):
        layout = list(layout)
        extra = [s for s in SITES + ["x9"] if s not in dict(layout)]
        how = self.g.choice(["width"] + (["drop"] if len(layout) > 1 else []) + (["add"] if extra else []))
        if how == "width":
            k = self.g.randrange(len(layout))
            layout[k] = (layout[k][0], layout[k][1] % 8 + 1)
        elif how == "drop":
            layout.pop(self.g.randrange(len(layout)))
        else:
            layout.append((self.g.choice(extra), self.g.randint(1, 8)))
        return layout

    def layout_for(self, ref, pred):
        if ref not in pred or not pred[ref].layout:
            return self.new_layout()
        if self.g.random() < 0.1:
            return self.conflicting(pred[ref].layout)
        layout = list(pred[ref].layout)
        if self.g.random() < 0.3:
            self.g.shuffle(layout)
        return layout

    def values(self, n, width, fmt, edge):
        """n traces: (texts for JSON or raw array, expected float32 [n, width], bad, note)."""
        x = self.np.normal(size=(n, width)).round(4) * self.g.choice([1.0, 1.0, 1e-3, 100.0])
        bad, note = False, ""
        texts = [[repr(float(v)) for v in row] for row in x] if fmt == "json" else None
        if edge:
            i, j = self.g.randrange(n), self.g.randrange(width)
            want_bad = self.g.random() < 0.45
            if fmt == "json":
                t = self.g.choice(JSON_BAD if want_bad else JSON_OK)
                texts[i][j] = t
                bad = want_bad
                note = t
                x[i, j] = float(t) if not want_bad else math.nan
            else:
                v = self.g.choice(BIN_BAD[fmt] if want_bad else BIN_OK[fmt])
                x[i, j], bad, note = v, want_bad, repr(v)
            if fmt == "f64" and not bad and self.g.random() < 0.3:  # subnormal and tiny rows too
                x[i] = self.g.choice([5e-324, 1e-310, -1e-45])
        with np.errstate(over="ignore", invalid="ignore"):   # bad values: their expectation is never used
            raw = x.astype(DTYPES[fmt]) if fmt != "json" else None
            expect = (raw if raw is not None else x).astype(np.float32)
        return texts if fmt == "json" else raw, expect, bad, note

    @staticmethod
    def json_line(obj, sites_text=None):
        text = json.dumps(obj, separators=(",", ":"))
        if sites_text is not None:
            text = text[:-1] + ',"sites":' + sites_text + "}"
        return (text + "\n").encode()

    def traces(self, op, ref, rid, layout, n, fmt, edge):
        """A fit/score (n == 1, JSON or binary) or fit_batch/score_batch request."""
        width = sum(w for _, w in layout)
        data, expect, bad, note = self.values(n, width, fmt, edge)
        tids = [rid] if n == 1 and op in ("fit", "score") else [f"{rid}t{k}" for k in range(n)]
        req = Req(op, rid, b"", ref=ref, layout=layout, bad=bad, fmt=fmt, note=note,
                  traces=list(zip(tids, expect)))
        if fmt == "json":
            parts, k = [], 0
            for s, w in layout:
                parts.append(f'"{s}":[' + ",".join(data[0][k:k + w]) + "]")
                k += w
            req.wire = self.json_line({"op": op, "reference": ref, "id": rid}, "{" + ",".join(parts) + "}")
            return req
        payload = data.astype(data.dtype.newbyteorder("<")).tobytes()
        header = {"op": op, "reference": ref, "id": rid}
        if op.endswith("_batch"):
            header.update(count=n, ids=tids)
        header.update(layout=[[s, w] for s, w in layout], dtype=fmt, payload_bytes=len(payload))
        req.wire = self.json_line(header) + payload
        return req

    def protocol_error(self, rid, ref):
        """A request that must get a specific protocol error whatever the state."""
        limit = self.limits["max_message_bytes"]
        choices = ["malformed", "payload_mismatch", "bad_dtype", "malformed_sites"]
        if limit <= 65536:
            choices += ["too_long", "too_long", "at_limit"]
        kind = self.g.choice(choices)
        if kind == "malformed":
            return Req("malformed", rid, b'{"op":"status","id":"' + rid.encode() + b'"\n')
        if kind == "malformed_sites":
            return Req("malformed", rid, b'{"op":"fit","reference":"' + ref.encode() + b'","id":"' + rid.encode()
                       + b'","sites":{"h0":[1,,2]}}\n', note="sites [1,,2]")
        if kind in ("too_long", "at_limit"):
            head = b'{"op":"status","id":"' + rid.encode() + b'","pad":"'
            size = limit + self.g.randint(1, 3000) if kind == "too_long" else limit
            line = head + b"x" * (size - len(head) - 2) + b'"}'
            return Req(kind, rid, line + b"\n", note=f"{len(line)} bytes, limit {limit}")
        n, w = self.g.randint(1, 4), self.g.randint(1, 4)
        right = n * w * 4
        if kind == "payload_mismatch":
            size = max(0, right + self.g.choice([-3, -1, 1, 4]))
            dtype = "f32"
        else:
            size, dtype = right, self.g.choice(["f8", "float32", "F32", ""])
        header = {"op": "fit_batch", "reference": ref, "id": rid, "count": n, "ids": [f"{rid}t{k}" for k in range(n)],
                  "layout": [["h0", w]], "dtype": dtype, "payload_bytes": size}
        req = Req(kind, rid, self.json_line(header) + bytes(self.np.integers(0, 256, size, dtype=np.uint8)),
                  note=f"payload {size} of {right}" if kind == "payload_mismatch" else f"dtype {dtype!r}")
        req.traces = [(f"{rid}t{k}", None) for k in range(n)]
        return req

    def unframeable(self, rid, ref):
        limit = self.limits["max_payload_bytes"]
        kind = self.g.choice(["dup", "dup_same", "over", "negative", "broken"])
        head = f'{{"op":"fit_batch","reference":"{ref}","id":"{rid}","count":1,"ids":["{rid}t0"],' \
               f'"layout":[["h0",2]],"dtype":"f32",'
        if kind == "dup":
            line, payload = head + '"payload_bytes":4,"payload_bytes":8}', bytes(8)
        elif kind == "dup_same":
            line, payload = head + '"payload_bytes":8,"payload_bytes":8}', bytes(8)
        elif kind == "over":
            line, payload = head + f'"payload_bytes":{limit + self.g.choice([1, 10 ** 9])}}}', bytes(8)
        elif kind == "negative":
            line, payload = head + '"payload_bytes":-8}', bytes(8)
        else:
            line, payload = head + '"payload_bytes":8', bytes(8)
        req = Req("unframeable", rid, line.encode() + b"\n" + payload, ref=ref, note=kind)
        req.traces = [(f"{rid}t0", None)]
        return req

    def one(self, rid, pred):
        """One random request, steered by (and updating) the optimistic view `pred`."""
        g = self.g
        ref = g.choice(REFS)
        st = pred.get(ref)
        roll = g.random()
        if roll < 0.07:
            return self.protocol_error(rid, ref)
        if roll < 0.09:
            return self.unframeable(rid, ref)
        if st is None:
            op = g.choices(["fit", "fit_batch", "finalize", "delete", "score", "score_batch", "status"],
                           [20, 60, 5, 5, 5, 3, 2])[0]
        elif st.state == "collecting":
            ready = st.fit >= 3 and st.cal >= 4
            op = g.choices(["fit", "fit_batch", "finalize", "delete", "score", "score_batch", "status"],
                           [15, 45, 30 if ready else 4, 4, 4, 2, 2])[0]
        else:
            op = g.choices(["fit", "fit_batch", "finalize", "delete", "score", "score_batch", "status"],
                           [4, 4, 3, 6, 40, 40, 3])[0]
        if op == "status":
            return Req("status", rid, self.json_line({"op": "status", "id": rid}))
        if op == "delete":
            pred.pop(ref, None)
            return Req("delete", rid, self.json_line({"op": "delete", "reference": ref, "id": rid}), ref=ref)
        if op == "finalize":
            alpha = g.choice([0.2, 0.25, 0.5, None])
            msg = {"op": "finalize", "reference": ref, "id": rid}
            if alpha is not None:
                msg["alpha"] = alpha
            if st and st.state == "collecting" and finalizable(st.fit, st.cal, alpha or DEFAULT_ALPHA):
                st.state = "active"
            return Req("finalize", rid, self.json_line(msg), ref=ref, alpha=alpha if alpha is not None else DEFAULT_ALPHA)
        layout = self.layout_for(ref, pred)
        fmt = g.choice(["json", "f16", "f32", "f64"]) if op in ("fit", "score") else g.choice(["f16", "f32", "f32", "f64"])
        n = 1 if op in ("fit", "score") else g.choice([1, 2, 3, 5, 8, 13, 24, 40])
        req = self.traces(op, ref, rid, layout, n, fmt, edge=g.random() < 0.25)
        if op.startswith("fit") and not req.bad:
            if st is None:
                pred[ref] = st = Ref(layout)
            if st.state == "collecting" and layout_matches(layout, st.layout):
                cal = sum(holds_out(t) for t, _ in req.traces)
                st.cal += cal
                st.fit += len(req.traces) - cal
        return req

    def status(self, rid):
        return Req("status", rid, self.json_line({"op": "status", "id": rid}))


# ---------------------------------------------------------------------------------------------- connections

def run_pipeline(daemon, reqs):
    """Writes every request in one sendall (from a writer thread), reads replies in order, matching them to
    requests by echoed id so that a swallowed request shows as such; fills req.reply / req.missing."""
    expected = [r for r in reqs if not r.after_unframeable]
    index = {r.id: k for k, r in enumerate(expected)}
    extra = None
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(REPLY_TIMEOUT)
        s.connect(daemon.socket)
    except OSError as e:
        for r in expected:
            r.missing = f"could not connect: {e}"
        return None
    wire = b"".join(r.wire for r in reqs)
    write_error = []

    def write():
        try:
            s.sendall(wire)
        except OSError as e:
            write_error.append(e)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    f = s.makefile("rb")
    i = 0
    while i < len(expected):
        try:
            line = f.readline()
        except (socket.timeout, OSError) as e:
            for r in expected[i:]:
                r.missing = f"no reply within {REPLY_TIMEOUT:.0f} s" if isinstance(e, socket.timeout) else f"read failed: {e}"
            break
        if not line:
            for r in expected[i:]:
                r.missing = "connection closed before its reply"
            break
        raw = line.decode(errors="replace").rstrip("\n")
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = {"unparseable": raw}
        rid = reply.get("id") if isinstance(reply, dict) else None
        j = i
        if isinstance(rid, str) and rid != expected[i].id and index.get(rid, -1) > i:
            j = index[rid]
            for r in expected[i:j]:
                r.missing = f"no reply: the reply to a later request ({rid}) came first"
        expected[j].reply, expected[j].raw = (reply if isinstance(reply, dict) else {"unparseable": raw}), raw
        i = j + 1
        if isinstance(reply, dict) and (reply.get("error") or {}).get("code") == "unframeable":
            for r in expected[i:]:
                r.missing = "after unframeable"
            try:
                more = f.readline()
                if more:
                    extra = f"data after an unframeable reply: {more[:200]!r}"
            except socket.timeout:
                extra = "connection not closed after an unframeable reply"
            except OSError:
                pass   # reset: closed with our unread bytes pending
            break
    else:
        s.settimeout(0.05)
        try:
            more = f.read1(4096) if hasattr(f, "read1") else s.recv(4096)
            if more:
                extra = f"extra reply data: {more[:200]!r}"
        except (socket.timeout, OSError):
            pass
    writer.join(timeout=5)
    s.close()
    if write_error and not any(r.kind == "unframeable" for r in reqs):
        extra = (extra or "") + f" write failed: {write_error[0]}"
    return extra


# ---------------------------------------------------------------------------------------------- checking

class Checker:
    """Walks one connection's replies in request order. Per reference, `mode` says what is known:
    'exact' (no other connection changes it), 'lower' (others only add fit traces to it) or 'unknown'."""

    def __init__(self, model, modes, others_delete, seq, conn, log):
        self.m = copy.deepcopy(model)
        self.modes, self.others_delete = modes, others_delete
        self.seq, self.conn, self.log = seq, conn, log
        self.own = {r: (model[r].fit + model[r].cal if r in model and model[r].state == "collecting" else 0)
                    for r in REFS}                       # lower bound on r's traces as this connection saw it
        self.problems = []
        self.pos = 0

    def fail(self, idx, req, what):
        self.problems.append((self.conn, idx, req, what))

    def walk(self, reqs):
        """Checks one pipeline's replies; `self.pos` orders requests across this connection's pipelines."""
        for idx, req in enumerate(reqs):
            self.pos += 1
            if req.after_unframeable:
                if req.reply is not None:
                    self.fail(idx, req, "answered although it came after an unframeable header")
                self.log.refused(req)   # never read, so nothing of it may be stored
                continue
            if req.missing:
                self.fail(idx, req, req.missing)
                self.modes = {r: "unknown" for r in REFS}   # the daemon's view may differ from here on
                if req.kind in ("delete", "finalize"):      # it may have taken effect, at an unknown time
                    self.log.removal(req.ref, req.kind, self.seq, -1, 0)
                continue
            if "unparseable" in req.reply or not isinstance(req.reply.get("ok"), bool):
                self.fail(idx, req, "reply is not a JSON object with a boolean ok")
                continue
            rid = req.reply.get("id")
            if rid != req.id and not (rid is None and req.reply["ok"] is False):
                self.fail(idx, req, f"reply id {rid!r} is not the request's")
            getattr(self, "check_" + req.kind)(idx, req)

    # -- protocol errors
    def expect_code(self, idx, req, codes):
        if req.code() not in codes:
            self.fail(idx, req, f"expected {'/'.join(sorted(codes))}")

    def check_malformed(self, idx, req):
        self.expect_code(idx, req, {"malformed_json"})

    def check_too_long(self, idx, req):
        self.expect_code(idx, req, {"line_too_long"})

    def check_at_limit(self, idx, req):
        self.expect_code(idx, req, {"invalid_field"})   # unknown field "pad", not line_too_long

    def check_payload_mismatch(self, idx, req):
        self.expect_code(idx, req, {"payload_mismatch"})
        self.log.refused(req)

    def check_bad_dtype(self, idx, req):
        self.expect_code(idx, req, {"invalid_field"})
        self.log.refused(req)

    def check_unframeable(self, idx, req):
        self.expect_code(idx, req, {"unframeable"})
        self.log.refused(req)

    def check_status(self, idx, req):
        if req.reply["ok"] is not True:
            self.fail(idx, req, "status must be ok")

    # -- state
    def check_fit(self, idx, req):
        r, ok, code = req.ref, req.reply["ok"], req.code()
        if req.bad:
            if ok:
                self.fail(idx, req, f"value {req.note} outside float32's range or not finite was accepted")
            else:
                self.log.refused(req)
            return
        if ok and not self.fit_reply_consistent(idx, req):
            return
        mode, st = self.modes[r], self.m.get(r)
        if mode == "exact" or (mode == "lower" and st is not None):
            if st is None:
                want = {None}
            elif st.state == "active":
                want = {"reference_not_collecting"} | (set() if layout_matches(req.layout, st.layout) else SITE_CODES)
            else:
                want = {None} if layout_matches(req.layout, st.layout) else SITE_CODES
            if code not in want:
                self.fail(idx, req, f"expected {'ok' if want == {None} else '/'.join(sorted(want))} "
                                    f"(model: {st})")
        elif not ok and code not in SITE_CODES | {"reference_not_collecting"}:
            self.fail(idx, req, "unexpected error code for a fit")
        if ok:
            cal = sum(1 for x in self.roles(req) if x == "calibration")
            if st is None:
                st = self.m[r] = Ref(list(req.layout))
            st.cal += cal
            st.fit += len(req.traces) - cal
            if self.own[r] is not None:
                self.own[r] += len(req.traces)
            self.log.fit_acked(req, self.seq, self.conn, self.pos, self.roles(req))
        else:
            self.log.refused(req)

    check_fit_batch = check_fit

    @staticmethod
    def roles(req):
        if req.kind == "fit":
            return [req.reply.get("role")]
        return [x.get("role") for x in req.reply.get("results", [])]

    def fit_reply_consistent(self, idx, req):
        rep = req.reply
        if rep.get("reference") != req.ref:
            self.fail(idx, req, "reply names another reference")
            return False
        if req.kind == "fit":
            ids = [req.id]
        else:
            results = rep.get("results") or []
            ids = [x.get("id") for x in results]
            if rep.get("count") != len(req.traces) or rep.get("calibration") != sum(
                    x.get("role") == "calibration" for x in results):
                self.fail(idx, req, "count/calibration do not match the results")
                return False
        if ids != [t for t, _ in req.traces]:
            self.fail(idx, req, "result ids are not the trace ids in order")
            return False
        want = ["calibration" if holds_out(t) else "fit" for t, _ in req.traces]
        if self.roles(req) != want:
            self.fail(idx, req, f"roles {self.roles(req)} are not the id hash's {want}")
            return False
        return True

    def check_score(self, idx, req):
        r, ok, code = req.ref, req.reply["ok"], req.code()
        if req.bad:
            if ok:
                self.fail(idx, req, f"value {req.note} outside float32's range or not finite was accepted")
            else:
                self.log.refused(req)
            return
        st = self.m.get(r)
        if self.modes[r] == "exact" or (self.modes[r] == "lower" and st is not None):
            if st is None:
                want = {"unknown_reference"}
            elif st.state == "collecting":
                want = {"reference_not_active"} | (set() if layout_matches(req.layout, st.layout) else SITE_CODES)
            else:
                want = {None} if layout_matches(req.layout, st.layout) else SITE_CODES
            if code not in want:
                self.fail(idx, req, f"expected {'ok' if want == {None} else '/'.join(sorted(want))} (model: {st})")
        elif not ok and code not in SITE_CODES | {"unknown_reference", "reference_not_active"}:
            self.fail(idx, req, "unexpected error code for a score")
        if not ok:
            self.log.refused(req)
            return
        results = [req.reply] if req.kind == "score" else req.reply.get("results") or []
        if req.kind == "score_batch":
            if req.reply.get("count") != len(req.traces) or len(results) != len(req.traces):
                self.fail(idx, req, "count does not match the traces sent")
                return
            if req.reply.get("flagged") != sum(1 for x in results if x.get("flagged") is True):
                self.fail(idx, req, "flagged is not the number of flagged results")
        for (tid, _), x in zip(req.traces, results):
            score, p = x.get("score"), x.get("p")
            if x.get("id") != tid or not isinstance(x.get("event"), int) or not isinstance(x.get("flagged"), bool):
                self.fail(idx, req, f"result {x} lacks the id {tid}, an integer event or a boolean flag")
                return
            if not isinstance(score, (int, float)) or not isinstance(p, (int, float)) or not 0 <= p <= 1 \
                    or not math.isfinite(score):
                self.fail(idx, req, f"trace {tid}: score {score!r}, p {p!r} for finite float32 values")
                return
            self.log.event_acked(r, tid, x, self.seq, self.conn, self.pos)

    check_score_batch = check_score

    def check_finalize(self, idx, req):
        r, ok, code, rep = req.ref, req.reply["ok"], req.code(), req.reply
        st = self.m.get(r)
        mode = self.modes[r]
        if mode == "exact" or (mode == "lower" and st is not None):
            if st is None:
                want = {"unknown_reference"}
            elif st.state == "active":
                want = {"reference_not_collecting"}
            elif finalizable(st.fit, st.cal, req.alpha):
                want = {None}
            else:
                want = {"cannot_finalize", None} if mode == "lower" else {"cannot_finalize"}
            if code not in want:
                if code == "cannot_finalize" and "calibration traces" not in str(rep) and "fit traces" not in str(rep):
                    self.log.note(f"numerical cannot_finalize: {req.raw[:200]}")
                else:
                    self.fail(idx, req, f"expected {'ok' if want == {None} else '/'.join(sorted(x or 'ok' for x in want))}"
                                        f" (acknowledged: {st.fit if st else 0} fit, {st.cal if st else 0} calibration)")
        elif not ok and code not in {"unknown_reference", "reference_not_collecting", "cannot_finalize"}:
            self.fail(idx, req, "unexpected error code for a finalize")
        if not ok:
            return
        fit, cal = rep.get("fit_traces"), rep.get("calibration_traces")
        if not isinstance(fit, int) or not isinstance(cal, int):
            self.fail(idx, req, "finalize reply lacks fit_traces/calibration_traces")
            return
        if mode == "exact" and st is not None and (fit, cal) != (st.fit, st.cal):
            self.fail(idx, req, f"finalize used {fit} fit + {cal} calibration traces; "
                                f"{st.fit} + {st.cal} were acknowledged")
        elif mode == "lower" and st is not None and (fit < st.fit or cal < st.cal):
            self.fail(idx, req, f"finalize used {fit} + {cal}; at least {st.fit} + {st.cal} were acknowledged")
        elif not self.others_delete[r] and self.own[r] is not None and fit + cal < self.own[r]:
            self.fail(idx, req, f"finalize used {fit + cal} traces; this connection had {self.own[r]} acknowledged")
        if st is None:
            st = self.m[r] = Ref([])
        st.state, st.fit, st.cal = "active", fit, cal
        self.log.removal(r, "finalize", self.seq, self.conn, self.pos)

    def check_delete(self, idx, req):
        r, ok, code = req.ref, req.reply["ok"], req.code()
        if self.modes[r] == "exact":
            want = {None} if r in self.m else {"unknown_reference"}
            if code not in want:
                self.fail(idx, req, f"expected {'ok' if None in want else 'unknown_reference'}")
        elif not ok and code != "unknown_reference":
            self.fail(idx, req, "unexpected error code for a delete")
        if ok:
            if req.reply.get("deleted") is not True or req.reply.get("reference") != r:
                self.fail(idx, req, "delete reply lacks deleted: true")
            self.m.pop(r, None)
            self.own[r] = 0
            self.log.removal(r, "delete", self.seq, self.conn, self.pos)


class Ledger:
    """Everything acknowledged or refused over the run, with the order needed to decide what must be stored."""

    def __init__(self):
        self.fits = []       # (ref, trace id, role, layout, float32 vector, key)
        self.events = []     # (ref, trace id, event, score, p, key)
        self.removals = collections.defaultdict(list)   # ref -> [(kind, key)]
        self.absent = set()  # trace ids that must not be stored
        self.notes = collections.Counter()
        self.lock = threading.Lock()

    def fit_acked(self, req, seq, conn, idx, roles):
        with self.lock:
            for (tid, vec), role in zip(req.traces, roles):
                self.fits.append((req.ref, tid, role, req.layout, vec, (seq, conn, idx)))

    def event_acked(self, ref, tid, x, seq, conn, idx):
        with self.lock:
            self.events.append((ref, tid, x["event"], x["score"], x["p"], (seq, conn, idx)))

    def refused(self, req):
        with self.lock:
            self.absent.update(t for t, _ in req.traces)

    def removal(self, ref, kind, seq, conn, idx):
        with self.lock:
            self.removals[ref].append((kind, (seq, conn, idx)))

    def note(self, text):
        with self.lock:
            self.notes[text[:120]] += 1

    def survives(self, ref, key, kinds):
        """True when every removal of `ref` of these kinds is known to precede `key`."""
        for kind, k in self.removals[ref]:
            if kind in kinds and not (k[0] < key[0] or (k[0] == key[0] and k[1] == key[1] and k[2] < key[2])):
                return False
        return True


# ---------------------------------------------------------------------------------------------- store checks

def read_state(daemon):
    """(status references {name: entry}, layouts {name: [(site, width)]}) or raises."""
    st = daemon.call({"op": "status", "id": "model-sync"})
    if not st or st.get("ok") is not True:
        raise RuntimeError(f"status failed: {st}")
    with daemon.read_store() as db:
        layouts = collections.defaultdict(list)
        for name, site, width in db.execute("SELECT r.name, s.name, s.width FROM reference_sites s JOIN "
                                            "reference_models r ON r.id = s.reference_id ORDER BY r.name, s.position"):
            layouts[name].append((site, width))
    return {e["name"]: e for e in st["references"]}, dict(layouts)


def model_from(status, layouts):
    return {n: Ref(layouts.get(n, []), e["state"], e["fit_traces"], e["calibration_traces"]) for n, e in status.items()}


def compare_state(model, status, layouts, refs, context):
    problems = []
    for r in refs:
        want, got = model.get(r), status.get(r)
        if (want is None) != (got is None):
            problems.append(f"{context}: reference {r}: model says {'absent' if want is None else want}, status says {got}")
        elif want is not None:
            have = (got["state"], got["fit_traces"], got["calibration_traces"])
            if have != (want.state, want.fit, want.cal):
                problems.append(f"{context}: reference {r}: model {want.state}/{want.fit} fit/{want.cal} calibration, "
                                f"status {have[0]}/{have[1]}/{have[2]}")
            if want.layout and layouts.get(r) != want.layout:
                problems.append(f"{context}: reference {r}: layout {layouts.get(r)} in the store, model {want.layout}")
    return problems


def check_store(daemon, ledger):
    """I7 on the database: a list of problems."""
    problems = []
    with daemon.read_store() as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"integrity_check: {integrity}")
        refs = {name: (rid, state) for rid, name, state in db.execute("SELECT id, name, state FROM reference_models")}
        layouts = collections.defaultdict(list)
        for rid, site, width in db.execute("SELECT reference_id, name, width FROM reference_sites ORDER BY reference_id, position"):
            layouts[rid].append((site, width))
        names = {rid: name for name, (rid, _) in refs.items()}
        stored = collections.defaultdict(list)
        bad_rows = collections.Counter()
        for rid, cid, role, vec in db.execute("SELECT reference_id, client_id, role, vector FROM fit_traces"):
            width = sum(w for _, w in layouts[rid])
            name = names.get(rid, f"#{rid}")
            if len(vec) != 4 * width:
                bad_rows[name] += 1
                if bad_rows[name] <= 3:
                    problems.append(f"fit_traces: {name} trace {cid} ({role}) has {len(vec) // 4} values; "
                                    f"the reference's width is {width} {layouts[rid]}")
            v = np.frombuffer(vec[: len(vec) // 4 * 4], dtype="<f4")
            if not np.all(np.isfinite(v)):
                problems.append(f"fit_traces: {name} trace {cid} ({role}) stores non-finite values {v.tolist()}")
            stored[cid].append((name, role, v))
            if role == "fit" and refs.get(name, (0, ""))[1] == "active":
                problems.append(f"fit_traces: active reference {name} still has fit row {cid}")
        for name, n in bad_rows.items():
            if n > 3:
                problems.append(f"fit_traces: {name}: {n} rows of the wrong width in all")
        events = {e: (names.get(rid), cid, score, p) for e, rid, cid, score, p in
                  db.execute("SELECT id, reference_id, client_id, score, p_value FROM events")}
        sites = dict(db.execute("SELECT event_id, count(*) FROM event_sites GROUP BY event_id"))
        event_refs = {e: rid for e, rid in db.execute("SELECT id, reference_id FROM events")}
    lost = 0
    for ref, tid, role, layout, vec, key in ledger.fits:
        if not ledger.survives(ref, key, {"delete"} | ({"finalize"} if role == "fit" else set())):
            continue
        rows = stored.get(tid, [])
        what = None
        if len(rows) != 1:
            what = f"stored {len(rows)} times"
        else:
            name, srole, v = rows[0]
            rid = refs.get(ref, (None,))[0]
            order = layouts.get(rid, [])
            if name != ref or srole != role:
                what = f"stored under {name} as {srole}"
            elif not layout_matches(order, layout):
                what = f"sent as {layout} but the reference is {order}"
            else:
                offsets, k = {}, 0
                for s, w in layout:
                    offsets[s] = vec[k:k + w]
                    k += w
                want = np.concatenate([offsets[s] for s, _ in order])
                if len(v) != len(want) or not np.array_equal(v, want):
                    what = f"stored values {v.tolist()} differ from the sent {want.tolist()}"
        if what:
            lost += 1
            if lost <= 5:
                problems.append(f"acknowledged fit trace {ref}/{tid} ({role}, {layout}): {what}")
    if lost > 5:
        problems.append(f"{lost} acknowledged fit traces missing or wrong in all")
    lost = 0
    for ref, tid, event, score, p, key in ledger.events:
        if not ledger.survives(ref, key, {"delete"}):
            continue
        row = events.get(event)
        what = None
        if row is None:
            what = "not in events"
        elif row[0] != ref or row[1] != tid:
            what = f"stored as {row[0]}/{row[1]}"
        elif not (math.isclose(row[2], score, rel_tol=1e-9, abs_tol=1e-12) and math.isclose(row[3], p, rel_tol=1e-9, abs_tol=1e-15)):
            what = f"stored score/p {row[2]}/{row[3]}, replied {score}/{p}"
        else:
            rid = event_refs[event]
            if sites.get(event, 0) != len(layouts[rid]):
                what = f"{sites.get(event, 0)} event_sites rows for {len(layouts[rid])} sites"
        if what:
            lost += 1
            if lost <= 5:
                problems.append(f"acknowledged event {event} ({ref}/{tid}): {what}")
    if lost > 5:
        problems.append(f"{lost} acknowledged events missing or wrong in all")
    stored_events = {cid for _, cid, _, _ in events.values()}
    leaked = sorted(t for t in ledger.absent if t in stored or t in stored_events)
    if leaked:
        problems.append(f"{len(leaked)} traces of refused or unread requests are stored, e.g. {leaked[:5]}")
    return problems


# ---------------------------------------------------------------------------------------------- sequences

class Fuzz:
    def __init__(self, args):
        import random
        self.args = args
        self.g = random.Random(args.seed)
        self.np = np.random.default_rng(args.seed)
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="mw-seqfuzz-"))
        # A private copy: a rebuild during the run must not swap the daemon under test (or be "text file busy").
        binary = self.work / "mechwatch"
        shutil.copy2(pathlib.Path(args.binary).resolve(), binary)
        self.daemon = Daemon(str(binary), self.work)
        self.ledger = Ledger()
        self.model = {}
        self.ops = collections.Counter()
        self.kinds = collections.Counter()
        self.history = collections.defaultdict(list)
        self.oks = collections.Counter()
        self.passed = self.failed = 0
        self.store_problems = []
        self.reports = []
        self.counter = 0

    def rid(self, seq, conn):
        self.counter += 1
        return f"s{seq}c{conn}q{self.counter}"

    # -- scenarios: each returns a list of pipelines per connection: [[pipeline, pipeline...], ...]
    def scenario_random(self, seq, nconn, gen):
        conns = []
        for c in range(nconn):
            pred = copy.deepcopy(self.model)
            reqs = []
            for _ in range(self.g.randint(3, 18)):
                req = gen.one(self.rid(seq, c), pred)
                reqs.append(req)
                if req.kind == "unframeable":
                    for _ in range(self.g.randint(0, 2)):
                        later = gen.one(self.rid(seq, c), pred)
                        later.after_unframeable = True
                        reqs.append(later)
                    break
            conns.append([reqs])
        return conns

    def scenario_delete_refit(self, seq, gen):
        """fit_batch r[h,4] / delete r / fit_batch r[h,8] in one write, then finalize r."""
        r = self.g.choice(REFS)
        reqs = []
        if r in self.model:
            rid = self.rid(seq, 0)
            reqs.append(Req("delete", rid, gen.json_line({"op": "delete", "reference": r, "id": rid}), ref=r))
        site = self.g.choice(SITES)
        fmt = self.g.choice(["f16", "f32", "f64"])
        reqs.append(gen.traces("fit_batch", r, self.rid(seq, 0), [(site, 4)], self.g.randint(1, 30), fmt, False))
        rid = self.rid(seq, 0)
        reqs.append(Req("delete", rid, gen.json_line({"op": "delete", "reference": r, "id": rid}), ref=r))
        reqs.append(gen.traces("fit_batch", r, self.rid(seq, 0), [(site, 8)], self.g.randint(20, 40), fmt, False))
        rid = self.rid(seq, 0)
        fin = Req("finalize", rid, gen.json_line({"op": "finalize", "reference": r, "alpha": 0.5, "id": rid}), ref=r, alpha=0.5)
        return [[reqs, [fin]]], r

    def scenario_batches_finalize(self, seq, gen):
        """[delete r], fit_batch r, fit_batch r, finalize r in one write."""
        r = self.g.choice(REFS)
        reqs = []
        if r in self.model:
            rid = self.rid(seq, 0)
            reqs.append(Req("delete", rid, gen.json_line({"op": "delete", "reference": r, "id": rid}), ref=r))
        layout = gen.new_layout()
        for _ in range(self.g.randint(2, 3)):
            reqs.append(gen.traces("fit_batch", r, self.rid(seq, 0), layout, self.g.randint(8, 30),
                                   self.g.choice(["f16", "f32", "f64"]), False))
        rid = self.rid(seq, 0)
        alpha = self.g.choice([0.2, 0.5])
        reqs.append(Req("finalize", rid, gen.json_line({"op": "finalize", "reference": r, "alpha": alpha, "id": rid}),
                        ref=r, alpha=alpha))
        rid = self.rid(seq, 0)
        reqs.append(gen.traces("score_batch", r, rid, layout, self.g.randint(1, 8), "f32", False))
        return [[reqs]]

    def modes_for(self, conns, c):
        """Per reference, what connection c can know given what the others send."""
        others = [q for k, pipes in enumerate(conns) if k != c for pipe in pipes for q in pipe if not q.after_unframeable]
        modes, deletes = {}, {}
        for r in REFS:
            kinds = {q.kind for q in others if q.ref == r}
            deletes[r] = "delete" in kinds
            changes = kinds & {"delete", "finalize"}
            fits = kinds & {"fit", "fit_batch"}
            if not changes and not fits:
                modes[r] = "exact"
            elif not changes and r in self.model:
                modes[r] = "lower"
            else:
                modes[r] = "unknown"
        return modes, deletes

    def run_sequence(self, seq):
        gen = Generator(self.g, self.np, self.daemon.limits)
        kind = self.g.choices(["single", "multi", "delete_refit", "batches_finalize"], [30, 45, 12, 13])[0]
        self.kinds[kind] += 1
        refit = None
        if kind == "single":
            conns = self.scenario_random(seq, 1, gen)
        elif kind == "multi":
            conns = self.scenario_random(seq, self.g.randint(2, 4), gen)
        elif kind == "delete_refit":
            conns, refit = self.scenario_delete_refit(seq, gen)
        else:
            conns = self.scenario_batches_finalize(seq, gen)
        for c, pipes in enumerate(conns):   # a status at the end of every pipeline shows a swallowed last request
            for pipe in pipes:
                if not any(q.kind == "unframeable" for q in pipe):
                    pipe.append(gen.status(self.rid(seq, c)))
        start = copy.deepcopy(self.model)
        problems, checkers = [], []
        for c in range(len(conns)):
            modes, deletes = self.modes_for(conns, c)
            checkers.append(Checker(start, modes, deletes, seq, c, self.ledger))
        # Pipelines: the k-th pipeline of every connection goes out together, connections concurrently.
        for k in range(max(len(p) for p in conns)):
            batch = [(c, pipes[k]) for c, pipes in enumerate(conns) if k < len(pipes)]
            extras = [None] * len(conns)

            def go(c, pipe):
                extras[c] = run_pipeline(self.daemon, pipe)

            threads = [threading.Thread(target=go, args=(c, pipe)) for c, pipe in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for c, pipe in batch:
                checkers[c].walk(pipe)
                if extras[c]:
                    problems.append(f"C{c}: {extras[c]}")
            if refit and k == 0:
                problems += self.check_refit(refit)
        for c, pipes in enumerate(conns):
            for pipe in pipes:
                for q in pipe:
                    if q.after_unframeable:
                        continue
                    self.ops[q.kind] += 1
                    self.oks[q.kind] += bool(q.reply and q.reply.get("ok"))
        failing_refs = sorted({q.ref for ch in checkers for _, _, q, _ in ch.problems if q.ref})
        histories = {r: list(self.history[r]) for r in failing_refs}   # as they were before this sequence
        self.extend_history(seq, conns)
        for ch in checkers:
            problems += [f"C{c}#{i} {q.describe()}: {what}\n      reply: {(q.raw or '-')[:300]}"
                         for c, i, q, what in ch.problems]
        if not self.daemon.alive():
            problems.append(f"daemon exited with status {self.daemon.process.poll()}: {self.daemon.log_tail()}")
            self.daemon.kill()
            err = self.daemon.start(self.daemon.limits)
            if err:
                problems.append(f"restart after the crash failed: {err}")
                self.record(seq, kind, conns, problems, histories)
                raise SystemExit(self.finish())
        problems += self.reconcile(seq, conns, checkers, start, kind)
        self.record(seq, kind, conns, problems, histories)

    def extend_history(self, seq, conns):
        """Per reference, the requests that shaped it since it was last deleted (shown with a failure)."""
        for c, pipes in enumerate(conns):
            for pipe in pipes:
                for q in pipe:
                    if q.ref and q.reply and q.reply.get("ok") and q.kind in ("fit", "fit_batch", "finalize", "delete"):
                        if q.kind == "delete":
                            self.history[q.ref].clear()
                        else:
                            self.history[q.ref].append(f"sequence {seq} C{c}: {q.describe()}")

    def check_refit(self, ref):
        """After fit_batch r[h,4] / delete r / fit_batch r[h,8]: r's stored traces all have width 8."""
        with self.daemon.read_store() as db:
            lengths = [n for (n,) in db.execute(
                "SELECT length(f.vector) FROM fit_traces f JOIN reference_models r ON r.id = f.reference_id "
                "WHERE r.name = ?", (ref,))]
        wrong = [n // 4 for n in lengths if n != 32]
        return [f"after fit_batch/delete/fit_batch, {len(wrong)} of {ref}'s {len(lengths)} stored traces have "
                f"widths {sorted(set(wrong))}, not 8"] if wrong else []

    def reconcile(self, seq, conns, checkers, start, kind):
        """I6: status against the model; then the model is taken from the daemon (so one failure does not
        cascade into the next sequences)."""
        try:
            status, layouts = read_state(self.daemon)
        except Exception as e:
            return [f"could not read the state after the sequence: {e}"]
        problems = []
        if len(conns) == 1 and all(m == "exact" for m in checkers[0].modes.values()):
            problems += compare_state(checkers[0].m, status, layouts, REFS, "after the sequence")
        else:
            sent = [q for pipes in conns for pipe in pipes for q in pipe if q.reply]
            unanswered = [q for pipes in conns for pipe in pipes for q in pipe if q.missing and not q.after_unframeable]
            for r in REFS:
                touched = [q for q in sent if q.ref == r and q.kind in ("delete", "finalize") and q.reply.get("ok")]
                touched += [q for q in unanswered if q.ref == r and q.kind in ("delete", "finalize", "fit", "fit_batch")]
                if touched or (r in start and start[r].state != "collecting"):
                    continue
                fits = [q for q in sent if q.ref == r and q.kind in ("fit", "fit_batch") and q.reply.get("ok")]
                roles = [x for q in fits for x in Checker.roles(q)]
                base = start.get(r) or Ref([])
                want = (base.fit + roles.count("fit"), base.cal + roles.count("calibration"))
                got = status.get(r)
                have = (got["fit_traces"], got["calibration_traces"]) if got else None
                if (have or (0, 0)) != want or (got is None) != (r not in start and not fits):
                    problems.append(f"after the sequence: reference {r}: {want[0]} fit + {want[1]} calibration "
                                    f"acknowledged in all, status {got}")
        self.model = model_from(status, layouts)
        return problems

    def record(self, seq, kind, conns, problems, histories):
        if not problems:
            self.passed += 1
            return
        self.failed += 1
        lines = [f"FAILED seed {self.args.seed} sequence {seq} ({kind}, {len(conns)} connection(s)):"]
        lines += ["  " + p for p in problems[:8]]
        for r, past in histories.items():
            lines.append(f"  {r} before this sequence, since its last delete ({len(past)} ok fit/finalize requests):")
            lines += [f"    {h}" for h in past[-12:]]
        lines.append("  requests and replies:")
        for c, pipes in enumerate(conns):
            for k, pipe in enumerate(pipes):
                lines.append(f"    C{c} write {k + 1}:")
                for i, q in enumerate(pipe):
                    reply = "(not read: after unframeable)" if q.after_unframeable else (q.raw or f"(none: {q.missing})")
                    lines.append(f"      #{i} {q.describe()}\n         -> {reply[:240]}")
        self.reports.append("\n".join(lines))

    def restart_and_check(self, limits, context):
        """I7: SIGKILL, restart on the same database, status and store agree with the model."""
        before = copy.deepcopy(self.model)
        self.daemon.kill()
        err = self.daemon.start(limits)
        if err:
            self.store_problems.append(f"{context}: restart failed: {err}")
            raise SystemExit(self.finish())
        try:
            status, layouts = read_state(self.daemon)
        except Exception as e:
            self.store_problems.append(f"{context}: after the restart: {e}")
            return
        problems = compare_state(before, status, layouts, REFS, f"{context}: after SIGKILL + restart")
        problems += [f"{context}: {p}" for p in check_store(self.daemon, self.ledger)]
        self.store_problems += problems
        self.model = model_from(status, layouts)

    def run(self):
        err = self.daemon.start(SMALL)
        if err:
            sys.exit(err)
        began = time.time()
        seq = 0
        next_restart = self.g.randint(6, 14)
        while seq < self.args.sequences and time.time() - began < self.args.seconds:
            seq += 1
            self.run_sequence(seq)
            if seq >= next_restart:
                self.restart_and_check(self.g.choice([SMALL, SMALL, DEFAULT]), f"restart after sequence {seq}")
                next_restart = seq + self.g.randint(6, 14)
        self.restart_and_check(SMALL, "final restart")
        return self.finish()

    def finish(self):
        self.daemon.stop()
        for r in self.reports[:6]:
            print(r, "\n")
        if len(self.reports) > 6:
            print(f"... and {len(self.reports) - 6} more failed sequences\n")
        for p in self.store_problems[:20]:
            print("STORE:", p)
        for note, n in self.ledger.notes.items():
            print(f"note ({n}x): {note}")
        ops = ", ".join(f"{k} {self.ops[k]} ({self.oks[k]} ok)" for k in sorted(self.ops))
        print("sequences: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())))
        print(f"requests: {ops}")
        print(f"acknowledged: {len(self.ledger.fits)} fit traces, {len(self.ledger.events)} events; "
              f"daemon starts: {self.daemon.starts}; store checks: {len(self.store_problems)} problems")
        print(f"sequence fuzz: {self.passed} passed, {self.failed} failed (seed {self.args.seed})")
        ok = self.failed == 0 and not self.store_problems
        if ok:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            print(f"work directory kept: {self.work}")
        return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", nargs="?", default=".build/debug/mechwatch")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sequences", type=int, default=1000000, help="stop after this many sequences")
    parser.add_argument("--seconds", type=float, default=60, help="stop starting sequences after this long")
    args = parser.parse_args()
    fuzz = Fuzz(args)
    try:
        sys.exit(fuzz.run())
    finally:
        fuzz.daemon.kill()   # never leave a daemon behind, whatever went wrong in here


if __name__ == "__main__":
    main()
