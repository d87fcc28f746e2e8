#!/usr/bin/env bash
# Builds every fuzz target, then fuzzes each for SECONDS (default 30).
# With 0 it only replays the corpus (seeds and regressions): a quick CI check.
# Exits non-zero if any target crashed; the input is in artifacts/<target>/.
#
#   fuzz/run.sh        # 30 s per target
#   fuzz/run.sh 600    # 10 min per target
#   fuzz/run.sh 0      # build and replay the corpus only
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
# Debug assertions on: overflow checks catch arithmetic bugs that a release
# build would hide.
# Nightly when installed; otherwise stable, which accepts the sanitizer flags
# cargo-fuzz passes once RUSTC_BOOTSTRAP is set (CI machines have only stable).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
flags=(--debug-assertions)

"${fuzz[@]}" build "${flags[@]}"

failed=()
for target in $("${fuzz[@]}" list); do
    if [[ "$seconds" == 0 ]]; then
        limit=(-runs=0)
    else
        limit=(-max_total_time="$seconds")
    fi
    echo "=== $target: ${seconds}s"
    if ! "${fuzz[@]}" run "${flags[@]}" "$target" -- "${limit[@]}" -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if (( ${#failed[@]} )); then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all targets ran clean"
