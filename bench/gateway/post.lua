-- wrk script: a small non-streamed chat completion.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"mock-small","messages":[{"role":"user","content":"benchmark"}]}'
