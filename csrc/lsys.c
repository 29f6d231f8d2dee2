/*
** lsys.c - core.sys: process safety.
** SIGTERM and SIGHUP handled as lua.c handles Ctrl-C (the main thread raises
** "interrupted!" at its next instruction; a second signal ends the process), a pollable
** flag for code waiting in C, core dumps off, isatty, and a file's mode bits.
*/
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "lscim.h"

#define GUARD_T "scim.sys.guard"

static const struct { const char *name; int sig; } SIGNALS[] = {
  { "SIGTERM", SIGTERM }, { "SIGHUP", SIGHUP }, { "SIGINT", SIGINT }, { NULL, 0 }
};

/* The state whose main thread is interrupted, and the last signal caught (0: none). Both
   are written before a handler is installed, or by the handler alone. */
static lua_State *volatile target = NULL;
static volatile sig_atomic_t caught = 0;
static volatile sig_atomic_t installed[sizeof SIGNALS / sizeof SIGNALS[0]];

/* lua.c's lstop: the hook raises once, and removes itself. */
static void lstop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/*
** The handler (lua.c's laction): records the signal and sets a hook on the main thread,
** which the manual allows from a signal handler; no other Lua call. SA_RESETHAND has
** already restored the default action, so the same signal again ends the process.
*/
static void on_signal(int sig) {
  lua_State *L = target;
  caught = sig;
  if (L != NULL)
    lua_sethook(L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static const char *signal_name(int sig) {
  int i;
  for (i = 0; SIGNALS[i].name != NULL; i++)
    if (SIGNALS[i].sig == sig) return SIGNALS[i].name;
  return "signal";
}

/* nil, "<what>: <strerror>", "<ERRNO>" [-0, +3, m] */
static int sys_fail(lua_State *L, const char *what, int err) {
  static const struct { int e; const char *name; } names[] = {
    { ENOENT, "ENOENT" }, { EACCES, "EACCES" }, { EPERM, "EPERM" }, { ENOTDIR, "ENOTDIR" },
    { ELOOP, "ELOOP" }, { ENAMETOOLONG, "ENAMETOOLONG" }, { EINVAL, "EINVAL" },
    { EBADF, "EBADF" }, { EIO, "EIO" }, { ENOMEM, "ENOMEM" }, { 0, NULL }
  };
  int i;
  luaL_pushfail(L);
  lua_pushfstring(L, "%s: %s", what, strerror(err));
  for (i = 0; names[i].name != NULL && names[i].e != err; i++) {}
  lua_pushstring(L, names[i].name != NULL ? names[i].name : "ERRNO");
  return 3;
}

static void restore_defaults(void) {
  int i;
  for (i = 0; SIGNALS[i].name != NULL; i++) {
    if (installed[i]) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = SIG_DFL;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGNALS[i].sig, &sa, NULL);
      installed[i] = 0;
    }
  }
}

/* When the state that installed the handlers closes, they go, so none names a dead state. */
static int guard_gc(lua_State *L) {
  (void)L;
  restore_defaults();
  target = NULL;
  return 0;
}

