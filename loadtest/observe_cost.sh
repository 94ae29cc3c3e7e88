#!/usr/bin/env bash
# What do metrics + the access log cost end to end? Same run, one mock backend:
#   direct  wrk -> mock
#   on      wrk -> modelgate (log.access_log: true, stdout to a file) -> mock
#   off     wrk -> modelgate (log.access_log: false)                  -> mock
# Metrics are always on (there is no switch); "off" removes the access log only.
# Prints req/s, p50/p99 latency and gateway CPU per request of each, and the ratios.
#
# Bounded: ROUNDS x (on, off) gateway runs plus one direct run, DURATION seconds of wrk each;
# every wait is capped; only processes started here are stopped, by PID. Ports: BASE_PORT
# (gateway), +1 (mock), +99 (admin), all on 127.0.0.1 in 19000-19999. Temp files in mktemp -d.
# Usage (from anywhere; builds the release binaries first):
#   loadtest/observe_cost.sh                       # DURATION=10 CONNS=32 ROUNDS=1
#   ROUNDS=2 DURATION=10 loadtest/observe_cost.sh  # alternate on/off twice
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-1}
BASE_PORT=${BASE_PORT:-19400}
GW_PORT=$BASE_PORT
MOCK_PORT=$((BASE_PORT + 1))
ADMIN_PORT=$((BASE_PORT + 99))
if ((BASE_PORT < 19000 || ADMIN_PORT > 19999 || DURATION < 1 || DURATION > 120 || ROUNDS < 1 || ROUNDS > 5)); then
  echo "BASE_PORT must be in 19000-19900, DURATION in 1-120, ROUNDS in 1-5" >&2
  exit 2
fi
command -v wrk >/dev/null || { echo "wrk not found" >&2; exit 2; }
for p in "$GW_PORT" "$MOCK_PORT" "$ADMIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use; set BASE_PORT" >&2
    exit 2
  fi
done
# Pin like loadtest/smoke.sh when taskset exists: gateway on CPU 0, wrk on CPU 1. (Arrays, not a
# function: a backgrounded function would be a subshell, and $! its PID instead of modelgate's.)
pin0=() pin1=()
if command -v taskset >/dev/null && (($(nproc) >= 2)); then pin0=(taskset -c 0) pin1=(taskset -c 1); fi
unset RUST_LOG # it would override log.level

cargo build --release --features mock --bin modelgate --bin modelgate-mock >/dev/null 2>&1 ||
  { echo "release build failed; run: cargo build --release --features mock --bin modelgate --bin modelgate-mock" >&2; exit 1; }

tmp=$(mktemp -d)
# The gateway watches its config file's directory for changes, so a log file written next to the
# config would wake the watcher on every line: keep them apart.
mkdir "$tmp/conf" "$tmp/log"
mock='' gw=''
stop() { # stop PID: SIGTERM, then SIGKILL after 5 s
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
  [[ -n $gw ]] && stop "$gw"
  [[ -n $mock ]] && stop "$mock"
  rm -rf "$tmp"
}
trap cleanup EXIT

./target/release/modelgate-mock --port "$MOCK_PORT" --model m --tokens 16 >/dev/null 2>&1 &
mock=$!
cat >"$tmp/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"Describe vLLM in one paragraph."}],"max_tokens":16,"stream":false}'
LUA
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$MOCK_PORT/v1/models" >/dev/null && break; sleep 0.1; done

# run NAME URL: wrk for DURATION s; leaves "req/s p50_ms p99_ms requests errors" in $tmp/NAME.res
run() {
  local name=$1 url=$2
  "${pin1[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency -s "$tmp/chat.lua" "$url" >"$tmp/$name.wrk" 2>&1 || true
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    / requests in / { n = $1 }
    /Non-2xx/ { err += $NF }
    /Socket errors/ { for (i = 4; i <= NF; i += 2) { gsub(",", "", $i); err += $i } }
    END { printf "%s %.3f %.3f %s %d\n", rps, p50, p99, n, err }
  ' "$tmp/$name.wrk" >"$tmp/$name.res"
}

