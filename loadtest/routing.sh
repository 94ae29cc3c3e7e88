#!/usr/bin/env bash
# Routing-quality benchmark: seeded open-loop workloads against a simulated vLLM fleet
# (`modelgate-mock --sim`), through every router arm, at loads relative to round-robin's knee.
# Results: Markdown tables in $OUT and the raw JSON lines beside it ($OUT without .md + .jsonl).
# See loadtest/ROUTING.md (design, the exact commands, results) and loadtest/README.md.
#
# Per scenario: start the fleet; find RR's knee (highest Poisson rate with TTFT p99 <= 2 s, bounded
# search; or KNEE_<scenario>=RATE); then for each arm, for each load multiple of the knee: start
# the arm (a fresh router process per point), run one point (routebench waits for an idle fleet,
# resets every server's prefix cache, replays the same seeded requests at the same arrival times
# as every other arm: warm-up, then the measured window), stop the arm. Loads 0.5/0.8/1.0/1.2 x
# knee always run; higher ones (for goodput) only until the arm misses the SLO twice in a row.
#
# Arms: modelgate policies (round_robin random least_connections power_of_two load_aware
# consistent_hash_prefix consistent_hash_session cache_aware cache_aware_2gw), the pip peers
# (sglang_cache_aware sglang_cache_aware_t8 sglang_round_robin vllm_cache_aware vllm_round_robin)
# and oracle (no router: each group/session straight to its server, balanced assignment).
# A modelgate arm whose config `modelgate -t` rejects (e.g. cache_aware before it lands) and a
# peer that is not installed are reported as "not available", not as failures.
#
# Usage:
#   loadtest/routing.sh                          # full run (hours; see ROUTING.md for the budget)
#   QUICK=1 loadtest/routing.sh                  # ~10 min: shared_prefix, 6 arms, 0.8x and 1.2x
#   SCENARIOS="zipf" ARMS="round_robin cache_aware" KNEE_zipf=40 loadtest/routing.sh
#   MODELGATE=/path/to/modelgate loadtest/routing.sh    # another build of the gateway
# Knobs: SCENARIOS, ARMS (all scenarios) or ARMS_<scenario> (default: per scenario), QUICK,
#   SEED, API (chat or completions: the single-turn scenarios' endpoint), TIME_SCALE (or TIME_SCALE_<scenario>; no_reuse defaults to 2 x TIME_SCALE), OUT,
#   SERVERS, KV_BLOCKS, PREFIX_GROUPS, WARMUP, MEASURED, WARMUP_<scenario>, MULTIPLES,
#   KNEE_<scenario>, CALIBRATE, BASE_PORT, MODELGATE, MOCK,
#   VENV (peers' venv, default loadtest/.venv; created and filled by `PEERS_INSTALL=1`),
#   CACHE_AWARE_LB (the cache_aware arms' load_balancer flow map, default "{policy: cache_aware}"),
#   TRACE=1 (every request's group, backend and cached tokens to OUT's name + -trace.jsonl),
#   ORACLE_ASSIGNMENT (the oracle arms' server per group, comma-separated: replays a placement).
# Arms beyond the defaults: oracle_gateway (the oracle's assignment, each server behind its own
#   gateway: what the gateway's path alone costs), cache_aware_2gw, sglang_cache_aware_t8.
# Bounded: every point has a request count and per-request deadline (routebench), every wait
# here is capped, and every process started here is stopped by PID on exit (SIGTERM, then
# SIGKILL after 5 s), Ctrl-C included. Only 127.0.0.1, ports BASE_PORT..BASE_PORT+48.
set -euo pipefail
# Everything runs inside main, which bash parses whole before running: editing this file while a
# run is going on cannot change what that run executes.
main() {
cd "$(dirname "$0")/.."
repo=$PWD

QUICK=${QUICK:-0}
SEED=${SEED:-1}
TIME_SCALE=${TIME_SCALE:-2}
SERVERS=${SERVERS:-4}
KV_BLOCKS=${KV_BLOCKS:-8192}
PREFIX_GROUPS=${PREFIX_GROUPS:-192}
BASE_PORT=${BASE_PORT:-19700}
MODEL=${MODEL:-llama-3.1-8b-sim}
# The API of single-turn requests: chat (/v1/chat/completions) or completions (/v1/completions).
API=${API:-chat}
VENV=${VENV:-$repo/loadtest/.venv}
SLO=${SLO:-2}
# The new policy's load_balancer block (its own keys, if any, go here; the default is bare).
CACHE_AWARE_LB=${CACHE_AWARE_LB:-"{policy: cache_aware}"}
if [[ $QUICK == 1 ]]; then
  SCENARIOS=${SCENARIOS:-shared_prefix}
  WARMUP=${WARMUP:-400}
  MEASURED=${MEASURED:-600}
  MULTIPLES=${MULTIPLES:-0.8 1.2}
  BASE_MULTIPLES=${BASE_MULTIPLES:-0.8 1.2}
else
  SCENARIOS=${SCENARIOS:-shared_prefix zipf multi_turn no_reuse hetero}
  WARMUP=${WARMUP:-400}
  MEASURED=${MEASURED:-1000}
  MULTIPLES=${MULTIPLES:-0.5 0.8 1.0 1.2 1.5 1.8 2.2 2.7 3.3}
  BASE_MULTIPLES=${BASE_MULTIPLES:-0.5 0.8 1.0 1.2}
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$repo/loadtest/routing-$stamp/report.md}
RAW=${OUT%.md}.jsonl
TRACE_ARGS=()
[[ ${TRACE:-0} == 1 ]] && TRACE_ARGS=(--trace "${RAW%.jsonl}-trace.jsonl")
mkdir -p "$(dirname "$OUT")"
LOG=${OUT%.md}.log

