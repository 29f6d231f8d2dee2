-- scim.cli and scim.config: argument parsing, the config file, token and URL sources, help,
-- and exit codes that need no server. (Jobs against the test server: tests/jobs_spec.lua.)
local cli = require "scim.cli"
local config = require "scim.config"

local agent = require "support.agent"
local sink, tmpfile = agent.sink, agent.tmpfile

local function env(vars)
  vars = vars or {}
  return {
    stdin = io.stdin, stdout = sink(), stderr = sink(),
    getenv = function(name) return vars[name] end,
    isatty = function() return false end,
  }
end

after_each(function()   -- every test of this file
  collectgarbage()
  collectgarbage()
end)

describe("scim.cli", function()

  describe("parse", function()
    it("takes the original forms -c|-u|-e|-d FILE [TOKEN [URL]]", function()
      local o = assert(cli.parse{ "-c", "users.csv" })
      assert.equal("create", o.command)
      assert.equal("users.csv", o.file)
      assert.is_nil(o.token)
      o = assert(cli.parse{ "-u", "u.csv", "tok" })
      assert.same({ "update", "u.csv", "tok" }, { o.command, o.file, o.token })
      o = assert(cli.parse{ "-e", "out.csv", "tok", "https://x.example/scim/v1/" })
      assert.same({ "export", "tok", "https://x.example/scim/v1/" }, { o.command, o.token, o.url })
      o = assert(cli.parse{ "-d", "d.csv", "--yes" })
      assert.equal("delete", o.command)
      assert.is_true(o.yes)
    end)

    it("takes subcommands with options in any position and --opt=value", function()
      local o = assert(cli.parse{ "sync", "--concurrency", "16", "hr.csv", "--rate=20",
                                  "--deactivate-missing", "--max-removals", "5%", "--dry-run" })
      assert.equal("sync", o.command)
      assert.equal("hr.csv", o.file)
      assert.equal(16, o.concurrency)
      assert.equal(20, o.rate)
      assert.is_true(o.deactivate_missing)
      assert.same({ percent = 5 }, o.max_removals)
      assert.is_true(o.dry_run)
      o = assert(cli.parse{ "sync", "f.csv", "--delete-missing", "--max-removals", "25" })
      assert.same({ count = 25 }, o.max_removals)
    end)

    it("turns plan into sync --dry-run", function()
      local o = assert(cli.parse{ "plan", "hr.csv" })
      assert.equal("sync", o.command)
      assert.is_true(o.dry_run)
    end)

    it("accepts '-' as a file and -- before a file starting with a dash", function()
      assert.equal("-", assert(cli.parse{ "export", "-" }).file)
      assert.equal("-odd.csv", assert(cli.parse{ "create", "--", "-odd.csv" }).file)
    end)

    it("rejects bad usage with a clear message", function()
      local cases = {
        { {}, "no command given" },
        { { "frobnicate", "x.csv" }, "unknown command 'frobnicate'" },
        { { "create" }, "create needs a FILE" },
        { { "create", "a.csv", "b.csv" }, "unexpected argument 'b.csv'" },
        { { "create", "a.csv", "--bogus" }, "unknown option --bogus" },
        { { "create", "a.csv", "--concurrency" }, "option --concurrency needs a value" },
        { { "create", "a.csv", "--concurrency", "0" }, "option --concurrency expects an integer" },
        { { "create", "a.csv", "--concurrency", "2.5" }, "expects an integer" },
        { { "create", "a.csv", "--dialect", "scim3" }, "expects one of scim2, meta, workplace_v1" },
        { { "create", "a.csv", "--yes=1" }, "option --yes takes no value" },
        { { "delete", "a.csv", "--upsert" }, "option --upsert does not apply to delete" },
        { { "create", "a.csv", "--deactivate" }, "does not apply to create" },
        { { "sync", "a.csv", "--max-removals", "lots" }, "a count N or a percentage P%" },
        { { "sync", "a.csv", "--deactivate-missing", "--delete-missing" }, "choose one of" },
        { { "sync", "a.csv", "--max-removals", "5" },
          "--max-removals needs --deactivate-missing" },
        { { "export", "out.csv", "--report", "r.csv" },
          "option --report does not apply to export" },
        { { "create", "a.csv", "--quiet", "--verbose" }, "choose one of --quiet and --verbose" },
        { { "-c", "a.csv", "t", "https://a/", "extra" }, "unexpected argument 'extra'" },
        { { "-c", "a.csv", "t", "https://a/", "--url", "https://b/" }, "either as an argument" },
      }
      for _, c in ipairs(cases) do
        local o, err = cli.parse(c[1])
        assert.is_nil(o, table.concat(c[1], " "))
        assert.truthy(err:find(c[2], 1, true), err .. " does not contain " .. c[2])
      end
    end)

    it("knows --help and --version anywhere", function()
      assert.is_true(assert(cli.parse{ "--version" }).version)
      assert.is_true(assert(cli.parse{ "update", "--help" }).help)
      assert.is_true(assert(cli.parse{ "-h" }).help)
    end)
  end)

  describe("main without a server", function()
    it("prints the version", function()
      local e = env()
      assert.equal(0, cli.main({ "--version" }, e))
      assert.equal("scim-agent " .. require("scim")._VERSION .. "\n", e.stdout:text())
    end)

    it("prints help, general and per command", function()
      local e = env()
      assert.equal(0, cli.main({ "--help" }, e))
      local text = e.stdout:text()
      for _, word in ipairs{ "create", "update", "export", "delete", "sync", "plan", "--token-file",
                             "--max-removals", "-c|-u|-e|-d FILE [TOKEN [URL]]", "Exit codes" } do
        assert.truthy(text:find(word, 1, true), word)
      end
      e = env()
      assert.equal(0, cli.main({ "delete", "--help" }, e))
      assert.truthy(e.stdout:text():find("--deactivate", 1, true))
      assert.is_nil(e.stdout:text():find("--upsert", 1, true))
    end)

    it("exits 2 with 'scim-agent: message' on usage errors", function()
      local e = env()
      assert.equal(2, cli.main({ "create" }, e))
      assert.matches("^scim%-agent: create needs a FILE", e.stderr:text())
    end)

    it("warns that a token argument is visible in the process list", function()
      local e = env()
      local path = os.tmpname()
      os.remove(path)
      cli.main({ "-c", path, "secret-token-123" }, e)
      local text = e.stderr:text()
      assert.truthy(text:find("visible to other users in the process list", 1, true))
      assert.is_nil(text:find("secret-token-123", 1, true))
    end)

    it("exits 2 for a config file with an unknown option or bad value", function()
      local bad = tmpfile("return { url = 'https://a.example/', concurency = 4 }")
      local e = env()
      assert.equal(2, cli.main({ "create", "x.csv", "--config", bad }, e))
      assert.truthy(e.stderr:text():find("unknown option 'concurency'", 1, true))
      os.remove(bad)
      bad = tmpfile("retries = 'many'")
      e = env()
      assert.equal(2, cli.main({ "create", "x.csv", "--config", bad }, e))
      assert.truthy(e.stderr:text():find("option 'retries' expects an integer", 1, true))
      os.remove(bad)
      bad = tmpfile("return {")
      e = env()
      assert.equal(2, cli.main({ "create", "x.csv", "--config", bad }, e))
      assert.truthy(e.stderr:text():find(bad, 1, true))
      os.remove(bad)
    end)
  end)
end)

