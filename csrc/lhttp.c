/*
** lhttp.c - scim.core HTTP binding: a thin layer over libcurl's multi
** interface.  C owns the curl handles and the response buffers; every
** decision (window, retries, backoff, rate) is made in lua/scim/http.lua.
**
** Objects:
**   scim.multi    a CURLM*; its user value 1 is the anchor table
**                 { [lightuserdata(CURL*)] = request } of transfers in flight.
**                 libcurl is driven by its socket interface: curl tells us
**                 (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION) which sockets to
**                 watch and when its next timer is due; we watch them with
**                 epoll (Linux) or poll() on a table of them (elsewhere) and
**                 hand curl only the sockets that changed, so the cost of a
**                 step does not grow with the number of transfers.
**   scim.request  a CURL* plus its header list, errbuf and response buffers;
**                 its user value 1 is the multi it is added to (or nil).
** No curl callback calls Lua: they only append to C buffers.
**
** Why this file is long: multis, requests and the socket watcher share the state
** curl's callbacks write into (sockets, timers, the body budget, the anchor
** table); the policy that would otherwise grow here lives in scim.http.
*/
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/epoll.h>
#include <sys/socket.h>
#define SCIM_EPOLL 1
#else
#define SCIM_EPOLL 0
#endif

#include <curl/curl.h>

#include "lscim.h"

#define MULTI_T "scim.multi"
#define REQUEST_T "scim.request"
#define URLBOX_T "scim.urlbox"
#define POOL_T "scim.easypool"

/* Default response size cap (64 MiB) and the per-transfer trace cap. */
#define DEFAULT_MAX_BODY ((lua_Integer)64 * 1024 * 1024)
#define TRACE_MAX ((size_t)256 * 1024)


/*
** {======================================================
** Growable byte buffers (malloc'd, owned by a request userdata)
** =======================================================
*/

typedef struct Buf {
  char *p;
  size_t len, cap;
} Buf;

/* Appends n bytes; returns 0 when out of memory (the buffer is unchanged). */
static int buf_add(Buf *b, const char *s, size_t n) {
  if (n > b->cap - b->len) {
    size_t cap = b->cap ? b->cap : 256;
    char *p;
    while (cap - b->len < n) {
      if (cap > ((size_t)-1) / 2) return 0;
      cap *= 2;
    }
    p = (char *)realloc(b->p, cap);
    if (p == NULL) return 0;
    b->p = p;
    b->cap = cap;
  }
  if (n > 0) memcpy(b->p + b->len, s, n);
  b->len += n;
  return 1;
}

static void buf_free(Buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* }====================================================== */


typedef struct Multi {
  CURLM *multi;   /* NULL once closed */
  int count;      /* requests anchored (added and not yet finished) */
  curl_off_t budget;      /* bytes all attached responses may hold; < 0: no cap */
  curl_off_t body_total;  /* bytes they hold now (<= budget) */
  int running;    /* transfers curl last said were running */
  double timer;   /* monotonic seconds at which curl's timer is due; < 0: none */
  int failed;     /* a socket could not be watched (out of memory) */
  /* What a wait polls: with epoll the one epoll fd (POLLIN when any socket
  ** is ready), else every socket curl asked us to watch. */
  struct pollfd *pfd;
  int npfd, cap;
#if SCIM_EPOLL
  int epfd;       /* -1 once closed */
  struct pollfd one;  /* pfd points here */
  /* fds[fd]: SOCK_* bits.  A socket curl stops watching stays in the epoll
  ** set with its events, so the next transfer on a kept connection costs no
  ** epoll_ctl at all; perform drops it at its first event, the kernel when
  ** it is closed.  Every socket curl opens goes through on_open, which
  ** clears the bits a closed socket of the same number left. */
  unsigned char *fds;
  int nfds;
  struct epoll_event ev[64];  /* what multi:poll saw, for the next perform */
  int nev;
#endif
} Multi;

/* Seconds from a monotonic clock. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct Request {
  CURL *easy;                    /* NULL once closed */
  struct curl_slist *headers;
  Multi *multi;                  /* the multi it is added to, or NULL */
  Buf body;                      /* response body */
  Buf head;                      /* raw header lines of the last response */
  Buf trace;                     /* redacted trace lines, '\n'-terminated */
  curl_off_t max_body;           /* < 0: no cap */
  int too_large;                 /* the write callback hit max_body */
  int over_budget;               /* 1: the multi's budget was full; 2: alone over it */
  curl_off_t counted;            /* body bytes counted in multi->body_total */
  int oom;                       /* a callback ran out of memory */
  char errbuf[CURL_ERROR_SIZE];
} Request;


/*
** {======================================================
** CURLcode names (the `code` of the fail triple)
** =======================================================
*/

#define CE(name) case CURLE_##name: return #name;

static const char *curlcode_name(CURLcode rc) {
  switch (rc) {
    CE(OK) CE(UNSUPPORTED_PROTOCOL) CE(FAILED_INIT) CE(URL_MALFORMAT)
    CE(NOT_BUILT_IN) CE(COULDNT_RESOLVE_PROXY) CE(COULDNT_RESOLVE_HOST)
    CE(COULDNT_CONNECT) CE(WEIRD_SERVER_REPLY) CE(REMOTE_ACCESS_DENIED)
    CE(HTTP2) CE(PARTIAL_FILE) CE(HTTP_RETURNED_ERROR) CE(WRITE_ERROR)
    CE(UPLOAD_FAILED) CE(READ_ERROR) CE(OUT_OF_MEMORY) CE(OPERATION_TIMEDOUT)
    CE(RANGE_ERROR) CE(HTTP_POST_ERROR) CE(SSL_CONNECT_ERROR)
    CE(BAD_DOWNLOAD_RESUME) CE(FILE_COULDNT_READ_FILE) CE(FUNCTION_NOT_FOUND)
    CE(ABORTED_BY_CALLBACK) CE(BAD_FUNCTION_ARGUMENT) CE(INTERFACE_FAILED)
    CE(TOO_MANY_REDIRECTS) CE(UNKNOWN_OPTION) CE(GOT_NOTHING)
    CE(SSL_ENGINE_NOTFOUND) CE(SSL_ENGINE_SETFAILED) CE(SEND_ERROR)
    CE(RECV_ERROR) CE(SSL_CERTPROBLEM) CE(SSL_CIPHER)
    CE(PEER_FAILED_VERIFICATION) CE(BAD_CONTENT_ENCODING)
    CE(FILESIZE_EXCEEDED) CE(USE_SSL_FAILED) CE(SEND_FAIL_REWIND)
    CE(SSL_ENGINE_INITFAILED) CE(LOGIN_DENIED) CE(SSL_CACERT_BADFILE)
    CE(SSL_SHUTDOWN_FAILED) CE(AGAIN) CE(SSL_CRL_BADFILE) CE(SSL_ISSUER_ERROR)
    CE(CHUNK_FAILED) CE(NO_CONNECTION_AVAILABLE) CE(SSL_PINNEDPUBKEYNOTMATCH)
    CE(SSL_INVALIDCERTSTATUS) CE(HTTP2_STREAM) CE(RECURSIVE_API_CALL)
    CE(AUTH_ERROR)
#if LIBCURL_VERSION_NUM >= 0x074900
    CE(HTTP3) CE(QUIC_CONNECT_ERROR)
#endif
#if LIBCURL_VERSION_NUM >= 0x074900
    CE(PROXY)
#endif
#if LIBCURL_VERSION_NUM >= 0x074d00
    CE(SSL_CLIENTCERT)
#endif
#if LIBCURL_VERSION_NUM >= 0x075400
    CE(UNRECOVERABLE_POLL)
#endif
    default: return "CURL_ERROR";
  }
}

#undef CE

/* }====================================================== */


/*
** {======================================================
** curl callbacks: no Lua in here, only C buffers
** =======================================================
*/

