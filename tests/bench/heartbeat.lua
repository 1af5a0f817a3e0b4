-- wrk script: each request is one agent's heartbeat, cycling through the enrolled agents.
-- CREDS names a file of `credential<TAB>machine name` lines (`hybridsync simulate --enroll-only
-- --credentials-out FILE`). The body matches what a real agent sends, minus the checks' messages.
local creds, names = {}, {}
for line in io.lines(os.getenv("CREDS")) do
  local c, n = line:match("^(%S+)\t(.+)$")
  creds[#creds + 1] = "Bearer " .. c
  names[#names + 1] = n
end
local i = 0
local interval = os.getenv("INTERVAL_SECONDS") or "2"

function init(args)
  -- Threads start at different points so they do not send the same agent at once.
  i = math.random(#creds) - 1
end

request = function()
  i = i % #creds + 1
  local body = '{"version":"0.1.0","machine_name":"' .. names[i] ..
    '","uptime_seconds":100,"heartbeat_interval_seconds":' .. interval ..
    ',"listen_addr":"127.0.0.1:9","checks":[{"name":"console","status":"pass","message":"ok"}]}'
  return wrk.format("POST", "/agent-api/v1/heartbeat",
    { ["Authorization"] = creds[i], ["Content-Type"] = "application/json" }, body)
end
