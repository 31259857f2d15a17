-- GET /v1/memberships/{id} for a random one of the seeded memberships (mem_seed_<n>).
-- Env: HILT_KEY (merchant API key), HILT_SEEDED (how many were seeded).
local key, seeded = os.getenv("HILT_KEY"), tonumber(os.getenv("HILT_SEEDED"))

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init()
  math.randomseed(seed)
  wrk.headers["authorization"] = "Bearer " .. key
end

function request()
  local id = string.format("mem_seed_%015d", math.random(0, seeded - 1))
  return wrk.format("GET", "/v1/memberships/" .. id)
end

