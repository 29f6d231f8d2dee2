--- The scim-agent command line: arguments, the config file, token and URL sources, and exit
-- codes. `main` returns the exit code; the entry script passes it to `os.exit`.
--
-- Exit codes: 0 every row done; 1 some rows failed (the rest done) or the run was
-- interrupted; 2 usage, configuration or input file invalid (nothing sent); 3 cannot work at
-- all (authentication refused, server unreachable), detected before any write.
-- @module scim.cli
local config = require "scim.config"

local cli = {}

local EXIT_OK, EXIT_USAGE = 0, 2

local COMMANDS = {
  create = "create accounts for the rows of FILE",
  update = "update the accounts of FILE's rows, sending only what changed",
  export = "write every account to FILE ('-' for stdout)",
  delete = "delete (or --deactivate) the accounts of FILE's rows",
  sync = "make the server match FILE: create, update, and optionally remove the absent",
  plan = "print what sync would do (sync --dry-run)",
  groups = "make the groups FILE names hold exactly its members (group,member rows)",
  ["export-groups"] = "write every group and member to FILE as group,member rows",
}
local COMMAND_ORDER = { "create", "update", "export", "delete", "sync", "plan", "groups",
  "export-groups" }
local LEGACY = { ["-c"] = "create", ["-u"] = "update", ["-e"] = "export", ["-d"] = "delete" }