# RR's knee per scenario (simulated req/s) measured by the full run documented in ROUTING.md;
# QUICK uses them instead of calibrating. CALIBRATE=1 always calibrates.
declare -gA KNEE_DEFAULT=([shared_prefix]=95 [zipf]=110 [multi_turn]=203 [no_reuse]=171 [hetero]=46)
CALIBRATE=${CALIBRATE:-$((1 - QUICK))}

default_arms() { # scenario
  local var="ARMS_$1"
  if [[ -n ${!var:-} ]]; then echo "${!var}"; return; fi
  if [[ $QUICK == 1 ]]; then
    echo "round_robin consistent_hash_prefix cache_aware sglang_cache_aware vllm_cache_aware oracle"
    return
  fi
  case $1 in
    shared_prefix) echo "round_robin random least_connections power_of_two load_aware consistent_hash_prefix cache_aware cache_aware_2gw sglang_cache_aware sglang_round_robin vllm_cache_aware vllm_round_robin oracle" ;;
    zipf) echo "round_robin least_connections load_aware consistent_hash_prefix cache_aware sglang_cache_aware vllm_cache_aware oracle" ;;
    multi_turn) echo "round_robin least_connections consistent_hash_session consistent_hash_prefix cache_aware sglang_cache_aware vllm_cache_aware oracle" ;;
    no_reuse) echo "round_robin least_connections power_of_two load_aware cache_aware sglang_cache_aware vllm_cache_aware" ;;
    hetero) echo "round_robin least_connections load_aware consistent_hash_prefix cache_aware sglang_cache_aware oracle" ;;
  esac
}

workload_args() { # scenario
  case $1 in
    shared_prefix | hetero) echo "--workload shared-prefix --api $API --groups $PREFIX_GROUPS --sys-tokens 2048 --question-tokens 256 --output-tokens 128" ;;
    zipf) echo "--workload zipf --api $API --zipf-alpha 1.1 --groups $PREFIX_GROUPS --sys-tokens 2048 --question-tokens 256 --output-tokens 128" ;;
    multi_turn) echo "--workload multi-turn --groups 8 --sys-tokens 1024 --question-tokens 256 --output-tokens 128 --turns 4 --think-min 0.5 --think-max 1.5 --warmup-seconds ${WARMUP_SECONDS:-10} --measured-seconds ${MEASURED_SECONDS:-20}" ;;
    no_reuse) echo "--workload no-reuse --api $API --question-tokens 1024 --output-tokens 128" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

fleet_args() { # scenario
  local slow=""
  if [[ $1 == hetero ]]; then
    slow=$(printf '1,%.0s' $(seq $((SERVERS - 1))))2
    slow="--sim-slowdown $slow"
  fi
  echo "--sim --host 127.0.0.1 --port $BASE_PORT --ports $SERVERS --model $MODEL --time-scale $SCALE --kv-blocks $KV_BLOCKS $slow"
}

