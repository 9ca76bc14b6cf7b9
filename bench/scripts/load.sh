#!/usr/bin/env bash
# End-to-end load, Chorus beside llama-server, on this machine in one run:
#   1. `chorus up` (edge + core, both fleets, embedded defaults, rate limits lifted) is driven by
#      a closed loop of 16 users to measure its capacity C (answers/s, every tier mixed);
#   2. open-loop Poisson sweeps at 0.1×, 0.5×, 1× and 2× C with every tier (0.1× is the
#      "unloaded" reference);
#   3. the same sweep, same seeds and rates, against llama-server --parallel 16 serving the same
#      GGUF (the llama.cpp that llama-cpp-python==0.3.36 vendors; bench/scripts/llama-cpp.sh);
#   4. `chorus bench compare` side by side, and the overload verdicts: at 2× C, plus and
#      enterprise TTFT p95 ≤ 2× their unloaded p95 and below free's.
# Usage: bench/scripts/load.sh [OUT_DIR]   (default: target/bench-load)
# Environment: DURATION (s per run, default 45), USERS (capacity probe, default 16),
#   MIX (tier weights for every run, e.g. free=4,team=2,plus=1,enterprise=1; default: equal),
#   THREADS (llama-server -t, default nproc), CHORUS (a built chorus binary; default: build it).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$here/target/bench-load}
duration=${DURATION:-45}
users=${USERS:-16}
threads=${THREADS:-$(nproc)}
mix=()
[[ -n ${MIX:-} ]] && mix=(--mix "$MIX")
edge_port=18080
llama_port=18081
mkdir -p "$out"
if [[ -z ${CHORUS:-} ]]; then
  (cd "$here" && cargo build --release -p chorus >&2)
  CHORUS=$here/target/release/chorus
fi
llama_bin=$("$here/bench/scripts/llama-cpp.sh")
model=$("$CHORUS" model path smollm2-135m)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_http() { # URL NAME PID
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$3" 2>/dev/null || { echo "load.sh: $2 exited before it answered $1" >&2; exit 1; }
    sleep 0.5
  done
  echo "load.sh: $2 did not answer $1 within 300 s" >&2
  exit 1
}
stop_last() { local p=${pids[-1]}; kill "$p"; wait "$p" 2>/dev/null || true; unset 'pids[-1]'; }
tiers=(free team plus enterprise)

# --- Chorus ---
"$CHORUS" up --listen 127.0.0.1:$edge_port --no-rate-limits >"$out/chorus-up.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$edge_port/readyz" "chorus up" "${pids[-1]}"
url=http://127.0.0.1:$edge_port/v1
"$CHORUS" bench load --url "$url" --label chorus "${mix[@]}" --users "$users" --duration "$duration" \
  --no-progress --out "$out/chorus-capacity.json" >"$out/chorus-capacity.txt"
cap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0]["overall"]["answered_per_s"])' \
  "$out/chorus-capacity.json")
rates=$(python3 -c 'import sys; c=float(sys.argv[1]); print(",".join(f"{c*f:.3f}" for f in (0.1,0.5,1,2)))' "$cap")
echo "chorus capacity with $users closed-loop users: $cap answers/s; open-loop rates: $rates" | tee "$out/rates.txt"
"$CHORUS" bench load --url "$url" --label chorus "${mix[@]}" --rate "$rates" --duration "$duration" --no-progress \
  --out "$out/chorus.json" --svg "$out/chorus.svg" >"$out/chorus.txt"
stop_last

# --- llama-server, same model, same rates, same tier labels (it treats them alike) ---
"$llama_bin/llama-server" -m "$model" --host 127.0.0.1 --port $llama_port --parallel 16 \
  -c $((16 * 2048)) -t "$threads" --jinja >"$out/llama-server.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$llama_port/health" llama-server "${pids[-1]}"
keys=()
for t in "${tiers[@]}"; do keys+=(--key "$t=none"); done
"$CHORUS" bench load --url "http://127.0.0.1:$llama_port/v1" --label llama-server "${keys[@]}" "${mix[@]}" \
  --rate "$rates" --duration "$duration" --no-progress \
  --out "$out/llama.json" --svg "$out/llama.svg" >"$out/llama.txt"
stop_last

"$CHORUS" bench compare "$out/chorus.json" "$out/llama.json" --svg "$out/compare.svg" | tee "$out/compare.txt"
python3 - "$out/chorus.json" "$out/llama.json" <<'PY' | tee "$out/verdict.txt"
import json, sys
def p95(run, tier):
    t = run["tiers"].get(tier)
    return None if t is None else t["ttft_ms"].get("p95")
for path in sys.argv[1:]:
    rep = json.load(open(path))
    runs = rep["runs"]
    base, over = runs[0], runs[-1]
    print(f"{rep['label']}: TTFT p95 ms at {base['name']} (unloaded) -> {over['name']} (2x capacity)")
    free = p95(over, "free")
    for tier in ("free", "team", "plus", "enterprise"):
        b, o = p95(base, tier), p95(over, tier)
        line = f"  {tier:<10} {b if b is None else round(b)} -> {o if o is None else round(o)}"
        if tier in ("plus", "enterprise") and b and o:
            ok = o <= 2 * b and (free is None or o < free)
            line += f"  ({o / b:.2f}x unloaded; {'holds' if ok else 'MISSED'}: <= 2x and below free)"
        print(line)
    errs = over["errors_by_status"]
    print(f"  at 2x: answered {over['answered']}/{over['sent']}, errors by status {errs}")
PY
echo "reports in $out"
