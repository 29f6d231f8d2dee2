/*
** lcsv.c - scim.core CSV binding: the "scim.csv.reader" userdata over the
** tokenizer in csv.c. The Lua face is lua/scim/csv.lua, which checks the
** options; this file trusts their types but not their values.
**
** A reader owns its tokenizer (allocated with the state's lua_Alloc, so its
** memory shows in collectgarbage("count")) and, for a path, its FILE*. Lua
** values it relies on are anchored in user values:
**   1 the source (string or file handle), 2 the header names as keys,
**   3 the row metatable (case-insensitive __index), 4 reader.header,
**   5 the source name used in messages, 6 opts.encoding (or nil).
**
** Why this file is long: it binds the whole of csv.h for Lua - the reader (rows as
** arrays or keyed tables, header, errors with positions), the writer's file
** creation (private temp files) and the encoding converter - and they share the
** error pushing and option reading at its top.
*/
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lscim.h"
#include "csv.h"

#define READER "scim.csv.reader"
#define BLOCK ((size_t)256 * 1024)  /* bytes read per fill */
#define ST_IO 100                   /* fetch: the source failed to read */

enum { UV_SOURCE = 1, UV_KEYS, UV_ROWMT, UV_HEADER, UV_NAME, UV_ENCODING,
       NUV = UV_ENCODING };

typedef struct reader {
  scim_csv *p;
  FILE *f;            /* NULL for a string source */
  luaL_Stream *stream;  /* a Lua file source (anchored), to see it closed */
  int own;            /* fclose(f) on close */
  int closed;
  int busy;           /* a row is being built (see push_row_line) */
  int eof;            /* finish was called */
  int io_errno;       /* errno of the failed read, with ST_IO */
  const char *s;      /* string source, anchored in UV_SOURCE */
  size_t slen, spos;
  int header;         /* the first record is the header */
  int array;          /* rows are arrays */
  int empty_nil;      /* unquoted empty fields are left out */
  size_t nsel;        /* opts.columns given: how many */
  int sel[];          /* their 0-based indexes (-1: not in the header);
                         the userdata is sized for nsel entries */
} reader;

/* {====================================================== helpers */

/* A table size hint: a count past INT_MAX (possible only with raised
** limits) would turn negative, so it gets no hint at all. */
static int hint(size_t n) {
  return n > (size_t)INT_MAX ? 0 : (int)n;
}

static reader *checkreader(lua_State *L, int idx) {
  reader *r = (reader *)luaL_checkudata(L, idx, READER);
  if (r->closed) luaL_error(L, "attempt to use a closed " READER);
  return r;
}

/* The POSIX name of an errno value, for fail triples' codes. */
static const char *errno_name(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EISDIR: return "EISDIR";
    case ENOTDIR: return "ENOTDIR";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ELOOP: return "ELOOP";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case EPERM: return "EPERM";
    case EEXIST: return "EEXIST";
    case EIO: return "EIO";
    default: return NULL;
  }
}

/* Pushes the fail triple nil, "path: strerror", errno code. [-0, +3, m] */
static int push_errno(lua_State *L, const char *path, int e) {
  const char *code = errno_name(e);
  luaL_pushfail(L);
  lua_pushfstring(L, "%s: %s", path, strerror(e));
  lua_pushstring(L, code ? code : "OPEN_FAILED");
  return 3;
}

/* Reads the next record into the tokenizer: SCIM_CSV_ROW, _END, an error,
** or ST_IO. Never raises. */
static int fetch(reader *r) {
  for (;;) {
    int st = scim_csv_next_row(r->p);
    if (st != SCIM_CSV_NEED_MORE) return st;
    if (r->eof) return SCIM_CSV_EMISUSE;  /* cannot happen: finish ends */
    if (r->f) {
      size_t avail, n;
      char *dst;
      if (r->stream && r->stream->closef == NULL) {  /* closed under us */
        r->io_errno = EBADF;
        return ST_IO;
      }
      dst = scim_csv_reserve(r->p, BLOCK, &avail);
      if (!dst) return scim_csv_error(r->p)->status;
      errno = 0;
      n = fread(dst, 1, BLOCK, r->f);
      if (n) {
        scim_csv_commit(r->p, n);
      } else if (ferror(r->f)) {
        r->io_errno = errno;
        return ST_IO;
      } else {
        scim_csv_finish(r->p);
        r->eof = 1;
      }
    } else {
      size_t n = r->slen - r->spos;
      if (n > BLOCK) n = BLOCK;
      if (n) {
        int fst = scim_csv_feed(r->p, r->s + r->spos, n);
        if (fst < 0) return fst;
        r->spos += n;
      } else {
        scim_csv_finish(r->p);
        r->eof = 1;
      }
    }
  }
}

