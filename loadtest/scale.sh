#!/usr/bin/env bash
# Fleet-scale figures (loadtest/RESULTS.md, "Fleet scale"): a release gateway with 1,000 mock
# backends over 100 models plus one DNS-discovered model, all on 127.0.0.1.
#
# Measures: idle RSS of a small config; startup-to-ready, RSS and CPU with 1,000 backends
# (health-checked, no client traffic); health-check traffic per backend; SIGHUP reload time of
# that config; time from a DNS change to the first request served by the new backend.
#
#   cargo build --release --features mock --bins
#   loadtest/scale.sh            # env: MODELS=100 PER_MODEL=10 BASE_PORT=21000 SAMPLE_S=30 ROUNDS=5
#
# Every loop is bounded in count and time; only the PIDs this script started are killed.
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=${MODELS:-100}
PER_MODEL=${PER_MODEL:-10}
N=$((MODELS * PER_MODEL))
BASE_PORT=${BASE_PORT:-21000}     # mock ports BASE_PORT .. BASE_PORT+N-1, then 2 for "dyn"
SAMPLE_S=${SAMPLE_S:-30}          # idle CPU / probe-rate window
ROUNDS=${ROUNDS:-5}               # reloads and DNS changes measured
DYN_PORT=$((BASE_PORT + N))
GW_PORT=$((BASE_PORT + N + 10)); ADMIN_PORT=$((GW_PORT + 1)); DNS_PORT=$((GW_PORT + 2))
SMALL_PORT=$((GW_PORT + 3)); SMALL_ADMIN=$((GW_PORT + 4))
BIN=target/release
for b in modelgate modelgate-mock; do
  [[ -x $BIN/$b ]] || { echo "build first: cargo build --release --features mock --bins" >&2; exit 1; }
done
if ss -Hltnu "sport >= :$BASE_PORT and sport <= :$SMALL_ADMIN" | grep -q .; then
  echo "ports $BASE_PORT-$SMALL_ADMIN are not all free; set BASE_PORT" >&2; exit 1
fi

work=$(mktemp -d); conf=$work/conf; logs=$work/logs; mkdir -p "$conf" "$logs"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { ps -o rss= -p "$1" | tr -d ' '; }
# Wait (≤ $2 s) until URL $1 answers 200.
wait_200() {
  local deadline=$((SECONDS + $2))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1") == 200 ]]; do
    (( SECONDS < deadline )) || { echo "timeout waiting for $1" >&2; return 1; }
    sleep 0.05
  done
}
metric_sum() { # name, admin port
  curl -s --max-time 5 "http://127.0.0.1:$2/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%.0f", s}'
}
now_ms() { date +%s%3N; }

echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); git $(git rev-parse --short HEAD)"

# --- 0. Idle RSS with a small config (one model, two backends) -----------------------------
"$BIN/modelgate-mock" --port "$DYN_PORT" --ports 2 --model small >"$logs/small-mock.log" 2>&1 &
pids+=($!)
cat >"$conf/small.yaml" <<EOF
listen: "127.0.0.1:$SMALL_PORT"
admin: {listen: "127.0.0.1:$SMALL_ADMIN"}
models:
  small:
    backends:
      - {name: a, url: "http://127.0.0.1:$DYN_PORT"}
      - {name: b, url: "http://127.0.0.1:$((DYN_PORT + 1))"}
EOF
RUNTIME_DIRECTORY=$work/run-small "$BIN/modelgate" -c "$conf/small.yaml" --no-watch >"$logs/small.log" 2>&1 &
small=$!; pids+=($small)
wait_200 "http://127.0.0.1:$SMALL_ADMIN/ready" 30
for _ in $(seq 20); do curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$SMALL_PORT/v1/chat/completions" \
  -H 'content-type: application/json' -d '{"model":"small","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'; done
sleep 5
echo "small config (1 model, 2 backends): idle RSS $(rss_kib $small) KiB after 20 requests"
kill "$small"; kill "${pids[0]}"; wait "$small" 2>/dev/null || true; wait "${pids[0]}" 2>/dev/null || true
pids=()

# --- 1. The fleet: N backends over MODELS models, plus "dyn" found by DNS ------------------
models=(); for ((m = 0; m < MODELS; m++)); do models+=(--model "m$m"); done
"$BIN/modelgate-mock" --port "$BASE_PORT" --ports "$N" --spread-models "${models[@]}" >"$logs/mock.log" 2>&1 &
mock=$!; pids+=($mock)
printf 'ttl 30\na.test A 127.0.0.1\ndyn.test SRV %s a.test\n' "$DYN_PORT" >"$work/zone.txt"
"$BIN/modelgate-mock" --port "$DYN_PORT" --ports 2 --model dyn \
  --dns-listen "127.0.0.1:$DNS_PORT" --dns-zone "$work/zone.txt" >"$logs/dyn.log" 2>&1 &
dyn=$!; pids+=($dyn)
for _ in $(seq 300); do
  (( $(grep -c serving "$logs/mock.log" || true) >= N )) && (( $(grep -c serving "$logs/dyn.log" || true) >= 3 )) && break
  sleep 0.1
done
(( $(grep -c serving "$logs/mock.log") >= N )) || { echo "mock did not start"; exit 1; }

