rockspec_format = "3.0"
package = "scim-agent"
version = "scm-1"
source = {
  url = "git+https://github.com/scim-agent/scim-agent.git",
}
description = {
  summary = "Keep a SCIM service provider's user accounts in step with a CSV file",
  detailed = [[
A streaming RFC 4180 CSV reader/writer and an HTTP engine on libcurl's multi
interface (the C module scim.core), with Lua modules that compose them into
create, update, export, delete and sync jobs for SCIM 2.0, Meta's SCIM 2.0
account-management API and the legacy Workplace SCIM 1.0 API.]],
  license = "MIT",
  labels = { "scim", "provisioning", "csv", "curl" },
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "lua-cjson",
}
external_dependencies = {
  -- Only the library is probed: Debian keeps curl/curl.h under a multiarch
  -- include directory that LuaRocks does not search, but the compiler does.
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    ["scim.core"] = {
      sources = { "csrc/lscim.c", "csrc/csv.c", "csrc/lcsv.c", "csrc/lhttp.c", "csrc/ljson.c",
        "csrc/ljsondec.c", "csrc/lsys.c" },
      libraries = { "curl" },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
    },
    ["scim"] = "lua/scim/init.lua",
    ["scim.cli"] = "lua/scim/cli.lua",
    ["scim.client"] = "lua/scim/client.lua",
    ["scim.client.groups"] = "lua/scim/client/groups.lua",
    ["scim.client.bulk"] = "lua/scim/client/bulk.lua",
    ["scim.token"] = "lua/scim/token.lua",
    ["scim.filter"] = "lua/scim/filter.lua",
    ["scim.http"] = "lua/scim/http.lua",
    ["scim.json"] = "lua/scim/json.lua",
    ["scim.config"] = "lua/scim/config.lua",
    ["scim.csv"] = "lua/scim/csv.lua",
    ["scim.report"] = "lua/scim/report.lua",
    ["scim.error"] = "lua/scim/error.lua",
    ["scim.input"] = "lua/scim/input.lua",
    ["scim.directory"] = "lua/scim/directory.lua",
    ["scim.runner"] = "lua/scim/runner.lua",
    ["scim.guard"] = "lua/scim/guard.lua",
    ["scim.plan"] = "lua/scim/plan.lua",
    ["scim.apply"] = "lua/scim/apply.lua",
    ["scim.groups"] = "lua/scim/groups.lua",
    ["scim.groups.apply"] = "lua/scim/groups/apply.lua",
    ["scim.jobs.context"] = "lua/scim/jobs/context.lua",
    ["scim.jobs.plan"] = "lua/scim/jobs/plan.lua",
    ["scim.jobs.export"] = "lua/scim/jobs/export.lua",
    ["scim.jobs.groups"] = "lua/scim/jobs/groups.lua",
    ["scim.jobs.export_groups"] = "lua/scim/jobs/export_groups.lua",
    ["scim.mapping"] = "lua/scim/mapping.lua",
    ["scim.mapping.date"] = "lua/scim/mapping/date.lua",
    ["scim.mapping.default"] = "lua/scim/mapping/default.lua",
    ["scim.mapping.compact"] = "lua/scim/mapping/compact.lua",
    ["scim.mapping.compile"] = "lua/scim/mapping/compile.lua",
    ["scim.mapping.diff"] = "lua/scim/mapping/diff.lua",
    ["scim.mapping.header"] = "lua/scim/mapping/header.lua",
    ["scim.mapping.path"] = "lua/scim/mapping/path.lua",
    ["scim.mapping.to_resource"] = "lua/scim/mapping/to_resource.lua",
    ["scim.mapping.to_row"] = "lua/scim/mapping/to_row.lua",
    ["scim.mapping.util"] = "lua/scim/mapping/util.lua",
    ["scim.dialects"] = "lua/scim/dialects/init.lua",
    ["scim.dialects.entra"] = "lua/scim/dialects/entra.lua",
    ["scim.dialects.scim2"] = "lua/scim/dialects/scim2.lua",
    ["scim.dialects.meta"] = "lua/scim/dialects/meta.lua",
    ["scim.dialects.workplace_v1"] = "lua/scim/dialects/workplace_v1.lua",
  },
  install = {
    bin = { ["scim-agent"] = "lua/scim_agent.lua" },
  },
  copy_directories = { "examples" },
}
test = {
  type = "busted",
}
