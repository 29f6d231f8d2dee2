/*
** ljson.c - JSON for scim.json, at C speed: the encoder, the UTF-8 check both sides use,
** and the registration; the decoder is in ljsondec.c.
** core.json_encode(v) -> text | nil, why
** core.json_decode(text) -> value | nil, why
** The semantics are scim.json's (lua/scim/json.lua documents them; tests/json_spec.lua
** pins them): an array marker metatable, integers exact to 64 bits, decoded nulls absent,
** sorted object keys, strict UTF-8 both ways, errors naming the field (encode) or the
** character (decode, in lua-cjson's words). Neither function raises for bad input, only
** for memory errors; no malloc'd memory is alive across a call that can raise (the
** encoder's output grows in a userdata box at a fixed stack slot).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ljson.h"

#define ENC_MAX_DEPTH 64    /* tables inside tables: deeper is taken as a cycle */
#define SMALL_OBJECT 32     /* keys sorted in a C array on the C stack up to this */

/* upvalues of json_encode */
#define UV_MARKERS lua_upvalueindex(1)  /* set of array marker metatables */
#define UV_ARRAY_MT lua_upvalueindex(2) /* scim.json.array (upvalue 1 of json_decode) */

/* UTF-8 as utf8.len (strict) takes it: see ljson.h. */
size_t scim_utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0)) return 0;
    return 3;
  }
  if (c < 0xF5) {
    if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
      return 0;
    if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90)) return 0;
    return 4;
  }
  return 0;
}

size_t scim_utf8_first_bad(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s, *e = p + n;
  while (p < e) {
    size_t k;
    if (*p < 0x80) { p++; continue; }
    k = scim_utf8_seq(p, (size_t)(e - p));
    if (k == 0) return (size_t)(p - (const unsigned char *)s) + 1;
    p += k;
  }
  return 0;
}

/*
** {======================================================================
** Encoding
** =======================================================================
*/

/* Per byte: 0 copied as is, 1 escaped (controls, '"', '\\', DEL), 2 the start of a
   multi-byte sequence (checked as UTF-8). */
static const unsigned char enc_class[256] = {
  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
  0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,
  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,
  2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,
  2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,
  2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,
  2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,
};

typedef struct Enc {
  lua_State *L;
  char *b;           /* the output: init, or the box userdata's memory */
  size_t n, cap;
  int box;           /* stack slot of the box (nil until the output outgrows init) */
  char init[2048];
} Enc;

/* Where a value sits, for error messages: a chain of keys and indices up to the top. */
typedef struct Path {
  const struct Path *up;
  const char *key;   /* NULL: an array index */
  size_t klen;
  lua_Integer idx;
} Path;

/* Room for k more bytes; the box is replaced by a bigger one. [-0, +0, m] */
static char *enc_reserve(Enc *e, size_t k) {
  if (e->cap - e->n < k) {
    size_t cap = e->cap;
    char *nb;
    if (k > ((size_t)-1) / 4 - e->n) luaL_error(e->L, "JSON text too large");
    while (cap - e->n < k) cap *= 2;
    nb = (char *)lua_newuserdatauv(e->L, cap, 0);
    memcpy(nb, e->b, e->n);
    lua_replace(e->L, e->box);  /* the old box (if any) becomes garbage */
    e->b = nb;
    e->cap = cap;
  }
  return e->b + e->n;
}

static void enc_add(Enc *e, const char *s, size_t k) {
  memcpy(enc_reserve(e, k), s, k);
  e->n += k;
}

#define enc_char(e, c) (enc_reserve((e), 1), (e)->b[(e)->n++] = (c))