{
  echo "listen: \"127.0.0.1:$GW_PORT\""
  echo "admin: {listen: \"127.0.0.1:$ADMIN_PORT\"}"
  echo "log: {level: warn, access_log: false}"
  echo "defaults:"
  echo "  health_check: {interval_ms: 2000, timeout_ms: 1000}"
  echo "models:"
  for ((m = 0; m < MODELS; m++)); do
    echo "  m$m:"
    echo "    backends:"
    for ((j = 0; j < PER_MODEL; j++)); do
      echo "      - {name: b$j, url: \"http://127.0.0.1:$((BASE_PORT + m + j * MODELS))\"}"
    done
  done
  echo "  dyn:"
  echo "    backends:"
  echo "      - name: d"
  echo "        discover: {dns: dyn.test., refresh_ms: 5000, nameserver: \"127.0.0.1:$DNS_PORT\"}"
} >"$conf/router.yaml"
"$BIN/modelgate" -t -c "$conf/router.yaml" >"$logs/check.txt"; head -1 "$logs/check.txt"

t0=$(now_ms)
RUNTIME_DIRECTORY=$work/run "$BIN/modelgate" -c "$conf/router.yaml" --no-watch >"$logs/gateway.log" 2>&1 &
gw=$!; pids+=($gw)
wait_200 "http://127.0.0.1:$ADMIN_PORT/ready" 60
echo "start → /ready with $N backends + 1 discovered: $(( $(now_ms) - t0 )) ms"
sleep 10   # let probe rounds settle

# --- 2. Idle RSS and CPU, probe traffic ----------------------------------------------------
p0=$(metric_sum modelgate_health_checks_total "$ADMIN_PORT"); c0=$(cpu_ticks "$gw"); m0=$(cpu_ticks "$mock"); s0=$(now_ms)
sleep "$SAMPLE_S"
p1=$(metric_sum modelgate_health_checks_total "$ADMIN_PORT"); c1=$(cpu_ticks "$gw"); m1=$(cpu_ticks "$mock"); s1=$(now_ms)
secs=$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.2f", (b - a) / 1000}')
echo "gateway RSS $(rss_kib $gw) KiB; mock ($N listeners) RSS $(rss_kib $mock) KiB"
awk -v c=$((c1 - c0)) -v m=$((m1 - m0)) -v t="$TICK" -v s="$secs" 'BEGIN {
  printf "CPU over %s s idle (probing only): gateway %.1f %% of one core, mock %.1f %%\n", s, 100 * c / t / s, 100 * m / t / s }'
backends=$((N + 1))
awk -v d=$((p1 - p0)) -v s="$secs" -v n="$backends" 'BEGIN {
  printf "probes: %.1f /s total, %.3f /s per backend (config: 1 per interval_ms 2000 = 0.5)\n", d / s, d / s / n }'
req=$(printf 'GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1:%s\r\nuser-agent: modelgate-health\r\naccept: application/json\r\n\r\n' "$BASE_PORT" | wc -c)
resp=$(curl -s -D - --max-time 5 "http://127.0.0.1:$BASE_PORT/v1/models" | wc -c)
echo "one probe: request ~$req bytes, response $resp bytes (headers + body); at 0.5 probes/s ~$(( (req + resp) / 2 )) B/s per backend, both directions together"

# --- 3. Reload time (SIGHUP, same file; builds and swaps the whole snapshot) ---------------
gen() { curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/config" | sed -n 's/.*"generation":\([0-9]*\).*/\1/p'; }
times=()
for ((r = 0; r < ROUNDS; r++)); do
  g=$(gen); t0=$(now_ms); kill -HUP "$gw"
  for _ in $(seq 2000); do [[ $(gen) != "$g" ]] && break; sleep 0.002; done
  times+=($(( $(now_ms) - t0 )))
  sleep 1
done
echo "SIGHUP → new generation visible in /config (ms, $ROUNDS rounds): ${times[*]}"
echo "gateway RSS after $ROUNDS reloads: $(rss_kib $gw) KiB"

# --- 4. DNS change → first request served by the new backend -------------------------------
served_by() {
  curl -s -D - -o /dev/null --max-time 5 "http://127.0.0.1:$GW_PORT/v1/chat/completions" \
    -H 'content-type: application/json' -d '{"model":"dyn","messages":[{"role":"user","content":"hi"}],"max_tokens":2}' |
    tr -d '\r' | sed -n 's/^x-modelgate-backend: //p'
}
new="d-127.0.0.1:$((DYN_PORT + 1))"
for ttl in 30 1; do
  times=()
  for ((r = 0; r < ROUNDS; r++)); do
    # Back to one address (and wait until the gateway has dropped the other, ≤ 15 s).
    printf 'ttl %s\na.test A 127.0.0.1\ndyn.test SRV %s a.test\n' "$ttl" "$DYN_PORT" >"$work/zone.new"
    mv "$work/zone.new" "$work/zone.txt"
    for _ in $(seq 300); do
      curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/status" | grep -q "\"$new\"" || break; sleep 0.05
    done
    sleep 1
    printf 'ttl %s\na.test A 127.0.0.1\ndyn.test SRV %s a.test\ndyn.test SRV %s a.test\n' "$ttl" "$DYN_PORT" "$((DYN_PORT + 1))" >"$work/zone.new"
    t0=$(now_ms); mv "$work/zone.new" "$work/zone.txt"
    hit=""
    for _ in $(seq 600); do   # ≤ 600 requests, 25 ms apart: ~15 s
      [[ $(served_by) == "$new" ]] && { hit=1; break; }
      sleep 0.025
    done
    times+=("$( [[ -n $hit ]] && echo $(( $(now_ms) - t0 )) || echo "timeout" )")
  done
  echo "DNS change → first request on the new backend (ms; refresh_ms 5000, record TTL $ttl s, zone polled every 100 ms): ${times[*]}"
done
echo "logs: gateway warnings/errors: $(grep -c -E '"level":"(WARN|ERROR)"' "$logs/gateway.log" || true)"