/* Returning less than n fails the transfer (CURLE_WRITE_ERROR); the flags
** say why.  n > 0 here: curl never delivers empty chunks. */
static size_t on_write(char *data, size_t size, size_t nmemb, void *ud) {
  Request *r = (Request *)ud;
  Multi *m = r->multi;
  size_t n = size * nmemb;  /* size is 1 (curl_write_callback) */
  /* body.len <= max_body holds, so the subtraction cannot wrap */
  if (r->max_body >= 0 && (curl_off_t)n > r->max_body - (curl_off_t)r->body.len) {
    r->too_large = 1;  /* fail the transfer cleanly instead of growing */
    return 0;
  }
  /* the same for the multi's budget over every response it holds */
  if (m != NULL && m->budget >= 0 && (curl_off_t)n > m->budget - m->body_total) {
    r->over_budget = (curl_off_t)n > m->budget - r->counted ? 2 : 1;
    return 0;
  }
  if (!buf_add(&r->body, data, n)) {
    r->oom = 1;
    return 0;
  }
  if (m != NULL) {
    m->body_total += (curl_off_t)n;
    r->counted += (curl_off_t)n;
  }
  return n;
}

/* Gives back to r's multi the body bytes r held (r is leaving it). */
static void uncount(Request *r) {
  if (r->multi != NULL) r->multi->body_total -= r->counted;
  r->counted = 0;
}

/* One call per header line.  A status line starts a new response (after a
** 100 Continue or a proxy's CONNECT reply), so only the last one is kept. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud) {
  Request *r = (Request *)ud;
  size_t n = size * nmemb;
  if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) r->head.len = 0;
  if (!buf_add(&r->head, data, n)) {
    r->oom = 1;
    return 0;
  }
  return n;
}

static int prefix_ci(const char *s, size_t len, const char *prefix) {
  size_t i, n = strlen(prefix);
  if (len < n) return 0;
  for (i = 0; i < n; i++) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != prefix[i]) return 0;
  }
  return 1;
}

/* Header names whose values are secrets: the value becomes "[redacted]". */
static const char *const secret_headers[] = {
  "authorization:", "proxy-authorization:", "cookie:", "set-cookie:", NULL
};

static void trace_add(Request *r, const char *s, size_t n) {
  if (n > TRACE_MAX - r->trace.len) return;  /* cap: drop, never grow */
  if (!buf_add(&r->trace, s, n)) r->oom = 1;
}

/* Splits a block into lines, prefixes each with `mark` and redacts secret
** header values when `headers` is set. */
static void trace_lines(Request *r, const char *mark, const char *data,
                        size_t size, int headers) {
  size_t i = 0;
  while (i < size) {
    size_t j = i, len;
    while (j < size && data[j] != '\n' && data[j] != '\r') j++;
    len = j - i;
    if (len > 0) {
      int k, secret = 0;
      trace_add(r, mark, strlen(mark));
      for (k = 0; headers && secret_headers[k] != NULL; k++) {
        if (prefix_ci(data + i, len, secret_headers[k])) {
          size_t nlen = strlen(secret_headers[k]);
          trace_add(r, data + i, nlen);
          trace_add(r, " [redacted]", 11);
          secret = 1;
          break;
        }
      }
      if (!secret) trace_add(r, data + i, len);
      trace_add(r, "\n", 1);
    }
    i = j + 1;
  }
}

static int on_debug(CURL *h, curl_infotype type, char *data, size_t size,
                    void *ud) {
  Request *r = (Request *)ud;
  char line[64];
  (void)h;
  switch (type) {
    case CURLINFO_TEXT:
      trace_lines(r, "* ", data, size, 1);
      break;
    case CURLINFO_HEADER_OUT:
      trace_lines(r, "> ", data, size, 1);
      break;
    case CURLINFO_HEADER_IN:
      trace_lines(r, "< ", data, size, 1);
      break;
    case CURLINFO_DATA_OUT:
    case CURLINFO_DATA_IN:  /* bodies hold personal data: sizes only */
      snprintf(line, sizeof(line), "%s [%lu bytes data]\n",
               type == CURLINFO_DATA_OUT ? ">" : "<", (unsigned long)size);
      trace_add(r, line, strlen(line));
      break;
    default:  /* TLS records: noise */
      break;
  }
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** scim.request
** =======================================================
*/

static Request *checkrequest(lua_State *L, int idx) {
  Request *r = (Request *)luaL_checkudata(L, idx, REQUEST_T);
  if (r->easy == NULL) luaL_error(L, "attempt to use a closed " REQUEST_T);
  return r;
}

/*
** Takes request `idx` out of its multi, if any, and drops the anchor.
** Never raises and calls no Lua code, so __gc can use it.  [-0, +0, -]
*/
static void request_detach(lua_State *L, Request *r, int idx) {
  idx = lua_absindex(L, idx);
  if (r->multi == NULL) return;
  if (r->multi->multi != NULL && r->easy != NULL)
    curl_multi_remove_handle(r->multi->multi, r->easy);
  uncount(r);
  r->multi->count--;
  r->multi = NULL;
  if (lua_getiuservalue(L, idx, 1) == LUA_TUSERDATA) {  /* the multi */
    if (lua_getiuservalue(L, -1, 1) == LUA_TTABLE) {    /* its anchors */
      lua_pushnil(L);
      lua_rawsetp(L, -2, (void *)r->easy);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, idx, 1);
}

/*
** {======================================================
** A pool of idle easy handles
** A new handle costs a large calloc and curl's receive buffers, and its
** free makes malloc consolidate: at thousands of requests a second that was
** a tenth of the agent's CPU.  A closed request's handle is reset (every
** option back to its default; connections live in the multi) and kept for
** the next request.  One pool per Lua state, in the registry.
** =======================================================
*/

#define POOL_MAX 64

typedef struct EasyPool {
  int n;
  int closed;                    /* finalized: handles go straight to cleanup */
  CURL *h[POOL_MAX];
} EasyPool;

static const char pool_key = 'p';

/* The state's pool, or NULL (none yet, or finalized). */
static EasyPool *easy_pool(lua_State *L) {
  EasyPool *p;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &pool_key);
  p = (EasyPool *)lua_touserdata(L, -1);
  lua_pop(L, 1);  /* the registry keeps it alive */
  return (p != NULL && !p->closed) ? p : NULL;
}

static CURL *easy_take(lua_State *L) {
  EasyPool *p = easy_pool(L);
  if (p != NULL && p->n > 0) return p->h[--p->n];
  return curl_easy_init();
}

static void easy_give(lua_State *L, CURL *easy) {
  EasyPool *p = easy_pool(L);
  if (p != NULL && p->n < POOL_MAX) {
    curl_easy_reset(easy);
    p->h[p->n++] = easy;
  } else {
    curl_easy_cleanup(easy);
  }
}

static int pool_gc(lua_State *L) {
  EasyPool *p = (EasyPool *)lua_touserdata(L, 1);
  p->closed = 1;
  while (p->n > 0) curl_easy_cleanup(p->h[--p->n]);
  return 0;
}

/* }====================================================== */

/* The one close for :close(), __close and __gc.  Idempotent. */
static int request_close(lua_State *L) {
  Request *r = (Request *)luaL_checkudata(L, 1, REQUEST_T);
  request_detach(L, r, 1);
  if (r->easy != NULL) {
    easy_give(L, r->easy);
    r->easy = NULL;
  }
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  buf_free(&r->body);
  buf_free(&r->head);
  buf_free(&r->trace);
  return 0;
}

#define SETOPT(L, r, opt, val) \
  setopt_check(L, curl_easy_setopt((r)->easy, opt, val), #opt)

static void setopt_check(lua_State *L, CURLcode rc, const char *name) {
  if (rc == CURLE_OUT_OF_MEMORY) luaL_error(L, "not enough memory");
  if (rc != CURLE_OK)
    luaL_error(L, "cannot set %s: %s", name, curl_easy_strerror(rc));
}

/* Field `key` of the options table at 1 as a duration in ms, or -1. */
static long opt_ms(lua_State *L, const char *key) {
  long ms = -1;
  if (lua_getfield(L, 1, key) != LUA_TNIL) {
    int ok;
    lua_Number s = lua_tonumberx(L, -1, &ok);
    if (!ok || !(s >= 0) || s > 86400 * 365)
      luaL_error(L, "bad option '%s' (non-negative number of seconds expected)", key);
    /* a year in ms does not fit a 32-bit long: saturate there */
    ms = s * 1000 >= (lua_Number)LONG_MAX ? LONG_MAX : (long)(s * 1000 + 0.5);
    if (ms == 0 && s > 0) ms = 1;  /* 0 means "no timeout" to curl */
  }
  lua_pop(L, 1);
  return ms;
}

/* How opt_string checks a value: any bytes, a C string for curl (which
** would cut it at a NUL), or a header value (no CR or LF either). */
enum { STR_BYTES, STR_C, STR_HEADER };

/* A header name is an RFC 9110 token; a value has no CR, LF or NUL. */
static int valid_name(const char *s, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 32 || c >= 127 || strchr("\"(),/:;<=>?@[\\]{}", c) != NULL) return 0;
  }
  return 1;
}

