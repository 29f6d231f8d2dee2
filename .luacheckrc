std = "lua54"
max_line_length = 100
include_files = { "lua/**/*.lua", "tests/**/*.lua", "examples/**/*.lua", "*.rockspec", ".busted" }
exclude_files = { "tests/server/node_modules/**" }
files["tests/**/*_spec.lua"] = { std = "+busted" }
files["*.rockspec"] = { std = "+rockspec" }
stds.rockspec = {
  globals = { "rockspec_format", "package", "version", "source", "description",
              "dependencies", "external_dependencies", "build", "test", "test_dependencies" },
}
