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
# xvfb-run picks a free display number and its own authority file; the app runs for at
# most 60 s while the window is waited for and photographed.
xvfb-run -a -s "-screen 0 1024x768x24" bash -c '
  set -euo pipefail
  timeout 60 "$0" --profile "$1/profile" > "$1/app.log" 2>&1 &
  app=$!
  for _ in $(seq 1 100); do
    if xwininfo -root -tree 2>/dev/null | grep -q "\"Confide\""; then break; fi
    if ! kill -0 "$app" 2>/dev/null; then echo "the app exited:" >&2; cat "$1/app.log" >&2; exit 1; fi
    sleep 0.2
  done
  sleep 2
  import -window root "$2"
  kill "$app"
' "$binary" "$work" "$shot"
colours=$(identify -format "%k" "$shot")
echo "screenshot: $(identify -format "%wx%h" "$shot"), $colours colours"
if [ "$colours" -lt 8 ]; then
  echo "the screenshot is (nearly) blank" >&2
  exit 1
fi
mkdir -p target/gui-smoke
cp "$shot" target/gui-smoke/screenshot.png
echo "gui smoke: ok (target/gui-smoke/screenshot.png)"
