-- wrk script used by bench/load.py: POST bodies drawn from a file, and in open-loop
-- mode a fixed request rate with latency counted from the INTENDED send time.
--
-- Configured through the environment (the same script runs in wrk's main Lua state
-- and in one state per thread, and done() gets no arguments):
--   BENCH_BODIES        file of request bodies separated by a NUL byte
--   BENCH_PATH          request path (default /invocations)
--   BENCH_PATHS         optional file of one path per body (overrides BENCH_PATH body by body)
--   BENCH_CONTENT_TYPE  Content-Type header (default text/csv)
--   BENCH_RATE          offered requests/s over all threads; unset or 0 = closed loop
--   BENCH_THREADS       number of wrk threads (open loop: one connection each)
--   BENCH_OUT           file that done() writes its JSON result to
--
-- Open loop: each thread owns exactly one connection, so request() and response()
-- alternate strictly and a response can be matched to its request. Thread i sends
-- request k at t0 + i/RATE + k*THREADS/RATE. When the server is late, the next
-- request goes out at once and its latency still counts from its intended time
-- (no coordinated omission). wrk's timer has millisecond steps, so a request may
-- leave up to 1 ms EARLY; latency then counts from the actual send, which keeps the
-- figure honest either way: latency = receive - min(intended, sent).

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1e6 + tonumber(timespec.tv_nsec) / 1e3
end

local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local open_loop = rate > 0
local path = os.getenv("BENCH_PATH") or "/invocations"
local content_type = os.getenv("BENCH_CONTENT_TYPE") or "text/csv"

-- main state: number the threads so that each one starts at its own phase
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

-- per-thread state; the counters are globals so that done() can read them with thread:get()
local requests = {}
local next_body = 1
local awaiting, scheduled, intended_at, sent_at = false, false, 0, 0
sent, received, lost, non2xx = 0, 0, 0, 0
interval_us, t0, last_done_at = 0, 0, 0
samples = {}

function init(args)
  local f = assert(io.open(assert(os.getenv("BENCH_BODIES"), "BENCH_BODIES not set"), "rb"))
  local data = f:read("*a")
  f:close()
  local headers = { ["Content-Type"] = content_type, ["Accept"] = "text/csv" }
  -- BENCH_PATHS (optional): a file with one request path per line, the i-th for the i-th body
  -- (bench/multi_model.py: requests spread over many models of one endpoint)
  local paths = {}
  local paths_file = os.getenv("BENCH_PATHS")
  if paths_file and paths_file ~= "" then
    for line in assert(io.open(paths_file, "r")):lines() do table.insert(paths, line) end
  end
  local start = 1
  while start <= #data do
    local stop = string.find(data, "\0", start, true) or (#data + 1)
    local body_path = paths[#requests + 1] or path
    table.insert(requests, wrk.format("POST", body_path, headers, string.sub(data, start, stop - 1)))
    start = stop + 1
  end
  assert(#requests > 0, "no request bodies in BENCH_BODIES")
  local index = thread_index or 0
  next_body = (index * 7919) % #requests + 1      -- threads walk the bodies from different places
  if open_loop then
    local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
    interval_us = nthreads * 1e6 / rate
    t0 = now_us() + 20000 + index * 1e6 / rate    -- 20 ms to connect, then staggered starts
  end
end

function request()
  local req = requests[next_body]
  next_body = next_body % #requests + 1
  if open_loop then
    if not scheduled and sent == 0 then
      -- wrk calls request() once on thread 0 before the run to check the script:
      -- that call sends nothing, so it must not count.
      return req
    end
    scheduled = false
    if awaiting then lost = lost + 1 end          -- the connection broke before a response
    intended_at = t0 + sent * interval_us
    sent_at = now_us()
    awaiting = true
  end
  sent = sent + 1
  return req
end

if open_loop then
  function delay()
    scheduled = true
    local wait_ms = (t0 + sent * interval_us - now_us()) / 1000
    if wait_ms < 1 then return 0 end
    return math.floor(wait_ms)
  end

  function response(status, headers, body)
    local done_at = now_us()
    local from = intended_at < sent_at and intended_at or sent_at
    awaiting = false
    last_done_at = done_at
    received = received + 1
    samples[received] = done_at - from
    if status < 200 or status > 299 then non2xx = non2xx + 1 end
  end
end

local function number_list(values, n)
  local parts = {}
  for i = 1, n do parts[i] = string.format("%.1f", values[i]) end
  return "[" .. table.concat(parts, ",") .. "]"
end

function done(summary, latency, reqs)
  local out = assert(io.open(assert(os.getenv("BENCH_OUT"), "BENCH_OUT not set"), "w"))
  local e = summary.errors
  out:write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout))
  -- wrk's own histogram: from the actual send, 1 us steps (closed loop: the latency)
  out:write(string.format(
    '"wrk_latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p99.9": %d}, ',
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
  out:write('"open_loop": ' .. tostring(open_loop) .. ', "threads": [')
  for i, thread in ipairs(threads) do
    if i > 1 then out:write(", ") end
    local n = thread:get("received") or 0
    out:write(string.format('{"sent": %d, "received": %d, "lost": %d, "non2xx": %d, ' ..
      '"t0_us": %.1f, "interval_us": %.3f, "last_done_us": %.1f, "samples_us": %s}',
      thread:get("sent") or 0, n, thread:get("lost") or 0, thread:get("non2xx") or 0,
      thread:get("t0") or 0, thread:get("interval_us") or 0, thread:get("last_done_at") or 0,
      number_list(thread:get("samples") or {}, n)))
  end
  out:write("]}\n")
  out:close()
end
