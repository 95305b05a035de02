"""Moment shards at 12 sites x 768 (`make bench-shards`): three references of 7,000 trusted traces each and
one of all 21,000 on one daemon (full rank: a shard's import always is); the time and size of `export
--moments` per shard, of `merge` of the three, of `import` of the merged shard against `finalize` of the
reference that received every trace, and whether 500 probes score alike. Usage: shard_bench.py BINARY."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
from mechwatch import Client  # noqa: E402
from mechwatch.moments import MomentShard  # noqa: E402

SITES, WIDTH, LATENT, SHARDS, PER_SHARD = 12, 768, 32, 3, 7000


def wait_until_accepting(path, process):
    deadline = time.time() + 30
    while time.time() < deadline and process.poll() is None:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise SystemExit("the daemon did not start")


def main(binary):
    directory = tempfile.mkdtemp(prefix="mw-shard-bench-")
    os.chmod(directory, 0o700)
    sock, db = f"{directory}/d.sock", f"{directory}/d.db"
    daemon = subprocess.Popen([binary, "serve", "--socket", sock, "--database", db, "--alpha", "0.01", "--model", "full"],
                              stderr=open(f"{directory}/serve.log", "w"))
    try:
        wait_until_accepting(sock, daemon)
        rng = np.random.default_rng(0)
        mixing = [rng.normal(size=(LATENT, WIDTH)).astype(np.float32) for _ in range(SITES)]

        def traces(k, start):
            z = rng.normal(size=(k, LATENT)).astype(np.float32)
            sites = {f"h{i}": z @ mixing[i] + 0.5 * rng.normal(size=(k, WIDTH)).astype(np.float32) for i in range(SITES)}
            return sites, [f"t{start + j}" for j in range(k)]

        with Client(sock) as c:
            for shard in range(SHARDS):
                for chunk in range(PER_SHARD // 1000):
                    sites, ids = traces(1000, shard * PER_SHARD + chunk * 1000)
                    c.fit_arrays(f"part{shard}", sites, ids=ids)
                    c.fit_arrays("all", sites, ids=ids)
        files = [f"{directory}/part{k}.shard" for k in range(SHARDS)]
        started = time.perf_counter()
        for k, f in enumerate(files):
            subprocess.run([binary, "reference", "export", f"part{k}", f, "--moments", "--database", db], check=True, capture_output=True)
        export = (time.perf_counter() - started) / SHARDS
        merged = f"{directory}/merged.shard"
        started = time.perf_counter()
        subprocess.run([binary, "reference", "merge", *files, "--into", merged], check=True, capture_output=True)
        merge = time.perf_counter() - started
        with Client(sock) as c:
            started = time.perf_counter()
            c.import_reference(merged, name="merged")
            imported = time.perf_counter() - started
            started = time.perf_counter()
            c.finalize("all")
            finalized = time.perf_counter() - started
            probe, ids = traces(500, 10**6)
            a, b = c.score_arrays("all", probe, ids=ids), c.score_arrays("merged", probe, ids=ids)
        started = time.perf_counter()
        MomentShard.read(merged)
        read = time.perf_counter() - started
        worst = max(abs(x.score - y.score) / abs(x.score) for x, y in zip(a, b))
        print(f"moment shards, {SITES} x {WIDTH}, {SHARDS} x {PER_SHARD:,} traces (release daemon, full rank):")
        print(f"  export --moments  {export:6.1f} s per shard   {os.path.getsize(files[0]) / 1e6:6.0f} MB")
        print(f"  merge of {SHARDS}        {merge:6.1f} s             {os.path.getsize(merged) / 1e6:6.0f} MB")
        print(f"  import            {imported:6.1f} s   vs finalize of all {SHARDS * PER_SHARD:,} traces {finalized:.1f} s ({imported / finalized:.2f}x)")
        print(f"  numpy MomentShard.read of the merged file {read:.1f} s")
        print(f"  500 probes: flags equal {[r.flagged for r in a] == [r.flagged for r in b]}, largest relative score difference {worst:.1e}")
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(directory)


if __name__ == "__main__":
    main(sys.argv[1])