static const char *status_code(int st) {
  switch (st) {
    case SCIM_CSV_ENOMEM: return "NOMEM";
    case SCIM_CSV_EQUOTE: return "QUOTE";
    case SCIM_CSV_EAFTERQUOTE: return "AFTER_QUOTE";
    case SCIM_CSV_EUNTERMINATED: return "UNTERMINATED";
    case SCIM_CSV_EFIELDSIZE: return "FIELD_TOO_LARGE";
    case SCIM_CSV_EROWSIZE: return "ROW_TOO_LARGE";
    case SCIM_CSV_ETOOMANY: return "TOO_MANY_FIELDS";
    case SCIM_CSV_EFIELDCOUNT: return "FIELD_COUNT";
    case SCIM_CSV_EUTF8: return "UTF8";
    case SCIM_CSV_ECONTROL: return "CONTROL";
    case SCIM_CSV_EBOM: return "BOM";
    case SCIM_CSV_EENCODING: return "ENCODING";
    case ST_IO: return "IO";
    default: return "CSV";
  }
}

/* The names of the C0 control characters. */
static const char *const control_names[32] = {
  "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "TAB", "LF", "VT",
  "FF", "CR", "SO", "SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB",
  "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US"
};

/*
** Pushes the message of error status `st` ("name:line:col: what") and
** returns its code. [-0, +1, m]
*/
static const char *push_error(lua_State *L, int ridx, reader *r, int st) {
  const scim_csv_error_info *e = scim_csv_error(r->p);
  lua_getiuservalue(L, ridx, UV_NAME);
  if (st == ST_IO) {
    lua_pushfstring(L, "%s: read error: %s", lua_tostring(L, -1),
                    r->io_errno ? strerror(r->io_errno) : "unknown error");
  } else if (st == SCIM_CSV_ENOMEM || st == SCIM_CSV_EMISUSE) {
    lua_pushfstring(L, "%s: %s", lua_tostring(L, -1), scim_csv_strerror(st));
  } else {
    const char *what;
    switch (st) {
      case SCIM_CSV_EQUOTE:
        what = "quote inside unquoted field (strict = false reads it as text)";
        break;
      case SCIM_CSV_EAFTERQUOTE:
        what = "unexpected character after closing quote"
               " (strict = false reads it as text)";
        break;
      case SCIM_CSV_EUNTERMINATED:
        what = "quoted field opened here is never closed (unterminated quote)";
        break;
      case SCIM_CSV_EFIELDSIZE: what = "field too large (max_field)"; break;
      case SCIM_CSV_EROWSIZE: what = "record too large (max_row)"; break;
      case SCIM_CSV_ETOOMANY: what = "too many fields (max_fields)"; break;
      case SCIM_CSV_EUTF8:
        what = "invalid UTF-8 (check_utf8 = false accepts it)";
        break;
      case SCIM_CSV_ECONTROL: {
        char cp[8];
        snprintf(cp, sizeof cp, "U+%04X", e->byte & 31u);
        what = lua_pushfstring(L, "control character %s (%s) in a value"
                               " (check_control = false accepts it)",
                               cp, control_names[e->byte & 31]);
        lua_insert(L, -2);  /* below the name, removed with it */
        break;
      }
      case SCIM_CSV_EBOM:
        lua_getiuservalue(L, ridx, UV_ENCODING);
        what = lua_pushfstring(L, "the file starts with a %s byte-order mark, but"
                               " encoding '%s' was given (leave the encoding out to"
                               " read it as %s)", e->bom, lua_tostring(L, -1), e->bom);
        lua_replace(L, -2);
        lua_insert(L, -2);
        break;
      case SCIM_CSV_EENCODING: {
        char b[8];
        const char *enc = scim_csv_encoding(r->p);
        lua_getiuservalue(L, ridx, UV_ENCODING);
        if (!enc) enc = lua_tostring(L, -1);
        snprintf(b, sizeof b, "0x%02X", e->byte & 0xFFu);
        if (e->incomplete)
          what = lua_pushfstring(L, "the input ends inside a %s character (byte %s at"
                                 " byte offset %I)", enc, b, (lua_Integer)e->offset);
        else
          what = lua_pushfstring(L, "invalid %s: byte %s (byte offset %I) is not a %s"
                                 " character (is the encoding right?)", enc, b,
                                 (lua_Integer)e->offset, enc);
        lua_replace(L, -2);
        lua_insert(L, -2);
        break;
      }
      default: what = scim_csv_strerror(st); break;
    }
    if (st == SCIM_CSV_EFIELDCOUNT)
      lua_pushfstring(L, "%s:%I:%I: row has %I fields, %s has %I",
                      lua_tostring(L, -1), (lua_Integer)e->line,
                      (lua_Integer)e->column, (lua_Integer)e->fields,
                      r->header ? "the header" : "the first row",
                      (lua_Integer)e->expected);
    else
      lua_pushfstring(L, "%s:%I:%I: %s", lua_tostring(L, -1),
                      (lua_Integer)e->line, (lua_Integer)e->column, what);
  }
  lua_remove(L, -2);  /* the name */
  if (st == SCIM_CSV_ECONTROL || st == SCIM_CSV_EBOM || st == SCIM_CSV_EENCODING)
    lua_remove(L, -2);  /* `what` */
  return status_code(st);
}