/*
** sys.catch_signals([names]) -> true. Handles each signal in `names` (default
** {"SIGTERM", "SIGHUP"}; "SIGINT" may be named too) as lua.c handles Ctrl-C, for the
** main thread of this state, and clears the flag sys.signalled() reads. A signal ignored
** when this is called (nohup) stays ignored. One state per process: the last call wins.
** [-0, +1, v]
*/
static int sys_catch_signals(lua_State *L) {
  int want[sizeof SIGNALS / sizeof SIGNALS[0]] = { 0 };
  int i;
  if (lua_isnoneornil(L, 1)) {
    want[0] = want[1] = 1;
  } else {
    lua_Integer k, n;
    luaL_checktype(L, 1, LUA_TTABLE);
    n = luaL_len(L, 1);
    for (k = 1; k <= n; k++) {
      const char *s;
      lua_rawgeti(L, 1, k);
      s = lua_tostring(L, -1);
      for (i = 0; SIGNALS[i].name != NULL; i++)
        if (s != NULL && strcmp(s, SIGNALS[i].name) == 0) break;
      if (SIGNALS[i].name == NULL)
        return luaL_argerror(L, 1, lua_pushfstring(L, "item %I: expected \"SIGTERM\", "
                             "\"SIGHUP\" or \"SIGINT\"", k));
      want[i] = 1;
      lua_pop(L, 1);
    }
  }
  /* the guard lives as long as the state (registry), and goes with it */
  if (lua_getfield(L, LUA_REGISTRYINDEX, GUARD_T) == LUA_TNIL) {
    lua_newuserdatauv(L, 1, 0);
    lua_newtable(L);
    lua_pushcfunction(L, guard_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, GUARD_T);
  }
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  target = lua_tothread(L, -1);
  lua_pop(L, 1);
  caught = 0;
  for (i = 0; SIGNALS[i].name != NULL; i++) {
    struct sigaction sa, old;
    if (!want[i]) continue;
    /* ignored when the process started (nohup, `trap '' HUP`): it stays ignored */
    if (!installed[i] && sigaction(SIGNALS[i].sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
      continue;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* SA_RESTART: reads and writes go on; poll() (curl's wait) returns EINTR anyway */
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    if (sigaction(SIGNALS[i].sig, &sa, NULL) != 0) return sys_fail(L, "sigaction", errno);
    installed[i] = 1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* sys.signalled() -> "SIGTERM" | "SIGHUP" | "SIGINT" | nil: the last signal caught since
   sys.catch_signals. [-0, +1, -] */
static int sys_signalled(lua_State *L) {
  int sig = caught;
  if (sig == 0) lua_pushnil(L);
  else lua_pushstring(L, signal_name(sig));
  return 1;
}

/* sys.no_core_dumps() -> true | nil, msg, code: RLIMIT_CORE 0, and on Linux not dumpable
   (no core file, no ptrace attach by other users' processes). [-0, +1|3, m] */
static int sys_no_core_dumps(lua_State *L) {
  struct rlimit rl;
  rl.rlim_cur = rl.rlim_max = 0;
  if (setrlimit(RLIMIT_CORE, &rl) != 0) return sys_fail(L, "setrlimit(RLIMIT_CORE)", errno);
#ifdef __linux__
  if (prctl(PR_SET_DUMPABLE, 0L, 0L, 0L, 0L) != 0)
    return sys_fail(L, "prctl(PR_SET_DUMPABLE)", errno);
#endif
  lua_pushboolean(L, 1);
  return 1;
}

/* sys.core_dumps() -> allowed, dumpable, limit: whether a crash could write a core file;
   the Linux dumpable flag (true elsewhere); RLIMIT_CORE's soft limit in bytes (math.huge
   when unlimited). [-0, +3, -] */
static int sys_core_dumps(lua_State *L) {
  struct rlimit rl;
  int dumpable = 1;
#ifdef __linux__
  dumpable = prctl(PR_GET_DUMPABLE, 0L, 0L, 0L, 0L) == 1;
#endif
  if (getrlimit(RLIMIT_CORE, &rl) != 0) return sys_fail(L, "getrlimit(RLIMIT_CORE)", errno);
  lua_pushboolean(L, dumpable && rl.rlim_cur != 0);
  lua_pushboolean(L, dumpable);
  if (rl.rlim_cur == RLIM_INFINITY) lua_pushnumber(L, (lua_Number)HUGE_VAL);
  else lua_pushinteger(L, (lua_Integer)rl.rlim_cur);
  return 3;
}

/* sys.isatty(fd) -> boolean [-0, +1, v] */
static int sys_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 65535, 1, "not a file descriptor number");
  lua_pushboolean(L, isatty((int)fd) == 1);
  return 1;
}

/* sys.file_mode(path) -> mode, kind | nil, msg, code: stat()'s permission bits (e.g.
   0x180 = 0600; symbolic links followed) and "file", "directory" or "other". [-0, +2|3, m] */
static int sys_file_mode(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) return sys_fail(L, path, errno);
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory"
                                                                         : "other");
  return 2;
}

/*
** A run's lock: an open file holding a POSIX record lock (fcntl F_SETLK) over its whole
** length. The kernel drops the lock when the descriptor closes or the process ends however
** it ends (kill -9 included), so a lock can never be left stale.
*/
#define LOCK_T "scim.sys.lock"

typedef struct { int fd; } Lock;

static int lock_release(lua_State *L) {
  Lock *k = (Lock *)luaL_checkudata(L, 1, LOCK_T);
  if (k->fd >= 0) {
    close(k->fd);
    k->fd = -1;
  }
  return 0;
}

/*
** sys.lock(path) -> lock | nil, msg, "LOCKED" | nil, msg, code: takes the lock file at
** `path` (created 0600, never through a symbolic link) and writes our pid into it. When
** another process holds it: "LOCKED", its pid in the message. The lock is held until
** lock:release(), its collection, or the end of the process. [-0, +1|3, m]
*/
static int sys_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct flock fl;
  char pid[32];
  int fd, n;
  Lock *k = (Lock *)lua_newuserdatauv(L, sizeof(Lock), 0);
  k->fd = -1;
  luaL_setmetatable(L, LOCK_T);
  fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return sys_fail(L, path, errno);
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_SETLK, &fl) != 0) {
    int err = errno;
    if (err == EACCES || err == EAGAIN) {
      char held[32];
      ssize_t got = read(fd, held, sizeof held - 1);
      close(fd);
      held[got > 0 ? got : 0] = '\0';
      held[strcspn(held, "\n")] = '\0';
      luaL_pushfail(L);
      lua_pushfstring(L, "%s: another run holds this lock (pid %s)", path,
                      held[0] != '\0' ? held : "unknown");
      lua_pushliteral(L, "LOCKED");
      return 3;
    }
    close(fd);
    return sys_fail(L, path, err);
  }
  k->fd = fd;
  n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || write(fd, pid, (size_t)n) != (ssize_t)n)
    return sys_fail(L, path, errno);
  return 1;
}

void scim_open_sys(lua_State *L) {
  static const luaL_Reg lock_methods[] = {
    { "release", lock_release }, { "__gc", lock_release }, { "__close", lock_release },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "catch_signals", sys_catch_signals },
    { "signalled", sys_signalled },
    { "no_core_dumps", sys_no_core_dumps },
    { "core_dumps", sys_core_dumps },
    { "isatty", sys_isatty },
    { "file_mode", sys_file_mode },
    { "lock", sys_lock },
    { NULL, NULL }
  };
  if (luaL_newmetatable(L, LOCK_T)) {
    luaL_setfuncs(L, lock_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "sys");
}
