#!/usr/bin/env bash
# modelgate vs nginx vs vLLM's router vs direct, measured in ONE run on this machine.
#
# Backend: nginx serving static vLLM-shaped answers (a non-stream chat completion JSON on one
# port, an SSE stream of 50 `data:` chunks + `data: [DONE]` on another, `/health` and
# `/v1/models` on both), so the backend is never the bottleneck. Peers, each pointed at the
# backend: nginx as a reverse proxy (keepalive upstream, proxy_buffering off), vllm-router (the
# pip package; skipped LOUDLY when not installed), pingora (loadtest/pingora_floor.rs: the bare
# pingora-proxy reverse proxy, Pingora's own per-request cost before any gateway work; not in
# the idle scenario), modelgate (release build, server.threads 1).
# CPU 0 runs the proxy under test (taskset); CPU 1 runs the load generator and the backend.
# Access logs are off in every proxy (nginx `access_log off`, modelgate `log.access_log: false`).
#
# Scenarios (each one runs every peer back to back, so drift hits them alike):
#   chat   non-stream chat, wrk -c 1 / 32 / 256: req/s, p50/p90/p99/p99.9, errors, CPU µs/request
#   stream SSE chat (50 chunks), wrk -c 32 / 256; and a 1-connection keep-alive client
#          (sse_client.py): time to first byte, to the first `data:` event, and to the end
#   big    4 MiB bodies with "model" last, wrk -c BIG_CONNS
#   idle   RSS of each proxy idle, then holding 10,000 keep-alive connections (idle_conns.py)
# Output: raw lines as they come, then Markdown tables (also in $OUT, default
# loadtest/compare-<date>.md) with ratios to direct and to each peer.
#
# Bounded: every wrk run lasts DURATION s; every wait is capped; processes started here are
# stopped by PID (SIGTERM, then SIGKILL after 5 s); only 127.0.0.1 and ports BASE_PORT..+40.
# PEERS picks and orders the peers (default "direct nginx vllm-router pingora modelgate").
#
# Usage (from anywhere; builds the release binaries first):
#   loadtest/compare.sh                         # DURATION=10
#   DURATION=5 SCENARIOS="chat stream" loadtest/compare.sh
#   MAX_LOAD=0.7 LOAD_WAIT=300: first wait up to LOAD_WAIT s (30 s steps) for the 1-minute load
#   average to drop to MAX_LOAD (other builds skew everything); it is recorded either way
#   THREADS=2 PROXY_CPUS=0,1 SCENARIOS=chat loadtest/compare.sh   # threads scaling (see RESULTS.md)
# Prerequisites: nginx, wrk, python3, taskset; for the vllm-router peer:
#   pip install vllm-router==0.1.17
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
DURATION=${DURATION:-10}
BASE_PORT=${BASE_PORT:-19600}
SCENARIOS=${SCENARIOS:-chat stream big idle}
PEERS=${PEERS:-direct nginx vllm-router pingora modelgate}
CHAT_CONNS=${CHAT_CONNS:-1 32 256}
STREAM_CONNS=${STREAM_CONNS:-32 256}
BIG_CONNS=${BIG_CONNS:-4}
IDLE_CONNS=${IDLE_CONNS:-10000}
THREADS=${THREADS:-1}        # modelgate server.threads and nginx worker_processes
PROXY_CPUS=${PROXY_CPUS:-0}  # taskset list for the proxy under test
LOAD_CPUS=${LOAD_CPUS:-1}    # taskset list for wrk, the clients and the backend
OUT=${OUT:-$repo/loadtest/compare-$(date -u +%Y%m%dT%H%M%SZ).md}
if ((DURATION < 1 || DURATION > 120 || BASE_PORT < 10000 || BASE_PORT > 65000)); then
  echo "DURATION must be 1-120, BASE_PORT 10000-65000" >&2
  exit 2
fi
for tool in nginx wrk python3 taskset; do
  command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }
done
BACKEND_JSON=$((BASE_PORT + 1)) BACKEND_SSE=$((BASE_PORT + 2))
declare -A PORT=([direct]=0 [nginx]=$((BASE_PORT + 10)) [vllm-router]=$((BASE_PORT + 20)) [modelgate]=$((BASE_PORT + 30)) [pingora]=$((BASE_PORT + 40)))
ADMIN_PORT=$((BASE_PORT + 31)) ROUTER_METRICS_PORT=$((BASE_PORT + 21))
for p in "$BACKEND_JSON" "$BACKEND_SSE" "${PORT[nginx]}" "${PORT[vllm-router]}" "${PORT[modelgate]}" "${PORT[pingora]}" "$ADMIN_PORT" "$ROUTER_METRICS_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use; set BASE_PORT" >&2
    exit 2
  fi
