"""A protocol-v1 client over the daemon's Unix socket: JSON lines pipelined in batches (`fit`, `score`), or
binary frames carrying whole numpy batches (`fit_arrays`, `score_arrays`)."""
import json
import os
import socket
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import MechWatchConnectionError, MechWatchError, MechWatchProtocolError
from .types import FinalizeResult, FitResult, ScoreResult, Trace



def default_socket(environ: Optional[Mapping[str, str]] = None, uid: Optional[int] = None) -> str:
    """Where the daemon listens by default, found as `mechwatch` finds it: `$MECHWATCH_SOCKET`, else
    `$RUNTIME_DIRECTORY/mechwatch.sock` (systemd), else `/run/mechwatch/mechwatch.sock` for root, else
    `$XDG_RUNTIME_DIR/mechwatch/mechwatch.sock`, else `/tmp/mechwatch-UID/mechwatch.sock`."""
    env = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    if env.get("MECHWATCH_SOCKET"):
        return env["MECHWATCH_SOCKET"]
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return f"{runtime}/mechwatch.sock"
    if uid == 0:
        return "/run/mechwatch/mechwatch.sock"
    if env.get("XDG_RUNTIME_DIR"):
        return f"{env['XDG_RUNTIME_DIR']}/mechwatch/mechwatch.sock"
    return f"/tmp/mechwatch-{uid}/mechwatch.sock"

PROTOCOL = 1

TraceLike = Union[Trace, Mapping[str, Any]]
#: numpy dtypes of the binary payload, by the protocol's `dtype` name (little-endian).
DTYPES = {"f16": "<f2", "f32": "<f4", "f64": "<f8"}
#: The largest payload `fit_arrays`/`score_arrays` put in one frame.
MAX_FRAME_BYTES = 32 << 20


def content_ids(layout, rows, outputs=None):
    """Default trace ids: `h-` and 20 hex digits of the SHA-256 of the trace's layout, its values rounded to
    float32 (as the daemon stores them) and its output. The same traces get the same ids in every process
    and run, so the daemon's calibration split (a hash of the id) — and every score — is reproducible;
    identical traces share an id (and a side of the split), which the daemon allows."""
    import hashlib
    head = json.dumps(layout).encode()
    values = np.ascontiguousarray(np.asarray(rows), dtype="<f4")
    ids = []
    for j in range(len(values)):
        output = b"" if outputs is None or outputs[j] is None else b"o" + str(int(outputs[j])).encode()
        ids.append("h-" + hashlib.sha256(head + values[j].tobytes() + output).hexdigest()[:20])
    return ids


