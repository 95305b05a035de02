"""`make install PREFIX=…` puts the binary, the unit, the config, the man page and completions in place,
and `make uninstall` takes them out again (with the debug build, so the test builds nothing new)."""
import subprocess

from conftest import REPO

FILES = ["bin/mechwatch", "lib/systemd/system/mechwatch.service", "etc/mechwatch/mechwatch.toml",
         "share/man/man1/mechwatch.1", "share/bash-completion/completions/mechwatch",
         "share/zsh/site-functions/_mechwatch", "share/fish/vendor_completions.d/mechwatch.fish"]


def test_install_and_uninstall(tmp_path):
    prefix = tmp_path / "prefix"
    run = subprocess.run(["make", "-s", "install", f"PREFIX={prefix}", "BUILD=debug"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    for f in FILES:
        assert (prefix / f).is_file() and (prefix / f).stat().st_size > 0, f
    assert f"ExecStart={prefix}/bin/mechwatch serve" in (prefix / "lib/systemd/system/mechwatch.service").read_text()
    assert ".Nm mechwatch" in (prefix / "share/man/man1/mechwatch.1").read_text()
    version = subprocess.run([str(prefix / "bin/mechwatch"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip()
    run = subprocess.run(["make", "-s", "uninstall", f"PREFIX={prefix}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert [f for f in FILES if (prefix / f).exists()] == ["etc/mechwatch/mechwatch.toml"]  # an edited config stays
