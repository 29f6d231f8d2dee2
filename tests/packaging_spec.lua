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

describe("the shape of the Lua modules", function()
  -- module name -> the scim modules it requires (comments and doc examples left out)
  local function graph()
    local g = {}
    local p = assert(io.popen("find lua -name '*.lua'"))
    for path in p:lines() do
      local mod = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      g[mod] = { path = path, deps = {}, lines = 0, head = {} }
      for line in io.lines(path) do
        local n = g[mod].lines + 1
        g[mod].lines = n
        if n <= 40 then g[mod].head[#g[mod].head + 1] = line end
        local code = line:gsub("%-%-.*$", "")
        for dep in code:gmatch('require%s*%(?%s*["\']([%w%._]+)["\']') do
          if dep:find("^scim") and dep ~= mod then g[mod].deps[#g[mod].deps + 1] = dep end
        end
      end
    end
    p:close()
    return g
  end

  it("have no require cycle", function()
    local g, state, cycles = graph(), {}, {}
    local function visit(m, stack)
      if state[m] == "open" then
        cycles[#cycles + 1] = table.concat(stack, " -> ") .. " -> " .. m
        return
      end
      if state[m] or not g[m] then return end
      state[m] = "open"
      stack[#stack + 1] = m
      for _, d in ipairs(g[m].deps) do visit(d, stack) end
      stack[#stack] = nil
      state[m] = "done"
    end
    for m in pairs(g) do visit(m, {}) end
    assert.same({}, cycles)
  end)

  it("stay under ~600 lines unless they say at the top why not", function()
    local long = {}
    for _, info in pairs(graph()) do
      if info.lines > 650 and not table.concat(info.head, "\n"):find("Why this module is long:",
        1, true) then
        long[#long + 1] = string.format("%s (%d lines)", info.path, info.lines)
      end
    end
    table.sort(long)
    assert.same({}, long)
  end)
end)
