-- POST /v1/payments/{id}/confirm with an Idempotency-Key, as a payment processor sends it, each
-- seeded pending payment (pay_bench_<n>) once: thread t of T takes n = t, t + T, t + 2T, …
-- Env: HILT_ADMIN (admin token), HILT_PENDING (how many), WRK_THREADS (T).
local admin, pending = os.getenv("HILT_ADMIN"), tonumber(os.getenv("HILT_PENDING"))
local threads = 0

function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
  thread:set("step", 0)
end

function init()
  wrk.method = "POST"
end

function request()
  local n = index + step * threads_total()
  step = step + 1
  if n >= pending then n = n % pending end
  local id = string.format("pay_bench_%015d", n)
  -- wrk.format takes these headers instead of wrk.headers (but Host), so they carry them all.
  local headers = { ["authorization"] = "Bearer " .. admin, ["content-type"] = "application/json",
    ["idempotency-key"] = "confirm-" .. id }
  return wrk.format(nil, "/v1/payments/" .. id .. "/confirm", headers, '{"tx_signature":"tx-bench-' .. n .. '"}')
end

function threads_total()
  return tonumber(os.getenv("WRK_THREADS"))
end

