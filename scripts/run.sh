#!/usr/bin/env bash
# Builds Confide, starts a server in the background (if one is not already running on
# the address) and opens an interactive chat in the lobby.
#
#   ./scripts/run.sh           start (or reuse) the server, log in or register, chat
#   ./scripts/run.sh stop      stop the background server
#
# CONFIDE_SERVER (default 127.0.0.1:5555) and CONFIDE_DATA (default ./confide-data)
# change where the server listens and keeps its data.
set -euo pipefail
cd "$(dirname "$0")/.."

addr="${CONFIDE_SERVER:-127.0.0.1:5555}"
data="${CONFIDE_DATA:-./confide-data}"
pidfile="$data/server.pid"

if [ "${1:-}" = "stop" ]; then
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill -TERM "$(cat "$pidfile")"
    echo "server stopped"
  else
    echo "no server running from $data"
  fi
  rm -f "$pidfile"
  exit 0
fi

./scripts/setup.sh
echo "building (release)..." >&2
cargo build --release --locked --bins -q
bin="$PWD/target/release"

host="${addr%:*}"
port="${addr##*:}"
if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  echo "using the server already listening on $addr" >&2
else
  mkdir -p "$data"
  nohup "$bin/confide-server" --listen "$addr" --data-dir "$data" >"$data/server.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    grep -q "listening on" "$data/server.log" 2>/dev/null && break
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "the server failed to start:" >&2
      cat "$data/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  grep -E "listening on|fingerprint" "$data/server.log" >&2
  echo "(server log: $data/server.log; stop it with ./scripts/run.sh stop)" >&2
fi

read -r -p "user name: " user
profile="${CONFIDE_HOME:-$PWD/confide-profiles/$user}"
confide=("$bin/confide" --profile "$profile")
if ! "${confide[@]}" rooms >/dev/null 2>&1; then
  read -r -s -p "password (new users: choose one, 8 characters or more): " password
  echo
  if ! CONFIDE_PASSWORD="$password" "${confide[@]}" login --server "$addr" --user "$user" 2>/dev/null; then
    CONFIDE_PASSWORD="$password" "${confide[@]}" register --server "$addr" --user "$user"
  fi
  unset password
fi
exec "${confide[@]}" chat --room lobby
