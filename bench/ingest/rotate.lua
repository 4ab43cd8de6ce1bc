-- wrk script for bench/ingest: rotates signed deliveries, gives each request a fresh
-- X-GitHub-Delivery id, and makes every fifth request a redelivery of the one before.
-- Usage: wrk ... -s rotate.lua URL -- <records file> <run id>
local records = {}
local path = "/webhook"
local run_id = "run"
local counter = 0
local index = 0
local last = nil


local function load(file)
  local f = assert(io.open(file, "rb"))
  local data = f:read("*a")
  f:close()
  local position = 1
  while position <= #data do
    local event_end = data:find("\n", position, true)
    local event = data:sub(position, event_end - 1)
    local signature_end = data:find("\n", event_end + 1, true)
    local signature = data:sub(event_end + 1, signature_end - 1)
    local length_end = data:find("\n", signature_end + 1, true)
    local length = tonumber(data:sub(signature_end + 1, length_end - 1))
    local body = data:sub(length_end + 1, length_end + length)
    records[#records + 1] = {event = event, signature = signature, body = body}
    position = length_end + length + 1
  end
end

local threads = {}
setup = function(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

init = function(args)
  load(args[1])
  run_id = args[2] or run_id
  path = wrk.path
  -- each thread starts at a different place in the mix
  index = (thread_number * 37) % #records
end

request = function()
  counter = counter + 1
  if last ~= nil and counter % 5 == 0 then
    return last
  end
  index = index % #records + 1
  local record = records[index]
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = record.event,
    ["X-GitHub-Delivery"] = run_id .. "-" .. thread_number .. "-" .. counter,
    ["X-Hub-Signature-256"] = record.signature,
    ["User-Agent"] = "GitHub-Hookshot/bench",
  }
  last = wrk.format("POST", path, headers, record.body)
  return last
end

done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.3f, "requests_per_s": %.1f, "p50_ms": %.3f, ' ..
    '"p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "non_2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, errors.status, errors.connect,
    errors.read, errors.write, errors.timeout))
end
