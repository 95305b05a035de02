"""`mechwatch events --follow`: every committed event printed once, in order, across a restart of the
follower (resumed with --since) and of the daemon, while traces are scored concurrently."""
import json
import sqlite3
import subprocess
import threading
import time


from conftest import BINARY, Daemon, fitted_reference
from mechwatch import Client


def follower(daemon, since):
    return subprocess.Popen([str(BINARY), "events", "--follow", "--interval", "0.2", "--since", str(since), "--database", daemon.database],
                            stdout=subprocess.PIPE, text=True)


def read_lines(process, sink):
    for line in process.stdout:
        sink.append(json.loads(line))


def test_follow_misses_nothing_and_repeats_nothing(tmp_path):
    daemon = Daemon(tmp_path).start()
    client, rng = fitted_reference(daemon, 3)
    seen = []
    f = follower(daemon, 0)
    reader = threading.Thread(target=read_lines, args=(f, seen))
    reader.start()

    def score(prefix, batches):
        c = Client(daemon.socket)
        for b in range(batches):
            c.score_arrays("r", {"h": rng.normal(size=(50, 4))}, ids=[f"{prefix}{b}-{j}" for j in range(50)])
            time.sleep(0.05)
        c.close()

    score("a", 10)
    time.sleep(0.6)
    f.terminate()  # the follower stops mid-stream ...
    reader.join(timeout=10)
    last = seen[-1]["event"]
    score("b", 5)  # ... traffic goes on without it ...
    daemon.stop()  # ... the daemon restarts ...
    daemon.start()
    f = follower(daemon, last)  # ... and the follower resumes from the last event it printed
    reader = threading.Thread(target=read_lines, args=(f, seen))
    reader.start()
    score("c", 5)
    client.close()
    with sqlite3.connect(f"file:{daemon.database}?mode=ro", uri=True) as db:
        stored = [row[0] for row in db.execute("SELECT id FROM events ORDER BY id")]
    deadline = time.time() + 15
    while len(seen) < len(stored) and time.time() < deadline:
        time.sleep(0.1)
    f.terminate()
    reader.join(timeout=10)
    daemon.stop()
    printed = [e["event"] for e in seen]
    assert printed == stored and len(stored) == 1000, (len(printed), len(stored))
    assert all(len(e["terms"]) > 0 and {"kind", "subject", "value", "p"} <= set(e["terms"][0]) for e in seen)