/*
** Pushes "field '<path>' <what>" and returns -1, which every level passes up; the caller
** of the encoder finds the message at the stack top. [-0, +1, m]
*/
static int enc_fail(Enc *e, const Path *p, const char *what) {
  lua_State *L = e->L;
  const Path *chain[ENC_MAX_DEPTH + 4];
  int n = 0, i;
  size_t len = 0;  /* of the path written so far */
  luaL_Buffer b;
  for (; p != NULL && n < (int)(sizeof chain / sizeof chain[0]); p = p->up) chain[n++] = p;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "field '");
  for (i = n - 1; i >= 0; i--) {
    if (chain[i]->key == NULL) {
      char num[32];
      int k = snprintf(num, sizeof num, "[%lld]", (long long)chain[i]->idx);
      luaL_addlstring(&b, num, (size_t)k);
      len += (size_t)k;
    } else {
      if (len > 0) luaL_addchar(&b, '.');  /* a.b; no dot after an empty path ("" keys) */
      luaL_addlstring(&b, chain[i]->key, chain[i]->klen);
      len += chain[i]->klen + (len > 0);
    }
  }
  luaL_addstring(&b, "' ");
  luaL_addstring(&b, what);
  luaL_pushresult(&b);
  return -1;
}

static int enc_string(Enc *e, const char *s, size_t len, const Path *p) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s, *end = u + len;
  char *o;
  if (len > ((size_t)-1) / 8) luaL_error(e->L, "JSON text too large");
  o = enc_reserve(e, len * 6 + 2);  /* every byte as \u00XX at worst */
  *o++ = '"';
  while (u < end) {
    unsigned c = *u;
    switch (enc_class[c]) {
      case 0: *o++ = (char)c; u++; break;
      case 1:
        *o++ = '\\';
        switch (c) {
          case '"': *o++ = '"'; break;
          case '\\': *o++ = '\\'; break;
          case '\b': *o++ = 'b'; break;
          case '\f': *o++ = 'f'; break;
          case '\n': *o++ = 'n'; break;
          case '\r': *o++ = 'r'; break;
          case '\t': *o++ = 't'; break;
          default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = hex[c >> 4]; *o++ = hex[c & 15];
        }
        u++;
        break;
      default: {
        size_t k = scim_utf8_seq(u, (size_t)(end - u));
        if (k == 0) return enc_fail(e, p, "is not valid UTF-8");
        memcpy(o, u, k);
        o += k;
        u += k;
      }
    }
  }
  *o++ = '"';
  e->n = (size_t)(o - e->b);
  return 0;
}

static void enc_integer(Enc *e, lua_Integer i) {
  char tmp[24], *q = tmp + sizeof tmp;
  lua_Unsigned u = i < 0 ? 0u - (lua_Unsigned)i : (lua_Unsigned)i;
  do { *--q = (char)('0' + u % 10); u /= 10; } while (u != 0);
  if (i < 0) *--q = '-';
  enc_add(e, q, (size_t)(tmp + sizeof tmp - q));
}

static int enc_number(Enc *e, int idx, const Path *p) {
  lua_State *L = e->L;
  lua_Number d;
  lua_Integer i;
  char tmp[40];
  int k;
  if (lua_isinteger(L, idx)) {
    enc_integer(e, lua_tointeger(L, idx));
    return 0;
  }
  d = lua_tonumber(L, idx);
  if (d != d || d == (lua_Number)HUGE_VAL || d == -(lua_Number)HUGE_VAL)
    return enc_fail(e, p, "is not a finite number");
  if (d == floor(d) && lua_numbertointeger(d, &i)) {  /* integral: written as an integer */
    enc_integer(e, i);
    return 0;
  }
  /* the shortest of two forms that reads back as the same double */
  k = snprintf(tmp, sizeof tmp, "%.14g", (double)d);
  if (strtod(tmp, NULL) != (double)d) k = snprintf(tmp, sizeof tmp, "%.17g", (double)d);
  enc_add(e, tmp, (size_t)k);
  return 0;
}

/* RFC 7643/7644 multi-valued attributes and message fields: unmarked `{}` under one of
   these names is an empty array. Kept in step with the list in lua/scim/json.lua's docs. */
