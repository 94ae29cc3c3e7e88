#!/usr/bin/env bash
# Quick same-run comparison: wrk direct to one mock backend vs through modelgate (2 backends).
# Bounded: each wrk run lasts DURATION seconds; every process started here is stopped by PID.
# Usage: loadtest/smoke.sh   (from the repository root; builds release binaries first)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
cargo build --release --features mock --bins >/dev/null
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
./target/release/modelgate-mock --port 18101 --name b0 --model mistral-7b --tokens 16 2>/dev/null & pids+=($!)
./target/release/modelgate-mock --port 18102 --name b1 --model mistral-7b --tokens 16 2>/dev/null & pids+=($!)
cat > "$tmp/router.yaml" <<YAML
listen: "127.0.0.1:18100"
admin: {listen: "127.0.0.1:18199"}
models:
  mistral-7b:
    backends:
      - {name: b0, url: "http://127.0.0.1:18101"}
      - {name: b1, url: "http://127.0.0.1:18102"}
YAML
RUST_LOG=warn taskset -c 0 ./target/release/modelgate --config "$tmp/router.yaml" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18199/ready >/dev/null && break; sleep 0.1; done
echo "== direct to backend (c=$CONNS, ${DURATION}s)"
taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s loadtest/chat.lua http://127.0.0.1:18101/v1/chat/completions | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true
echo "== through modelgate (c=$CONNS, ${DURATION}s)"
taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s loadtest/chat.lua http://127.0.0.1:18100/v1/chat/completions | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true
