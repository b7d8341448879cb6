#!/usr/bin/env bash
# Smoke test of the desktop app: the release binary opens its window on a virtual
# display (Xvfb), a screenshot shows it drew something, and without a display it exits
# with a one-line error. Called by scripts/test.sh after the setup script.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p confide-gui
binary=target/release/confide-gui
work="$(mktemp -d)"
trap 'rm -rf "$work"; [ -n "${app:-}" ] && kill "$app" 2>/dev/null || true' EXIT

echo "== gui smoke: no display"
set +e
DISPLAY='' WAYLAND_DISPLAY='' "$binary" --profile "$work/profile" 2> "$work/stderr"
status=$?
set -e
lines=$(wc -l < "$work/stderr")
if [ "$status" -ne 1 ] || [ "$lines" -ne 1 ] || ! grep -q "no display" "$work/stderr"; then
  echo "expected exit 1 and one line about the display, got $status:" >&2
  cat "$work/stderr" >&2
  exit 1
fi

echo "== gui smoke: a window on Xvfb"
shot="$work/screenshot.png"
# xvfb-run picks a free display number and its own authority file. The app runs for at
# most 90 s: its window is waited for, then photographed until something is drawn (a
# new machine's first frame can be slow: empty shader caches, a loaded CPU). On failure
# the app's own log and the window tree are printed, to tell "no window" from "no frame".
set +e
xvfb-run -a -s "-screen 0 1024x768x24" bash -c '
  set -uo pipefail
  RUST_LOG=info timeout 90 "$0" --profile "$1/profile" > "$1/app.log" 2>&1 &
  app=$!
  dir="$1"
  report() { echo "$1" >&2; xwininfo -root -tree 2>&1 | head -20 >&2; echo "-- app log:" >&2; tail -40 "$dir/app.log" >&2 || true; }
  window=no
  colours=0
  for _ in $(seq 1 150); do
    if xwininfo -root -tree 2>/dev/null | grep -q "\"Confide\""; then window=yes; break; fi
    if ! kill -0 "$app" 2>/dev/null; then echo "the app exited:" >&2; cat "$1/app.log" >&2; exit 1; fi
    sleep 0.2
  done
  if [ "$window" = no ]; then report "no Confide window after 30 s"; kill "$app" 2>/dev/null; exit 1; fi
  for attempt in $(seq 1 60); do
    sleep 0.5
    if ! kill -0 "$app" 2>/dev/null; then echo "the app exited:" >&2; cat "$1/app.log" >&2; exit 1; fi
    import -window root "$2" || continue
    colours=$(identify -format "%k" "$2")
    if [ "$colours" -ge 8 ]; then
      echo "drawn after about $((attempt / 2)) s of waiting"
      kill "$app"
      exit 0
    fi
  done
  report "the window stayed (nearly) blank for 30 s: $colours colours"
  kill "$app" 2>/dev/null
  exit 1
' "$binary" "$work" "$shot"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  echo "gui smoke: failed" >&2
  exit 1
fi
echo "screenshot: $(identify -format "%wx%h, %k colours" "$shot")"
mkdir -p target/gui-smoke
cp "$shot" target/gui-smoke/screenshot.png
echo "gui smoke: ok (target/gui-smoke/screenshot.png)"
