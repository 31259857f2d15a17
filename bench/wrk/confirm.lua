-- POST /v1/payments/{id}/confirm, each seeded pending payment (pay_bench_<n>) once: thread t of
-- T takes n = t, t + T, t + 2T, … Env: HILT_ADMIN (admin token), HILT_PENDING (how many).
local admin, pending = os.getenv("HILT_ADMIN"), tonumber(os.getenv("HILT_PENDING"))
local threads, counter = 0, 0

function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
  thread:set("step", 0)
end

function init()
  wrk.method = "POST"
  wrk.headers["authorization"] = "Bearer " .. admin
  wrk.headers["content-type"] = "application/json"
end

function request()
  local n = index + step * threads_total()
  step = step + 1
  if n >= pending then n = n % pending end
  local id = string.format("pay_bench_%015d", n)
  return wrk.format(nil, "/v1/payments/" .. id .. "/confirm", nil, '{"tx_signature":"tx-bench-' .. n .. '"}')
end

function threads_total()
  return tonumber(os.getenv("WRK_THREADS"))
end

