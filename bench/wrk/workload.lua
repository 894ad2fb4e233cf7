-- One wrk script for every workload of Tessera's load harness (bench/run drives it).
--
-- Parameters come from the environment, because wrk decides whether a script paces requests
-- (has a `delay` function) when it loads the script, before any argument reaches `init`:
--
--   BENCH_KIND     cc | refresh | introspect | revoke | mint | mixed
--   BENCH_AUTH     value of the Authorization header (HTTP Basic of the client)
--   BENCH_SCOPE    scope of client_credentials requests
--   BENCH_TOKEN_PATH, BENCH_INTROSPECT_PATH, BENCH_REVOKE_PATH   endpoint paths
--   BENCH_POOL     pool file: mint writes it ("REFRESH ACCESS" a line; run mint with -t 1),
--                  and thread N of the other workloads takes lines N, N+T, N+2T, ...
--                  (refresh, revoke: the refresh token, each used once;
--                   introspect: the access token, cycled)
--   BENCH_QUOTA    mint: tokens to write before the run ends
--   BENCH_RATE     if set, total requests/s to pace to (spread over BENCH_THREADS threads)
--   BENCH_THREADS  wrk's -t, for pacing
--
-- Every response is checked: the expected status for the workload (200, or 200/204 for
-- revocation), and for introspection `"active":true`. `done` prints one parseable line:
--   BENCH_RESULT {"requests":…,"duration_us":…,"rps":…,"p50_us":…,…,"bad":…}

local kind = os.getenv("BENCH_KIND") or "cc"
local auth = os.getenv("BENCH_AUTH") or ""
local scope = os.getenv("BENCH_SCOPE") or "/ping.read"
local token_path = os.getenv("BENCH_TOKEN_PATH") or "/oauth2/token"
local introspect_path = os.getenv("BENCH_INTROSPECT_PATH") or "/oauth2/introspect"
local revoke_path = os.getenv("BENCH_REVOKE_PATH") or "/oauth2/revoke"
local pool_prefix = os.getenv("BENCH_POOL")
local quota = tonumber(os.getenv("BENCH_QUOTA") or "0")
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")

