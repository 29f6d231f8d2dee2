-- The rockspec lists every module explicitly; these checks keep it in step
-- with the tree so a LuaRocks install never misses a file.
local function rockspec()
  local env = {}
  local chunk = assert(loadfile("scim-agent-scm-1.rockspec", "t", env))
  chunk()
  return env
end

local function lines_of(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

describe("rockspec", function()
  local spec = rockspec()
  local modules = spec.build.modules

  it("pins Lua 5.4 and needs lua-cjson and libcurl", function()
    assert.same({ "lua >= 5.4, < 5.5", "lua-cjson" }, spec.dependencies)
    assert.equal("curl", spec.external_dependencies.CURL.library)
  end)

  it("lists every Lua module under lua/scim under its own name", function()
    for _, file in ipairs(lines_of("cd lua && find scim -name '*.lua' | sort")) do
      local name = file:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      assert.equal("lua/" .. file, modules[name], "module " .. name .. " missing from rockspec")
    end
  end)

  it("lists only files that exist", function()
    for name, src in pairs(modules) do
      if type(src) == "string" then
        assert.truthy(io.open(src), name .. " -> " .. src)
      end
    end
  end)

  it("compiles every C source into scim.core", function()
    local listed = {}
    for _, s in ipairs(modules["scim.core"].sources) do listed[s] = true end
    for _, file in ipairs(lines_of("ls csrc/*.c")) do
      assert.truthy(listed[file], file .. " missing from scim.core sources")
    end
  end)

  it("installs the agent as the scim-agent command", function()
    assert.equal("lua/scim_agent.lua", spec.build.install.bin["scim-agent"])
  end)
end)

describe("luarocks make", function()
  it("installs a tree whose scim-agent command runs from another directory", function()
    local tmp = os.tmpname()
    os.remove(tmp)
    local cmd = table.concat({
      "set -e",
      "mkdir -p " .. tmp .. "/src " .. tmp .. "/elsewhere",
      "cp -r scim-agent-scm-1.rockspec csrc lua examples " .. tmp .. "/src/",
      "cd " .. tmp .. "/src",
      "luarocks --lua-version=5.4 make --deps-mode=none --tree=" .. tmp .. "/tree"
        .. " scim-agent-scm-1.rockspec >" .. tmp .. "/build.log 2>&1",
      "eval \"$(luarocks --lua-version=5.4 --tree=" .. tmp .. "/tree path)\"",
      "cd " .. tmp .. "/elsewhere",
      tmp .. "/tree/bin/scim-agent --version",
    }, "\n")
    local p = assert(io.popen("bash -c '" .. cmd:gsub("'", "'\\''") .. "' 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    os.execute("rm -rf " .. tmp)
    assert.is_true(ok, out)
    assert.matches("^scim%-agent %d+%.%d+%.%d+", out)
  end)
end)
