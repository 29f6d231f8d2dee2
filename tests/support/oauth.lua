--- Test harness for tests/support/oauth.js: an OAuth 2.0 client-credentials token endpoint
-- in front of a running support.server (loopback only).
--
--     local oauth = require "support.oauth"
--     local o = oauth.start{ upstream = s, expires_in = 2 }  -- s: a support.server
--     -- o.token_url, o.url (the SCIM base through the proxy), o.client_id, o.client_secret
--     local st = o:stats()  -- { issued =, refused_clients =, rejected =, forwarded =, ... }
--     o:stop()
-- @module support.oauth
local util = require "support.util"
local hostile = require "support.hostile"

local oauth = {}

local methods = {}
local mt = { __name = "support.oauth", __index = methods }

local OPTIONS = { upstream = true, expires_in = true, client_id = true, client_secret = true }

--- Starts the endpoint.
-- @tparam table opts `upstream` (a started support.server; required), `expires_in`
--   (seconds, default 3600), `client_id` (default "agent"), `client_secret` (default
--   "Sup3r-S3cret/+:value")
-- @return the endpoint object; raises if it does not start within 15 s
function oauth.start(opts)
  for k in pairs(opts) do
    if not OPTIONS[k] then error("oauth.start: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local up = assert(opts.upstream, "oauth.start: upstream server required")
  local id, secret = opts.client_id or "agent", opts.client_secret or "Sup3r-S3cret/+:value"
  local q = util.shell_quote
  local self = hostile.spawn("oauth.start", "oauth.js", { "--upstream", q(up.origin),
    "--upstream-token", q(up.token), "--client-id", q(id), "--client-secret", q(secret),
    "--expires-in", tostring(opts.expires_in or 3600) })
  self.token_url = self.origin .. "/token"
  self.url = self.origin .. up.url:match("^https?://[^/]+(/.*)$")
  self.client_id, self.client_secret = id, secret
  return setmetatable(self, mt)
end

local function control(self, method, path, body)
  if not self._pipe then error("support.oauth: the endpoint is stopped", 3) end
  return (util.must("support.oauth", util.control(self.origin .. "/_oauth/", method, path,
    body, self._body)))
end

--- Counters since start or the last reset.
function methods:stats() return control(self, "GET", "stats") end

--- Zeroes the counters and forgets the issued tokens.
function methods:reset() return control(self, "POST", "reset") end

--- Live settings: `expires_in` (for tokens issued from now on), `revoke = true` (every
-- issued token stops working).
function methods:configure(settings) return control(self, "POST", "config", settings) end

--- Stops the endpoint (idempotent; also `__close`).
methods.stop = util.release

mt.__close = methods.stop
mt.__gc = util.finalize

return oauth
