"""Starts a real `mechwatch serve` on a temporary socket and database for each test that asks for one."""
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
BINARY = pathlib.Path(os.environ.get("MECHWATCH_BIN", REPO / ".build" / "debug" / "mechwatch")).resolve()


def accepting(path):
    """Whether a daemon accepts connections on the socket at `path` (its file exists from bind(), before listen())."""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Daemon:
    def __init__(self, directory):
        self.socket = str(directory / "d.sock")
        self.database = str(directory / "d.db")
        self.log = directory / "serve.log"
        self.process = None

    def start(self, *extra):
        if not BINARY.exists():
            pytest.fail(f"{BINARY} not built: run `swift build` (or `make test`) first")
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--socket", self.socket, "--database", self.database, "--alpha", "0.05", *extra],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), cwd="/")
        deadline = time.time() + 20
        while not self.accepting():
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"daemon did not start: {self.log.read_text()}")
            time.sleep(0.02)
        return self

    def accepting(self):
        return accepting(self.socket)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        return self.process.returncode


def fitted_reference(daemon, seed, name="r"):
    """A client of `daemon` and a finalized 4-wide reference `name` fitted from 400 normal traces (ids f0…),
    with the generator that drew them."""
    from mechwatch import Client  # noqa: E402 (the package is importable once PYTHONPATH is set)
    import numpy as np
    rng = np.random.default_rng(seed)
    client = Client(daemon.socket)
    client.fit_arrays(name, {"h": rng.normal(size=(400, 4))}, ids=[f"f{j}" for j in range(400)])
    client.finalize(name)
    return client, rng


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path).start()
    yield d
    d.stop()
