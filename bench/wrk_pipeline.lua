-- wrk_pipeline.lua: HTTP/1.1 pipelining for wrk, as in TechEmpower's plaintext test.
--
--   wrk -t1 -c64 -d3s -s bench/wrk_pipeline.lua http://127.0.0.1:PORT/plaintext -- 16
--
-- Every write carries DEPTH copies of the same GET request (the URL's path), so DEPTH
-- requests are in flight per connection. DEPTH is the first script argument (after --),
-- else $WRK_PIPELINE_DEPTH, else 16. wrk counts each response as one request and reports
-- any status other than 2xx/3xx itself, as "Non-2xx or 3xx responses"; no response()
-- hook is defined, because defining one makes wrk parse every response's headers in Lua
-- and would slow the load generator down.

local batch

function init(args)
  local depth = tonumber(args[1] or os.getenv("WRK_PIPELINE_DEPTH") or "16")
  if depth == nil or depth < 1 or depth ~= math.floor(depth) then
    error("pipeline depth must be a positive integer")
  end
  local one = wrk.format("GET", wrk.path)
  local parts = {}
  for i = 1, depth do
    parts[i] = one
  end
  batch = table.concat(parts)
end

function request()
  return batch
end