local function usage_options(job)
  local lines = {}
  for _, spec in ipairs(config.OPTIONS) do
    if not spec.jobs or not job or spec.jobs[job] then
      local left = "--" .. spec.name .. (spec.arg and (" " .. spec.arg) or "")
      lines[#lines + 1] = string.format("  %-28s %s", left, spec.help)
    end
  end
  return table.concat(lines, "\n")
end

--- The help text, general or for one command.
-- @tparam[opt] string command
-- @treturn string
function cli.help(command)
  if command then
    return string.format([[
usage: scim-agent %s FILE [options]
%s.

options:
%s
  --help                       this help

Token: --token-command, --oauth-token-url or --token-file, else SCIM_TOKEN, else the
config (the same three, or token), else a prompt on a terminal.
Exit codes: 0 all rows done, 1 some rows failed, 2 invalid usage or input (nothing sent),
3 the server refused the token or cannot be reached (nothing written).
]], command, COMMANDS[command]:gsub("^%l", string.upper), usage_options(command))
  end
  local cmds = {}
  for _, c in ipairs(COMMAND_ORDER) do
    cmds[#cmds + 1] = string.format("  %-8s %s", c, COMMANDS[c])
  end
  return string.format([==[
usage: scim-agent COMMAND FILE [options]
       scim-agent -c|-u|-e|-d FILE [TOKEN [URL]]     (the original sample's form)

commands:
%s

options:
%s
  --help                       help (also: scim-agent COMMAND --help)
  --version                    print the version

Token: --token-command, --oauth-token-url or --token-file, else SCIM_TOKEN, else the
config (the same three, or token), else the TOKEN argument, else a prompt on a terminal.
URL: --url (or URL), else SCIM_URL, else the config, else the
dialect's default.
Exit codes: 0 all rows done, 1 some rows failed, 2 invalid usage or input (nothing sent),
3 the server refused the token or cannot be reached (nothing written).
]==], table.concat(cmds, "\n"), usage_options(nil))
end

--- Parses the arguments (no I/O).
-- @tparam table argv the script's `arg` table (argv[1] is the first argument)
-- @treturn table `command`, `file`, `legacy`, `token` (positional), `url`, `help`,
--   `version`, and every given option under its key (`dry_run`, `token_file`, ...)
-- @treturn[2] nil
-- @treturn[2] string what is wrong
function cli.parse(argv)
  local opts, positional = {}, {}
  local n = #argv
  local i = 1
  local first = argv[1]
  if first and LEGACY[first] then
    opts.command, opts.legacy = LEGACY[first], first
    i = 2
  elseif first and COMMANDS[first] then
    opts.command = first
    i = 2
  end
  local only_positional = false
  while i <= n do
    local a = argv[i]
    if only_positional or a == "-" or a:sub(1, 1) ~= "-" then
      positional[#positional + 1] = a
    elseif a == "--" then
      only_positional = true
    elseif a == "--help" or a == "-h" then
      opts.help = true
    elseif a == "--version" then
      opts.version = true
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local spec = config.option(name)
      if not spec then return nil, "unknown option --" .. name end
      if spec.kind == "flag" then
        if value then return nil, "option --" .. name .. " takes no value" end
        value = true
      elseif not value then
        i = i + 1
        value = argv[i]
        if value == nil then return nil, "option --" .. name .. " needs a value" end
      end
      local v, why = config.convert(spec, value)
      if v == nil then return nil, "option --" .. name .. " " .. why end
      if spec.repeatable and opts[spec.key] then
        table.move(v, 1, #v, #opts[spec.key] + 1, opts[spec.key])
      else
        opts[spec.key] = v
      end
      opts._given = opts._given or {}
      opts._given[#opts._given + 1] = spec
    elseif LEGACY[a] and not opts.command then
      opts.command, opts.legacy = LEGACY[a], a
    else
      return nil, "unknown option " .. a
    end
    i = i + 1
  end
  if opts.help or opts.version then return opts end
  if not opts.command then
    if positional[1] then return nil, "unknown command '" .. positional[1] .. "'" end
    return nil, "no command given"
  end
  for _, spec in ipairs(opts._given or {}) do
    if spec.jobs and not spec.jobs[opts.command] then
      return nil, "option --" .. spec.name .. " does not apply to " .. opts.command
    end
  end
  opts._given = nil
  local max = opts.legacy and 3 or 1
  if #positional > max then
    return nil, "unexpected argument '" .. positional[max + 1] .. "'"
  end
  opts.file = positional[1]
  if not opts.file then return nil, opts.command .. " needs a FILE" end
  if opts.legacy then
    opts.token = positional[2]
    if positional[3] then
      if opts.url then return nil, "give the URL either as an argument or with --url" end
      opts.url = positional[3]
    end
  end
  if opts.command == "plan" then
    opts.command, opts.dry_run = "sync", true
  end
  if opts.deactivate_missing and opts.delete_missing then
    return nil, "choose one of --deactivate-missing and --delete-missing"
  end
  if opts.limit and (opts.deactivate_missing or opts.delete_missing) then
    return nil, "--limit cannot go with --deactivate-missing or --delete-missing: the rows "
      .. "after the limit would look absent"
  end
  if opts.max_removals and not (opts.deactivate_missing or opts.delete_missing
      or opts.delete_missing_groups) then
    return nil, "--max-removals needs --deactivate-missing or --delete-missing"
  end
  if opts.quiet and opts.verbose then return nil, "choose one of --quiet and --verbose" end
  return opts
end

-- The process environment, replaceable by tests.
local function default_env()
  return {
    stdin = io.stdin, stdout = io.stdout, stderr = io.stderr,
    getenv = os.getenv,
    isatty = function(fd) return require("scim.report").isatty(fd) end,
  }
end

-- Asks for the token with echo off (stty) when stdin is a terminal.
local function prompt_token(env)
  if not env.isatty(0) then return nil end
  env.stderr:write("SCIM access token: ")
  env.stderr:flush()
  os.execute("stty -echo 2>/dev/null")
  local ok, line = pcall(env.stdin.read, env.stdin, "l")
  os.execute("stty echo 2>/dev/null")
  env.stderr:write("\n")
  if not ok then return nil end
  line = line and line:match("^%s*(.-)%s*$")
  if line == "" then return nil end
  return line
end

--- Runs the command line.
-- @tparam table argv the script's `arg` table
-- @tparam[opt] table env replaces the process environment (tests): `stdin`, `stdout`,
--   `stderr` (file-like), `getenv(name)`, `isatty(fd)`
-- @treturn integer the process exit code (0, 1, 2 or 3)
function cli.main(argv, env)
  if env == nil then
    -- The real process: SIGTERM and SIGHUP (systemd, cron timeouts, containers) stop a run as
    -- Ctrl-C does, and a core dump must not carry the token.
    local sys = require("scim.core").sys
    sys.catch_signals()
    sys.no_core_dumps()
    -- A plan holds a few hundred bytes per account while listing pages make garbage fast:
    -- a collector that works harder per step keeps the peak near the live size (measured:
    -- a third less peak memory, no more CPU).
    collectgarbage("incremental", 200, 400)
  end
  env = env or default_env()
  local function fail(msg, code)
    env.stderr:write("scim-agent: ", msg, "\n")
    env.stderr:flush()
    return code or EXIT_USAGE
  end
  local opts, err = cli.parse(argv or {})
  if not opts then
    return fail(err .. "\n(scim-agent --help lists the commands and options)")
  end
  if opts.version then
    env.stdout:write("scim-agent ", require("scim")._VERSION, "\n")
    return EXIT_OK
  end
  if opts.help then
    env.stdout:write(cli.help(opts.dry_run and "plan" or opts.command))
    return EXIT_OK
  end

  local cfg = {}
  if opts.config then
    cfg, err = config.load(opts.config)
    if not cfg then return fail(err) end
  end
  -- Command line over config over defaults (token and URL have their own orders).
  local merged = {}
  for k, v in pairs(cfg) do
    if k ~= "token" and k ~= "token_file" and k ~= "url" then merged[k] = v end
  end
  for k, v in pairs(opts) do
    if k ~= "token" and k ~= "token_file" and k ~= "url" then merged[k] = v end
  end
  merged.dialect = merged.dialect or "scim2"
  merged.log_format = merged.log_format or "text"

  -- Secrets in files others can read are secrets no longer.
  for _, key in ipairs{ "token_file", "client_secret_file" } do
    local path = opts[key] or cfg[key]
    local mode = path and require("scim.core").sys.file_mode(path)
    if mode and mode & 0x3F ~= 0 then
      env.stderr:write(string.format("scim-agent: warning: %s can be read by other users "
        .. "(mode %03o); chmod 600 it\n", path, mode))
    end
  end

  if opts.token then
    env.stderr:write("scim-agent: warning: a token given as an argument is visible to other ",
      "users in the process list; use --token-file or SCIM_TOKEN\n")
  end

  local dialect, derr = require("scim.dialects").load(merged.dialect)
  if not dialect then return fail(derr) end
  merged.url = config.url(opts, cfg, env.getenv, dialect)

  -- The token is resolved only when the job is about to talk to the server, so a bad input
  -- file is reported without a prompt.
  merged.get_token = function()
    local token, source, failed = config.token(opts, cfg, env.getenv)
    if failed then return nil, source end
    if token then return token end
    token = prompt_token(env)
    if token then return token end
    return nil, "no token: give --token-file FILE, --token-command CMD, --oauth-token-url URL "
      .. "(with --client-id and --client-secret-file), or set SCIM_TOKEN"
  end

  merged.shown_url = merged.url and cli.safe_url(merged.url)
  if merged.insecure then
    -- Always said, even with --quiet: this run trusts whoever answers.
    env.stderr:write("scim-agent: warning: --insecure: the server's TLS certificate is not "
      .. "verified; anyone on the network path can read the token and the data\n")
  end
  return cli.execute(merged, env)
end

--- A URL as it may be printed: any user:password part replaced.
function cli.safe_url(url)
  return require("scim.http").scrub(tostring(url), {})
end

-- The CLI job of each command: the planned jobs share one adapter.
local JOB_MODULES = { create = "scim.jobs.plan", update = "scim.jobs.plan",
  delete = "scim.jobs.plan", sync = "scim.jobs.plan", export = "scim.jobs.export",
  groups = "scim.jobs.groups", ["export-groups"] = "scim.jobs.export_groups" }

--- Runs a job from merged options: loads the mapping, makes the run's context, and turns
-- what the job returns or raises into the exit code.
-- @tparam table opts merged options (`command`, `file`, `dialect`, `get_token`, ...)
-- @tparam table env `stdout`, `stderr`, `stdin`, `getenv`, `isatty`
-- @treturn integer exit code
function cli.execute(opts, env)
  local function fail(msg, code)
    env.stderr:write("scim-agent: ", msg, "\n")
    env.stderr:flush()
    return code
  end
  local mapping = require "scim.mapping"
  local ok, m, merr
  if opts.mapping then
    ok, m, merr = pcall(mapping.load, opts.mapping, { dialect = opts.dialect })
  else
    ok, m, merr = pcall(mapping.default, { dialect = opts.dialect })
  end
  if not ok or not m then return fail(tostring(ok and merr or m), EXIT_USAGE) end
  local context = require "scim.jobs.context"
  local ctx, cerr = context.new(opts, env, m)
  if not ctx then return fail(cerr, EXIT_USAGE) end
  local job = require(JOB_MODULES[opts.command])
  return ctx:protect(job.run)
end

return cli