/* }====================================================== */

/* {====================================================== rows */

/*
** Pushes the record just fetched as a Lua table. The header keys and the
** row metatable are fetched once per call; only the selected columns (all
** by default) become strings. [-0, +1, m]
*/
static void push_row(lua_State *L, int ridx, reader *r) {
  size_t n, i;
  const scim_csv_field *f = scim_csv_row(r->p, &n);
  const int enil = r->empty_nil;
  if (r->array) {
    if (r->nsel) {
      lua_createtable(L, hint(r->nsel), 0);
      for (i = 0; i < r->nsel; i++) {
        int k = r->sel[i];
        if (k < 0 || (enil && f[k].len == 0 && !f[k].quoted)) continue;
        lua_pushlstring(L, f[k].data, f[k].len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
    } else {
      lua_createtable(L, hint(n), 0);
      for (i = 0; i < n; i++) {
        if (enil && f[i].len == 0 && !f[i].quoted) continue;
        lua_pushlstring(L, f[i].data, f[i].len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
    }
    return;
  }
  lua_getiuservalue(L, ridx, UV_KEYS);    /* keys */
  lua_getiuservalue(L, ridx, UV_ROWMT);   /* keys, mt */
  if (r->nsel) {
    lua_createtable(L, 0, hint(r->nsel));  /* keys, mt, row */
    for (i = 0; i < r->nsel; i++) {
      int k = r->sel[i];
      if (k < 0 || (enil && f[k].len == 0 && !f[k].quoted)) continue;
      lua_rawgeti(L, -3, (lua_Integer)k + 1);
      lua_pushlstring(L, f[k].data, f[k].len);
      lua_rawset(L, -3);
    }
  } else {
    lua_createtable(L, 0, hint(n));
    for (i = 0; i < n; i++) {
      if (enil && f[i].len == 0 && !f[i].quoted) continue;
      lua_rawgeti(L, -3, (lua_Integer)i + 1);
      lua_pushlstring(L, f[i].data, f[i].len);
      lua_rawset(L, -3);
    }
  }
  lua_pushvalue(L, -2);
  lua_setmetatable(L, -2);                /* keys, mt, row */
  lua_replace(L, -3);
  lua_pop(L, 1);
}

static int reader_close_(reader *r);

/*
** Pushes the row just fetched and its line. Field views point into the
** tokenizer, and any allocation may run a finalizer that calls
** reader:close() or reads again: while busy, close only marks the reader
** closed (the memory is released here) and reads raise. A memory error
** leaves busy set: the row is lost, so the reader stays unusable, and
** __gc frees it. [-0, +2, m]
*/
static void push_row_line(lua_State *L, reader *r) {
  size_t line;
  r->busy = 1;
  push_row(L, 1, r);
  line = scim_csv_row_line(r->p);
  r->busy = 0;
  if (r->closed) reader_close_(r);  /* closed by a finalizer meanwhile */
  lua_pushinteger(L, (lua_Integer)line);
}

/* The reader at idx, open and not building a row. [-0, +0, v] */
static reader *checkidle(lua_State *L, int idx) {
  reader *r = checkreader(L, idx);
  if (r->busy)
    luaL_error(L, "attempt to read a " READER " while it builds a row (a read from a"
               " finalizer, or after a memory error)");
  return r;
}

/*
** reader:read() -> row, line | nil at the end | nil, message, code.
** [-0, +(1|2|3), m]
*/
static int reader_read(lua_State *L) {
  reader *r = checkidle(L, 1);
  int st = fetch(r);
  if (st == SCIM_CSV_ROW) {
    push_row_line(L, r);
    return 2;
  }
  luaL_pushfail(L);
  if (st == SCIM_CSV_END) return 1;
  lua_pushstring(L, push_error(L, 1, r, st));
  return 3;
}

/* The generic-for iterator: row, line, or nothing at the end; raises on a
** parse error. The reader is upvalue 1, so the iterator also works called
** alone (e.g. by scim.run), not only with generic-for's state argument.
** [-0, +(0|2), e] */
static int reader_iter(lua_State *L) {
  reader *r;
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));  /* the reader at index 1 */
  r = checkidle(L, 1);
  int st = fetch(r);
  if (st == SCIM_CSV_ROW) {
    push_row_line(L, r);
    return 2;
  }
  if (st == SCIM_CSV_END) return 0;
  push_error(L, 1, r, st);
  return lua_error(L);
}

/* reader:rows() -> iterator, reader. [-0, +2, m] */
static int reader_rows(lua_State *L) {
  checkreader(L, 1);
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, reader_iter, 1);
  lua_pushvalue(L, 1);
  return 2;
}

/* }====================================================== */

/* {====================================================== header */

/* Pushes s[0, n) lower-cased (ASCII). [-0, +1, m] */
static void push_lower(lua_State *L, const char *s, size_t n) {
  luaL_Buffer b;
  char *d = luaL_buffinitsize(L, &b, n);
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    d[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  luaL_pushresultsize(&b, n);
}

/*
** Row __index: finds a column by any casing of its name. Upvalue 1 maps
** lower-cased names to names as written. [-0, +1, m]
*/
static int row_index(lua_State *L) {
  size_t n;
  const char *k;
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  k = lua_tolstring(L, 2, &n);
  push_lower(L, k, n);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TSTRING) return 0;
  lua_rawget(L, 1);
  return 1;
}

/*
** Fails the open: closes the reader and turns the message on the stack top
** into the fail triple nil, message, code. [-1, +3, m]
*/
static int header_fail(lua_State *L, reader *r, const char *code) {
  lua_pushnil(L);
  lua_insert(L, -2);
  lua_pushstring(L, code);
  reader_close_(r);
  return 3;
}

/*
** Reads the header record: trims names, rejects empty and duplicate
** (case-insensitively) ones, builds the keys, the row metatable and
** reader.header, and resolves opts.columns (at index `copt`, or 0).
** Returns 0, or the 3 values of a fail triple pushed. [-0, +(0|3), m]
*/
static int read_header(lua_State *L, int ridx, reader *r, int copt) {
  size_t n, i, line;
  const scim_csv_field *f;
  int st = fetch(r), keys, lower, header;
  if (st != SCIM_CSV_ROW) {
    const char *code = "NO_HEADER";
    if (st == SCIM_CSV_END) {
      lua_getiuservalue(L, ridx, UV_NAME);
      lua_pushfstring(L, "%s: no header line (empty file)", lua_tostring(L, -1));
      lua_remove(L, -2);
    } else {
      code = push_error(L, ridx, r, st);
    }
    return header_fail(L, r, code);
  }
  f = scim_csv_row(r->p, &n);
  line = scim_csv_row_line(r->p);
  lua_createtable(L, hint(n), 0);
  keys = lua_gettop(L);
  lua_createtable(L, 0, hint(n));
  lower = lua_gettop(L);
  lua_createtable(L, hint(n), 0);
  header = lua_gettop(L);
  for (i = 0; i < n; i++) {
    const char *s = f[i].data;
    size_t len = f[i].len;
    while (len && (*s == ' ' || *s == '\t')) { s++; len--; }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    lua_getiuservalue(L, ridx, UV_NAME);
    if (len == 0) {
      if (i > 0 && i + 1 < n) {
        lua_rawgeti(L, keys, (lua_Integer)i);
        lua_pushfstring(L, "%s:%I: empty name for column %I (after column %I '%s')",
                        lua_tostring(L, -2), (lua_Integer)line, (lua_Integer)i + 1,
                        (lua_Integer)i, lua_tostring(L, -1));
      } else {
        lua_pushfstring(L, "%s:%I: empty name for column %I of %I",
                        lua_tostring(L, -1), (lua_Integer)line, (lua_Integer)i + 1,
                        (lua_Integer)n);
      }
      return header_fail(L, r, "EMPTY_HEADER");
    }
    lua_pop(L, 1);
    lua_pushlstring(L, s, len);           /* name */
    push_lower(L, s, len);                /* name, lname */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, lower) == LUA_TSTRING) {  /* name, lname, other */
      lua_Integer j;
      for (j = 1; j <= (lua_Integer)i; j++) {
        lua_rawgeti(L, keys, j);
        if (lua_rawequal(L, -1, -2)) { lua_pop(L, 1); break; }
        lua_pop(L, 1);
      }
      lua_getiuservalue(L, ridx, UV_NAME);
      lua_pushfstring(L, "%s:%I: duplicate column name: column %I '%s' and column %I"
                      " '%s' (names compare case-insensitively)",
                      lua_tostring(L, -1), (lua_Integer)line, j, lua_tostring(L, -2),
                      (lua_Integer)i + 1, lua_tostring(L, -4));
      return header_fail(L, r, "DUPLICATE_HEADER");
    }
    lua_pop(L, 1);                        /* name, lname */
    lua_pushvalue(L, -2);
    lua_rawset(L, lower);                 /* name */
    lua_pushvalue(L, -1);
    lua_rawseti(L, header, (lua_Integer)i + 1);
    lua_rawseti(L, keys, (lua_Integer)i + 1);
  }
  /* opts.columns -> indexes */
  for (i = 0; i < r->nsel; i++) {
    size_t len;
    const char *s;
    r->sel[i] = -1;
    if (lua_rawgeti(L, copt, (lua_Integer)i + 1) != LUA_TSTRING) {
      lua_pop(L, 1);  /* a hole past the facade's ipairs check: matches nothing */
      continue;
    }
    s = lua_tolstring(L, -1, &len);
    push_lower(L, s, len);
    if (lua_rawget(L, lower) == LUA_TSTRING) {
      lua_Integer j;
      for (j = 1; j <= (lua_Integer)n; j++) {
        lua_rawgeti(L, keys, j);
        if (lua_rawequal(L, -1, -2)) { r->sel[i] = (int)j - 1; lua_pop(L, 1); break; }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 2);
  }
  lua_setiuservalue(L, ridx, UV_HEADER);  /* keys, lower */
  lua_createtable(L, 0, 1);               /* keys, lower, mt */
  lua_pushvalue(L, lower);
  lua_pushcclosure(L, row_index, 1);
  lua_setfield(L, -2, "__index");
  lua_setiuservalue(L, ridx, UV_ROWMT);   /* keys, lower */
  lua_pop(L, 1);
  lua_setiuservalue(L, ridx, UV_KEYS);
  return 0;
}

