"""Access control: socket and database modes, and SO_PEERCRED checks on every connection."""
import os
import pathlib
import stat
import tempfile
import subprocess
import time

import pytest

from conftest import BINARY, accepting
from mechwatch import Client, MechWatchError

NOBODY = 65534


def test_socket_and_database_are_private(daemon):
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.database).st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as another user")
@pytest.mark.parametrize("allowed, refused", [((), True), (("--allowed-uids", "0"), False)])
def test_peer_credentials_are_checked(allowed, refused):
    # The daemon runs as nobody; root (this test) can still open the socket file, so only the
    # peer-credential check stands between it and the daemon.
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="mw-access-"))  # pytest's tmp_path is not reachable by nobody
    os.chown(tmp_path, NOBODY, NOBODY)
    sock = str(tmp_path / "d.sock")
    log = tmp_path / "serve.log"
    p = subprocess.Popen([str(BINARY), "serve", "--socket", sock, "--database", str(tmp_path / "d.db"), *allowed],
                         user=NOBODY, group=NOBODY, cwd="/", stderr=open(log, "w"))
    try:
        deadline = time.time() + 20
        # The socket file appears at bind(), a moment before listen(): wait until a connect gets through.
        while not accepting(sock):
            assert p.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.02)
        if refused:
            with pytest.raises(MechWatchError) as e:
                Client(sock).status()
            assert "refused" in str(e.value) and "uid 0" in str(e.value)
            p.terminate()
            p.wait(timeout=20)
            assert "refused connection" in log.read_text()
        else:
            assert Client(sock).status()["ok"]
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=20)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as another user")
def test_refusal_reaches_a_client_that_sent_before_reading():
    # A refused client that has already written gets the permission_denied line, not a connection reset:
    # the daemon shuts its write side and drains what was sent before closing.
    import socket as sockets
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="mw-access-"))
    os.chown(tmp_path, NOBODY, NOBODY)
    sock = str(tmp_path / "d.sock")
    p = subprocess.Popen([str(BINARY), "serve", "--socket", sock, "--database", str(tmp_path / "d.db")],
                         user=NOBODY, group=NOBODY, cwd="/", stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not os.path.exists(sock):
            assert p.poll() is None and time.time() < deadline
            time.sleep(0.02)
        for _ in range(30):
            s = sockets.socket(sockets.AF_UNIX)
            s.connect(sock)
            s.sendall(b'{"op":"status"}\n' * 2000)
            s.shutdown(sockets.SHUT_WR)
            data = b""
            while True:
                chunk = s.recv(65536)  # raises ConnectionResetError if the refusal was lost
                if not chunk:
                    break
                data += chunk
            s.close()
            assert b'"permission_denied"' in data
    finally:
        p.terminate()
        p.wait(timeout=20)
