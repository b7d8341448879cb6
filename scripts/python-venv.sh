#!/usr/bin/env bash
# Makes the Python environment that crates/confide-crypto/tests/fernet_python.rs runs:
# a venv in target/pyvenv with Python's `cryptography` package, so that the test can
# check shared-key rooms against the Fernet of the original Python programs.
# Idempotent and non-interactive: it creates or installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyvenv
python="$venv/bin/python"
# 44 is the first release with Argon2id, which the test also checks our passphrase
# keys against.
requirement='cryptography>=44'

if [ ! -x "$python" ]; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "python-venv: python3 is not installed" >&2
    exit 1
  fi
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian splits the venv module (and ensurepip) into python3-venv; install it the
    # way scripts/setup.sh installs packages.
    echo "python-venv: installing python3-venv" >&2
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-venv
  fi
  echo "python-venv: creating $venv" >&2
  rm -rf "$venv"
  mkdir -p target
  python3 -m venv "$venv"
fi

if ! "$python" -c 'from cryptography.hazmat.primitives.kdf.argon2 import Argon2id' >/dev/null 2>&1; then
  echo "python-venv: installing $requirement" >&2
  "$python" -m pip install --quiet --disable-pip-version-check --no-input "$requirement"
fi