done
if [[ " $PEERS " == *" vllm-router "* ]] && ! command -v vllm-router >/dev/null; then
  echo "!!!!!!!! vllm-router is NOT installed: its peer is SKIPPED. Install: pip install vllm-router==0.1.17" >&2
  PEERS=${PEERS/vllm-router/}
fi
# 10k idle connections plus wrk's: raise the descriptor limit for everything started below.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --bin modelgate --example pingora_floor >/dev/null 2>&1 ||
  { echo "release build failed; run: cargo build --release --bin modelgate --example pingora_floor" >&2; exit 1; }

tmp=$(mktemp -d)
chmod 755 "$tmp" # nginx workers run as nobody
pids=()
# shellcheck source=loadtest/procs.sh
. "$repo/loadtest/procs.sh" # stop, stop_all, wait_http
cleanup() {
  stop_all
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---------------------------------------------------------------- backend (static nginx)
chunk='data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1732550400,"model":"mistral-7b","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}]}\n\n'
sse=''
for _ in $(seq 50); do sse+=$chunk; done
sse+='data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1732550400,"model":"mistral-7b","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":12,"total_tokens":62,"completion_tokens":50}}\n\n'
sse+='data: [DONE]\n\n'
json='{"id":"chatcmpl-bench","object":"chat.completion","created":1732550400,"model":"mistral-7b","choices":[{"index":0,"message":{"role":"assistant","content":"vLLM is a fast and easy-to-use library for LLM inference and serving.","tool_calls":[]},"logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":12,"total_tokens":28,"completion_tokens":16},"prompt_logprobs":null}'
models='{"object":"list","data":[{"id":"mistral-7b","object":"model","created":1732550400,"owned_by":"vllm","root":"mistral-7b","parent":null,"max_model_len":32768}]}'
common_http="access_log off; client_body_temp_path $tmp/cb; proxy_temp_path $tmp/pt; fastcgi_temp_path $tmp/ft; uwsgi_temp_path $tmp/ut; scgi_temp_path $tmp/st;"
mkdir -p "$tmp/backend"
printf '%b' "$sse" >"$tmp/backend/stream.sse"
nginx_head() { # dir workers: the part of nginx.conf every instance here shares, up to "http {"
  printf '%s\n' "worker_processes $2;" "pid $1/nginx.pid;" "error_log $1/error.log warn;" \
    "worker_rlimit_nofile 65536;" "events { worker_connections 32768; }" "http {" "  $common_http" \
    "  keepalive_requests 1000000;" "  client_max_body_size 64m;"
}
{ nginx_head "$tmp/backend" 1; cat <<EOF; } >"$tmp/backend/nginx.conf"
  server {
    listen 127.0.0.1:$BACKEND_JSON backlog=4096;
    location = /health { return 200; }
    location = /v1/models { default_type application/json; return 200 '$models'; }
    # A large body (the 4 MiB scenario) is read to its end before the answer, as vLLM does;
    # "return" alone would answer at once and drop the rest unread. Reading happens in
    # /read-body, which then fetches the answer from /json here without passing the body on.
    location / {
      if (\$http_content_length ~ "^[0-9]{6,}\$") { rewrite ^ /read-body last; }
      default_type application/json;
      return 200 '$json';
    }
    location = /read-body {
      internal;
      proxy_pass http://127.0.0.1:$BACKEND_JSON/json;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      client_body_buffer_size 8m;
    }
    location = /json { default_type application/json; return 200 '$json'; }
  }
  server {
    listen 127.0.0.1:$BACKEND_SSE backlog=4096;
    location = /health { return 200; }
    location = /v1/models { default_type application/json; return 200 '$models'; }
    # Too long for a config string: a file, served to POSTs through the 405 error page (nginx
    # turns that internal redirect into a GET).
    location / { error_page 405 =200 /stream.sse; return 405; }
    location = /stream.sse { internal; root $tmp/backend; default_type text/event-stream; add_header Cache-Control no-cache; }
  }
}
EOF
taskset -c "$LOAD_CPUS" nginx -p "$tmp/backend" -c "$tmp/backend/nginx.conf" -g 'daemon off;' &
backend_pid=$!
pids+=("$backend_pid")
wait_http "http://127.0.0.1:$BACKEND_JSON/health"
wait_http "http://127.0.0.1:$BACKEND_SSE/health"

