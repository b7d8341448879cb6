#!/usr/bin/env bash
# Runs every check and test, as CI does: formatting, lints, then the whole test suite
# (unit, property and integration tests against real servers over loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== the protocol crate stays free of I/O"
if cargo tree -p confide-proto -e normal --prefix none | grep -E '^(tokio|rustls|rusqlite) ' ; then
  echo "confide-proto must not depend on tokio, rustls or rusqlite" >&2
  exit 1
fi

echo "== cargo test"
# Builds every binary first: the end-to-end tests drive confide-server and confide.
cargo build --workspace --locked --bins
cargo test --workspace --locked
