-- The public facade: version, lazily loaded submodules, and scim.run over the
-- iterators a script hands it (no network: the functions make no request).
local scim = require "scim"

describe("scim", function()
  after_each(function()
    collectgarbage()
    collectgarbage()
  end)

  it("has the C module's version", function()
    assert.matches("^%d+%.%d+%.%d+$", scim._VERSION)
    assert.equal(require("scim.core")._VERSION, scim._VERSION)
  end)

  it("loads its submodules on first use and nothing else", function()
    assert.equal(require("scim.csv"), scim.csv)
    assert.equal(require("scim.client"), scim.client)
    assert.equal(require("scim.mapping"), scim.mapping)
    assert.is_nil(scim.no_such_module)
  end)

  it("runs a function for every row of a CSV file, straight from csv.rows", function()
    local seen = {}
    local summary = scim.run(scim.csv.rows("examples/create.csv"), function(row)
      seen[#seen + 1] = row.email
    end, { concurrency = 4 })
    assert.equal(30, #seen)
    assert.equal(30, summary.done)
    assert.equal(0, summary.failed)
  end)

  it("counts a row whose function raises as failed, and goes on with the others", function()
    local summary = scim.run({ 1, 2, 3, 4 }, function(n)
      if n == 2 then error("row two is bad") end
    end)
    assert.equal(3, summary.done)
    assert.equal(1, summary.failed)
    assert.equal(2, summary.errors[1].index)
    assert.matches("row two is bad", tostring(summary.errors[1].error))
  end)
end)