/* }====================================================== */

/* {====================================================== open/close */

static int getbool(lua_State *L, int t, const char *k, int def) {
  int v = def;
  if (lua_getfield(L, t, k) != LUA_TNIL) v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static size_t getsize(lua_State *L, int t, const char *k) {
  lua_Integer v = 0;
  if (lua_getfield(L, t, k) != LUA_TNIL) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v <= 0) luaL_error(L, "option '%s' must be a positive integer", k);
  }
  lua_pop(L, 1);
  return (size_t)v;
}

/* Releases the tokenizer and the file: the one close. Idempotent. */
static int reader_close_(reader *r) {
  if (r->p) { scim_csv_free(r->p); r->p = NULL; }
  if (r->f && r->own) fclose(r->f);
  r->f = NULL;
  r->closed = 1;
  return 0;
}

/* __gc: nothing can be building a row of an unreachable reader (a stale
** busy flag is left by a memory error), so it always releases. */
static int reader_gc(lua_State *L) {
  reader_close_((reader *)luaL_checkudata(L, 1, READER));
  return 0;
}

/* __close: as reader:close(), without a result. [-0, +0, -] */
static int reader_tbc(lua_State *L) {
  reader *r = (reader *)luaL_checkudata(L, 1, READER);
  if (r->busy) r->closed = 1;  /* push_row_line (or __gc) releases */
  else reader_close_(r);
  return 0;
}

