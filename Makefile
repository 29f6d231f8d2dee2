# scim-agent: build, test and tooling.  Variable names follow what LuaRocks
# passes to make, each with a Debian 12 default.
LUA          ?= lua5.4
LUA_INCDIR   ?= /usr/include/lua5.4
CURL_INCDIR  ?= /usr/include
CURL_LIBDIR  ?= /usr/lib/x86_64-linux-gnu
LIBFLAG      ?= -shared
CC           ?= cc
CFLAGS       ?= -O2 -g
BUSTED       ?= busted --lua=$(LUA)

WARN = -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -pedantic -Wshadow \
       -Wcast-qual -Wwrite-strings -Wundef -Wmissing-prototypes \
       -Wstrict-prototypes -Wc++-compat
ALL_CFLAGS = $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden -I$(LUA_INCDIR) -I$(CURL_INCDIR)

SRCS = csrc/lscim.c csrc/csv.c csrc/lcsv.c csrc/lhttp.c csrc/ljson.c csrc/ljsondec.c \
       csrc/lsys.c
HDRS = $(wildcard csrc/*.h)
CORE = build/scim/core.so

SAN_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
            -fno-sanitize-recover=all

# Debian packages the build and the tests need; `deps` installs only the
# missing ones, so it is a no-op on a prepared machine.
# gcc and libclang-rt-14-dev are named: with apt's recommends off, neither
# comes along (clang alone would become cc, without its sanitizer runtime).
DEB_PKGS = lua5.4 liblua5.4-dev lua-cjson libcurl4-openssl-dev lua-busted \
           luarocks lua-check gcc clang libclang-rt-14-dev valgrind cppcheck wrk curl

.PHONY: all build deps test check busted server-deps sanitize asan test-gc \
        lint fuzz bench demo install clean valgrind

all: build
build: $(CORE)

$(CORE): $(SRCS) $(HDRS)
	@mkdir -p build/scim
	$(CC) $(ALL_CFLAGS) $(LIBFLAG) -o $@ $(SRCS) -L$(CURL_LIBDIR) -lcurl

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The test SCIM server's npm packages, from its lock file.
server-deps:
	@if [ -f tests/server/package-lock.json ] && \
	   { [ ! -d tests/server/node_modules ] || [ tests/server/package-lock.json -nt tests/server/node_modules ]; }; then \
	  cd tests/server && npm ci --no-audit --no-fund --loglevel=error && touch node_modules; \
	fi

test: deps build server-deps check busted

busted: build
	$(BUSTED)

# The pure C tokenizer alone (no lua.h), under ASan+UBSan with leak checks.
check: build/csv_test
	build/csv_test

build/csv_test: tests/csv_test.c csrc/csv.c csrc/csv.h
	@mkdir -p build
	$(CC) $(WARN) $(SAN_FLAGS) -Icsrc -o $@ tests/csv_test.c csrc/csv.c

# The whole busted suite against a sanitizer build of the module.
sanitize asan: deps server-deps
	@mkdir -p build/asan/scim
	$(CC) $(WARN) $(SAN_FLAGS) -fPIC -I$(LUA_INCDIR) -I$(CURL_INCDIR) $(LIBFLAG) \
	  -o build/asan/scim/core.so $(SRCS) -L$(CURL_LIBDIR) -lcurl
	ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
	  SCIM_CPATH=build/asan/?.so $(BUSTED) --cpath='build/asan/?.so'

# The CSV and HTTP specs under valgrind's leak checker. --ignore-lua keeps
# busted in this process (.busted names lua5.4, which would re-exec it).
VALGRIND_SPECS ?= tests/csv_spec.lua tests/core_http_spec.lua tests/http_spec.lua \
                  tests/json_spec.lua tests/sys_spec.lua
valgrind: build
	valgrind --quiet --suppressions=tests/valgrind-curl.supp --leak-check=full \
	  --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
	  $(LUA) /usr/bin/busted --ignore-lua $(VALGRIND_SPECS)

# Every spec again with the collector running after each allocation step.
test-gc: build
	SCIM_TEST_GC=1 $(BUSTED)

lint: build
	luacheck -q lua tests examples *.rockspec
	@# -O2: some warnings (uninitialised use) need the optimiser's analysis.
	for f in $(SRCS); do \
	  $(CC) $(WARN) -Werror -O2 -fPIC -I$(LUA_INCDIR) -I$(CURL_INCDIR) -c -o /dev/null $$f || exit 1; \
	done
	$(CC) $(WARN) -Werror -O2 -c -o /dev/null csrc/csv.c  # the tokenizer alone, no lua.h
	@if command -v cppcheck >/dev/null; then cppcheck -q --enable=warning --error-exitcode=1 csrc; fi

FUZZ_SECONDS ?= 60
fuzz: deps
	@mkdir -p build/fuzz-corpus
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc -o build/csv_fuzz \
	  tests/fuzz/csv_fuzz.c csrc/csv.c
	build/csv_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz-corpus tests/fuzz/corpus

# The module again with the benchmark-only functions (core.csv_scan), which
# the production build leaves out; csv_bench.lua loads it from build/bench/.
BENCH_CORE = build/bench/scim/core.so
$(BENCH_CORE): $(SRCS) $(HDRS)
	@mkdir -p build/bench/scim
	$(CC) $(ALL_CFLAGS) -DSCIM_BENCH $(LIBFLAG) -o $@ $(SRCS) -L$(CURL_LIBDIR) -lcurl

bench: deps build server-deps $(BENCH_CORE)
	$(LUA) tests/bench/run.lua

demo: deps build server-deps
	$(LUA) tests/demo.lua

# Installs the rock (C module, Lua modules, the scim-agent command) into the
# system tree; `LUAROCKS_FLAGS=--local` installs for the current user only.
install: deps
	luarocks --lua-version=5.4 make --deps-mode=none $(LUAROCKS_FLAGS) scim-agent-scm-1.rockspec

clean:
	rm -rf build scim csrc/*.o  # scim/ and *.o: what luarocks make leaves in the tree