if ((SERVERS < 2 || SERVERS > 16 || BASE_PORT < 10000 || BASE_PORT > 65000)); then
  echo "SERVERS must be 2-16, BASE_PORT 10000-65000" >&2
  exit 2
fi
GW_PORT=$((BASE_PORT + 20)) GW_ADMIN=$((BASE_PORT + 21)) GW2_PORT=$((BASE_PORT + 22)) GW2_ADMIN=$((BASE_PORT + 23))
ROUTER_PORT=$((BASE_PORT + 30)) ROUTER_METRICS=$((BASE_PORT + 31))
for p in $(seq "$BASE_PORT" $((BASE_PORT + SERVERS - 1))) "$GW_PORT" "$GW_ADMIN" "$GW2_PORT" "$GW2_ADMIN" "$ROUTER_PORT" "$ROUTER_METRICS"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use; set BASE_PORT" >&2
    exit 2
  fi
done
command -v curl >/dev/null || { echo "curl not found" >&2; exit 2; }

if [[ -z ${MODELGATE:-} || -z ${MOCK:-} ]]; then
  echo "# building: cargo build --release --features mock --bin modelgate --bin modelgate-mock --example routebench" >&2
  cargo build --release --features mock --bin modelgate --bin modelgate-mock --example routebench >&2 ||
    { echo "release build failed" >&2; exit 1; }
fi
MODELGATE=${MODELGATE:-$repo/target/release/modelgate}
MOCK=${MOCK:-$repo/target/release/modelgate-mock}
BENCH=${BENCH:-$repo/target/release/examples/routebench}
if ! "$MOCK" --help 2>/dev/null | grep -q -- '--sim'; then
  echo "$MOCK has no --sim mode (the fleet simulator); merge it first" >&2
  exit 2