describe("scim.config", function()

  it("loads a config returning a table or assigning globals", function()
    local a = tmpfile("return { url = 'https://a.example/scim/v2/', concurrency = 12, "
      .. "dry_run = true, ['max-removals'] = '3%' }")
    local cfg = assert(config.load(a))
    assert.same({ url = "https://a.example/scim/v2/", concurrency = 12, dry_run = true,
                  max_removals = { percent = 3 } }, cfg)
    os.remove(a)
    local b = tmpfile("dialect = 'meta'\ntoken_file = '/run/secrets/scim'\nrate = 50\n")
    cfg = assert(config.load(b))
    assert.same({ dialect = "meta", token_file = "/run/secrets/scim", rate = 50 }, cfg)
    os.remove(b)
  end)

  it("runs the config without access to the standard library", function()
    local a = tmpfile("return { url = io and 'x' or 'https://safe.example/' }")
    assert.equal("https://safe.example/", assert(config.load(a)).url)
    os.remove(a)
  end)

  it("takes the token from --token-file, SCIM_TOKEN, the config, the argument, in that order",
    function()
    local file = tmpfile("  from-file \nsecond line\n")
    local vars = { SCIM_TOKEN = "from-env" }
    local getenv = function(n) return vars[n] end
    local cfg_file = tmpfile("cfg-file-token\n")
    assert.equal("from-file", (config.token({ token_file = file, token = "arg" },
      { token = "cfg" }, getenv)))
    assert.equal("from-env", (config.token({ token = "arg" }, { token = "cfg" }, getenv)))
    vars.SCIM_TOKEN = nil
    assert.equal("cfg-file-token", (config.token({ token = "arg" },
      { token_file = cfg_file, token = "cfg" }, getenv)))
    assert.equal("cfg", (config.token({ token = "arg" }, { token = "cfg" }, getenv)))
    assert.equal("arg", (config.token({ token = "arg" }, {}, getenv)))
    assert.is_nil((config.token({}, {}, getenv)))
    local t, err, failed = config.token({ token_file = "/nonexistent/token" }, {}, getenv)
    assert.is_nil(t)
    assert.is_true(failed)
    assert.truthy(err:find("cannot read the token file", 1, true))
    local empty = tmpfile("\n")
    t, err = config.token({ token_file = empty }, {}, getenv)
    assert.is_nil(t)
    assert.truthy(err:find("is empty", 1, true))
    os.remove(file); os.remove(cfg_file); os.remove(empty)
  end)

  it("takes the URL from --url, SCIM_URL, the config, the dialect default", function()
    local vars = { SCIM_URL = "https://env.example/" }
    local getenv = function(n) return vars[n] end
    local d = { default_url = "https://default.example/" }
    assert.equal("https://cli.example/", config.url({ url = "https://cli.example/" },
      { url = "https://cfg.example/" }, getenv, d))
    local cfg = { url = "https://cfg.example/" }
    assert.equal("https://env.example/", config.url({}, cfg, getenv, d))
    vars.SCIM_URL = nil
    assert.equal("https://cfg.example/", config.url({}, cfg, getenv, d))
    assert.equal("https://default.example/", config.url({}, {}, getenv, d))
    assert.is_nil(config.url({}, {}, getenv, {}))
  end)
end)
