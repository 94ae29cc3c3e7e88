#!/usr/bin/env bash
# The modelgate soak: the mock fleet (seven modelgate-mock processes: m1 on m1-a..m1-d, m2 on
# m2-e, m2-f and m2-g, which reloads add and remove) behind the gateway, under 500 reconnecting
# long streams (~10 s each) plus 30 short requests/s and one hostile request/s, for 11 minutes,
# while on a schedule (one 60-second cycle per minute):
#   :00 :10 :20 :30 :40 :50  save a changed config (add/remove m2-g, drain/undrain m1-b, change
#                            a policy) and send SIGHUP
#   :02-:07  m1-d answers 503        :12-:17  m1-d hangs before its response header
#   :22      kill -9 m2-e, :25 restart it
#   :33      SIGUSR2 binary upgrade, every 2 minutes (odd minutes), followed to the new pid
#   :42-:47  m1-d resets mid-header  :52-:57  m1-d sends malformed responses
# then reports, from the clients and the gateway's own log and metrics: refused connections,
# non-2xx by cause, cut streams (each explained by a killed/faulting backend or not),
# wrong-pool and double answers, RSS and descriptors over time, short-request p99 per minute,
# panics and ERROR lines; and judges the issue's targets (exit 1 if one is missed).
# The driver is the cargo example `soak` (loadtest/soak/); MODE=ci is the 60-second mode
# that tests/soak.rs runs in CI (there against the debug binaries).
#
# Usage:
#   loadtest/soak.sh                          # full: 11 min of load (+ ~1 min setup/teardown)
#   MODE=ci loadtest/soak.sh                  # 60 s, 50 streams, 20 short requests/s
#   DURATION=900 STREAMS=300 loadtest/soak.sh
# Knobs (environment): MODE (full|ci), DURATION (s of load, 30-7200), STREAMS, SHORT_RATE
# (per s), TOKENS (per stream), ITL_MS, THREADS (gateway server.threads, 0 = one per CPU),
# WARMUP (s), OUT (directory; default target/soak/<mode>-<UTC time>), MAX_LOAD / LOAD_WAIT
# (wait, at most LOAD_WAIT s in 30 s steps, for the 1-minute load average to drop to
# MAX_LOAD; default: do not wait; the load average is recorded either way).
# Output: the Markdown report on stdout and in $OUT/report.md; raw data beside it
# (records.jsonl: every request; samples.csv: RSS/fds; executed.json: the schedule as carried
# out; status.csv; gateway.log; mock-*.log; metrics-<pid>.txt).
#
# Bounded: the load runs DURATION s, every wait after it is capped, and a watchdog stops the
# run at DURATION + 400 s. Everything the run starts (the driver, the mocks, the gateway and
# its upgrade successors) lives in one process group created here, which is signalled on exit
# (TERM, KILL 5 s later), Ctrl-C included; nothing else is touched. Only 127.0.0.1, free ports.
# Prerequisites: cargo, cmake (Pingora), setsid (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
MODE=${MODE:-full}
case $MODE in
  full) DURATION=${DURATION:-660} ;;
  ci) DURATION=${DURATION:-60} ;;
  *) echo "MODE must be full or ci" >&2; exit 2 ;;
esac
if ((DURATION < 30 || DURATION > 7200)); then
  echo "DURATION must be 30-7200 (seconds)" >&2
  exit 2
fi
command -v setsid >/dev/null || { echo "setsid not found (util-linux)" >&2; exit 2; }
OUT=${OUT:-$repo/target/soak/$MODE-$(date -u +%Y%m%dT%H%M%SZ)}

echo "# building: cargo build --release --features mock --bins --example soak" >&2
cargo build --release --features mock --bins --example soak >/dev/null 2>&1 ||
  { echo "release build failed; run: cargo build --release --features mock --bins --example soak" >&2; exit 1; }
# 500 streams: ~2,000 descriptors between the client, the gateway and the mocks.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [[ -n ${MAX_LOAD:-} ]]; then
  LOAD_WAIT=${LOAD_WAIT:-300}
  for ((waited = 0; waited < LOAD_WAIT; waited += 30)); do
    awk -v m="$MAX_LOAD" '{exit !($1 > m)}' /proc/loadavg || break
    echo "# load average $(cut -d' ' -f1 /proc/loadavg) > $MAX_LOAD: waiting 30 s (${waited}/${LOAD_WAIT} s)" >&2
    sleep 30
  done
fi

knobs="MODE=$MODE DURATION=$DURATION"
args=(--mode "$MODE" --duration "$DURATION" --out "$OUT"
  --gateway "$repo/target/release/modelgate" --mock "$repo/target/release/modelgate-mock")
add() { # add ENV_NAME --flag
  local value=${!1:-}
  if [[ -n $value ]]; then
    args+=("$2" "$value")
    knobs+=" $1=$value"
  fi
}
add STREAMS --streams
add SHORT_RATE --short-rate
add TOKENS --tokens
add ITL_MS --itl-ms
add THREADS --threads
add WARMUP --warmup
args+=(--command "$knobs loadtest/soak.sh")

mkdir -p "$OUT"
# Its own process group (the shell runs jobs without job control, so setsid does not fork:
# $! is the driver, and its pid is the group id).
setsid "$repo/target/release/examples/soak" "${args[@]}" &
group=$!
stop_group() {
  kill -TERM -- "-$group" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 -- "-$group" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$group" 2>/dev/null || true
}
trap stop_group EXIT
trap 'exit 130' INT TERM
# The watchdog has its own group too, so that stopping it also stops its sleep.
setsid bash -c "sleep $((DURATION + 400)); echo 'soak: still running after $((DURATION + 400)) s; stopping it' >&2; kill -TERM -- -$group" &
watchdog=$!
rc=0
wait "$group" || rc=$?
kill -- "-$watchdog" 2>/dev/null || true
wait "$watchdog" 2>/dev/null || true
# Anything of the group still alive (nothing, normally) goes now.
stop_group
trap - EXIT
echo "# report: $OUT/report.md (exit $rc: 0 = every target met, 1 = one missed, 2 = setup error)" >&2
exit "$rc"
