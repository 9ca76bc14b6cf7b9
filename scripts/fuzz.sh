#!/usr/bin/env bash
# Runs the fuzz targets under cargo-fuzz (libFuzzer with coverage guidance and AddressSanitizer).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    # default: 600 seconds for each target
#
# TARGET is one of the names below (all when none is given). Each target keeps its corpus in
# <crate>/fuzz/corpus/<target> (not committed) and writes crashing inputs to
# <crate>/fuzz/artifacts/<target>; a crash, once fixed, becomes a test in the crate's normal
# suite (as `every_text_round_trips_but_bytes_without_a_token` in core/engine did).
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets the pinned
# stable toolchain accept them, so no second toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
shift || true
all=(
  "proto:frames"
  "core/engine:gguf_header"
  "core/engine:tokenizer"
  "edge/gateway:chat_body"
  "edge/filter-host:imports"
  "wasm-filters/presafety-rules:scan"
)
if [ $# -gt 0 ]; then
  chosen=()
  for want in "$@"; do
    found=
    for t in "${all[@]}"; do
      if [ "${t##*:}" = "$want" ]; then chosen+=("$t"); found=1; fi
    done
    [ -n "$found" ] || { echo "unknown target $want; known: ${all[*]##*:}" >&2; exit 2; }
  done
else
  chosen=("${all[@]}")
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The filter host embeds the wasm filters: reuse the ones the normal build made, if any.
if [ -z "${CHORUS_FILTERS_PREBUILT:-}" ] && [ -f target/wasm-filters/wasm32-wasip2/release/chorus_filter_hostile.wasm ]; then
  export CHORUS_FILTERS_PREBUILT=$PWD/target/wasm-filters/wasm32-wasip2/release
fi

status=0
for t in "${chosen[@]}"; do
  dir=${t%%:*}
  name=${t##*:}
  mkdir -p "$dir/fuzz/corpus/$name"
  echo "== $name ($dir): ${secs}s" >&2
  if ! (cd "$dir" && cargo fuzz run "$name" "fuzz/corpus/$name" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1); then
    echo "!! $name found a failure: see $dir/fuzz/artifacts/$name" >&2
    status=1
  fi
done
exit $status
