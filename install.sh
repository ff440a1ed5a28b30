#!/usr/bin/env bash
# All set-up on a fresh machine: `./install.sh` for running transferlab, `./install.sh test` for
# the test suite too (Debian's Fashion-MNIST and Chromium, the test extras). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

apt_packages=()
if [ "${1:-}" = "test" ]; then
    apt_packages=(dataset-fashion-mnist chromium)  # vision tests' data; report.html rendered headless
fi
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "+ $sudo apt-get install -y ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
.venv/bin/pip install -q -e ".${extras}" 2> >(grep -v "is ignored: it is neither" >&2)