static int multi_valued(const char *k, size_t len) {
  static const char *const names[] = {
    "schemas", "emails", "phoneNumbers", "ims", "photos", "addresses", "groups",
    "entitlements", "roles", "x509Certificates", "members", "Operations", "Resources",
    "Errors", NULL
  };
  int i;
  for (i = 0; names[i] != NULL; i++)
    if (strlen(names[i]) == len && memcmp(names[i], k, len) == 0) return 1;
  return 0;
}

typedef struct Key {
  const char *s;
  size_t len;
  int vidx;    /* stack slot of the value */
} Key;

static int key_less(const Key *a, const Key *b) {
  size_t m = a->len < b->len ? a->len : b->len;
  int c = memcmp(a->s, b->s, m);
  return c < 0 || (c == 0 && a->len < b->len);
}

static int key_cmp(const void *a, const void *b) {
  return key_less((const Key *)a, (const Key *)b) ? -1 : key_less((const Key *)b,
    (const Key *)a);
}

static void sort_keys(Key *k, size_t n) {
  size_t i, j;
  if (n > 16) {
    qsort(k, n, sizeof *k, key_cmp);
    return;
  }
  for (i = 1; i < n; i++) {
    Key t = k[i];
    for (j = i; j > 0 && key_less(&t, &k[j - 1]); j--) k[j] = k[j - 1];
    k[j] = t;
  }
}

static int enc_value(Enc *e, int idx, const Path *p, int depth, const char *key, size_t klen);

/* Is the metatable at the top one of the array markers? Pops it. [-1, +0, -] */
static int is_marker(lua_State *L) {
  int r;
  if (lua_rawequal(L, -1, UV_ARRAY_MT)) {
    lua_pop(L, 1);
    return 1;
  }
  r = lua_rawget(L, UV_MARKERS) == LUA_TBOOLEAN && lua_toboolean(L, -1);
  lua_pop(L, 1);
  return r;
}

static int enc_array(Enc *e, int idx, const Path *p, int depth, lua_Unsigned n) {
  lua_State *L = e->L;
  lua_Unsigned i;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_Integer k;
    lua_pop(L, 1);
    k = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || k < 1 || (lua_Unsigned)k > n)
      return enc_fail(e, p, "mixes array items with other keys");
  }
  enc_char(e, '[');
  for (i = 1; i <= n; i++) {
    Path sub;
    sub.up = p; sub.key = NULL; sub.klen = 0; sub.idx = (lua_Integer)i;
    if (i > 1) enc_char(e, ',');
    lua_rawgeti(L, idx, (lua_Integer)i);
    if (enc_value(e, lua_gettop(L), &sub, depth + 1, NULL, 0)) return -1;
    lua_pop(L, 1);
  }
  enc_char(e, ']');
  return 0;
}

/*
** An object: every (key, value) pair is pushed, the keys sorted as bytes (what
** table.sort does under the C locale), then written in that order. [-0, +0, m]
*/
static int enc_object(Enc *e, int idx, const Path *p, int depth) {
  lua_State *L = e->L;
  int base = lua_gettop(L);
  size_t n = 0, j;
  Key small[SMALL_OBJECT], *keys = small;
  lua_pushnil(L);
  while (lua_next(L, idx)) {  /* ... k1 v1 .. kn vn k v */
    if (lua_type(L, -2) != LUA_TSTRING) {
      const char *what;
      luaL_tolstring(L, -2, NULL);
      what = lua_pushfstring(L, "has a non-string key %s", lua_tostring(L, -1));
      return enc_fail(e, p, what);
    }
    luaL_checkstack(L, 3, "JSON object too large");
    lua_pushvalue(L, -2);
    n++;
  }
  if (n > SMALL_OBJECT) keys = (Key *)lua_newuserdatauv(L, n * sizeof(Key), 0);
  for (j = 0; j < n; j++) {
    int k = base + 1 + 2 * (int)j;
    keys[j].s = lua_tolstring(L, k, &keys[j].len);
    keys[j].vidx = k + 1;
  }
  sort_keys(keys, n);
  enc_char(e, '{');
  for (j = 0; j < n; j++) {
    Path sub;
    if (j > 0) enc_char(e, ',');
    if (enc_string(e, keys[j].s, keys[j].len, p)) return -1;
    enc_char(e, ':');
    sub.up = p; sub.key = keys[j].s; sub.klen = keys[j].len; sub.idx = 0;
    if (enc_value(e, keys[j].vidx, &sub, depth + 1, keys[j].s, keys[j].len)) return -1;
  }
  enc_char(e, '}');
  lua_settop(L, base);
  return 0;
}

