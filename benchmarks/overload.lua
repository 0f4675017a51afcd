-- Appended to predict_v1.lua by the overload test: per-thread status counts, and 503/429
-- answers that lack a Retry-After header. Thread globals are read back in done().
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  s200, s503, s429, s_other, missing_retry_after = 0, 0, 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 503 then s503 = s503 + 1
  elseif status == 429 then s429 = s429 + 1
  else s_other = s_other + 1 end
  if (status == 503 or status == 429) and headers["retry-after"] == nil and headers["Retry-After"] == nil then
    missing_retry_after = missing_retry_after + 1
  end
end

local base_done = done
function done(summary, latency, requests)
  base_done(summary, latency, requests)
  local t = {s200 = 0, s503 = 0, s429 = 0, s_other = 0, missing_retry_after = 0}
  for _, thread in ipairs(threads) do
    for key, _ in pairs(t) do t[key] = t[key] + thread:get(key) end
  end
  io.write(string.format("STATUS {\"200\": %d, \"503\": %d, \"429\": %d, \"other\": %d, \"missing_retry_after\": %d}\n",
    t.s200, t.s503, t.s429, t.s_other, t.missing_retry_after))
end
