"""Sizes at the limits: memory a connection buffered is handed back when it goes."""
import json
import socket
import time

import numpy as np

from mechwatch import Client


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_half_sent_payloads_are_released_when_their_connections_close(daemon):
    pid = daemon.process.pid
    # Fitting and finalizing first frees large blocks, which raises glibc's mmap threshold, so that later
    # large buffers come from the heap (where, untrimmed, they would stay resident).
    rng = np.random.default_rng(0)
    client = Client(daemon.socket)
    client.fit_arrays("wide", {"h": rng.normal(size=(2000, 256)).astype(np.float32)}, ids=[f"t{j}" for j in range(2000)])
    client.finalize("wide")
    client.close()
    baseline = rss_mib(pid)
    size = 64 << 20
    header = json.dumps({"op": "score_batch", "reference": "r", "count": 1, "ids": ["x"], "layout": [["h", size // 4]],
                         "dtype": "f32", "payload_bytes": size}).encode() + b"\n"
    chunk = b"\0" * (1 << 20)
    connections = []
    for _ in range(10):
        s = socket.socket(socket.AF_UNIX)
        s.connect(daemon.socket)
        s.sendall(header)
        for _ in range(60):  # 60 of the 64 MiB: the payload stays incomplete
            s.sendall(chunk)
        connections.append(s)
    time.sleep(0.5)
    held = rss_mib(pid)
    for s in connections:
        s.close()
    deadline = time.time() + 10
    while time.time() < deadline and rss_mib(pid) > baseline + 64:
        time.sleep(0.1)
    after = rss_mib(pid)
    assert held > baseline + 300, f"the payloads were not buffered? baseline {baseline:.0f} MiB, held {held:.0f} MiB"
    assert after <= baseline + 64, f"RSS {after:.0f} MiB after the connections closed (baseline {baseline:.0f}, held {held:.0f})"
    assert daemon.process.poll() is None
