--- scim-agent: keep a SCIM service provider's users in step with a CSV file.
-- The public facade: `local scim = require "scim"`. Submodules load on first
-- use (`scim.csv`, `scim.client`, `scim.mapping`, `scim.http`, `scim.filter`,
-- `scim.json`), so requiring the facade is cheap and has no require cycles.
-- @module scim
local core = require "scim.core"

local SUBMODULES = {
  csv = true, http = true, client = true, mapping = true, filter = true, json = true,
  report = true, error = true, directory = true,
}

local scim = {
  _VERSION = core._VERSION,
}

--- Runs `fn(item, index)` for every item on coroutines over the HTTP engine.
-- Straight-line code inside `fn` yields while its requests are in flight.
-- @tparam table|function items an array, or an iterator function (e.g. `reader:rows()`)
-- @tparam function fn called once per item; an error fails that item only
-- @tparam[opt] table opts `concurrency` (default 16)
-- @treturn table `{ done = n, failed = n, errors = { {index=, item=, error=}, ... } }`
function scim.run(items, fn, opts)
  return require("scim.http").run(items, fn, opts)
end

--- Makes a plan (see scim.plan): `scim.plan{ client=, rows=, job=, ... }`.
-- @treturn scim.plan | nil, err, code
function scim.plan(opts)
  -- Groups are planned by their own module, on the same pattern.
  if type(opts) == "table" and opts.job == "groups" then return require("scim.groups").new(opts) end
  return require("scim.plan").new(opts)
end

return setmetatable(scim, {
  __index = function(t, name)
    if SUBMODULES[name] then
      local m = require("scim." .. name)
      rawset(t, name, m)
      return m
    end
  end,
})
