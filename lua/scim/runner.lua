--- Runs work concurrently over the HTTP engine with a way to stop: after Ctrl-C (or a caught
-- SIGTERM/SIGHUP), or when the caller's `stop()` says so, no new item starts and the requests
-- in flight finish.
--
-- How Ctrl-C is caught without C code: the standalone interpreter answers SIGINT by making
-- the *main* thread raise "interrupted!" at its next instruction. The scheduler runs in a
-- coroutine of its own here, and the main thread only runs when the scheduler asks for the
-- next item; so the error surfaces in `drive` below, between two items, where it is caught
-- and turned into "no more items" while the scheduler finishes the transfers in flight.
-- (A second Ctrl-C ends the process, as lua.c makes it.)
-- @module scim.runner
local http = require "scim.http"
local sys = require("scim.core").sys
local is_interrupt = require("scim.error").is_interrupt

local runner = {}

--- Runs `fn(item, i)` for every item.
-- @tparam table items an array
-- @tparam function fn an error raised in it fails that item: `opts.on_error(item, err)`
-- @tparam[opt] table opts `concurrency` (items in progress, default 8: the engine's window;
--   items sleeping on a Retry-After do not count), `stop()` (true: start no more items),
--   `on_error(item, err)`, `on_interrupt()` (called once when Ctrl-C stops the run),
--   `on_step()` (after each item)
-- @treturn boolean|string false when every item ran, else why it stopped ("interrupted" or
--   "stopped")
function runner.run(items, fn, opts)
  opts = opts or {}
  local on_error, on_step, stop = opts.on_error, opts.on_step, opts.stop
  local stopped = false
  local function body(item, i)
    local ok, err = pcall(fn, item, i)
    if on_step then on_step() end
    if not ok then
      if on_error then on_error(item, err) else error(err, 0) end
    end
  end
  local i = 0
  local function source()
    if stopped then return nil end
    if coroutine.yield() then   -- the main thread says stop
      stopped = stopped or "interrupted"
      return nil
    end
    if stop and stop() then stopped = "stopped" return nil end
    i = i + 1
    return items[i]
  end
  local summary
  local sched = coroutine.create(function()
    -- As many rows as requests in flight: rows waiting for a slot would each hold a curl
    -- handle and a coroutine for nothing (measured: a fifth of the CPU at 16x). A row whose
    -- request sleeps on a Retry-After holds no place (scim.http's run sees to that).
    summary = http.run(source, body, { concurrency = opts.concurrency or 8 })
  end)
  local function drive()
    while coroutine.status(sched) == "suspended" do
      local sig = not stopped and sys.signalled()
      if sig then error("interrupted! (" .. tostring(sig) .. ")", 0) end
      local ok, err = coroutine.resume(sched, stopped ~= false)
      if not ok then error(err, 0) end
    end
  end
  local ok, err = pcall(drive)
  if not ok and is_interrupt(err) then
    stopped = "interrupted"
    if opts.on_interrupt then opts.on_interrupt() end
    ok, err = pcall(drive)
  end
  if not ok then error(err, 0) end
  for _, e in ipairs(summary and summary.errors or {}) do
    if on_error then on_error(e.item, e.error) else error(e.error, 0) end
  end
  return stopped
end

return runner