fi
if [[ ${PEERS_INSTALL:-0} == 1 && ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q sglang-router==0.3.2 vllm-router==0.1.17
fi

tmp=$(mktemp -d)
pids=()
# shellcheck source=loadtest/procs.sh
. "$repo/loadtest/procs.sh" # stop, stop_all, wait_http
cleanup() {
  stop_all
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "# $(date -u +%H:%M:%S) $*" | tee -a "$LOG" >&2; }
servers_csv() {
  local i out=""
  for ((i = 0; i < SERVERS; i++)); do out+="${out:+,}http://127.0.0.1:$((BASE_PORT + i))"; done
  echo "$out"
}
SERVER_URLS=$(servers_csv)

# ---------------------------------------------------------------- fleet
FLEET_PID=""
start_fleet() { # scenario
  local args
  args=$(fleet_args "$1")
  log "fleet: $MOCK $args"
  # shellcheck disable=SC2086 # word splitting of the argument list is intended
  "$MOCK" $args 2>"$tmp/fleet.err" >/dev/null &
  FLEET_PID=$!
  pids+=("$FLEET_PID")
  for _ in $(seq 300); do
    (($(grep -c ' serving ' "$tmp/fleet.err" 2>/dev/null || true) >= SERVERS)) && return 0
    kill -0 "$FLEET_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "fleet did not start:" >&2
  tail -20 "$tmp/fleet.err" >&2
  return 1
}
stop_fleet() {
  [[ -n $FLEET_PID ]] && stop "$FLEET_PID"
  FLEET_PID=""
}

# ---------------------------------------------------------------- arms
ARM_PIDS=()
ARM_TARGETS=()
ARM_ORACLE=0
# modelgate config for a policy block; poll intervals are simulated 100 ms (x the scale, real).
modelgate_config() { # file listen admin "load_balancer yaml flow map" [backend index]
  local i first=0 last=$((SERVERS - 1))
  [[ -n ${5:-} ]] && first=$5 last=$5
  {
    echo "listen: \"127.0.0.1:$2\""
    echo "admin: {listen: \"127.0.0.1:$3\"}"
    echo "server: {threads: 2}"
    echo "drain: {delay_ms: 0, timeout_ms: 1000}"
    echo "log: {level: warn, access_log: false}"
    echo "models:"
    echo "  $MODEL:"
    echo "    load_balancer: $4"
    echo "    timeouts: {first_byte_timeout_ms: 3600000, idle_timeout_ms: 3600000, request_timeout_ms: 3600000}"
    echo "    retries: {max_attempts: 1}"
    echo "    backends:"
    for ((i = first; i <= last; i++)); do
      echo "      - {name: sim$i, url: \"http://127.0.0.1:$((BASE_PORT + i))\"}"
    done
  } >"$1"
}
policy_of() { # arm -> load_balancer flow map, or empty for non-modelgate arms
  local poll
  poll=$(awk -v s="$SCALE" 'BEGIN { printf "%d", 100 * s }')
  case $1 in
    round_robin | random | least_connections | power_of_two) echo "{policy: $1}" ;;
    load_aware) echo "{policy: load_aware, load_poll_ms: $poll}" ;;
    consistent_hash_prefix) echo "{policy: consistent_hash, hash_on: prompt_prefix}" ;;
    consistent_hash_session) echo "{policy: consistent_hash, hash_on: \"header:x-session-id\"}" ;;
    cache_aware | cache_aware_2gw) echo "$CACHE_AWARE_LB" ;;
    *) echo "" ;;
  esac
}
# Probe until a chat request through URL answers 200 (routers register workers asynchronously).
wait_routes() { # base-url tries(0.2 s each)
  local body="{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}],\"max_tokens\":1}"
  for _ in $(seq "${2:-150}"); do
    curl -sf -o /dev/null --max-time 5 -H 'content-type: application/json' -d "$body" "$1/v1/chat/completions" && return 0
    sleep 0.2
  done
  return 1
}
start_modelgate() { # arm policy port admin [backend index: only that server]
  local cfg="$tmp/$1-$3.yaml" err
  modelgate_config "$cfg" "$3" "$4" "$2" "${5:-}"
  if ! err=$("$MODELGATE" -t -c "$cfg" 2>&1); then
    WHY="modelgate -t rejected the config: $(echo "$err" | grep -v '^\s*$' | tail -n +2 | head -3 | tr '\n' ' ' | cut -c1-300)"
    return 1
  fi
  "$MODELGATE" --config "$cfg" >"$tmp/$1-$3.out" 2>&1 &
  ARM_PIDS+=("$!")
  pids+=("$!")
  wait_http "http://127.0.0.1:$4/ready" 200 && wait_routes "http://127.0.0.1:$3" ||
    { WHY="modelgate did not become ready: $(tail -3 "$tmp/$1-$3.out" | tr '\n' ' ')"; return 1; }
  ARM_TARGETS+=("http://127.0.0.1:$3")
}
start_peer() { # arm kind(sglang|vllm) policy [extra args...]
  local arm=$1 kind=$2 policy=$3 workers=()
  shift 3
  local i
  for ((i = 0; i < SERVERS; i++)); do workers+=("http://127.0.0.1:$((BASE_PORT + i))"); done
  case $kind in
    sglang)
      [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import sglang_router' 2>/dev/null ||
        { WHY="sglang-router not installed in $VENV (pip install sglang-router==0.3.2, or PEERS_INSTALL=1)"; return 1; }
      "$VENV/bin/python" -m sglang_router.launch_router --host 127.0.0.1 --port "$ROUTER_PORT" \
        --worker-urls "${workers[@]}" --policy "$policy" --prometheus-host 127.0.0.1 \
        --prometheus-port "$ROUTER_METRICS" --log-level warn "$@" >"$tmp/$arm.out" 2>&1 &
      ;;
    vllm)
      [[ -x $VENV/bin/vllm-router ]] ||
        { WHY="vllm-router not installed in $VENV (pip install vllm-router==0.1.17, or PEERS_INSTALL=1)"; return 1; }
      "$VENV/bin/vllm-router" --host 127.0.0.1 --port "$ROUTER_PORT" --worker-urls "${workers[@]}" \
        --policy "$policy" --prometheus-host 127.0.0.1 --prometheus-port "$ROUTER_METRICS" \
        --log-level warning --log-dir "$tmp/vllm-router-log" "$@" >"$tmp/$arm.out" 2>&1 &
      ;;
  esac
  ARM_PIDS+=("$!")
  pids+=("$!")
  wait_routes "http://127.0.0.1:$ROUTER_PORT" 300 ||
    { WHY="$kind-router did not route: $(tail -3 "$tmp/$arm.out" | tr '\n' ' ')"; return 1; }
  ARM_TARGETS+=("http://127.0.0.1:$ROUTER_PORT")
}
# Called directly, never in $(...): the PIDs it records must reach the EXIT trap. Sets WHY on
# failure.
start_arm() { # arm
  local arm=$1 policy
  ARM_PIDS=() ARM_TARGETS=() ARM_ORACLE=0 WHY=""
  policy=$(policy_of "$arm")
  case $arm in
    oracle) ARM_ORACLE=1 ;;
    oracle_gateway) # the oracle's assignment, each server behind its own gateway
      ARM_ORACLE=1
      local i
      for ((i = 0; i < SERVERS; i++)); do
        start_modelgate "$arm" "{policy: round_robin}" $((BASE_PORT + 40 + 2 * i)) $((BASE_PORT + 41 + 2 * i)) "$i" || return 1
      done ;;
    cache_aware_2gw)
      start_modelgate "$arm" "$policy" "$GW_PORT" "$GW_ADMIN" &&
        start_modelgate "$arm" "$policy" "$GW2_PORT" "$GW2_ADMIN" ;;
    sglang_cache_aware) start_peer "$arm" sglang cache_aware ;;
    sglang_cache_aware_t8) start_peer "$arm" sglang cache_aware --balance-abs-threshold 8 ;;
    sglang_round_robin) start_peer "$arm" sglang round_robin ;;
    vllm_cache_aware) start_peer "$arm" vllm cache_aware ;;
    vllm_round_robin) start_peer "$arm" vllm round_robin ;;
    *)
      [[ -n $policy ]] || { WHY="unknown arm"; return 1; }
      start_modelgate "$arm" "$policy" "$GW_PORT" "$GW_ADMIN" ;;
  esac
}
stop_arm() {
  local p
  for p in "${ARM_PIDS[@]}"; do stop "$p"; done
  ARM_PIDS=()
}

