#!/usr/bin/env bash
# The web UI end to end: two `spore node` daemons on 127.0.0.1; a WebM video
# and a 6 MiB file are shared on A (uploads capped at 1 MiB/s so a download
# of the file runs for seconds); headless Chromium (Debian's, driven by npm
# playwright-core) opens B's UI, pastes the token and A's ticket, waits for
# 100%, plays the video from B's gateway, searches for the file's name,
# gets it from the results, pauses and resumes it until it completes.
# Screenshot: target/ui.png. Exits non-zero on failure.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

"$root/scripts/deps" # chromium, ffmpeg
if ! command -v npm >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "ui: installing npm (Debian)" >&2
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q npm >/dev/null
fi
stamp="$here/node_modules/.spore-ui-lock"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -d "$here/node_modules/playwright-core" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "ui: npm ci (playwright-core) in tests/ui" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

(cd "$root" && cargo build -q -p spore-cli)
spore="$target/debug/spore"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start_node() { # name [node flags...]
  local home="$work/$1"
  mkdir -p "$home/config"
  printf '[net]\nlisten_port = 0\nmdns = false\nbootstrap = []\n[api]\nlisten = "127.0.0.1:0"\n' >"$home/config/spore.toml"
  "$spore" --home "$home" node "${@:2}" >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    [ -s "$home/state/api.json" ] && break
    sleep 0.1
  done
  [ -s "$home/state/api.json" ] || { echo "ui: node $1 did not start" >&2; cat "$work/$1.log" >&2; exit 1; }
}
start_node a --max-upload 1M
start_node b
api() { # name -> base URL
  local addr
  addr="$(sed -E 's/.*"addr":"([^"]+)".*/\1/' "$work/$1/state/api.json")"
  echo "http://$addr"
}
token() { cat "$work/$1/config/api-token"; }

ffmpeg -v error -f lavfi -i testsrc=duration=4:size=320x240:rate=25 -c:v libvpx -b:v 400k -y "$work/clip.webm"
added="$(curl -sf -H "Authorization: Bearer $(token a)" -H 'Content-Type: application/json' \
  -d "{\"path\":\"$work/clip.webm\"}" "$(api a)/v1/add")"
ticket="$(echo "$added" | sed -E 's/.*"ticket":"([^"]+)".*/\1/')"
head -c 6291456 /dev/urandom >"$work/harbour-lecture-notes.bin"
curl -sf -H "Authorization: Bearer $(token a)" -H 'Content-Type: application/json' \
  -d "{\"path\":\"$work/harbour-lecture-notes.bin\"}" "$(api a)/v1/add" >/dev/null

mkdir -p "$target"
node "$here/ui.mjs" "$(api b)/" "$(token b)" "$ticket" "$target/ui.png" "harbour lecture" || {
  for n in a b; do echo "--- node $n log (tail)" >&2; tail -n 20 "$work/$n.log" >&2; done
  exit 1
}
