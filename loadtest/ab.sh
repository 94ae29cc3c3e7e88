#!/usr/bin/env bash
# Interleaved A/B of modelgate binaries: CPU per request, req/s and p50 of each, same backend,
# alternating A B A B so machine noise hits both alike. Optionally the system calls per request.
#
# Usage:
#   loadtest/ab.sh BIN_A BIN_B [BIN ...]        # e.g. a copy of the old build and target/release/modelgate
#   KIND=stream CONNS=256 ROUNDS=3 DURATION=5 loadtest/ab.sh old new
#   SYSCALLS=1 loadtest/ab.sh target/release/modelgate   # + perf stat syscalls per request
# KIND: chat (non-stream) or stream (50 SSE chunks); CONNS: wrk connections (default 32).
# Backend: static nginx on CPU 1 (as in compare.sh); modelgate (server.threads 1) on CPU 0;
# wrk -t1 on CPU 1. Bounded: each wrk run lasts DURATION s (1-60); processes started here are
# stopped by PID. Ports BASE_PORT..BASE_PORT+3 (default 19800) on 127.0.0.1.
set -euo pipefail
(($# >= 1)) || { sed -n '2,13p' "$0" >&2; exit 2; }
KIND=${KIND:-chat} CONNS=${CONNS:-32} ROUNDS=${ROUNDS:-2} DURATION=${DURATION:-5}
BASE_PORT=${BASE_PORT:-19800}
((DURATION >= 1 && DURATION <= 60 && ROUNDS >= 1 && ROUNDS <= 10)) || { echo "DURATION 1-60, ROUNDS 1-10" >&2; exit 2; }
for tool in nginx wrk taskset curl; do command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }; done
here=$(cd "$(dirname "$0")" && pwd)
back=$((BASE_PORT + 1)) port=$((BASE_PORT + 2)) admin=$((BASE_PORT + 3))
tmp=$(mktemp -d); chmod 755 "$tmp"
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
json='{"id":"chatcmpl-bench","object":"chat.completion","created":1732550400,"model":"mistral-7b","choices":[{"index":0,"message":{"role":"assistant","content":"vLLM is a fast and easy-to-use library for LLM inference and serving.","tool_calls":[]},"logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":12,"total_tokens":28,"completion_tokens":16},"prompt_logprobs":null}'
models='{"object":"list","data":[{"id":"mistral-7b","object":"model","owned_by":"vllm"}]}'
chunk='data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1732550400,"model":"mistral-7b","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}]}\n\n'
sse=''; for _ in $(seq 50); do sse+=$chunk; done; sse+='data: [DONE]\n\n'
printf '%b' "$sse" >"$tmp/stream.sse"
if [[ $KIND == stream ]]; then
  answer="location / { error_page 405 =200 /stream.sse; return 405; } location = /stream.sse { internal; root $tmp; default_type text/event-stream; }"
else
  answer="location / { default_type application/json; return 200 '$json'; }"
fi
cat >"$tmp/nginx.conf" <<NGINX
worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/error.log warn; worker_rlimit_nofile 65536;
events { worker_connections 32768; }
http { access_log off; client_body_temp_path $tmp/cb; proxy_temp_path $tmp/pt; fastcgi_temp_path $tmp/ft; uwsgi_temp_path $tmp/ut; scgi_temp_path $tmp/st; keepalive_requests 1000000;
  server { listen 127.0.0.1:$back backlog=4096; location = /health { return 200; }
    location = /v1/models { default_type application/json; return 200 '$models'; } $answer } }
NGINX
cat >"$tmp/router.yaml" <<YAML
listen: "127.0.0.1:$port"
admin: {listen: "127.0.0.1:$admin"}
server: {threads: 1}
drain: {delay_ms: 0, timeout_ms: 1000}
log: {level: warn, access_log: false}
models:
  mistral-7b:
    backends:
      - {name: b0, url: "http://127.0.0.1:$back"}
YAML
taskset -c 1 nginx -p "$tmp" -c "$tmp/nginx.conf" -g 'daemon off;' & pids+=("$!")
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$back/health" && break; sleep 0.1; done
tck=$(getconf CLK_TCK)
url="http://127.0.0.1:$port/v1/chat/completions"
load() { BODY_KIND=$KIND taskset -c 1 wrk -t1 -c"$CONNS" -d"$1"s -s "$here/compare.lua" "$url" | grep RESULT; }
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    taskset -c 0 "$bin" --config "$tmp/router.yaml" >"$tmp/mg.out" 2>&1 & pid=$!; pids+=("$pid")
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$admin/ready" && break; sleep 0.1; done
    load 1 >/dev/null # warm-up
    if [[ ${SYSCALLS:-0} == 1 ]]; then
      perf stat -e 'syscalls:sys_enter_*' -p "$pid" -o "$tmp/sc.txt" -- sleep "$DURATION" & sp=$!
    fi
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(load "$DURATION")
    t2=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    read -r _ n _ rps p50 _ <<<"$out"
    printf 'round %s  %-28s %s c=%s  req/s %8.0f  p50 %5s µs  CPU/req %5.1f µs  RSS %s KiB\n' \
      "$round" "$(basename "$bin")" "$KIND" "$CONNS" "$rps" "$p50" \
      "$(echo "($t2 - $t1) * 1000000 / $tck / $n" | bc -l)" "$rss"
    if [[ ${SYSCALLS:-0} == 1 ]]; then
      wait "$sp"
      awk -v n="$n" '$2 ~ /syscalls:sys_enter_/ { gsub(",", "", $1); if ($1 > 0 && $1 / n >= 0.01) printf "    %6.2f %s\n", $1 / n, substr($2, 20) }' "$tmp/sc.txt" | sort -rn
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
