# Process and readiness helpers shared by the load-test scripts (sourced, not run). They act only
# on PIDs the calling script started: `pids` is the script's own list.
#   pids+=("$!")          after starting a process in the background
#   trap stop_all EXIT    stops every one of them (SIGTERM, then SIGKILL after 5 s)

stop() { # stop PID: SIGTERM, then SIGKILL after 5 s
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_all() { # every PID in pids
  local p
  for p in "${pids[@]}"; do stop "$p"; done
}
wait_http() { # wait_http URL [tries]: up to tries × 0.1 s for a 2xx
  local url=$1 tries=${2:-100}
  for _ in $(seq "$tries"); do curl -sf -o /dev/null "$url" && return 0; sleep 0.1; done
  echo "timed out waiting for $url" >&2
  return 1
}
