-- wrk script for loadtest/compare.sh: POST /v1/chat/completions with the body chosen by the
-- environment, and one machine-readable summary line from done().
--   BODY_KIND=chat    non-stream chat completion (max_tokens 16), as loadtest/chat.lua
--   BODY_KIND=stream  the same with "stream": true
--   BODY_KIND=big     ~BIG_BYTES (default 4 MiB) of prompt with "model" as the LAST key
-- Summary line (latencies in microseconds):
--   RESULT requests duration_us req_s p50 p90 p99 p999 non2xx socket_errors
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local kind = os.getenv("BODY_KIND") or "chat"
if kind == "stream" then
  wrk.body = '{"model":"mistral-7b","messages":[{"role":"user","content":"Describe vLLM in one paragraph."}],"max_tokens":50,"stream":true}'
elseif kind == "big" then
  local size = tonumber(os.getenv("BIG_BYTES") or "4194304")
  local head = '{"messages":[{"role":"user","content":"'
  local tail = '"}],"max_tokens":16,"stream":false,"model":"mistral-7b"}'
  local line = "The quick brown fox jumps over the lazy dog while the model streams. "
  local n = math.floor((size - #head - #tail) / #line)
  local pad = size - #head - #tail - n * #line
  wrk.body = head .. string.rep(line, n) .. string.rep("x", pad) .. tail
else
  wrk.body = '{"model":"mistral-7b","messages":[{"role":"user","content":"Describe vLLM in one paragraph."}],"max_tokens":16,"stream":false}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.1f %d %d %d %d %d %d\n",
    summary.requests, summary.duration,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), e.status, e.connect + e.read + e.write + e.timeout))
end