static int valid_value(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
  return 1;
}

/* Checks the string at `idx` as option `key` (see STR_*); the value itself
** may be a secret, so messages never show it.  [-0, +0, v] */
static const char *check_string(lua_State *L, int idx, const char *key, int kind,
                                size_t *len) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  if (kind == STR_C && memchr(s, '\0', n) != NULL)
    luaL_error(L, "bad option '%s' (contains NUL)", key);
  if (kind == STR_HEADER && !valid_value(s, n))
    luaL_error(L, "bad option '%s' (contains CR, LF or NUL)", key);
  if (len != NULL) *len = n;
  return s;
}

/*
** Field `key` of the options table at 1 as a string, or NULL when absent.
** The value stays on the stack for the caller to pop: a string that came
** from an __index metamethod has no other anchor.  [-0, +1, v]
*/
static const char *opt_string(lua_State *L, const char *key, int kind, size_t *len) {
  int t = lua_getfield(L, 1, key);
  if (t == LUA_TNIL) return NULL;
  if (t != LUA_TSTRING)
    luaL_error(L, "bad option '%s' (string expected, got %s)", key, luaL_typename(L, -1));
  return check_string(L, -1, key, kind, len);
}

static int opt_bool(lua_State *L, const char *key) {
  int t = lua_getfield(L, 1, key), v;
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "bad option '%s' (boolean expected, got %s)", key, luaL_typename(L, -1));
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Field `key` of the table at idx as a count in [0, INT_MAX], or -1. */
static long opt_count(lua_State *L, int idx, const char *key) {
  long v = -1;
  if (lua_getfield(L, idx, key) != LUA_TNIL) {
    int ok;
    lua_Integer i = lua_tointegerx(L, -1, &ok);
    if (!ok || i < 0 || i > INT_MAX)
      luaL_error(L, "bad option '%s' (non-negative integer expected)", key);
    v = (long)i;
  }
  lua_pop(L, 1);
  return v;
}

static void check_keys(lua_State *L, int idx, const char *const keys[],
                       const char *what) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int i, found = 0;
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      for (i = 0; keys[i] != NULL; i++)
        if (strcmp(keys[i], k) == 0) { found = 1; break; }
      if (!found) luaL_error(L, "%s: unknown option '%s'", what, k);
    }
    else
      luaL_error(L, "%s: option names must be strings", what);
    lua_pop(L, 1);
  }
}

/*
** Raises for the invalid header name s[0, n).  The name is cut at its first
** ':' (and at 64 bytes): a caller who put a whole "Authorization: Bearer
** ..." line in the name must not see the token echoed.  [-0, +1, v]
*/
static void bad_name(lua_State *L, const char *s, size_t n) {
  const char *colon = (const char *)memchr(s, ':', n);
  size_t k = colon != NULL ? (size_t)(colon - s) : n;
  if (k > 64) k = 64;
  lua_pushlstring(L, s, k);
  if (k < n)
    luaL_error(L, "bad header name '%s...' (contains ':'; the value belongs in"
               " headers[name])", lua_tostring(L, -1));
  luaL_error(L, "bad header name '%s'", lua_tostring(L, -1));
}

/* Builds the header list from options.headers = { Name = value, ... }.
** The list lives in the request, so a raise here leaks nothing. */
static void set_headers(lua_State *L, Request *r) {
  struct curl_slist *l;
  if (lua_getfield(L, 1, "headers") == LUA_TNIL) {
    lua_pop(L, 1);
  }
  else {
    int t = lua_absindex(L, -1);
    if (!lua_istable(L, t))
      luaL_error(L, "bad option 'headers' (table expected, got %s)", luaL_typename(L, t));
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
      size_t nl, vl;
      const char *name, *value;
      if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
        luaL_error(L, "bad option 'headers' (name = string value pairs expected)");
      name = lua_tolstring(L, -2, &nl);
      value = lua_tolstring(L, -1, &vl);  /* numbers convert in place */
      if (!valid_name(name, nl)) bad_name(L, name, nl);
      if (!valid_value(value, vl))  /* the value may be a secret: not shown */
        luaL_error(L, "bad value for header '%s' (contains CR, LF or NUL)", name);
      if (vl == 0)
        lua_pushfstring(L, "%s;", name);  /* curl's way to send it empty */
      else
        lua_pushfstring(L, "%s: %s", name, value);
      l = curl_slist_append(r->headers, lua_tostring(L, -1));
      if (l == NULL) luaL_error(L, "not enough memory");
      r->headers = l;
      lua_pop(L, 2);  /* line, value */
    }
    lua_pop(L, 1);  /* headers table */
  }
  /* Never wait for a 100 Continue: bodies are small. */
  l = curl_slist_append(r->headers, "Expect:");
  if (l == NULL) luaL_error(L, "not enough memory");
  r->headers = l;
  SETOPT(L, r, CURLOPT_HTTPHEADER, r->headers);
}

static const char *const request_keys[] = {
  "method", "url", "headers", "body", "timeout", "connect_timeout",
  "low_speed_limit", "low_speed_time", "ca_file", "insecure", "proxy",
  "noproxy", "max_body", "user_agent", "accept_encoding", "trace",
  "verbose", "forbid_reuse", NULL
};

