-- wrk script: one-instance KServe v1 predicts. The harness prepends `bodies = {...}` (a
-- sample of transactions from the training distribution); on its own this file sends one.
bodies = bodies or {'{"instances": [{"amount_usd": 182.4, "hour_of_day": 2, "merchant_category": "electronics", "account_age_days": 12, "txn_count_24h": 9, "distance_from_home_km": 840.0, "card_present": false, "foreign_transaction": true, "merchant_risk_score": 0.31}]}'}
path = path or "/v1/models/fraud-risk:predict"
local counter = 0
local headers = {["Content-Type"] = "application/json"}

request = function()
  counter = counter + 1
  return wrk.format("POST", path, headers, bodies[(counter % #bodies) + 1])
end

done = function(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"duration_s\": %.3f, \"rps\": %.1f, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"errors\": %d}\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