/* reader:close() -> true. Idempotent, never raises. [-0, +1, -] */
static int reader_close(lua_State *L) {
  reader_tbc(L);
  lua_pushboolean(L, 1);
  return 1;
}

/*
** core.csv_open(kind, source, opts) -> reader | nil, message, code.
** kind is "path", "stdin", "file" (a Lua file handle) or "string".
** [-0, +(1|3), e]
*/
static int csv_open(lua_State *L) {
  static const char *const kinds[] = { "path", "stdin", "file", "string", NULL };
  int kind = luaL_checkoption(L, 1, NULL, kinds), ridx, copt = 0;
  size_t nsel = 0;
  scim_csv_opts o;
  reader *r;
  luaL_checktype(L, 3, LUA_TTABLE);
  if (lua_getfield(L, 3, "columns") == LUA_TTABLE) {
    copt = lua_gettop(L);
    nsel = (size_t)luaL_len(L, copt);
    if (nsel > 65536) return luaL_error(L, "too many columns selected");
  }
  r = (reader *)lua_newuserdatauv(L, sizeof(reader) + nsel * sizeof(int), NUV);
  memset(r, 0, sizeof *r);
  r->closed = 1;                          /* until the tokenizer exists */
  luaL_setmetatable(L, READER);
  ridx = lua_gettop(L);
  memset(&o, 0, sizeof o);
  if (lua_getfield(L, 3, "delimiter") == LUA_TSTRING) {
    size_t len;
    const char *d = lua_tolstring(L, -1, &len);
    if (len != 1 || *d == '"' || *d == '\r' || *d == '\n')
      return luaL_error(L, "option 'delimiter' must be one character other than"
                        " a quote, CR or LF");
    o.delimiter = *d;
  }
  lua_pop(L, 1);
  o.lenient = getbool(L, 3, "lenient", 0);
  o.check_utf8 = getbool(L, 3, "check_utf8", 1);
  o.allow_control = !getbool(L, 3, "check_control", 1);
  o.max_field = getsize(L, 3, "max_field");
  o.max_row = getsize(L, 3, "max_row");
  o.max_fields = getsize(L, 3, "max_fields");
  o.fields = SCIM_CSV_FIELDS_FIRST;
  o.alloc = lua_getallocf(L, &o.alloc_ud);
  if (lua_getfield(L, 3, "encoding") == LUA_TSTRING) {
    o.encoding = lua_tostring(L, -1);
    if (!scim_csv_encoding_known(o.encoding)) {
      luaL_pushfail(L);
      lua_pushfstring(L, "unknown encoding '%s' (iconv does not know it; e.g. utf-8,"
                      " cp1252, latin1, utf-16, utf-16le, utf-16be, utf-32)", o.encoding);
      lua_pushliteral(L, "UNKNOWN_ENCODING");
      return 3;
    }
  }
  lua_setiuservalue(L, ridx, UV_ENCODING);  /* o.encoding stays valid: anchored */
  r->header = getbool(L, 3, "header", 1);
  r->array = getbool(L, 3, "array", 0) || !r->header;
  r->empty_nil = getbool(L, 3, "empty_is_nil", 0);
  r->nsel = r->header ? nsel : 0;
  /* the name used in messages */
  if (lua_getfield(L, 3, "name") != LUA_TSTRING) {
    lua_pop(L, 1);
    if (kind == 0) lua_pushvalue(L, 2);
    else lua_pushstring(L, kind == 1 ? "<stdin>" : kind == 2 ? "<file>" : "<string>");
  }
  lua_setiuservalue(L, ridx, UV_NAME);
  switch (kind) {
    case 0: {  /* path */
      const char *path = luaL_checkstring(L, 2);
      struct stat sb;
      FILE *fp = fopen(path, "rb");
      int e = errno;
      if (fp && fstat(fileno(fp), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(fp);
        fp = NULL;
        e = EISDIR;
      }
      if (!fp) return push_errno(L, path, e);
      r->f = fp;
      r->own = 1;
      break;
    }
    case 1:
      r->f = stdin;
      break;
    case 2: {
      luaL_Stream *s = (luaL_Stream *)luaL_checkudata(L, 2, LUA_FILEHANDLE);
      if (s->closef == NULL || s->f == NULL)
        return luaL_argerror(L, 2, "attempt to use a closed file");
      r->f = s->f;
      r->stream = s;
      lua_pushvalue(L, 2);
      lua_setiuservalue(L, ridx, UV_SOURCE);
      break;
    }
    default:
      r->s = luaL_checklstring(L, 2, &r->slen);
      lua_pushvalue(L, 2);
      lua_setiuservalue(L, ridx, UV_SOURCE);
      break;
  }
  r->p = scim_csv_new(&o);
  if (!r->p) {
    reader_close_(r);
    return luaL_error(L, "not enough memory");
  }
  r->closed = 0;
  if (r->header) {
    int nret = read_header(L, ridx, r, copt);
    if (nret) return nret;
  }
  lua_settop(L, ridx);
  return 1;
}

/* reader:field_index(name) -> 1-based column of name (any casing) or nil. */
static int reader_field_index(lua_State *L) {
  size_t n, len, i;
  const char *name = luaL_checklstring(L, 2, &len);
  checkreader(L, 1);
  if (lua_getiuservalue(L, 1, UV_HEADER) != LUA_TTABLE) return 0;
  n = (size_t)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    size_t kl;
    const char *k;
    lua_rawgeti(L, -1, (lua_Integer)i);
    k = lua_tolstring(L, -1, &kl);
    if (kl == len) {
      size_t j;
      for (j = 0; j < len; j++) {
        unsigned char a = (unsigned char)k[j], b = (unsigned char)name[j];
        if (a >= 'A' && a <= 'Z') a = (unsigned char)(a + 32);
        if (b >= 'A' && b <= 'Z') b = (unsigned char)(b + 32);
        if (a != b) break;
      }
      if (j == len) { lua_pushinteger(L, (lua_Integer)i); return 1; }
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* reader.header, reader.delimiter, reader.name, then the methods. */
static int reader_index(lua_State *L) {
  const char *k;
  luaL_checkudata(L, 1, READER);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  k = lua_tostring(L, 2);
  if (!k) return 0;
  if (strcmp(k, "header") == 0) {
    lua_getiuservalue(L, 1, UV_HEADER);
    return 1;
  }
  if (strcmp(k, "name") == 0) {
    lua_getiuservalue(L, 1, UV_NAME);
    return 1;
  }
  if (strcmp(k, "encoding") == 0) {
    reader *r = (reader *)lua_touserdata(L, 1);
    const char *e = r->p ? scim_csv_encoding(r->p) : NULL;
    if (e) lua_pushstring(L, e);
    else lua_getiuservalue(L, 1, UV_ENCODING);
    return 1;
  }
  if (strcmp(k, "delimiter") == 0) {
    reader *r = (reader *)lua_touserdata(L, 1);
    char d = r->p ? scim_csv_delimiter(r->p) : 0;
    if (!d) return 0;
    lua_pushlstring(L, &d, 1);
    return 1;
  }
  return 0;
}

static int reader_tostring(lua_State *L) {
  reader *r = (reader *)luaL_checkudata(L, 1, READER);
  lua_getiuservalue(L, 1, UV_NAME);
  lua_pushfstring(L, READER " (%s%s)", lua_tostring(L, -1), r->closed ? ", closed" : "");
  return 1;
}

/* }====================================================== */

/* {====================================================== benchmark helper */

#ifdef SCIM_BENCH  /* only in the module `make bench` builds (build/bench/) */

/*
** core.csv_scan(path, mode) -> bytes, records, checksum. mode "memchr"
** counts LF bytes with memchr; "tokenize" runs the tokenizer and touches
** every field (its length and first byte), creating no Lua values. For
** `make bench`: the floor and the C-only speed. [-0, +3, e]
*/
static int csv_scan(lua_State *L) {
  static const char *const modes[] = { "memchr", "tokenize", NULL };
  const char *path = luaL_checkstring(L, 1);
  int mode = luaL_checkoption(L, 2, NULL, modes), st = 0;
  unsigned long long bytes = 0, recs = 0, sum = 0;
  FILE *fp;
  char *buf = (char *)lua_newuserdatauv(L, BLOCK, 0);  /* freed by the GC */
  scim_csv_opts o;
  scim_csv *p = NULL;
  fp = fopen(path, "rb");
  if (!fp) return luaL_error(L, "%s: %s", path, strerror(errno));
  memset(&o, 0, sizeof o);
  o.alloc = lua_getallocf(L, &o.alloc_ud);
  o.check_utf8 = 1;
  if (mode == 1 && !(p = scim_csv_new(&o))) {
    fclose(fp);
    return luaL_error(L, "not enough memory");
  }
  for (;;) {
    size_t n;
    if (mode == 0) {
      n = fread(buf, 1, BLOCK, fp);
      if (!n) break;
      bytes += n;
      {
        const char *s = buf, *e = buf + n;
        while ((s = (const char *)memchr(s, '\n', (size_t)(e - s))) != NULL) { recs++; s++; }
      }
      continue;
    }
    st = scim_csv_next_row(p);
    if (st == SCIM_CSV_ROW) {
      size_t nf, i;
      const scim_csv_field *f = scim_csv_row(p, &nf);
      for (i = 0; i < nf; i++) sum += f[i].len + (f[i].len ? (unsigned char)f[i].data[0] : 0);
      recs++;
    } else if (st == SCIM_CSV_NEED_MORE) {
      size_t avail;
      char *dst = scim_csv_reserve(p, BLOCK, &avail);
      if (!dst) { st = scim_csv_error(p)->status; break; }
      n = fread(dst, 1, BLOCK, fp);
      bytes += n;
      if (n) scim_csv_commit(p, n); else scim_csv_finish(p);
    } else {
      break;
    }
  }
  fclose(fp);
  scim_csv_free(p);
  if (st < 0) return luaL_error(L, "%s: %s", path, scim_csv_strerror(st));
  lua_pushinteger(L, (lua_Integer)bytes);
  lua_pushinteger(L, (lua_Integer)recs);
  lua_pushinteger(L, (lua_Integer)sum);
  return 3;
}
#endif

/* {====================================================== output files */

/* The close function of the file handles csv_create makes. */
static int io_fclose(lua_State *L) {
  luaL_Stream *s = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  errno = 0;
  return luaL_fileresult(L, fclose(s->f) == 0, NULL);
}

/*
** core.csv_create(path, mode) -> Lua file (binary, for writing) | nil, message,
** code. The file must not exist: O_CREAT|O_EXCL|O_NOFOLLOW, so neither a file
** nor a symlink already at `path` is ever opened (EEXIST). `mode` goes to
** open(2), so the umask still applies. [-0, +(1|3), m]
*/
static int csv_create(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode = luaL_checkinteger(L, 2);
  luaL_Stream *s;
  int fd;
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode out of range");
  s = (luaL_Stream *)lua_newuserdatauv(L, sizeof *s, 0);
  s->f = NULL;
  s->closef = NULL;  /* a closed file until it is open */
  luaL_setmetatable(L, LUA_FILEHANDLE);
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) return push_errno(L, path, errno);
  s->f = fdopen(fd, "wb");
  if (!s->f) {
    int e = errno;
    close(fd);
    unlink(path);
    return push_errno(L, path, e);
  }
  s->closef = io_fclose;
  return 1;
}

/* core.csv_mode(path) -> the permission bits of an existing file, or nil. */
static int csv_mode(lua_State *L) {
  struct stat sb;
  if (stat(luaL_checkstring(L, 1), &sb) != 0) return 0;
  lua_pushinteger(L, (lua_Integer)(sb.st_mode & 07777));
  return 1;
}

/* }====================================================== */

/* {====================================================== output encodings */

#define CONVERTER "scim.csv.converter"

typedef struct converter { iconv_t cd; } converter;

/*
** core.csv_converter(to, from) -> converter | nil when iconv knows no such
** conversion. converter:convert(s) -> s converted | nil, offset (0-based, in
** s) of the sequence that cannot be converted, "invalid" or "incomplete";
** converter:convert() -> what ends the output (stateful encodings). The
** conversion state carries over from one call to the next (a UTF-16 byte-order
** mark is written once). [-0, +1, m]
*/
static int csv_converter(lua_State *L) {
  const char *to = luaL_checkstring(L, 1), *from = luaL_checkstring(L, 2);
  converter *c = (converter *)lua_newuserdatauv(L, sizeof *c, 0);
  c->cd = (iconv_t)-1;
  luaL_setmetatable(L, CONVERTER);
  c->cd = iconv_open(to, from);
  if (c->cd == (iconv_t)-1) return 0;
  return 1;
}

static int converter_convert(lua_State *L) {
  converter *c = (converter *)luaL_checkudata(L, 1, CONVERTER);
  size_t len, left;
  const char *s = luaL_optlstring(L, 2, NULL, &len);
  char *in = (char *)(size_t)s;  /* iconv's prototype; it does not write */
  luaL_Buffer b;
  if (c->cd == (iconv_t)-1) return luaL_error(L, "attempt to use a closed " CONVERTER);
  luaL_buffinit(L, &b);
  left = s ? len : 0;
  for (;;) {
    size_t room = left * 4 + 16, avail = room, r;
    char *o = luaL_prepbuffsize(&b, room);
    r = iconv(c->cd, s ? &in : NULL, s ? &left : NULL, &o, &avail);
    luaL_addsize(&b, room - avail);
    if (r != (size_t)-1) break;  /* all converted (or the state reset) */
    if (errno != E2BIG) {
      luaL_pushfail(L);
      lua_pushinteger(L, (lua_Integer)(in - s));
      lua_pushstring(L, errno == EINVAL ? "incomplete" : "invalid");
      return 3;
    }
  }
  luaL_pushresult(&b);
  return 1;
}

static int converter_gc(lua_State *L) {
  converter *c = (converter *)luaL_checkudata(L, 1, CONVERTER);
  if (c->cd != (iconv_t)-1) iconv_close(c->cd);
  c->cd = (iconv_t)-1;
  return 0;
}

/* }====================================================== */

/* core.csv_errno_name(n) -> "ENOENT" ... or nil: names io.open's errno. */
static int csv_errno_name(lua_State *L) {
  const char *s = errno_name((int)luaL_checkinteger(L, 1));
  if (!s) return 0;
  lua_pushstring(L, s);
  return 1;
}

/* }====================================================== */

void scim_open_csv(lua_State *L) {
  static const luaL_Reg meta[] = {
    { "__gc", reader_gc },
    { "__close", reader_tbc },
    { "__tostring", reader_tostring },
    { NULL, NULL }
  };
  static const luaL_Reg methods[] = {
    { "rows", reader_rows },
    { "read", reader_read },
    { "close", reader_close },
    { "field_index", reader_field_index },
    { NULL, NULL }
  };
  static const luaL_Reg funcs[] = {
    { "csv_open", csv_open },
#ifdef SCIM_BENCH
    { "csv_scan", csv_scan },
#endif
    { "csv_errno_name", csv_errno_name },
    { "csv_create", csv_create },
    { "csv_mode", csv_mode },
    { "csv_converter", csv_converter },
    { NULL, NULL }
  };
  static const luaL_Reg cmeta[] = { { "__gc", converter_gc }, { NULL, NULL } };
  static const luaL_Reg cmethods[] = { { "convert", converter_convert }, { NULL, NULL } };
  scim_newclass(L, CONVERTER, cmeta, cmethods);
  scim_newclass(L, READER, meta, methods);
  /* __index becomes a function: the properties, then the methods table */
  luaL_getmetatable(L, READER);
  lua_getfield(L, -1, "__index");
  lua_pushcclosure(L, reader_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
