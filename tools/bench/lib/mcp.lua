-- wrk script: JSON-RPC requests to codeb's streamable HTTP MCP endpoint,
-- inside real MCP sessions.
--
--   wrk -t2 -c50 -d10s --timeout 30s -s tools/bench/lib/mcp.lua \
--       http://127.0.0.1:PORT/mcp -- MODE SESSIONS_PER_THREAD [PROJECT [SIDS]]
--
-- MODE is `ping` (JSON-RPC ping), `slot_status` (tools/call slot_status
-- with {"project": PROJECT}) or `project_list` (tools/call project_list with
-- {"limit": 1}: one database query, no SSH).
--
-- Sessions: one MCP session per connection, each fully handshaken
-- (`initialize` answered 200 with an Mcp-Session-Id, then
-- `notifications/initialized` answered 202) before its first load request.
-- wrk's Lua sees no connection identity (request() and response() are per
-- thread, and a connection's response() and its next request() may be
-- interleaved with other connections' events), and rmcp requires a
-- session's next message after `initialize` to be `notifications/initialized`,
-- so the handshakes cannot ride on the load connections' request/response
-- cycle. Instead:
--   * SIDS given (comma-separated; tools/bench/http does this): the harness
--     has already handshaken them; thread i takes the i-th slice of
--     SESSIONS_PER_THREAD ids. No handshake time falls inside wrk's clock.
--   * SIDS absent (running wrk by hand): each thread handshakes its
--     SESSIONS_PER_THREAD sessions in init() with curl. wrk starts each
--     thread right after its init(), so thread 1's handshakes overlap
--     thread 0's load and req/s reads slightly high.
-- request() hands the thread's sessions out round-robin; as a connection
-- has at most one request in flight and each thread has as many sessions
-- as connections, each session carries about one request at a time.
--
-- response() checks every reply: non-200 status, JSON-RPC errors, tool
-- errors (isError) and, for slot_status, a non-null observe_error (podman
-- could not be asked over SSH) are counted, and done() prints one line
--   MCPBENCH {json}
-- with those counts, requests, duration and latency percentiles (us), and
-- one sample of each kind of failure.

local mode, per_thread, project
local rr = 0
local next_id = 100
local threads = {}
-- Globals, not locals: done() reads them from each thread with thread:get().
sids = {}
counts = { ok = 0, non200 = 0, rpc_error = 0, tool_error = 0, observe_error = 0, no_result = 0 }
samples = {}
handshake_error = nil

local HEADERS = {
  ["Accept"] = "application/json, text/event-stream",
  ["Content-Type"] = "application/json",
  ["Mcp-Protocol-Version"] = "2025-11-25",
}
-- The API key comes from the environment (tools/bench/http mints one).
local key = os.getenv("CODEB_BENCH_KEY")
if key and key ~= "" then HEADERS["Authorization"] = "Bearer " .. key end

local function shell_quote(s)
  return "'" .. string.gsub(s, "'", "'\\''") .. "'"
end

local function base_url()
  local host = wrk.host
  if wrk.port then host = host .. ":" .. wrk.port end
  return wrk.scheme .. "://" .. host .. wrk.path
end

-- POSTs body with curl; returns status, headers text, body text.
local function curl_post(body, sid)
  local cmd = "curl -sS --max-time 10 -D - -X POST"
  for k, v in pairs(HEADERS) do
    cmd = cmd .. " -H " .. shell_quote(k .. ": " .. v)
  end
  if sid then cmd = cmd .. " -H " .. shell_quote("Mcp-Session-Id: " .. sid) end
  cmd = cmd .. " --data-binary " .. shell_quote(body) .. " " .. shell_quote(base_url()) .. " 2>&1"
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local head, rest = string.match(out, "^(.-)\r?\n\r?\n(.*)$")
  if not head then return 0, out, "" end
  local status = tonumber(string.match(head, "^HTTP/%S+ (%d+)")) or 0
  return status, head, rest
end

