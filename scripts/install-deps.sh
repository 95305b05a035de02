#!/usr/bin/env bash
# Installs the Debian packages MechWatch builds against, if any are missing; with --test also what the
# tests use: Debian's CPU PyTorch for the system python3 (the recorder tests run on a real torch),
# headless chromium (the report's screenshot test) and prometheus (for promtool, which checks the metrics).
# As root it runs apt-get; otherwise it prints the exact command to run and fails.
set -euo pipefail
packages=(libsqlite3-dev libopenblas-dev liblapacke-dev pkg-config sqlite3)
if [ "${1:-}" = "--test" ]; then
    packages+=(python3-torch python3-numpy python3-pytest chromium prometheus)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
# Another apt or dpkg (an unattended upgrade, a parallel install) may hold the lock: wait for it, up to 10 minutes.
lock="-o DPkg::Lock::Timeout=600"
cmd="apt-get $lock update -qq && DEBIAN_FRONTEND=noninteractive apt-get $lock install -y -qq ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "mechwatch: missing system packages: ${missing[*]}" >&2
    echo "run as root:  $cmd" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}"
eval "$cmd" >/dev/null