# gateway MODE: start modelgate with log.access_log MODE, load it, record its CPU, stop it.
gateway() {
  local mode=$1 tag=$2 access
  [[ $mode == on ]] && access=true || access=false
  cat >"$tmp/conf/router-$mode.yaml" <<YAML
listen: "127.0.0.1:$GW_PORT"
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
drain: {delay_ms: 0, timeout_ms: 2000}
log: {level: warn, format: json, access_log: $access}
models:
  m:
    backends:
      - {name: b0, url: "http://127.0.0.1:$MOCK_PORT"}
YAML
  "${pin0[@]}" ./target/release/modelgate --config "$tmp/conf/router-$mode.yaml" >"$tmp/log/$tag.stdout" 2>"$tmp/log/$tag.stderr" &
  gw=$!
  local ready=0
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null && { ready=1; break; }; sleep 0.1; done
  if ((!ready)); then echo "gateway ($tag) not ready after 10 s:" >&2; tail -5 "$tmp/log/$tag.stderr" >&2; exit 1; fi
  local t0 t1
  t0=$(awk '{print $14 + $15}' "/proc/$gw/stat")
  run "$tag" "http://127.0.0.1:$GW_PORT/v1/chat/completions"
  t1=$(awk '{print $14 + $15}' "/proc/$gw/stat")
  stop "$gw"
  gw=''
  local lines
  lines=$(grep -c '"request_id"' "$tmp/log/$tag.stdout" || true)
  echo "$((t1 - t0)) $lines $(stat -c %s "$tmp/log/$tag.stdout")" >"$tmp/$tag.cpu"
}

echo "observe_cost: c=$CONNS, ${DURATION}s per run, $ROUNDS round(s); $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
run direct "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
for r in $(seq "$ROUNDS"); do
  gateway on "on$r"
  gateway off "off$r"
done

hz=$(getconf CLK_TCK)
printf "\n%-8s %10s %9s %9s %9s %7s %12s %13s %8s\n" run req/s p50_ms p99_ms requests errors cpu_us/req access_lines stdout_MB
read -r d_rps d_p50 d_p99 d_n d_err <"$tmp/direct.res"
printf "%-8s %10s %9s %9s %9s %7s %12s %13s %8s\n" direct "$d_rps" "$d_p50" "$d_p99" "$d_n" "$d_err" - - -
for tag in $(for r in $(seq "$ROUNDS"); do echo "on$r off$r"; done); do
  read -r rps p50 p99 n err <"$tmp/$tag.res"
  read -r ticks lines bytes <"$tmp/$tag.cpu"
  cpu=$(awk -v t="$ticks" -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')
  mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
  printf "%-8s %10s %9s %9s %9s %7s %12s %13s %8s\n" "$tag" "$rps" "$p50" "$p99" "$n" "$err" "$cpu" "$lines" "$mb"
done
# Ratios on the mean over rounds.
mean() { awk -v col="$1" '{ s += $col; k++ } END { printf "%.3f", s / k }' "${@:2}"; }
on_files=() off_files=()
for r in $(seq "$ROUNDS"); do on_files+=("$tmp/on$r.res"); off_files+=("$tmp/off$r.res"); done
on_rps=$(mean 1 "${on_files[@]}"); off_rps=$(mean 1 "${off_files[@]}")
on_p99=$(mean 3 "${on_files[@]}"); off_p99=$(mean 3 "${off_files[@]}")
awk -v on="$on_rps" -v off="$off_rps" -v d="$d_rps" -v onp="$on_p99" -v offp="$off_p99" -v dp="$d_p99" 'BEGIN {
  printf "\nreq/s  on/off %.3f   on/direct %.3f   off/direct %.3f\n", on / off, on / d, off / d
  printf "p99    on/off %.3f   on/direct %.3f   off/direct %.3f\n", onp / offp, onp / dp, offp / dp
}'