class Client:
    """Talks to one daemon. Connects on first use (and again after a dropped connection), checks the
    protocol version with `hello`, and pipelines batches of `batch_size` requests per round trip.

    Not thread-safe: use one client per thread."""

    def __init__(self, socket_path: Optional[str] = None, timeout: float = 60.0, batch_size: int = 128):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout
        self.batch_size = batch_size
        self.server_version = None
        self._sock = None
        self._buffer = b""

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> "Client":
        """Connects (if not connected) and checks the daemon speaks protocol 1."""
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except FileNotFoundError:
            sock.close()
            raise MechWatchConnectionError(f"no daemon socket at {self.socket_path}; start `mechwatch serve` "
                                           "or pass the daemon's socket path") from None
        except ConnectionRefusedError:
            sock.close()
            raise MechWatchConnectionError(f"nobody is accepting on {self.socket_path} (a stale socket file?); "
                                           "is the daemon running?") from None
        except PermissionError:
            sock.close()
            raise MechWatchConnectionError(f"permission denied on {self.socket_path}; the socket is private "
                                           "to the daemon's user") from None
        except OSError as e:
            sock.close()
            raise MechWatchConnectionError(f"cannot connect to {self.socket_path}: {e}") from None
        self._sock, self._buffer = sock, b""
        hello = self._roundtrip([{"op": "hello", "protocol": PROTOCOL}])[0]
        if not hello.get("ok"):
            self.close()
            error = hello.get("error", {})
            raise MechWatchProtocolError(f"daemon refused protocol {PROTOCOL}: {error.get('message', hello)}")
        self.server_version = hello.get("version")
        return self

    def close(self) -> None:
        """Closes the connection (the next call reconnects)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock, self._buffer = None, b""

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    # -- operations ---------------------------------------------------------------------------

    def fit(self, reference: str, traces: Iterable[TraceLike], outputs: Optional[Sequence[int]] = None,
            ids: Optional[Sequence[str]] = None) -> List[FitResult]:
        """Adds trusted traces to a collecting reference (created by its first trace)."""
        replies = self._send_traces("fit", reference, traces, outputs, ids)
        return [FitResult(id=r["id"], held_out=r.get("role") == "calibration") for r in replies]

    def score(self, reference: str, traces: Iterable[TraceLike], outputs: Optional[Sequence[int]] = None,
              ids: Optional[Sequence[str]] = None) -> List[ScoreResult]:
        """Scores traces against an active reference; each becomes a stored event."""
        replies = self._send_traces("score", reference, traces, outputs, ids)
        return [ScoreResult(id=r["id"], event=int(r["event"]), score=float(r["score"]), p=float(r["p"]),
                            flagged=bool(r["flagged"])) for r in replies]

    def fit_arrays(self, reference: str, sites: Mapping[str, Any], outputs: Optional[Sequence[int]] = None,
                   ids: Optional[Sequence[str]] = None, dtype: str = "f32", chunk: int = 1024,
                   meta: Optional[Mapping[str, Any]] = None) -> List[FitResult]:
        """Adds trusted traces given as arrays: `sites` maps each site name to an `(n, width)` array (numpy
        or torch); row i of every array is trace i. Sent as `fit_batch` binary frames of `chunk` traces."""
        replies = self._send_arrays("fit_batch", reference, sites, outputs, ids, dtype, chunk, meta)
        return [FitResult(id=r["id"], held_out=r["role"] == "calibration") for r in replies]

    def score_arrays(self, reference: str, sites: Mapping[str, Any], outputs: Optional[Sequence[int]] = None,
                     ids: Optional[Sequence[str]] = None, dtype: str = "f32", chunk: int = 1024,
                     meta: Optional[Mapping[str, Any]] = None) -> List[ScoreResult]:
        """Scores traces given as arrays (as in `fit_arrays`), sent as `score_batch` binary frames of `chunk`
        traces; every trace becomes a stored event. `dtype` (`f16`, `f32`, `f64`) is the wire precision."""
        replies = self._send_arrays("score_batch", reference, sites, outputs, ids, dtype, chunk, meta)
        return [ScoreResult(id=r["id"], event=int(r["event"]), score=float(r["score"]), p=float(r["p"]),
                            flagged=bool(r["flagged"])) for r in replies]

    def finalize(self, reference: str, alpha: Optional[float] = None, scorer: Optional[str] = None,
                 model: Optional[str] = None) -> FinalizeResult:
        """Estimates and calibrates a collecting reference; it becomes active. `scorer`: the statistic
        that flags, `mechanism` (the daemon's default), `mahalanobis` or `independence`. `model`: `auto`
        (the daemon's default: sites at least `subspace_min_width` wide in principal subspaces), `full` or
        `subspace`."""
        request = {"op": "finalize", "reference": reference}
        if model is not None:
            request["model"] = model
        if alpha is not None:
            request["alpha"] = float(alpha)
        if scorer is not None:
            request["scorer"] = scorer
        r = self._call(request)
        return FinalizeResult(reference=r["reference"], fit_traces=int(r["fit_traces"]),
                              calibration_traces=int(r["calibration_traces"]), alpha=float(r["alpha"]),
                              shrinkage={k: float(v) for k, v in r["shrinkage"].items()},
                              scorer=r.get("scorer", "mahalanobis"), terms=int(r.get("terms", 0)),
                              model=r.get("model", "full"), ranks={k: int(v) for k, v in r.get("ranks", {}).items()})

    def import_reference(self, path: str, name: Optional[str] = None, alpha: Optional[float] = None,
                         scorer: Optional[str] = None) -> Dict[str, Any]:
        """Has the daemon take the reference of a reference file (`mechwatch reference export` or `merge`) as
        a new reference, named as in the file or `name`; or estimate a new active reference from a moment
        shard file (`export --moments`, `merge`, `mechwatch.moments.MomentShard.write`) at `alpha` (default:
        the shard's) with `scorer`. The daemon reads `path` itself (made absolute here). Returns the reply:
        `state` is `active` (with `terms`, `model`, `ranks`, `fit_traces`) or `collecting`."""
        request = {"op": "import", "path": os.path.abspath(path)}
        if name is not None:
            request["as"] = name
        if alpha is not None:
            request["alpha"] = alpha
        if scorer is not None:
            request["scorer"] = scorer
        return self._call(request)

    def delete(self, reference: str) -> None:
        """Deletes a reference with its traces and events."""
        self._call({"op": "delete", "reference": reference})

    def status(self) -> Dict[str, Any]:
        """The daemon's status: uptime, counts, references."""
        return self._call({"op": "status"})

    # -- internals ----------------------------------------------------------------------------

    def _call(self, request):
        reply = self._roundtrip([request])[0]
        if not reply.get("ok"):
            error = reply.get("error", {})
            raise MechWatchError(error.get("code", "error"), error.get("message", str(reply)), reply.get("id"))
        return reply

    def _send_traces(self, op, reference, traces, outputs, ids):
        outputs = _as_list(outputs)
        ids = _as_list(ids)
        replies, failure = [], None
        batch = []
        for i, trace in enumerate(traces):
            batch.append(self._request(op, reference, trace,
                                       outputs[i] if outputs is not None else None,
                                       ids[i] if ids is not None else None))
            if len(batch) == self.batch_size:
                replies += self._roundtrip(batch)
                batch = []
        if batch:
            replies += self._roundtrip(batch)
        results = [r if r.get("ok") else None for r in replies]
        for r in replies:
            if not r.get("ok"):
                error = r.get("error", {})
                failure = MechWatchError(error.get("code", "error"), error.get("message", str(r)), r.get("id"),
                                         results=results)
                break
        if failure is not None:
            raise failure
        return replies

    def _send_arrays(self, op, reference, sites, outputs, ids, dtype, chunk, meta):
        """Sends `(n, width)` site arrays as binary batch frames, one chunk ahead of the reply being read."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        if not sites:
            raise ValueError("sites: expected at least one site array")
        arrays = {str(name): _matrix(name, values) for name, values in sites.items()}
        counts = {a.shape[0] for a in arrays.values()}
        if len(counts) != 1:
            raise ValueError(f"sites disagree on the number of traces: { {s: a.shape for s, a in arrays.items()} }")
        (n,) = counts
        outputs, ids = _as_list(outputs), _as_list(ids)
        for name, values in (("outputs", outputs), ("ids", ids)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name}: has {len(values)} entries for {n} traces")
        layout = [[name, a.shape[1]] for name, a in arrays.items()]
        rows = np.concatenate(list(arrays.values()), axis=1).astype(DTYPES[dtype], copy=False)
        if ids is None:
            ids = content_ids(layout, rows, outputs)
        # Frames stay well under the daemon's default max_payload_bytes (64 MiB).
        chunk = max(1, min(chunk, MAX_FRAME_BYTES // max(1, rows.shape[1] * rows.itemsize)))

        def frame(start):
            stop = min(start + chunk, n)
            payload = np.ascontiguousarray(rows[start:stop]).tobytes()
            header = {"op": op, "reference": reference, "count": stop - start,
                      "ids": [str(i) for i in ids[start:stop]], "layout": layout, "dtype": dtype,
                      "payload_bytes": len(payload)}
            if outputs is not None:
                header["outputs"] = [None if o is None else int(o) for o in outputs[start:stop]]
            if meta:
                header["meta"] = dict(meta)
            return json.dumps(header).encode() + b"\n" + payload

        if self._sock is None:
            self.connect()
        starts = list(range(0, n, chunk))
        results, failure = [], None
        try:
            if starts:
                self._sock.sendall(frame(starts[0]))
            for k, start in enumerate(starts):
                # Keep one frame in flight ahead of the reply being read; stop sending after a refusal.
                if k + 1 < len(starts) and failure is None:
                    self._sock.sendall(frame(starts[k + 1]))
                elif failure is not None and k > failed_at + 1:
                    results += [None] * (min(start + chunk, n) - start)
                    continue
                reply = self._read_reply()
                if reply.get("ok"):
                    results += reply["results"]
                    continue
                results += [None] * (min(start + chunk, n) - start)
                if failure is None:
                    error = reply.get("error", {})
                    failure = MechWatchError(error.get("code", "error"), error.get("message", str(reply)), reply.get("id"))
                    failed_at = k
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError) as e:
            self.close()
            raise MechWatchConnectionError(f"connection to {self.socket_path} lost: {e}") from None
        if failure is not None:
            failure.results = results
            raise failure
        return results

    def _request(self, op, reference, trace, output, id):
        if isinstance(trace, Trace):
            sites, meta = trace.sites, trace.meta
            output = trace.output if output is None else output
            id = trace.id if id is None else id
        else:
            sites, meta = trace, None
        if id is None:
            id = content_ids([[str(name), len(v)] for name, v in sites.items()],
                             np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in sites.values()])[None, :],
                             None if output is None else [output])[0]
        body = ",".join(f"{json.dumps(str(name))}:{_vector(name, v)}" for name, v in sites.items())
        parts = [f'"op":"{op}"', f'"reference":{json.dumps(reference)}', f'"id":{json.dumps(str(id))}',
                 f'"sites":{{{body}}}']
        if output is not None:
            parts.append(f'"output":{int(output)}')
        if meta:
            parts.append(f'"meta":{json.dumps(meta)}')
        return "{" + ",".join(parts) + "}"

    def _roundtrip(self, requests):
        """Sends requests (dicts or pre-encoded JSON strings) pipelined, then reads one reply each."""
        if self._sock is None:
            self.connect()
        payload = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests).encode()
        try:
            self._sock.sendall(payload)
            return [self._read_reply() for _ in requests]
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError) as e:
            self.close()
            raise MechWatchConnectionError(f"connection to {self.socket_path} lost: {e}") from None

    def _read_reply(self):
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionResetError("the daemon closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise MechWatchProtocolError(f"unreadable reply: {line[:200]!r}") from None


def _as_list(values):
    if values is None:
        return None
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values).tolist() if not isinstance(values, list) else values


def _matrix(name, values):
    """One site's traces as a 2-D float array `(n, width)`."""
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"site {name!r}: expected an (n, width) array, got shape {array.shape}")
    return array


def _vector(name, values):
    """JSON text of one site vector: a flat list of float32-representable numbers."""
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"site {name!r}: expected a 1-D vector, got shape {array.shape}")
    # json.dumps writes NaN/Infinity for non-finite values; the daemon rejects those with non_finite_value.
    return json.dumps(array.tolist())
