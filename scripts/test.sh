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

echo "== build the benchmarks (not timed)"
# The desktop app has no benchmarks; leaving it out spares a release build of its GPU stack.
cargo build --workspace --exclude confide-gui --benches --locked

echo "== cargo test"
./scripts/python-venv.sh  # Python's Fernet, for confide-crypto's interop test
# Builds every binary first: the end-to-end tests drive confide-server and confide.
cargo build --workspace --locked --bins
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line with the totals over every test binary (the last binary's own
# summary is often the doc-tests of a crate without any).
passed=$(grep -E '^test result:' "$log" | awk '{sum += $4} END {print sum + 0}')
failed=$(grep -E '^test result:' "$log" | awk '{sum += $6} END {print sum + 0}')
echo "tests: $passed passed, $failed failed"

echo "== the desktop app's release binary on a virtual display"
./scripts/gui-smoke.sh
