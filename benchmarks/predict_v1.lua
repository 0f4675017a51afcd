-- wrk script: one-instance KServe v1 predict against the default fraud-risk model.
wrk.method = "POST"
wrk.path = "/v1/models/fraud-risk:predict"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances": [{"amount_usd": 182.4, "hour_of_day": 2, "merchant_category": "electronics", "account_age_days": 12, "txn_count_24h": 9, "distance_from_home_km": 840.0, "card_present": false, "foreign_transaction": true, "merchant_risk_score": 0.31}]}'

local non2xx = 0
response = function(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"duration_s\": %.3f, \"rps\": %.1f, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"errors\": %d}\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
