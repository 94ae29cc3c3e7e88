#!/usr/bin/env bash
# Prefill/decode disaggregation through modelgate, on the project's mock (no GPU): what the
# two-leg path adds over one leg, and its throughput. Alternates, in one run:
#   one-leg   model `plain`: 2 plain mock backends, round_robin         (one upstream exchange)
#   two-leg   model `pd`:    2 prefill + 2 decode mocks (--role), same policies (two exchanges)
# Each: wrk -t1 on CPU 1 against modelgate (server.threads 1) on CPU 0; the mocks on CPU 1.
# Reports req/s, p50/p99 latency and modelgate CPU per request for non-stream chat at c=1 (added
# latency) and c=32 (throughput), and stream chat at c=32; the added latency of the second leg
# is two-leg p50 - one-leg p50 at c=1.
#
# Usage: loadtest/pd.sh            (after `cargo build --release --features mock --bin modelgate --bin modelgate-mock`)
# Knobs: DURATION (s per run, 1-60, default 5), ROUNDS (1-10, default 2), BASE_PORT (19900).
# Bounded: each wrk run lasts DURATION s; every process started here is stopped by PID on exit.
set -euo pipefail
DURATION=${DURATION:-5} ROUNDS=${ROUNDS:-2} BASE_PORT=${BASE_PORT:-19900}
((DURATION >= 1 && DURATION <= 60 && ROUNDS >= 1 && ROUNDS <= 10)) || { echo "DURATION 1-60, ROUNDS 1-10" >&2; exit 2; }
for tool in wrk taskset curl bc; do command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }; done
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
mg=${MODELGATE:-$repo/target/release/modelgate}
mock=${MOCK:-$repo/target/release/modelgate-mock}
[[ -x $mg && -x $mock ]] || { echo "build first: cargo build --release --features mock --bin modelgate --bin modelgate-mock" >&2; exit 2; }
port=$BASE_PORT admin=$((BASE_PORT + 1))
tmp=$(mktemp -d)
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

# Mocks: plain (2), prefill (2), decode (2), each a process of its own on CPU 1. 16 tokens
# without delay: the mock is never the bottleneck, so what differs is the gateway's work.
start_mock() { # first_port role
  taskset -c 1 "$mock" --host 127.0.0.1 --port "$1" --ports 2 --model m --role "$2" --tokens 16 \
    >"$tmp/mock-$2.out" 2>&1 &
  pids+=("$!")
}
start_mock $((BASE_PORT + 10)) plain
start_mock $((BASE_PORT + 12)) prefill
start_mock $((BASE_PORT + 14)) decode
for p in $(seq $((BASE_PORT + 10)) $((BASE_PORT + 15))); do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/health" && break; sleep 0.1; done
done
url() { echo "http://127.0.0.1:$1"; }
cat >"$tmp/router.yaml" <<YAML
listen: "127.0.0.1:$port"
admin: {listen: "127.0.0.1:$admin"}
server: {threads: 1}
drain: {delay_ms: 0, timeout_ms: 1000}
log: {level: warn, access_log: false}
models:
  plain:
    served_model_name: m
    load_balancer: {policy: round_robin}
    backends:
      - {name: a0, url: "$(url $((BASE_PORT + 10)))"}
      - {name: a1, url: "$(url $((BASE_PORT + 11)))"}
  pd:
    served_model_name: m
    prefill:
      load_balancer: {policy: round_robin}
      backends:
        - {name: p0, url: "$(url $((BASE_PORT + 12)))"}
        - {name: p1, url: "$(url $((BASE_PORT + 13)))"}
    decode:
      load_balancer: {policy: round_robin}
      backends:
        - {name: d0, url: "$(url $((BASE_PORT + 14)))"}
        - {name: d1, url: "$(url $((BASE_PORT + 15)))"}
YAML
"$mg" -t -c "$tmp/router.yaml" >/dev/null
taskset -c 0 "$mg" --config "$tmp/router.yaml" >"$tmp/mg.out" 2>&1 & pid=$!; pids+=("$pid")
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$admin/ready" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$admin/ready" || { cat "$tmp/mg.out" >&2; exit 1; }

# wrk body per model and kind.
cat >"$tmp/pd.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local model = os.getenv("MODEL")
local stream = os.getenv("KIND") == "stream" and "true" or "false"
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Describe vLLM in one paragraph."}],"max_tokens":16,"stream":' .. stream .. '}'
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %.1f %d %d %d\n", summary.requests,
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
tck=$(getconf CLK_TCK)
echo "| round | path | kind | conns | req/s | p50 µs | p99 µs | errors | modelgate CPU/req µs |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for case in "chat 1" "chat 32" "stream 32"; do
    read -r kind conns <<<"$case"
    for model in plain pd; do
      MODEL=$model KIND=$kind taskset -c 1 wrk -t1 -c"$conns" -d1s -s "$tmp/pd.lua" "$(url "$port")/v1/chat/completions" >/dev/null
      t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      out=$(MODEL=$model KIND=$kind taskset -c 1 timeout $((DURATION + 10)) wrk -t1 -c"$conns" -d"$DURATION"s -s "$tmp/pd.lua" "$(url "$port")/v1/chat/completions" | grep RESULT)
      t2=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      read -r _ n rps p50 p99 errors <<<"$out"
      path=$([[ $model == pd ]] && echo two-leg || echo one-leg)
      printf '| %s | %s | %s | %s | %.0f | %s | %s | %s | %.1f |\n' "$round" "$path" "$kind" "$conns" "$rps" "$p50" "$p99" "$errors" \
        "$(echo "($t2 - $t1) * 1000000 / $tck / $n" | bc -l)"
    done
  done
done