local ffi = require("ffi")
ffi.cdef [[
  int getpid(void);
  int tgkill(int tgid, int tid, int sig);
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]

-- Ends the whole run now. wrk's main thread sleeps for the full -d and only then joins the
-- threads, so a thread that stops early (quota reached, pool used up) would leave the run
-- idling and its requests/s diluted. SIGINT to the main thread (whose tid is the pid) wakes
-- it, and wrk then stops every thread and reports the true duration.
local function end_run()
  local pid = ffi.C.getpid()
  ffi.C.tgkill(pid, pid, 2)
  wrk.thread:stop()
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local headers = {
  ["Authorization"] = auth,
  ["Content-Type"] = "application/x-www-form-urlencoded",
}
local cc_body = "grant_type=client_credentials&scope=" .. urlencode(scope)

-- Main state: remember the threads, number them, read their counters in `done`.
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- Thread state.
tid = 0
responses = 0
bad = 0
exhausted = 0
minted = 0
first_bad = ""
statuses = {} -- status code (as a string) -> responses
local pool = {}
local pool_next = 1
local out = nil
-- mixed: tokens harvested from this thread's own responses
local rts, ats, at_next = {}, {}, 1
local MAX_RTS, MAX_ATS = 20000, 1000

function init(args)
  if pool_prefix and (kind == "refresh" or kind == "revoke" or kind == "introspect") then
    local f = io.open(pool_prefix, "r")
    if f then
      local n = 0
      for line in f:lines() do
        if n % nthreads == tid then
          local rt, at = string.match(line, "^(%S+) (%S+)$")
          local t = (kind == "introspect") and at or rt
          if t then pool[#pool + 1] = t end
        end
        n = n + 1
      end
      f:close()
    end
  end
  if kind == "mint" then
    out = io.open(pool_prefix, "w")
  end
end

local function note_bad(status, body)
  bad = bad + 1
  if first_bad == "" then
    first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200)
  end
end

local function post(path, body)
  return wrk.format("POST", path, headers, body)
end

local function next_pooled()
  local t = pool[pool_next]
  if t == nil then
    -- Pool used up: stop this thread rather than send a token twice.
    exhausted = 1
    end_run()
    return nil -- the caller sends a harmless GET /healthz while the thread stops
  end
  pool_next = pool_next + 1
  return t
end

local mixed_request

local function dynamic_request()
  if kind == "refresh" then
    local t = next_pooled()
    if t == nil then return wrk.format("GET", "/healthz") end
    return post(token_path, "grant_type=refresh_token&refresh_token=" .. urlencode(t))
  elseif kind == "revoke" then
    local t = next_pooled()
    if t == nil then return wrk.format("GET", "/healthz") end
    return post(revoke_path, "token_type_hint=refresh_token&token=" .. urlencode(t))
  elseif kind == "introspect" then
    local t = pool[pool_next]
    pool_next = pool_next + 1
    if pool_next > #pool then pool_next = 1 end
    return post(introspect_path, "token=" .. urlencode(t or ""))
  else
    return mixed_request()
  end
end

-- mixed (soak): 40 % issue, 30 % refresh, 20 % introspect, 10 % revoke; refresh and revoke
-- use refresh tokens this thread received (newest first), introspection recent access tokens.
mixed_request = function()
  local r = math.random(100)
  if r <= 40 or #rts == 0 then
    return post(token_path, cc_body)
  elseif r <= 70 then
    local t = table.remove(rts)
    return post(token_path, "grant_type=refresh_token&refresh_token=" .. urlencode(t))
  elseif r <= 90 and #ats > 0 then
    local t = ats[math.random(#ats)]
    return post(introspect_path, "token=" .. urlencode(t))
  else
    local t = table.remove(rts)
    return post(revoke_path, "token_type_hint=refresh_token&token=" .. urlencode(t))
  end
end

if kind == "cc" or kind == "mint" then
  -- The same request every time: let wrk build it once.
  wrk.method = "POST"
  wrk.path = token_path
  wrk.headers = headers
  wrk.body = cc_body
else
  request = dynamic_request
end

local function harvest(body)
  local at = string.match(body, '"access_token":"([^"]+)"')
  local rt = string.match(body, '"refresh_token":"([^"]+)"')
  return at, rt
end

function response(status, headers, body)
  responses = responses + 1
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
  if kind == "cc" or kind == "refresh" then
    if status ~= 200 then note_bad(status, body) end
  elseif kind == "introspect" then
    if status ~= 200 or not string.find(body, '"active":true', 1, true) then
      note_bad(status, body)
    end
  elseif kind == "revoke" then
    if status ~= 200 and status ~= 204 then note_bad(status, body) end
  elseif kind == "mint" then
    if status ~= 200 then
      note_bad(status, body)
    else
      if minted >= quota then return end
      local at, rt = harvest(body)
      -- A line per grant: the refresh token (or, for a server that issues none, the access
      -- token), a space, the access token.
      out:write((rt or at or ""), " ", (at or ""), "\n")
      minted = minted + 1
      if minted == quota then
        out:close()
        end_run()
      end
    end
  else -- mixed
    if status < 200 or status > 299 then
      note_bad(status, body)
    elseif status == 200 and #body > 0 then
      local at, rt = harvest(body)
      if rt then
        rts[#rts + 1] = rt
        if #rts > MAX_RTS then table.remove(rts, 1) end
      end
      if at then
        ats[at_next] = at
        at_next = at_next % MAX_ATS + 1
      end
    end
  end
end

if rate > 0 then
  local ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 * nthreads / rate -- ms between two requests of this thread
  local next_at = nil
  -- A schedule per thread: request k of the thread is due at start + k * interval. A
  -- connection that becomes free waits until the next slot; if every connection is busy the
  -- schedule runs late and latency is measured from the actual send (wrk, unlike wrk2, does
  -- not correct for coordinated omission).
  function delay()
    local now = now_ms()
    if next_at == nil then next_at = now end
    local due = next_at
    next_at = next_at + interval
    if due <= now then return 0 end
    return math.floor(due - now)
  end
end

local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end) .. '"'
end

function done(summary, latency, requests)
  local total_bad, total_responses, any_exhausted, total_minted, sample = 0, 0, 0, 0, ""
  local by_status = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses") or {}) do by_status[k] = (by_status[k] or 0) + v end
    total_bad = total_bad + (t:get("bad") or 0)
    total_responses = total_responses + (t:get("responses") or 0)
    total_minted = total_minted + (t:get("minted") or 0)
    if (t:get("exhausted") or 0) > 0 then any_exhausted = 1 end
    local fb = t:get("first_bad") or ""
    if sample == "" and fb ~= "" then sample = fb end
  end
  local parts = {}
  for k, v in pairs(by_status) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
  table.sort(parts)
  local e = summary.errors
  local rps = summary.requests / (summary.duration / 1e6)
  io.write(string.format(
    'BENCH_RESULT {"kind":%s,"requests":%d,"responses":%d,"duration_us":%d,"rps":%.1f,' ..
    '"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d,' ..
    '"bad":%d,"minted":%d,"pool_exhausted":%s,"first_bad":%s,"statuses":{%s}}\n',
    jstr(kind), summary.requests, total_responses, summary.duration, rps,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status,
    total_bad, total_minted, any_exhausted == 1 and "true" or "false", jstr(sample),
    table.concat(parts, ",")))
end