# ---------------------------------------------------------------- points
# Multi-turn sessions live ~10 simulated s (4 turns, 0.5-1.5 s think time); its steady state is
# the set of sessions alive at once, so its windows are in simulated seconds of arrivals
# (WARMUP_SECONDS, default 10 = one lifetime; MEASURED_SECONDS, default 20), whatever the rate.
warmup_of() { # scenario
  local var="WARMUP_$1"
  echo "${!var:-$WARMUP}"
}
bench() { # scenario arm subcommand args...: routebench with the scenario's common arguments
  local scenario=$1 arm=$2 sub=$3 targets=() t
  shift 3
  for t in "${ARM_TARGETS[@]}"; do targets+=(--target "$t"); done
  ((ARM_ORACLE)) && targets+=(--oracle ${ORACLE_ASSIGNMENT:+--assignment "$ORACLE_ASSIGNMENT"})
  # shellcheck disable=SC2046 # the workload's argument list splits on purpose
  timeout 7200 "$BENCH" "$sub" $(workload_args "$scenario") --seed "$SEED" --model "$MODEL" \
    --servers "$SERVER_URLS" --time-scale "$SCALE" --warmup "$(warmup_of "$scenario")" --measured "$MEASURED" \
    --slo "$SLO" --scenario "$scenario" --arm "$arm" --out "$RAW" "${targets[@]}" "${TRACE_ARGS[@]}" "$@"
}
find_knee() { # scenario: sets KNEE
  local var="KNEE_$1"
  KNEE=${!var:-}
  [[ -n $KNEE ]] && return 0
  if [[ $CALIBRATE != 1 ]]; then KNEE=${KNEE_DEFAULT[$1]}; return 0; fi
  log "$1: calibrating round_robin's knee"
  start_arm round_robin || { log "cannot start round_robin: $WHY"; stop_arm; return 1; }
  bench "$1" round_robin knee --start-rate "${KNEE_DEFAULT[$1]}" 2>&1 | tee -a "$LOG" >"$tmp/knee.out" || true
  stop_arm
  KNEE=$(sed -n 's/^knee=//p' "$tmp/knee.out")
  [[ -n $KNEE ]] || { log "$1: knee search failed"; return 1; }
}
# cache_aware: each server's KV-cache size as the gateway believes it (learnt), in tokens.
kv_cache_tokens() { # admin port
  curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" |
    sed -n 's/^modelgate_backend_kv_cache_tokens{.*backend="\([^"]*\)".*} \(.*\)$/\1=\2/p' | tr '\n' ' '
}
run_arm() { # scenario arm knee
  local scenario=$1 arm=$2 knee=$3 m rate fails=0 line
  for m in $MULTIPLES; do
    if [[ " $BASE_MULTIPLES " != *" $m "* ]] && ((fails >= 2)); then break; fi
    rate=$(awk -v k="$knee" -v m="$m" 'BEGIN { printf "%.4f", k * m }')
    if ! start_arm "$arm"; then
      stop_arm
      log "$scenario/$arm: not available: $WHY"
      "$BENCH" unavailable --scenario "$scenario" --arm "$arm" --note "$WHY" --out "$RAW"
      return 0
    fi
    line=$(bench "$scenario" "$arm" point --rate "$rate" --multiple "$m" 2> >(tee -a "$LOG" >&2) | tail -1) || line="slo=fail (routebench failed)"
    [[ $arm == cache_aware* ]] && log "$scenario/$arm x$m: kv_cache_tokens $(kv_cache_tokens "$GW_ADMIN")"
    stop_arm
    log "$scenario/$arm x$m: $line"
    if [[ $line == slo=pass* ]]; then fails=0; else fails=$((fails + 1)); fi
  done
}

