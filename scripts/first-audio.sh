#!/usr/bin/env bash
# Measures what a new user waits for: from `git clone` to the first audio that `make run` serves,
# with empty pip and Parla caches (every package downloaded, no wheel reused), the way the README
# promises it. Prints the seconds. Usage: scripts/first-audio.sh [REPOSITORY]  (default: this one)
set -euo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
port=${PORT:-8765}
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill -- "-$server" 2>/dev/null || true
  pkill -f "$work/" 2>/dev/null || true  # the server's background build of the language model runtime
  rm -rf "$work"
}
trap cleanup EXIT
export PIP_CACHE_DIR=$work/pip-cache XDG_CACHE_HOME=$work/cache PARLA_WHEELS_DIR=$work/wheels PARLA_PORT=$port

start=$(date +%s.%N)
git clone -q "$repo" "$work/parla"
setsid bash -c "cd '$work/parla' && exec make run" >"$work/run.log" 2>&1 &
server=$!
until curl -sf -o "$work/first.mp3" "http://127.0.0.1:$port/v1/audio/speech" -H 'Content-Type: application/json' \
  -d '{"input": "Hello from Parla.", "voice": "nova"}'; do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "make run stopped before serving audio:" >&2
    tail -20 "$work/run.log" >&2
    exit 1
  fi
  sleep 1
done
end=$(date +%s.%N)
grep '^==>' "$work/run.log" || true
printf 'first audio %.0f s after git clone (%s bytes of mp3), from empty caches\n' \
  "$(echo "$end - $start" | bc)" "$(stat -c %s "$work/first.mp3")"