local function handshake()
  local init = '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    .. '"capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}'
  local status, head, body = curl_post(init)
  local sid = string.match(head, "\n[Mm][Cc][Pp]%-[Ss][Ee][Ss][Ss][Ii][Oo][Nn]%-[Ii][Dd]:%s*([^\r\n]+)")
  if status ~= 200 or not sid or not string.find(body, '"result"', 1, true) then
    return nil, "initialize: HTTP " .. status .. ": " .. string.sub(head .. body, 1, 300)
  end
  status, head, body = curl_post('{"jsonrpc":"2.0","method":"notifications/initialized"}', sid)
  if status ~= 202 and status ~= 200 then
    return nil, "notifications/initialized: HTTP " .. status .. ": " .. string.sub(head .. body, 1, 300)
  end
  return sid
end

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

function init(args)
  mode = args[1] or "ping"
  per_thread = tonumber(args[2] or "1")
  project = args[3] or "benchproj"
  if args[4] and args[4] ~= "" then
    local all = {}
    for sid in string.gmatch(args[4], "[^,]+") do all[#all + 1] = sid end
    local first = (thread_index - 1) * per_thread
    for i = first + 1, math.min(first + per_thread, #all) do sids[#sids + 1] = all[i] end
    if #sids == 0 then handshake_error = "no session ids left for thread " .. thread_index end
    return
  end
  for i = 1, per_thread do
    local sid, err = handshake()
    if not sid then
      handshake_error = err
      break
    end
    sids[#sids + 1] = sid
  end
end

local function body_for(id)
  if mode == "slot_status" then
    return '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"slot_status",'
      .. '"arguments":{"project":"' .. project .. '"}}}'
  elseif mode == "project_list" then
    return '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"project_list",'
      .. '"arguments":{"limit":1}}}'
  end
  return '{"jsonrpc":"2.0","id":' .. id .. ',"method":"ping"}'
end

function request()
  next_id = next_id + 1
  local headers = {}
  for k, v in pairs(HEADERS) do headers[k] = v end
  if #sids > 0 then
    rr = rr % #sids + 1
    headers["Mcp-Session-Id"] = sids[rr]
  end
  return wrk.format("POST", nil, headers, body_for(next_id))
end

local function note(kind, status, body)
  counts[kind] = counts[kind] + 1
  if not samples[kind] then
    samples[kind] = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 400)
  end
end

function response(status, headers, body)
  if status ~= 200 then
    note("non200", status, body)
  elseif string.find(body, '"result"', 1, true) then
    if string.find(body, '"isError":true', 1, true) then
      note("tool_error", status, body)
    elseif mode == "slot_status" and string.find(body, '"observe_error":"', 1, true) then
      note("observe_error", status, body)
    else
      counts.ok = counts.ok + 1
    end
  elseif string.find(body, '"error"', 1, true) then
    note("rpc_error", status, body)
  else
    note("no_result", status, body)
  end
end

-- Minimal JSON encoding of flat tables of numbers and strings.
local function json_string(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. s .. '"'
end

local function json_object(t)
  local parts = {}
  for k, v in pairs(t) do
    local val
    if type(v) == "number" then
      val = string.format("%.17g", v)
    elseif type(v) == "table" then
      val = json_object(v)
    else
      val = json_string(tostring(v))
    end
    parts[#parts + 1] = json_string(k) .. ":" .. val
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local total = { ok = 0, non200 = 0, rpc_error = 0, tool_error = 0, observe_error = 0, no_result = 0, sessions = 0 }
  local sample = {}
  local herr = nil
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, _ in pairs(counts) do total[k] = total[k] + (c[k] or 0) end
    local s = t:get("samples")
    for k, v in pairs(s) do sample[k] = sample[k] or v end
    total.sessions = total.sessions + #t:get("sids")
    herr = herr or t:get("handshake_error")
  end
  local out = {
    counts = total,
    samples = sample,
    requests = summary.requests,
    duration_us = summary.duration,
    errors = {
      connect = summary.errors.connect, read = summary.errors.read, write = summary.errors.write,
      status = summary.errors.status, timeout = summary.errors.timeout,
    },
    latency_us = {
      p50 = latency:percentile(50), p90 = latency:percentile(90), p99 = latency:percentile(99),
      max = latency.max, mean = latency.mean,
    },
  }
  if herr then out.handshake_error = herr end
  io.write("MCPBENCH " .. json_object(out) .. "\n")
end
