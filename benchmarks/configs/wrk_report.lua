-- wrk report script: at the end of a run, print one line "WRK_JSON {...}" with
-- the summary (requests, bytes, socket and status errors) and the latency
-- distribution in microseconds. Only done() is defined: a request() or
-- response() callback would run Lua per request and slow wrk itself down.
-- errors.status is wrk's count of responses with status >= 400.

local function num(x)
  return string.format("%.0f", x)
end

done = function(summary, latency, requests)
  local e = summary.errors
  local pct = {}
  for _, q in ipairs({50, 75, 90, 99, 99.9}) do
    pct[#pct + 1] = string.format('"%s": %s', tostring(q), num(latency:percentile(q)))
  end
  io.write(string.format(
    'WRK_JSON {"requests": %s, "duration_us": %s, "bytes": %s, ' ..
    '"errors": {"connect": %s, "read": %s, "write": %s, "status": %s, "timeout": %s}, ' ..
    '"latency_us": {"min": %s, "max": %s, "mean": %.2f, "stdev": %.2f, "percentiles": {%s}}}\n',
    num(summary.requests), num(summary.duration), num(summary.bytes),
    num(e.connect), num(e.read), num(e.write), num(e.status), num(e.timeout),
    num(latency.min), num(latency.max), latency.mean, latency.stdev,
    table.concat(pct, ", ")))
end