# The time scale of a scenario: TIME_SCALE_<scenario>, else TIME_SCALE; no_reuse's knee is
# ~1.8x the others' request rate (no prefill saved anywhere, so the fleet is decode-bound at a
# higher rate), and at scale 2 the simulator fell 10-40 % behind there on 2 cores: it gets
# twice the scale by default.
scale_of() { # scenario
  local var="TIME_SCALE_$1"
  if [[ -n ${!var:-} ]]; then echo "${!var}"
  elif [[ $1 == no_reuse ]]; then awk -v s="$TIME_SCALE" 'BEGIN { print 2 * s }'
  else echo "$TIME_SCALE"; fi
}
# The knobs of this run, as an environment prefix that repeats it.
command_line() {
  local v out=""
  for v in QUICK SEED API TIME_SCALE SERVERS KV_BLOCKS PREFIX_GROUPS WARMUP MEASURED WARMUP_SECONDS MEASURED_SECONDS MULTIPLES SCENARIOS ARMS \
    $(compgen -v | grep -E '^(ARMS|KNEE|WARMUP|TIME_SCALE)_[a-z_]+$' || true); do
    [[ -n ${!v:-} ]] && out+="$v=\"${!v}\" "
  done
  echo "${out% }"
}
load0=$(cut -d' ' -f1-3 /proc/loadavg)
log "routing benchmark: scenarios [$SCENARIOS], seed $SEED, time scale $TIME_SCALE, $SERVERS servers x $KV_BLOCKS KV blocks, raw $RAW"
for scenario in $SCENARIOS; do
  workload_args "$scenario" >/dev/null
  SCALE=$(scale_of "$scenario")
  start_fleet "$scenario"
  if ! find_knee "$scenario"; then stop_fleet; continue; fi
  log "$scenario: knee $KNEE req/s (time scale $SCALE)"
  for arm in ${ARMS:-$(default_arms "$scenario")}; do
    run_arm "$scenario" "$arm" "$KNEE"
  done
  stop_fleet
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "## Routing benchmark run $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`$(command_line) loadtest/routing.sh\`"
  echo "- modelgate $("$MODELGATE" --version 2>/dev/null | head -1) at $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- src || echo ' (+ uncommitted src changes)'); sglang-router $("$VENV/bin/pip" show sglang-router 2>/dev/null | awk '/^Version/ {print $2}'); vllm-router $("$VENV/bin/pip" show vllm-router 2>/dev/null | awk '/^Version/ {print $2}')"
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average start $load0, end $load1"
  echo
  "$BENCH" report "$RAW"
} >"$OUT"
log "report written to $OUT (raw: $RAW)"
}
main "$@"; exit