static int enc_table(Enc *e, int idx, const Path *p, int depth, const char *key, size_t klen) {
  lua_State *L = e->L;
  lua_Unsigned n;
  int array;
  if (depth > ENC_MAX_DEPTH) return enc_fail(e, p, "is nested too deeply (a cycle?)");
  luaL_checkstack(L, 6, "JSON value nested too deeply");
  n = lua_rawlen(L, idx);
  array = n > 0;
  if (!array && lua_getmetatable(L, idx)) array = is_marker(L);
  if (!array && key != NULL && multi_valued(key, klen)) {
    lua_pushnil(L);
    if (lua_next(L, idx)) lua_pop(L, 2);
    else array = 1;
  }
  return array ? enc_array(e, idx, p, depth, n) : enc_object(e, idx, p, depth);
}

/* The value at idx; 0, or -1 with the message pushed. [-0, +(0|1), m] */
static int enc_value(Enc *e, int idx, const Path *p, int depth, const char *key, size_t klen) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      return enc_string(e, s, len, p);
    }
    case LUA_TNUMBER: return enc_number(e, idx, p);
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, idx)) enc_add(e, "true", 4);
      else enc_add(e, "false", 5);
      return 0;
    case LUA_TTABLE: return enc_table(e, idx, p, depth, key, klen);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) {  /* json.null, cjson.null */
        enc_add(e, "null", 4);
        return 0;
      }
      /* FALLTHROUGH */
    default: {
      const char *what = lua_pushfstring(L, "has a %s value, which JSON cannot hold",
                                         luaL_typename(L, idx));
      return enc_fail(e, p, what);
    }
  }
}

/*
** core.json_encode(v) -> text | nil, why. Upvalues: the marker set, the array marker.
** [-0, +1|2, m]
*/
static int json_encode(lua_State *L) {
  Enc e;
  lua_settop(L, 1);
  lua_pushnil(L);  /* 2: the output's box, once it outgrows e.init */
  e.L = L;
  e.b = e.init;
  e.n = 0;
  e.cap = sizeof e.init;
  e.box = 2;
  if (enc_value(&e, 1, NULL, 0, NULL, 0) != 0) {
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushlstring(L, e.b, e.n);
  return 1;
}

/* }====================================================================== */

/*
** The marker metatable (registry "scim.json.array"), the set of markers, the two
** functions and json_null, on the module table at the stack top. [-0, +0, m]
*/
void scim_open_json(lua_State *L) {
  luaL_newmetatable(L, ARRAY_T);  /* sets __name */
  lua_newtable(L);                /* the marker set */
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);              /* mt  markers */
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "json_array_mts");
  lua_pushvalue(L, -2);
  lua_setfield(L, -4, "json_array_mt");
  lua_pushvalue(L, -2);           /* mt  markers  mt */
  lua_pushcclosure(L, json_encode, 2);
  lua_setfield(L, -3, "json_encode");  /* mt */
  lua_pushcclosure(L, scim_json_decode, 1);
  lua_setfield(L, -2, "json_decode");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "json_null");
}