# ---------------------------------------------------------------- peers
declare -A PID=()
start_nginx() { # backend port
  mkdir -p "$tmp/nginx"
  { nginx_head "$tmp/nginx" "$THREADS"; cat <<EOF; } >"$tmp/nginx/nginx.conf"
  client_body_buffer_size 8m;   # 4 MiB bodies stay in memory
  upstream backend { server 127.0.0.1:$1; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${PORT[nginx]} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;        # SSE: relay each chunk as it comes
    }
  }
}
EOF
  taskset -c "$PROXY_CPUS" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g 'daemon off;' &
  PID[nginx]=$!
  pids+=("$!")
  wait_http "http://127.0.0.1:${PORT[nginx]}/health"
}
start_router() { # backend port
  taskset -c "$PROXY_CPUS" vllm-router --host 127.0.0.1 --port "${PORT[vllm-router]}" \
    --worker-urls "http://127.0.0.1:$1" --policy round_robin --log-level warning \
    --prometheus-host 127.0.0.1 --prometheus-port "$ROUTER_METRICS_PORT" \
    --max-payload-size 67108864 --log-dir "$tmp/router-log" >"$tmp/router.out" 2>&1 &
  PID[vllm-router]=$!
  pids+=("$!")
  wait_http "http://127.0.0.1:${PORT[vllm-router]}/health" 300 || { tail -20 "$tmp/router.out" >&2; return 1; }
}
start_modelgate() { # backend port
  mkdir -p "$tmp/mg"
  cat >"$tmp/mg/router.yaml" <<EOF
listen: "127.0.0.1:${PORT[modelgate]}"
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
server: {threads: $THREADS}
drain: {delay_ms: 0, timeout_ms: 1000}
log: {level: warn, access_log: false}
models:
  mistral-7b:
    backends:
      - {name: b0, url: "http://127.0.0.1:$1"}
EOF
  taskset -c "$PROXY_CPUS" "$repo/target/release/modelgate" --config "$tmp/mg/router.yaml" >"$tmp/mg.out" 2>&1 &
  PID[modelgate]=$!
  pids+=("$!")
  wait_http "http://127.0.0.1:$ADMIN_PORT/ready" 100 || { tail -20 "$tmp/mg.out" >&2; return 1; }
}
start_pingora() { # backend port
  taskset -c "$PROXY_CPUS" "$repo/target/release/examples/pingora_floor" "127.0.0.1:${PORT[pingora]}" \
    "127.0.0.1:$1" "$THREADS" >"$tmp/pingora.out" 2>&1 &
  PID[pingora]=$!
  pids+=("$!")
  wait_http "http://127.0.0.1:${PORT[pingora]}/health" 100 || { tail -20 "$tmp/pingora.out" >&2; return 1; }
}
start_peers() { # backend port
  local p
  for p in $PEERS; do
    case $p in
      nginx) start_nginx "$1" ;;
      vllm-router) start_router "$1" ;;
      modelgate) start_modelgate "$1" ;;
      pingora) start_pingora "$1" ;;
    esac
  done
}
stop_peers() {
  local p
  for p in "${!PID[@]}"; do stop "${PID[$p]}"; done
  PID=()
}
port_of() { # peer backend-port
  if [[ $1 == direct ]]; then echo "$2"; else echo "${PORT[$1]}"; fi
}
pids_of() { # the process and its children (nginx workers)
  local pid=$1
  echo "$pid"
  cat "/proc/$pid/task/"*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' || true
}
cpu_ticks() { # peer: "utime stime" of the peer's processes (clock ticks)
  local pid user=0 sys=0 f
  [[ $1 == direct ]] && pid=$backend_pid || pid=${PID[$1]}
  for p in $(pids_of "$pid"); do
    f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    user=$((user + ${12})) sys=$((sys + ${13}))
  done
  echo "$user $sys"
}
rss_kib() { # peer: summed VmRSS of the peer's processes
  local pid total=0 v
  pid=${PID[$1]}
  for p in $(pids_of "$pid"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
tck=$(getconf CLK_TCK)
results="$tmp/results.txt"
: >"$results"

run_wrk() { # scenario kind conns peer backend-port
  local scenario=$1 kind=$2 conns=$3 peer=$4 port threads u0 s0 u1 s1 line
  port=$(port_of "$peer" "$5")
  threads=1
  read -r u0 s0 <<<"$(cpu_ticks "$peer")"
  line=$(BODY_KIND=$kind taskset -c "$LOAD_CPUS" timeout $((DURATION + 30)) wrk -t"$threads" -c"$conns" -d"${DURATION}s" \
    --timeout 10s -s "$repo/loadtest/compare.lua" "http://127.0.0.1:$port/v1/chat/completions" | grep '^RESULT' || echo "RESULT 0 0 0 0 0 0 0 0 0")
  read -r u1 s1 <<<"$(cpu_ticks "$peer")"
  set -- $line
  local cpu_us="0 0 0"
  (($2 > 0)) && cpu_us=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$2" -v hz="$tck" \
    'BEGIN {k = 1e6 / hz / n; printf "%.1f %.1f %.1f", (u + s) * k, u * k, s * k}')
  set -- $line $cpu_us
  # scenario conns peer req_s p50 p90 p99 p999 non2xx sockerr cpu_us_per_req requests user_us sys_us
  echo "$scenario $conns $peer $4 $5 $6 $7 $8 $9 ${10} ${11} $2 ${12} ${13}" | tee -a "$results"
}

# Other work on the machine skews every number: wait (bounded) for a quiet moment, then go on
# anyway; the load average is recorded in the report either way.
MAX_LOAD=${MAX_LOAD:-0.7} LOAD_WAIT=${LOAD_WAIT:-300}
for ((waited = 0; waited < LOAD_WAIT; waited += 30)); do
  awk -v m="$MAX_LOAD" '{exit !($1 > m)}' /proc/loadavg || break
  echo "# load average $(cut -d' ' -f1 /proc/loadavg) > $MAX_LOAD: waiting 30 s (${waited}/${LOAD_WAIT} s)" >&2
  sleep 30
done
load0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# load average at start: $load0"
for scenario in $SCENARIOS; do
  case $scenario in
    chat)
      start_peers "$BACKEND_JSON"
      for c in $CHAT_CONNS; do for peer in $PEERS; do run_wrk chat chat "$c" "$peer" "$BACKEND_JSON"; done; done
      stop_peers ;;
    stream)
      start_peers "$BACKEND_SSE"
      for c in $STREAM_CONNS; do for peer in $PEERS; do run_wrk stream stream "$c" "$peer" "$BACKEND_SSE"; done; done
      for peer in $PEERS; do
        line=$(taskset -c "$LOAD_CPUS" timeout $((DURATION + 30)) python3 "$repo/loadtest/sse_client.py" 127.0.0.1 \
          "$(port_of "$peer" "$BACKEND_SSE")" --requests 3000 --seconds "$DURATION")
        echo "ttfb 1 $peer $line" | tee -a "$results"
      done
      stop_peers ;;
    big)
      start_peers "$BACKEND_JSON"
      for peer in $PEERS; do run_wrk big big "$BIG_CONNS" "$peer" "$BACKEND_JSON"; done
      stop_peers ;;
    idle)
      start_peers "$BACKEND_JSON"
      for peer in $PEERS; do
        [[ $peer == direct || $peer == pingora ]] && continue
        before=$(rss_kib "$peer")
        fifo="$tmp/idle.out"
        : >"$fifo"
        taskset -c "$LOAD_CPUS" timeout 180 python3 "$repo/loadtest/idle_conns.py" 127.0.0.1 "${PORT[$peer]}" \
          --connections "$IDLE_CONNS" --hold 5 --timeout 150 >"$fifo" 2>"$tmp/idle.err" &
        client=$!
        for _ in $(seq 1500); do grep -q '^held' "$fifo" && break; kill -0 "$client" 2>/dev/null || break; sleep 0.1; done
        sleep 1
        during=$(rss_kib "$peer")
        held=$(grep '^held' "$fifo" || echo "held 0 $IDLE_CONNS")
        wait "$client" || true
        echo "idle $IDLE_CONNS $peer rss_idle_kib $before rss_held_kib $during $held" | tee -a "$results"
        [[ -s $tmp/idle.err ]] && head -3 "$tmp/idle.err" >&2
      done
      stop_peers ;;
  esac
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# load average at end: $load1"

# ---------------------------------------------------------------- report
{
  echo "### Run $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`DURATION=$DURATION THREADS=$THREADS PROXY_CPUS=$PROXY_CPUS SCENARIOS=\"$SCENARIOS\" loadtest/compare.sh\`"
  echo "- modelgate $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src || echo ' (+ uncommitted src changes)'); $(nginx -v 2>&1); vllm-router $(pip show vllm-router 2>/dev/null | awk '/^Version/ {print $2}'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); proxy on CPU $PROXY_CPUS, wrk + backend on CPU $LOAD_CPUS"
  echo "- load average: start $load0, end $load1"
  echo
  python3 "$repo/loadtest/compare_report.py" "$results"
} | tee "$OUT"
echo "report written to $OUT" >&2