static void set_method(lua_State *L, Request *r) {
  size_t mlen = 0, blen = 0;
  const char *method = opt_string(L, "method", STR_BYTES, &mlen);
  const char *body = opt_string(L, "body", STR_BYTES, &blen);
  if (method == NULL) {
    method = body ? "POST" : "GET";
    mlen = strlen(method);
  }
  if (!valid_name(method, mlen))  /* a token: no NUL for curl to cut at */
    luaL_error(L, "bad option 'method' ('%s' is not an HTTP method)", method);
  if (strcmp(method, "HEAD") == 0) {
    SETOPT(L, r, CURLOPT_NOBODY, 1L);
  }
  else if (strcmp(method, "GET") == 0 && body == NULL) {
    SETOPT(L, r, CURLOPT_HTTPGET, 1L);
  }
  else {
    if (body != NULL) {
      /* size first, so COPYPOSTFIELDS copies exactly blen bytes */
      SETOPT(L, r, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
      SETOPT(L, r, CURLOPT_COPYPOSTFIELDS, body);
    }
    if (strcmp(method, "POST") != 0)
      SETOPT(L, r, CURLOPT_CUSTOMREQUEST, method);
  }
  lua_pop(L, 2);  /* method, body */
}

/*
** core.request{ method=, url=, headers=, body=, ... } -> request
** [-0, +1, e]
*/
static int core_request(lua_State *L) {
  Request *r;
  const char *s;
  long v;
  lua_Integer max_body = DEFAULT_MAX_BODY;
  int t, trace, verbose;
  luaL_checktype(L, 1, LUA_TTABLE);
  check_keys(L, 1, request_keys, "request");
  r = (Request *)lua_newuserdatauv(L, sizeof(Request), 1);
  memset(r, 0, sizeof(Request));
  luaL_setmetatable(L, REQUEST_T);  /* from now on __gc owns what we acquire */
  r->easy = easy_take(L);
  if (r->easy == NULL) return luaL_error(L, "cannot create a curl handle");
  SETOPT(L, r, CURLOPT_NOSIGNAL, 1L);
  SETOPT(L, r, CURLOPT_ERRORBUFFER, r->errbuf);
  SETOPT(L, r, CURLOPT_WRITEFUNCTION, on_write);
  SETOPT(L, r, CURLOPT_WRITEDATA, (void *)r);
  SETOPT(L, r, CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(L, r, CURLOPT_HEADERDATA, (void *)r);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(L, r, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(L, r, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(L, r, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  SETOPT(L, r, CURLOPT_TCP_KEEPALIVE, 1L);

  s = opt_string(L, "url", STR_C, NULL);
  if (s == NULL) return luaL_error(L, "request: option 'url' is required");
  SETOPT(L, r, CURLOPT_URL, s);
  if (strncmp(s, "https:", 6) == 0)  /* let a new transfer wait to share an h2 connection */
    SETOPT(L, r, CURLOPT_PIPEWAIT, 1L);
  lua_pop(L, 1);
  set_method(L, r);
  set_headers(L, r);

  if ((v = opt_ms(L, "timeout")) >= 0) SETOPT(L, r, CURLOPT_TIMEOUT_MS, v);
  if ((v = opt_ms(L, "connect_timeout")) >= 0)
    SETOPT(L, r, CURLOPT_CONNECTTIMEOUT_MS, v);
  if ((v = opt_count(L, 1, "low_speed_limit")) >= 0)
    SETOPT(L, r, CURLOPT_LOW_SPEED_LIMIT, v);
  if ((v = opt_count(L, 1, "low_speed_time")) >= 0)
    SETOPT(L, r, CURLOPT_LOW_SPEED_TIME, v);

  /* curl copies every string option, so each is popped right after */
  if ((s = opt_string(L, "ca_file", STR_C, NULL)) != NULL) SETOPT(L, r, CURLOPT_CAINFO, s);
  lua_pop(L, 1);
  if (opt_bool(L, "insecure")) {  /* explicit switch only */
    SETOPT(L, r, CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(L, r, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if ((s = opt_string(L, "proxy", STR_C, NULL)) != NULL) SETOPT(L, r, CURLOPT_PROXY, s);
  lua_pop(L, 1);
  if ((s = opt_string(L, "noproxy", STR_C, NULL)) != NULL) SETOPT(L, r, CURLOPT_NOPROXY, s);
  lua_pop(L, 1);
  if ((s = opt_string(L, "user_agent", STR_HEADER, NULL)) != NULL)
    SETOPT(L, r, CURLOPT_USERAGENT, s);
  lua_pop(L, 1);

  t = lua_getfield(L, 1, "accept_encoding");
  if (t == LUA_TNIL || (t == LUA_TBOOLEAN && lua_toboolean(L, -1)))
    SETOPT(L, r, CURLOPT_ACCEPT_ENCODING, "");  /* every encoding curl decodes */
  else if (t == LUA_TSTRING)
    SETOPT(L, r, CURLOPT_ACCEPT_ENCODING,
           check_string(L, -1, "accept_encoding", STR_HEADER, NULL));
  else if (t != LUA_TBOOLEAN)
    return luaL_error(L, "bad option 'accept_encoding' (string or boolean expected)");
  lua_pop(L, 1);

  if (lua_getfield(L, 1, "max_body") != LUA_TNIL) {
    int ok;
    max_body = lua_tointegerx(L, -1, &ok);
    if (!ok) return luaL_error(L, "bad option 'max_body' (integer expected)");
  }
  lua_pop(L, 1);
  r->max_body = max_body < 0 ? -1 : (curl_off_t)max_body;
  if (r->max_body >= 0)  /* refuse early when Content-Length says too big */
    SETOPT(L, r, CURLOPT_MAXFILESIZE_LARGE, r->max_body);

  if (opt_bool(L, "forbid_reuse")) {  /* one connection per request */
    SETOPT(L, r, CURLOPT_FRESH_CONNECT, 1L);
    SETOPT(L, r, CURLOPT_FORBID_REUSE, 1L);
  }
  trace = opt_bool(L, "trace");  /* both checked, whichever is set */
  verbose = opt_bool(L, "verbose");
  if (trace || verbose) {
    SETOPT(L, r, CURLOPT_DEBUGFUNCTION, on_debug);
    SETOPT(L, r, CURLOPT_DEBUGDATA, (void *)r);
    SETOPT(L, r, CURLOPT_VERBOSE, 1L);
  }
  return 1;
}

/* req:status() -> HTTP status of the last response (0 before one). */
static int request_status(lua_State *L) {
  Request *r = checkrequest(L, 1);
  long code = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
  lua_pushinteger(L, code);
  return 1;
}

/* req:body() -> the response body received so far. */
static int request_body(lua_State *L) {
  Request *r = checkrequest(L, 1);
  lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
  return 1;
}

static void trim(const char **s, const char **e) {
  while (*s < *e && (**s == ' ' || **s == '\t')) (*s)++;
  while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t')) (*e)--;
}

/*
** Pushes a copy of buffer b and returns it: the parsers below read the
** copy, because any allocation may run a finalizer that closes the request
** and frees b.  [-0, +1, m]
*/
static const char *push_copy(lua_State *L, const Buf *b, size_t *len) {
  lua_pushlstring(L, b->len > 0 ? b->p : "", b->len);  /* copied before any GC step */
  return lua_tolstring(L, -1, len);
}

/*
** req:headers() -> { [lower-case name] = value } of the last response;
** repeated fields are joined with ", " (RFC 9110 5.3).  [-0, +1, m]
*/
static int request_headers(lua_State *L) {
  Request *r = checkrequest(L, 1);
  size_t len;
  const char *p, *end;
  lua_settop(L, 1);
  p = push_copy(L, &r->head, &len);  /* 2: raw header lines */
  end = p + len;
  lua_newtable(L);                   /* 3: result */
  while (p < end) {
    const char *eol = p, *colon, *v, *ve;
    while (eol < end && *eol != '\n') eol++;
    ve = eol;
    if (ve > p && ve[-1] == '\r') ve--;
    colon = (const char *)memchr(p, ':', (size_t)(ve - p));
    if (colon != NULL && colon > p && *p != ' ' && *p != '\t') {
      luaL_Buffer b;
      const char *c;
      char *name = luaL_buffinitsize(L, &b, (size_t)(colon - p));
      for (c = p; c < colon; c++)
        name[c - p] = (char)((*c >= 'A' && *c <= 'Z') ? *c - 'A' + 'a' : *c);
      luaL_pushresultsize(&b, (size_t)(colon - p));
      v = colon + 1;
      trim(&v, &ve);
      lua_pushvalue(L, -1);
      if (lua_rawget(L, -3) == LUA_TSTRING) {  /* repeated: join */
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      }
      else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    if (eol == end) break;  /* never form a pointer past end + 0 */
    p = eol + 1;
  }
  return 1;
}

/* req:trace() -> array of redacted trace lines since the last call. */
static int request_trace(lua_State *L) {
  Request *r = checkrequest(L, 1);
  size_t len;
  const char *p, *end;
  lua_Integer n = 0;
  lua_settop(L, 1);
  p = push_copy(L, &r->trace, &len);  /* 2: the lines */
  end = p + len;
  r->trace.len = 0;
  lua_newtable(L);                    /* 3: result */
  while (p < end) {
    const char *eol = (const char *)memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL) eol = end;  /* trace_add always ends lines; be safe */
    lua_pushlstring(L, p, (size_t)(eol - p));
    lua_rawseti(L, -2, ++n);
    if (eol == end) break;
    p = eol + 1;
  }
  return 1;
}

typedef struct InfoItem {
  CURLINFO what;
  const char *key;
} InfoItem;

static const InfoItem info_times[] = {  /* doubles, in seconds */
  {CURLINFO_TOTAL_TIME, "total_time"}, {CURLINFO_NAMELOOKUP_TIME, "namelookup_time"},
  {CURLINFO_CONNECT_TIME, "connect_time"}, {CURLINFO_APPCONNECT_TIME, "appconnect_time"},
  {CURLINFO_STARTTRANSFER_TIME, "starttransfer_time"}
};
static const InfoItem info_longs[] = {
  {CURLINFO_NUM_CONNECTS, "num_connects"}, {CURLINFO_PRIMARY_PORT, "primary_port"}
};
#define NTIMES (sizeof(info_times) / sizeof(info_times[0]))
#define NLONGS (sizeof(info_longs) / sizeof(info_longs[0]))

/*
** req:info() -> timings (seconds) and connection facts of the last transfer.
** Everything is read from curl before the first allocation: one may run a
** finalizer that closes the request.  [-0, +1, m]
*/
static int request_info(lua_State *L) {
  Request *r = checkrequest(L, 1);
  double d[NTIMES];
  long l[NLONGS], ver = 0;
  int dok[NTIMES], lok[NLONGS], vok, iok;
  char *ip = NULL, ipbuf[64];
  size_t i;
  for (i = 0; i < NTIMES; i++)
    dok[i] = curl_easy_getinfo(r->easy, info_times[i].what, &d[i]) == CURLE_OK;
  for (i = 0; i < NLONGS; i++)
    lok[i] = curl_easy_getinfo(r->easy, info_longs[i].what, &l[i]) == CURLE_OK;
  vok = curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &ver) == CURLE_OK;
  iok = curl_easy_getinfo(r->easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL;
  if (iok) snprintf(ipbuf, sizeof(ipbuf), "%s", ip);  /* owned by curl */
  lua_createtable(L, 0, (int)(NTIMES + NLONGS + 2));
  for (i = 0; i < NTIMES; i++) {
    if (!dok[i]) continue;
    lua_pushnumber(L, (lua_Number)d[i]);
    lua_setfield(L, -2, info_times[i].key);
  }
  for (i = 0; i < NLONGS; i++) {
    if (!lok[i]) continue;
    lua_pushinteger(L, (lua_Integer)l[i]);
    lua_setfield(L, -2, info_longs[i].key);
  }
  if (vok) {
    lua_pushstring(L, ver == CURL_HTTP_VERSION_2_0 ? "2" :
                      ver == CURL_HTTP_VERSION_1_1 ? "1.1" :
                      ver == CURL_HTTP_VERSION_1_0 ? "1.0" :
                      ver == 0 ? "none" : "3");
    lua_setfield(L, -2, "http_version");
  }
  if (iok) {
    lua_pushstring(L, ipbuf);
    lua_setfield(L, -2, "primary_ip");
  }
  return 1;
}

static int request_tostring(lua_State *L) {
  Request *r = (Request *)luaL_checkudata(L, 1, REQUEST_T);
  if (r->easy == NULL)
    lua_pushliteral(L, REQUEST_T " (closed)");
  else
    lua_pushfstring(L, REQUEST_T " (%p)", (void *)r);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** curl's socket and timer callbacks: no Lua, no curl calls
** =======================================================
*/

#if SCIM_EPOLL
#define SOCK_IN 1u       /* in the epoll set for EPOLLIN */
#define SOCK_OUT 2u      /* ... for EPOLLOUT */
#define SOCK_SET 4u      /* in the epoll set */
#define SOCK_WANTED 8u   /* curl watches it */

/* Makes fds[] cover fd; 0 when out of memory. */
static int fds_cover(Multi *m, int fd) {
  int n = m->nfds ? m->nfds : 64;
  unsigned char *p;
  while (n <= fd) {
    if (n > INT_MAX / 2) return 0;
    n *= 2;
  }
  p = (unsigned char *)realloc(m->fds, (size_t)n);
  if (p == NULL) return 0;
  memset(p + m->nfds, 0, (size_t)(n - m->nfds));
  m->fds = p;
  m->nfds = n;
  return 1;
}

/* Watches socket s for `what` (CURL_POLL_*), or stops watching it. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  Multi *m = (Multi *)userp;
  struct epoll_event ev;
  unsigned bits, events;
  (void)e;
  (void)socketp;
  if (s < 0) return 0;
  if (what == CURL_POLL_REMOVE) {  /* left in the set (see Multi.fds) */
    if (s < m->nfds) m->fds[s] &= (unsigned char)~SOCK_WANTED;
    return 0;
  }
  if (s >= m->nfds && !fds_cover(m, s)) {
    m->failed = 1;
    return -1;
  }
  bits = ((what & CURL_POLL_IN) ? SOCK_IN : 0u) | ((what & CURL_POLL_OUT) ? SOCK_OUT : 0u);
  if ((m->fds[s] & (SOCK_SET | SOCK_IN | SOCK_OUT)) == (SOCK_SET | bits)) {
    m->fds[s] |= SOCK_WANTED;  /* a kept connection, watched as before */
    return 0;
  }
  events = ((bits & SOCK_IN) ? EPOLLIN : 0u) | ((bits & SOCK_OUT) ? EPOLLOUT : 0u);
  memset(&ev, 0, sizeof(ev));
  ev.data.fd = s;
  ev.events = events;
  if (epoll_ctl(m->epfd, (m->fds[s] & SOCK_SET) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0
      && !(errno == ENOENT && epoll_ctl(m->epfd, EPOLL_CTL_ADD, s, &ev) == 0)
      && !(errno == EEXIST && epoll_ctl(m->epfd, EPOLL_CTL_MOD, s, &ev) == 0)) {
    m->fds[s] = 0;
    m->failed = 1;  /* reported by the next perform */
    return -1;
  }
  m->fds[s] = (unsigned char)(SOCK_SET | SOCK_WANTED | bits);
  return 0;
}

/* Opens every socket curl uses: a new socket may reuse a closed one's number. */
static curl_socket_t on_open(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
  Multi *m = (Multi *)clientp;
  int type = a->socktype;
  curl_socket_t s;
  (void)purpose;
#ifdef SOCK_CLOEXEC
  type |= SOCK_CLOEXEC;  /* a token command run later must not inherit it */
#endif
  s = socket(a->family, type, a->protocol);
  if (s >= 0 && s < m->nfds) m->fds[s] = 0;
  return s;
}
#else
/* The same with a table of pollfds for poll(). */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  Multi *m = (Multi *)userp;
  int i;
  (void)e;
  (void)socketp;
  for (i = 0; i < m->npfd && m->pfd[i].fd != s; i++) {}
  if (what == CURL_POLL_REMOVE) {
    if (i < m->npfd) m->pfd[i] = m->pfd[--m->npfd];
    return 0;
  }
  if (i == m->npfd) {
    if (m->npfd == m->cap) {
      int cap = m->cap ? 2 * m->cap : 16;
      struct pollfd *p = (struct pollfd *)realloc(m->pfd, (size_t)cap * sizeof(*p));
      if (p == NULL || cap < m->cap) {
        m->failed = 1;
        return -1;
      }
      m->pfd = p;
      m->cap = cap;
    }
    m->npfd++;
    m->pfd[i].fd = s;
  }
  m->pfd[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0)
                             | ((what & CURL_POLL_OUT) ? POLLOUT : 0));
  m->pfd[i].revents = 0;
  return 0;
}
#endif

/* curl's next timer: due in timeout_ms (0: now), or none (-1). */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  Multi *m = (Multi *)userp;
  (void)multi;
  m->timer = timeout_ms < 0 ? -1 : now_s() + (double)timeout_ms / 1000;
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** scim.multi
** =======================================================
*/

static Multi *checkmulti(lua_State *L, int idx) {
  Multi *m = (Multi *)luaL_checkudata(L, idx, MULTI_T);
  if (m->multi == NULL) luaL_error(L, "attempt to use a closed " MULTI_T);
  return m;
}

#define MSETOPT(L, m, opt, val) \
  setmopt_check(L, curl_multi_setopt((m)->multi, opt, val), #opt)

/* Raises for a failed multi call: out of memory as lauxlib does, anything
** else naming the call.  [-0, +1, v] */
static int multi_error(lua_State *L, const char *what, CURLMcode rc) {
  if (rc == CURLM_OUT_OF_MEMORY) return luaL_error(L, "not enough memory");
  return luaL_error(L, "%s: %s", what, curl_multi_strerror(rc));
}

static void setmopt_check(lua_State *L, CURLMcode rc, const char *name) {
  if (rc == CURLM_OUT_OF_MEMORY) luaL_error(L, "not enough memory");
  if (rc != CURLM_OK)
    luaL_error(L, "cannot set %s: %s", name, curl_multi_strerror(rc));
}

static const char *const multi_keys[] = {
  "max_connects", "max_host_connections", "max_total_connections", "body_budget", NULL
};

/*
** core.multi{ max_connects=, max_host_connections=, max_total_connections=,
**             body_budget= (bytes all responses held by the multi may total) }
** [-0, +1, e]
*/
static int core_multi(lua_State *L) {
  Multi *m;
  long v;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  check_keys(L, 1, multi_keys, "multi");
  m = (Multi *)lua_newuserdatauv(L, sizeof(Multi), 1);
  memset(m, 0, sizeof(Multi));
  m->timer = -1;
  m->budget = -1;
#if SCIM_EPOLL
  m->epfd = -1;  /* before anything can raise: 0 is a real fd */
#endif
  luaL_setmetatable(L, MULTI_T);
  lua_newtable(L);  /* anchors of requests in flight */
  lua_setiuservalue(L, -2, 1);
  m->multi = curl_multi_init();
  if (m->multi == NULL) return luaL_error(L, "cannot create a curl multi handle");
#if SCIM_EPOLL
  m->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (m->epfd < 0) return luaL_error(L, "epoll_create1: %s", strerror(errno));
  m->one.fd = m->epfd;
  m->one.events = POLLIN;
  m->pfd = &m->one;
  m->npfd = 1;
#endif
  MSETOPT(L, m, CURLMOPT_SOCKETFUNCTION, on_socket);
  MSETOPT(L, m, CURLMOPT_SOCKETDATA, (void *)m);
  MSETOPT(L, m, CURLMOPT_TIMERFUNCTION, on_timer);
  MSETOPT(L, m, CURLMOPT_TIMERDATA, (void *)m);
  MSETOPT(L, m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  if ((v = opt_count(L, 1, "max_connects")) >= 0)
    MSETOPT(L, m, CURLMOPT_MAXCONNECTS, v);
  if ((v = opt_count(L, 1, "max_host_connections")) >= 0)
    MSETOPT(L, m, CURLMOPT_MAX_HOST_CONNECTIONS, v);
  if ((v = opt_count(L, 1, "max_total_connections")) >= 0)
    MSETOPT(L, m, CURLMOPT_MAX_TOTAL_CONNECTIONS, v);
  if (lua_getfield(L, 1, "body_budget") != LUA_TNIL) {  /* bytes; may pass INT_MAX */
    int ok;
    lua_Integer b = lua_tointegerx(L, -1, &ok);
    if (!ok || b < 0) return luaL_error(L, "bad option 'body_budget' (non-negative integer expected)");
    m->budget = (curl_off_t)b;
  }
  lua_pop(L, 1);
  return 1;
}

/*
** The one close for :close(), __close and __gc.  Detaches every request
** first (finalizer order is not guaranteed), then frees the multi.
*/
static int multi_close(lua_State *L) {
  Multi *m = (Multi *)luaL_checkudata(L, 1, MULTI_T);
  if (m->multi == NULL) return 0;
  if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      Request *r = (Request *)luaL_testudata(L, -1, REQUEST_T);
      if (r != NULL && r->multi == m) {
        if (r->easy != NULL) curl_multi_remove_handle(m->multi, r->easy);
        uncount(r);
        r->multi = NULL;
        lua_pushnil(L);
        lua_setiuservalue(L, -2, 1);
      }
      lua_pop(L, 1);  /* value; the key stays for lua_next */
    }
  }
  lua_pop(L, 1);
  lua_pushnil(L);  /* drop every anchor at once */
  lua_setiuservalue(L, 1, 1);
  m->count = 0;
  curl_multi_cleanup(m->multi);  /* may still tell on_socket to stop watching */
  m->multi = NULL;
#if SCIM_EPOLL
  if (m->epfd >= 0) close(m->epfd);
  m->epfd = -1;
  free(m->fds);
  m->fds = NULL;
  m->nfds = m->nev = 0;
#else
  free(m->pfd);
#endif
  m->pfd = NULL;
  m->npfd = m->cap = 0;
  m->timer = -1;
  return 0;
}

/*
** multi:add(req) -> true | fail, msg, code.  Anchors req until next_done
** reports it.  A finished request can be added again: it is sent again with
** the same options (a retry is the same request).  [-0, +1|3, e]
*/
static int multi_add(lua_State *L) {
  Multi *m = checkmulti(L, 1);
  Request *r = checkrequest(L, 2);
  CURLMcode rc;
  luaL_argcheck(L, r->multi == NULL, 2, "request already added to a multi");
#if SCIM_EPOLL
  SETOPT(L, r, CURLOPT_OPENSOCKETFUNCTION, on_open);  /* see Multi.fds */
  SETOPT(L, r, CURLOPT_OPENSOCKETDATA, (void *)m);
#endif
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawsetp(L, -2, (void *)r->easy);  /* anchor before curl knows it */
  lua_pop(L, 1);
  r->body.len = r->head.len = r->trace.len = 0;
  r->too_large = r->oom = r->over_budget = 0;
  r->counted = 0;
  r->errbuf[0] = '\0';
  rc = curl_multi_add_handle(m->multi, r->easy);
  if (rc != CURLM_OK) {
    lua_getiuservalue(L, 1, 1);
    lua_pushnil(L);
    lua_rawsetp(L, -2, (void *)r->easy);
    luaL_pushfail(L);
    lua_pushstring(L, curl_multi_strerror(rc));
    lua_pushliteral(L, "MULTI_ADD");
    return 3;
  }
  r->multi = m;
  m->count++;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 2, 1);  /* the request keeps its multi alive */
  lua_pushboolean(L, 1);
  return 1;
}

/*
** multi:perform() -> number of transfers still running.  Hands curl the
** sockets that are ready now (no waiting) and, when due, its timer.
*/
static int multi_perform(lua_State *L) {
  Multi *m = checkmulti(L, 1);
  CURLMcode rc = CURLM_OK;
  int i, n;
#if SCIM_EPOLL
  struct epoll_event *ev = m->ev;
  if (m->nev > 0) {  /* the wait just before saw these */
    n = m->nev;
    m->nev = 0;
  } else {
    n = epoll_wait(m->epfd, ev, 64, 0);
  }
  for (i = 0; i < n && rc == CURLM_OK; i++) {
    int flags = 0;
    int fd = ev[i].data.fd;
    if (fd >= m->nfds || !(m->fds[fd] & SOCK_WANTED)) {  /* kept, and not watched */
      epoll_ctl(m->epfd, EPOLL_CTL_DEL, fd, &ev[i]);
      if (fd < m->nfds) m->fds[fd] = 0;
      continue;
    }
    if (ev[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
    if (ev[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
    if (ev[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
    rc = curl_multi_socket_action(m->multi, ev[i].data.fd, flags, &m->running);
  }
#else
  /* a socket curl stops watching mid-loop changes the table: work on a copy */
  struct pollfd ready[64];
  n = 0;
  if (m->npfd > 0 && poll(m->pfd, (nfds_t)m->npfd, 0) > 0) {
    for (i = 0; i < m->npfd && n < 64; i++)
      if (m->pfd[i].revents != 0) ready[n++] = m->pfd[i];
  }
  for (i = 0; i < n && rc == CURLM_OK; i++) {
    int flags = 0;
    if (ready[i].revents & POLLIN) flags |= CURL_CSELECT_IN;
    if (ready[i].revents & POLLOUT) flags |= CURL_CSELECT_OUT;
    if (ready[i].revents & (POLLERR | POLLHUP | POLLNVAL)) flags |= CURL_CSELECT_ERR;
    rc = curl_multi_socket_action(m->multi, ready[i].fd, flags, &m->running);
  }
#endif
  /* the timer: curl may set it due again at once, so a few rounds */
  for (i = 0; i < 8 && rc == CURLM_OK && m->timer >= 0 && m->timer <= now_s(); i++) {
    m->timer = -1;
    rc = curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &m->running);
  }
  if (rc != CURLM_OK) return multi_error(L, "curl_multi_socket_action", rc);
  if (m->failed) {
    m->failed = 0;
    return luaL_error(L, "not enough memory");
  }
  lua_pushinteger(L, m->running);
  return 1;
}

/* Lowers *ms to the time left before m's timer (never below 0). */
static void timer_ms(const Multi *m, double now, int *ms) {
  if (m->timer >= 0) {
    double left = (m->timer - now) * 1000;
    int t = left <= 0 ? 0 : left >= *ms ? *ms : (int)(left + 0.999);
    if (t < *ms) *ms = t;
  }
}

/* Seconds at 2 as whole ms, rounded up: never wake just before a timer. */
static int wait_ms(lua_State *L, int idx) {
  lua_Number t = luaL_optnumber(L, idx, 0);
  luaL_argcheck(L, t >= 0 && t <= 86400, idx, "timeout out of range [0, 86400]");
  return (int)(t * 1000 + 0.999);
}

/*
** Waits on fds[0, n) at most ms; an interrupted wait counts as a wake-up.
** Returns the number of fds with activity.
*/
static int wait_fds(lua_State *L, struct pollfd *fds, int n, int ms) {
  int r = poll(fds, (nfds_t)n, ms);
  if (r < 0 && errno != EINTR) return luaL_error(L, "poll: %s", strerror(errno));
  return r < 0 ? 0 : r;
}

/*
** multi:poll(timeout_s) -> number of sockets with activity.
** Waits at most timeout_s seconds, less when curl's timer is due first;
** the full time when nothing is in flight (so it also serves as a sleep).
*/
static int multi_poll(lua_State *L) {
  Multi *m = checkmulti(L, 1);
  int ms = wait_ms(L, 2);
  timer_ms(m, now_s(), &ms);
#if SCIM_EPOLL
  {  /* the events are kept for the next perform: one wait, not two */
    int n = epoll_wait(m->epfd, m->ev, 64, ms);
    if (n < 0 && errno != EINTR) return luaL_error(L, "epoll_wait: %s", strerror(errno));
    m->nev = n < 0 ? 0 : n;
    lua_pushinteger(L, m->nev);
  }
#else
  lua_pushinteger(L, wait_fds(L, m->pfd, m->npfd, ms));
#endif
  return 1;
}

/*
** core.wait(multis, timeout_s) -> number of sockets with activity.
** One wait on the sockets and timers of several multis (an array), so one
** scheduler can sleep on several engines at once.  [-0, +1, v]
*/
static int core_wait(lua_State *L) {
  lua_Integer i, len;
  int ms = wait_ms(L, 2), n = 0, total = 0;
  double now = now_s();
  struct pollfd *fds;
  luaL_checktype(L, 1, LUA_TTABLE);
  len = luaL_len(L, 1);
  for (i = 1; i <= len; i++) {
    Multi *o;
    lua_rawgeti(L, 1, i);
    o = (Multi *)luaL_testudata(L, -1, MULTI_T);
    if (o == NULL || o->multi == NULL)
      return luaL_argerror(L, 1, lua_pushfstring(L, "item %I is not an open " MULTI_T, i));
    if (o->npfd > INT_MAX - total) return luaL_error(L, "too many sockets");
    total += o->npfd;
    timer_ms(o, now, &ms);
    lua_pop(L, 1);
  }
  /* a userdata box: freed by the GC even if a later call raises */
  fds = (struct pollfd *)lua_newuserdatauv(L, (size_t)(total > 0 ? total : 1)
                                           * sizeof(struct pollfd), 0);
  for (i = 1; i <= len; i++) {  /* checked again: the allocation may have run a finalizer */
    Multi *o;
    lua_rawgeti(L, 1, i);
    o = (Multi *)luaL_testudata(L, -1, MULTI_T);
    if (o != NULL && o->multi != NULL && o->npfd > 0 && o->npfd <= total - n) {
      memcpy(fds + n, o->pfd, (size_t)o->npfd * sizeof(struct pollfd));
      n += o->npfd;
    }
    lua_pop(L, 1);
  }
  lua_pushinteger(L, wait_fds(L, fds, n, ms));
  return 1;
}

/*
** multi:next_done() -> req, true | req, fail, msg, code | nil (none).
** The CURLMsg is read before remove_handle (which invalidates it); the
** request is then unanchored.  [-0, +1|2|4, m]
*/
static int multi_next_done(lua_State *L) {
  Multi *m = checkmulti(L, 1);
  CURLMsg *msg;
  int left;
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);  /* 2: anchors */
  while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
    CURL *e;
    CURLcode rc;
    Request *r;
    if (msg->msg != CURLMSG_DONE) continue;
    e = msg->easy_handle;
    rc = msg->data.result;
    curl_multi_remove_handle(m->multi, e);
    lua_rawgetp(L, 2, (void *)e);  /* 3: the request */
    r = (Request *)luaL_testudata(L, 3, REQUEST_T);
    if (r == NULL || r->easy != e) {  /* not ours: cannot happen */
      lua_pop(L, 1);
      continue;
    }
    uncount(r);
    r->multi = NULL;
    m->count--;
    lua_pushnil(L);
    lua_rawsetp(L, 2, (void *)e);
    lua_pushnil(L);
    lua_setiuservalue(L, 3, 1);
    if (rc == CURLE_OK) {
      lua_pushboolean(L, 1);
      return 2;
    }
    luaL_pushfail(L);
    if (r->over_budget == 2) {
      lua_pushfstring(L, "response body larger than the engine's body budget (%I bytes)",
                      (lua_Integer)m->budget);
      lua_pushliteral(L, "BODY_TOO_LARGE");
    }
    else if (r->over_budget) {
      lua_pushfstring(L, "the responses in flight would exceed the engine's body budget"
                      " (%I bytes)", (lua_Integer)m->budget);
      lua_pushliteral(L, "BODY_BUDGET");
    }
    else if (r->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
      lua_pushfstring(L, "response body larger than max_body (%I bytes)",
                      (lua_Integer)r->max_body);
      lua_pushliteral(L, "BODY_TOO_LARGE");
    }
    else if (r->oom) {
      lua_pushliteral(L, "not enough memory for the response");
      lua_pushliteral(L, "OUT_OF_MEMORY");
    }
    else {
      size_t n = strlen(r->errbuf);
      long proxy_status = 0;
      while (n > 0 && (r->errbuf[n - 1] == '\n' || r->errbuf[n - 1] == '\r')) n--;
      if (n > 0)
        lua_pushlstring(L, r->errbuf, n);
      else
        lua_pushstring(L, curl_easy_strerror(rc));
      /* A proxy that answered CONNECT with an error status said no: that is
      ** its policy, not a network fault (libcurl 7.x calls it RECV_ERROR). */
      if (curl_easy_getinfo(e, CURLINFO_HTTP_CONNECTCODE, &proxy_status) != CURLE_OK)
        proxy_status = 0;
      lua_pushstring(L, proxy_status >= 300 ? "PROXY" : curlcode_name(rc));
    }
    return 4;
  }
  return 0;
}

/* multi:count() -> number of requests added and not yet reported done. */
static int multi_count(lua_State *L) {
  Multi *m = checkmulti(L, 1);
  lua_pushinteger(L, m->count);
  return 1;
}

static int multi_tostring(lua_State *L) {
  Multi *m = (Multi *)luaL_checkudata(L, 1, MULTI_T);
  if (m->multi == NULL)
    lua_pushliteral(L, MULTI_T " (closed)");
  else
    lua_pushfstring(L, MULTI_T " (%p)", (void *)m);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Module functions: URL parsing, clocks, dates
** =======================================================
*/

/* Holds curl_url memory while Lua strings are made from it, so a memory
** error while pushing leaks nothing (__gc frees). */
typedef struct UrlBox {
  CURLU *u;
  char *part;
} UrlBox;

static void urlbox_free(UrlBox *b) {
  curl_free(b->part);
  b->part = NULL;
  if (b->u != NULL) curl_url_cleanup(b->u);
  b->u = NULL;
}

static int urlbox_gc(lua_State *L) {
  urlbox_free((UrlBox *)luaL_checkudata(L, 1, URLBOX_T));
  return 0;
}

/* Sets result[key] (the table at index 2) to a part of the URL. */
static void url_field(lua_State *L, UrlBox *b, CURLUPart what, unsigned flags,
                      const char *key) {
  if (curl_url_get(b->u, what, &b->part, flags) == CURLUE_OK && b->part != NULL) {
    if (what == CURLUPART_PORT)
      lua_pushinteger(L, (lua_Integer)strtol(b->part, NULL, 10));
    else
      lua_pushstring(L, b->part);
    lua_setfield(L, 2, key);
  }
  curl_free(b->part);
  b->part = NULL;
}

/*
** core.parse_url(url) -> { scheme=, host=, port=, path=, query= }
**                      | fail, msg, "URL_MALFORMAT".
** Uses curl's own parser, so the host checked is the host curl connects to.
** [-0, +1|3, m]
*/
static int core_parse_url(lua_State *L) {
  size_t len;
  const char *url = luaL_checklstring(L, 1, &len);
  UrlBox *b;
  CURLUcode rc;
  if (memchr(url, '\0', len) != NULL) {  /* curl would parse a prefix */
    luaL_pushfail(L);
    lua_pushliteral(L, "bad URL: contains NUL");
    lua_pushliteral(L, "URL_MALFORMAT");
    return 3;
  }
  lua_settop(L, 1);
  lua_newtable(L);                                        /* 2: result */
  b = (UrlBox *)lua_newuserdatauv(L, sizeof(UrlBox), 0);  /* 3: box */
  memset(b, 0, sizeof(UrlBox));
  luaL_setmetatable(L, URLBOX_T);
  b->u = curl_url();
  if (b->u == NULL) return luaL_error(L, "not enough memory");
  rc = curl_url_set(b->u, CURLUPART_URL, url, 0);
  if (rc == CURLUE_OK) {
    url_field(L, b, CURLUPART_SCHEME, 0, "scheme");
    url_field(L, b, CURLUPART_HOST, 0, "host");
    url_field(L, b, CURLUPART_PORT, CURLU_DEFAULT_PORT, "port");
    url_field(L, b, CURLUPART_PATH, 0, "path");
    url_field(L, b, CURLUPART_QUERY, 0, "query");
  }
  urlbox_free(b);
  if (rc != CURLUE_OK) {
    luaL_pushfail(L);
#if LIBCURL_VERSION_NUM >= 0x075000
    lua_pushfstring(L, "bad URL: %s", curl_url_strerror(rc));
#else
    lua_pushliteral(L, "bad URL");
#endif
    lua_pushliteral(L, "URL_MALFORMAT");
    return 3;
  }
  lua_settop(L, 2);
  return 1;
}

/* core.monotime() -> seconds from a monotonic clock (for timers). */
static int core_monotime(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* core.walltime() -> seconds since the epoch, sub-second resolution. */
static int core_walltime(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* core.getdate(s) -> epoch seconds of an HTTP date, or nil. */
static int core_getdate(lua_State *L) {
  time_t t = curl_getdate(luaL_checkstring(L, 1), NULL);
  if (t == (time_t)-1) return 0;
  lua_pushinteger(L, (lua_Integer)t);
  return 1;
}

/* }====================================================== */


static const luaL_Reg request_meta[] = {
  {"__gc", request_close},
  {"__close", request_close},
  {"__tostring", request_tostring},
  {NULL, NULL}
};

static const luaL_Reg request_methods[] = {
  {"status", request_status},
  {"body", request_body},
  {"headers", request_headers},
  {"trace", request_trace},
  {"info", request_info},
  {"close", request_close},
  {NULL, NULL}
};

static const luaL_Reg multi_meta[] = {
  {"__gc", multi_close},
  {"__close", multi_close},
  {"__tostring", multi_tostring},
  {NULL, NULL}
};

static const luaL_Reg multi_methods[] = {
  {"add", multi_add},
  {"perform", multi_perform},
  {"poll", multi_poll},
  {"next_done", multi_next_done},
  {"count", multi_count},
  {"close", multi_close},
  {NULL, NULL}
};

static const luaL_Reg pool_meta[] = {
  {"__gc", pool_gc},
  {NULL, NULL}
};

static const luaL_Reg urlbox_meta[] = {
  {"__gc", urlbox_gc},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"multi", core_multi},
  {"wait", core_wait},
  {"request", core_request},
  {"parse_url", core_parse_url},
  {"monotime", core_monotime},
  {"walltime", core_walltime},
  {"getdate", core_getdate},
  {NULL, NULL}
};

void scim_open_http(lua_State *L) {
  static int curl_ready = 0;
  static const luaL_Reg none[] = {{NULL, NULL}};
  if (!curl_ready) {  /* once per process, never cleaned up (lcurl.c) */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      luaL_error(L, "cannot initialize libcurl");
    curl_ready = 1;
  }
  scim_newclass(L, MULTI_T, multi_meta, multi_methods);
  scim_newclass(L, REQUEST_T, request_meta, request_methods);
  scim_newclass(L, URLBOX_T, urlbox_meta, none);
  scim_newclass(L, POOL_T, pool_meta, none);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &pool_key) == LUA_TNIL) {
    EasyPool *p = (EasyPool *)lua_newuserdatauv(L, sizeof(EasyPool), 0);
    p->n = p->closed = 0;
    luaL_setmetatable(L, POOL_T);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &pool_key);
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  {
    /* curl_version() would initialise LDAP/SASL just to name them (and
    ** leak doing so): build the short form from the version info. */
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    lua_pushfstring(L, "libcurl/%s%s%s", v->version, v->ssl_version ? " " : "",
                    v->ssl_version ? v->ssl_version : "");
    lua_setfield(L, -2, "curl_version");
  }
}
