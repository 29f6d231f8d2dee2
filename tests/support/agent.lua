--- Test helpers for running scim-agent: in-process through `scim.cli.main` with captured
-- output, or as a subprocess (`lua5.4 lua/scim_agent.lua ...`) with environment variables.
-- @module support.agent
local util = require "support.util"

local agent = {}

local shell_quote, read_file = util.shell_quote, util.read_file
agent.shell_quote = shell_quote
agent.read_file = read_file

--- Writes `text` to a new temporary file and returns its path.
function agent.tmpfile(text, suffix)
  local path = os.tmpname() .. (suffix or "")
  local f = assert(io.open(path, "wb"))
  f:write(text or "")
  f:close()
  return path
end

-- A file-like sink that collects what is written.
local function sink()
  local s = { parts = {} }
  function s:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring(select(i, ...)) end
    return self
  end
  function s:flush() return self end
  function s:text() return table.concat(self.parts) end
  return s
end
agent.sink = sink

--- Runs `scim.cli.main(args)` in this process.
-- @tparam table args the arguments
-- @tparam[opt] table vars environment variables seen by the agent (SCIM_URL, SCIM_TOKEN, ...)
-- @tparam[opt] table term as if on a terminal: `tty` = the fds that are terminals
--   (e.g. `{ [0] = true }`), `input` = what is typed on stdin
-- @treturn integer exit code
-- @treturn string stdout
-- @treturn string stderr
function agent.main(args, vars, term)
  vars, term = vars or {}, term or {}
  local out, err = sink(), sink()
  local input = term.input and agent.tmpfile(term.input)
  local stdin = input and assert(io.open(input)) or io.stdin
  local tty = term.tty or {}
  local code = require("scim.cli").main(args, {
    stdin = stdin, stdout = out, stderr = err,
    getenv = function(name) return vars[name] end,
    isatty = function(fd) return tty[fd] == true end,
  })
  if input then
    stdin:close()
    os.remove(input)
  end
  return code, out:text(), err:text()
end

--- The environment for a server: SCIM_URL and SCIM_TOKEN.
function agent.vars(s, extra)
  local v = { SCIM_URL = s.url, SCIM_TOKEN = s.token }
  for k, x in pairs(extra or {}) do v[k] = x end
  return v
end

--- The command line that runs the agent from the source tree.
function agent.command(args, vars)
  local parts = { "env" }
  for k, v in pairs(vars or {}) do parts[#parts + 1] = k .. "=" .. shell_quote(v) end
  parts[#parts + 1] = "lua5.4 lua/scim_agent.lua"
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  return table.concat(parts, " ")
end

--- Runs the agent as a subprocess (stdin from /dev/null).
-- @treturn integer exit code
-- @treturn string stdout
-- @treturn string stderr
function agent.spawn(args, vars)
  local base = os.tmpname()
  local cmd = agent.command(args, vars) .. " < /dev/null > " .. shell_quote(base .. ".out")
    .. " 2> " .. shell_quote(base .. ".err")
  local _, _, code = os.execute(cmd)
  local out, err = read_file(base .. ".out") or "", read_file(base .. ".err") or ""
  os.remove(base); os.remove(base .. ".out"); os.remove(base .. ".err")
  return code, out, err
end

--- Starts the agent in the background; returns `{ pid =, ... }` (the agent's own pid, for
-- kill) and where its output and exit code go.
function agent.start(args, vars)
  local base = os.tmpname()
  local cmd = "{ " .. agent.command(args, vars) .. " < /dev/null > " .. shell_quote(base .. ".out")
    .. " 2> " .. shell_quote(base .. ".err") .. " & p=$!; echo $p; wait $p; echo $? > "
    .. shell_quote(base .. ".rc") .. "; } 2>/dev/null &"
  local p = assert(io.popen(cmd))
  local pid = tonumber(p:read("l"))
  p:close()
  return { pid = pid, out = base .. ".out", err = base .. ".err", rc = base .. ".rc",
           base = base }
end

--- Waits (bounded) until a background agent's exit code is known; returns it (nil when it
-- did not end in time).
function agent.wait(job, seconds)
  local polls = math.ceil((seconds or 30) / 0.05)
  os.execute(string.format("i=0; while [ ! -s %s ] && [ $i -lt %d ]; do "
    .. "sleep 0.05; i=$((i+1)); done", shell_quote(job.rc), polls))
  return tonumber((read_file(job.rc) or ""):match("%d+"))
end

--- Reads and removes a background agent's output files.
function agent.collect(job)
  local out, err = read_file(job.out) or "", read_file(job.err) or ""
  for _, f in ipairs{ job.base, job.out, job.err, job.rc } do os.remove(f) end
  return out, err
end

--- Reads a CSV file into a list of rows (keyed by header).
function agent.read_csv(path)
  local csv = require "scim.csv"
  local reader = assert(csv.open(path))
  local rows = {}
  for row in reader:rows() do rows[#rows + 1] = row end
  local header = reader.header
  reader:close()
  return rows, header
end

--- Counts the write requests (POST, PUT, PATCH, DELETE) in server stats.
function agent.writes(stats)
  local n = 0
  for _, m in ipairs{ "POST", "PUT", "PATCH", "DELETE" } do n = n + (stats.by_method[m] or 0) end
  return n
end

--- The requests in server stats that concern one user: `/Users/<id>` or a filtered lookup.
-- A run that learns the directory from listings sends none.
-- @treturn table "METHOD path?query" strings
function agent.per_user_requests(stats)
  local list = {}
  for _, r in ipairs(stats.requests) do
    local query = r.query or ""
    if r.path:match("/Users/[^/]+$") or query:find("filter", 1, true) then
      list[#list + 1] = r.method .. " " .. r.path .. (query ~= "" and ("?" .. query) or "")
    end
  end
  return list
end

--- Sorts a run's requests: listing pages (`GET .../Users`), `/ServiceProviderConfig`
-- reads, and anything else (as "METHOD path").
-- @treturn integer listing, integer config, table other
function agent.classify_requests(stats)
  local listing, config, other = 0, 0, {}
  for _, r in ipairs(stats.requests) do
    if r.method == "GET" and r.path:match("/Users$") then
      listing = listing + 1
    elseif r.method == "GET" and r.path:match("/ServiceProviderConfig$") then
      config = config + 1
    else
      other[#other + 1] = r.method .. " " .. r.path
    end
  end
  return listing, config, other
end

return agent
