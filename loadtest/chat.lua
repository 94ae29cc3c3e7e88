-- wrk script: non-stream chat completion against modelgate or a backend directly.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"mistral-7b","messages":[{"role":"user","content":"Describe vLLM in one paragraph."}],"max_tokens":16,"stream":false}'
