/*
** ljson.c - JSON encoding and decoding for scim.json, at C speed.
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

#include "lscim.h"

#define ARRAY_T "scim.json.array"
#define ENC_MAX_DEPTH 64    /* tables inside tables: deeper is taken as a cycle */
#define DEC_MAX_DEPTH 1000  /* lua-cjson's decode_max_depth default */
#define SMALL_OBJECT 32     /* keys sorted in a C array on the C stack up to this */

/* upvalues of json_encode */
#define UV_MARKERS lua_upvalueindex(1)  /* set of array marker metatables */
#define UV_ARRAY_MT lua_upvalueindex(2) /* scim.json.array (upvalue 1 of json_decode) */

/*
** Length of the valid UTF-8 sequence at s (n bytes available), or 0: overlong forms,
** surrogates and code points past U+10FFFF are invalid, as in utf8.len (strict).
*/
static size_t utf8_seq(const unsigned char *s, size_t n) {
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

/* 1-based position of the first invalid UTF-8 sequence in s, 0 if none. */
static size_t utf8_first_bad(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s, *e = p + n;
  while (p < e) {
    size_t k;
    if (*p < 0x80) { p++; continue; }
    k = utf8_seq(p, (size_t)(e - p));
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
        size_t k = utf8_seq(u, (size_t)(end - u));
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
** {======================================================================
** Decoding
** =======================================================================
*/

enum { D_ERR = -1, D_VAL = 0, D_NULL = 1 };

typedef struct Dec {
  lua_State *L;
  const char *s, *p, *end;
  int depth;
  int range;           /* a number overflowed a double */
  /* the first error: "Expected <exp> but found <found|token at pos> at character pos+1" */
  const char *exp;     /* NULL: nested too deeply */
  const char *found;   /* a lexical error's words, or NULL: name the token at pos */
  size_t pos;
} Dec;

static int dec_error(Dec *d, const char *exp, const char *found, const char *at) {
  d->exp = exp;
  d->found = found;
  d->pos = (size_t)(at - d->s);
  return D_ERR;
}

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

#define IS_DIGIT(c) ((unsigned)((c) - '0') < 10u)

/* The end of the number token at p (RFC 8259 grammar), or NULL if it is not one. */
static const char *number_end(const char *p, const char *end, int *integral) {
  *integral = 1;
  if (p < end && *p == '-') p++;
  if (p < end && *p == '0') {
    p++;
    if (p < end && (IS_DIGIT(*p) || *p == 'x' || *p == 'X')) return NULL;  /* 01, 0x1 */
  } else if (p < end && IS_DIGIT(*p)) { while (p < end && IS_DIGIT(*p)) p++; }
  else return NULL;
  if (p < end && *p == '.') {
    p++;
    if (!(p < end && IS_DIGIT(*p))) return NULL;
    while (p < end && IS_DIGIT(*p)) p++;
    *integral = 0;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (!(p < end && IS_DIGIT(*p))) return NULL;
    while (p < end && IS_DIGIT(*p)) p++;
    *integral = 0;
  }
  return p;
}

static int literal(const char *p, const char *end, const char *word, size_t n) {
  return (size_t)(end - p) >= n && memcmp(p, word, n) == 0;
}

static int unicode_escape(const char *p, const char *end, char *out, const char **next);

/* What is wrong with the string token at p, NULL if nothing; *at: where. */
static const char *string_error(const char *p, const char *end, const char **at) {
  char u[4];
  for (p++; p < end && *p != '"'; ) {
    if (*p == '\\') {
      *at = p;
      if (end - p < 2) return "invalid escape code";
      if (p[1] == 'u') {
        if (!unicode_escape(p, end, u, &p)) return "invalid unicode escape code";
        continue;
      }
      if (strchr("\"\\/bfnrt", p[1]) == NULL || p[1] == '\0') return "invalid escape code";
      p += 2;
    } else if (*p == '\0') {
      break;
    } else {
      p++;
    }
  }
  *at = p;
  return p < end && *p == '"' ? NULL : "unexpected end of string";
}

/* lua-cjson's name for the token at *p; a lexical error may move *p to where it is. */
static const char *token_name(const char **pp, const char *end) {
  int integral;
  const char *p = *pp, *why;
  if (p >= end) return "T_END";
  if (*p == '"') {
    why = string_error(p, end, pp);
    if (why == NULL) *pp = p;
    return why != NULL ? why : "T_STRING";
  }
  switch (*p) {
    case '{': return "T_OBJ_BEGIN";
    case '}': return "T_OBJ_END";
    case '[': return "T_ARR_BEGIN";
    case ']': return "T_ARR_END";
    case ',': return "T_COMMA";
    case ':': return "T_COLON";
    case 't': return literal(p, end, "true", 4) ? "T_BOOLEAN" : "invalid token";
    case 'f': return literal(p, end, "false", 5) ? "T_BOOLEAN" : "invalid token";
    case 'n': return literal(p, end, "null", 4) ? "T_NULL" : "invalid token";
    default:
      if (*p == '-' || IS_DIGIT(*p))
        return number_end(p, end, &integral) ? "T_NUMBER" : "invalid number";
      return "invalid token";
  }
}

static int dec_number(Dec *d, const char *exp) {
  lua_State *L = d->L;
  const char *p = d->p;
  int integral;
  const char *q = number_end(p, d->end, &integral);
  size_t len;
  if (q == NULL) return dec_error(d, exp, "invalid number", p);
  len = (size_t)(q - p);
  d->p = q;
  if (integral && len - (*p == '-') <= 18) {  /* fits in an integer as it is */
    const char *r = p + (*p == '-');
    lua_Integer v = 0;
    for (; r < q; r++) v = v * 10 + (*r - '0');
    lua_pushinteger(L, *p == '-' ? -v : v);
    return D_VAL;
  } else {
    char tmp[64];
    lua_Number f;
    lua_Integer i;
    /* Lua's own conversion: exact integers to 64 bits, floats beyond */
    if (len < sizeof tmp) {
      memcpy(tmp, p, len);
      tmp[len] = '\0';
      lua_stringtonumber(L, tmp);
    } else {
      lua_pushlstring(L, p, len);
      if (lua_stringtonumber(L, lua_tostring(L, -1)) == 0) lua_pushnumber(L, 0);
      lua_remove(L, -2);
    }
    if (lua_isinteger(L, -1)) return D_VAL;
    f = lua_tonumber(L, -1);
    if (f == (lua_Number)HUGE_VAL || f == -(lua_Number)HUGE_VAL) d->range = 1;
    else if (f == floor(f) && lua_numbertointeger(f, &i)) {
      lua_pop(L, 1);
      lua_pushinteger(L, i);
    }
    return D_VAL;
  }
}

static int hex4(const char *p, const char *end, unsigned *out) {
  unsigned v = 0;
  int i;
  if (end - p < 4) return 0;
  for (i = 0; i < 4; i++) {
    int c = p[i];
    v <<= 4;
    if (IS_DIGIT(c)) v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

/* \uXXXX (a surrogate pair as two) at p, as UTF-8 into out; its length, 0 if invalid. */
static int unicode_escape(const char *p, const char *end, char *out, const char **next) {
  unsigned cp, lo;
  if (!hex4(p + 2, end, &cp)) return 0;
  p += 6;
  if (cp >= 0xDC00 && cp <= 0xDFFF) return 0;
  if (cp >= 0xD800 && cp <= 0xDBFF) {
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, end, &lo) ||
        lo < 0xDC00 || lo > 0xDFFF)
      return 0;
    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    p += 6;
  }
  *next = p;
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/*
** The string at d->p (its opening quote), pushed. Raw control characters other than NUL
** are taken as lua-cjson takes them; a NUL byte ends the text, as it does for lua-cjson.
** [-0, +1, m]
*/
static int dec_string(Dec *d, const char *exp) {
  lua_State *L = d->L;
  const char *p = d->p + 1, *start = p, *end = d->end;
  luaL_Buffer b;
  for (;;) {  /* the fast path: no escapes */
    unsigned char c;
    if (p >= end) return dec_error(d, exp, "unexpected end of string", p);
    c = (unsigned char)*p;
    if (c == '"') {
      lua_pushlstring(L, start, (size_t)(p - start));
      d->p = p + 1;
      return D_VAL;
    }
    if (c == '\\') break;
    if (c == 0) return dec_error(d, exp, "unexpected end of string", p);
    if (c < 0x80) p++;
    else {
      size_t k = utf8_seq((const unsigned char *)p, (size_t)(end - p));
      if (k == 0) return dec_error(d, exp, "invalid UTF-8", p);
      p += k;
    }
  }
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, start, (size_t)(p - start));
  for (;;) {
    unsigned char c;
    if (p >= end) return dec_error(d, exp, "unexpected end of string", p);
    c = (unsigned char)*p;
    if (c == '"') break;
    if (c == 0) return dec_error(d, exp, "unexpected end of string", p);
    if (c == '\\') {
      char u[4];
      int k;
      if (end - p < 2) return dec_error(d, exp, "invalid escape code", p);
      switch (p[1]) {
        case '"': luaL_addchar(&b, '"'); break;
        case '\\': luaL_addchar(&b, '\\'); break;
        case '/': luaL_addchar(&b, '/'); break;
        case 'b': luaL_addchar(&b, '\b'); break;
        case 'f': luaL_addchar(&b, '\f'); break;
        case 'n': luaL_addchar(&b, '\n'); break;
        case 'r': luaL_addchar(&b, '\r'); break;
        case 't': luaL_addchar(&b, '\t'); break;
        case 'u':
          k = unicode_escape(p, end, u, &p);
          if (k == 0) return dec_error(d, exp, "invalid unicode escape code", p);
          luaL_addlstring(&b, u, (size_t)k);
          continue;
        default: return dec_error(d, exp, "invalid escape code", p);
      }
      p += 2;
    } else {
      const char *run = p;
      while (p < end && *p != '"' && *p != '\\' && *p != '\0') {
        if ((unsigned char)*p < 0x80) p++;
        else {
          size_t k = utf8_seq((const unsigned char *)p, (size_t)(end - p));
          if (k == 0) return dec_error(d, exp, "invalid UTF-8", p);
          p += k;
        }
      }
      luaL_addlstring(&b, run, (size_t)(p - run));
    }
  }
  luaL_pushresult(&b);
  d->p = p + 1;
  return D_VAL;
}

static int dec_value(Dec *d, const char *exp);

/* One more level of nesting at d->p ('{' or '['), within the limit and the Lua stack. */
static int dec_descend(Dec *d) {
  d->depth++;
  if (d->depth <= DEC_MAX_DEPTH && lua_checkstack(d->L, 6)) return 1;
  dec_error(d, NULL, NULL, d->p);
  return 0;
}

static int dec_object(Dec *d) {
  lua_State *L = d->L;
  if (!dec_descend(d)) return D_ERR;
  lua_newtable(L);
  d->p = skip_ws(d->p + 1, d->end);
  if (d->p < d->end && *d->p == '}') {
    d->p++;
    d->depth--;
    return D_VAL;
  }
  for (;;) {
    int r;
    if (d->p >= d->end || *d->p != '"') return dec_error(d, "object key string", NULL, d->p);
    if (dec_string(d, "object key string") == D_ERR) return D_ERR;
    d->p = skip_ws(d->p, d->end);
    if (d->p >= d->end || *d->p != ':') return dec_error(d, "colon", NULL, d->p);
    d->p++;
    r = dec_value(d, "value");
    if (r == D_ERR) return D_ERR;
    if (r == D_NULL) lua_pushnil(L);  /* null: absent, a duplicate key's earlier value too */
    lua_rawset(L, -3);
    d->p = skip_ws(d->p, d->end);
    if (d->p < d->end && *d->p == ',') {
      d->p = skip_ws(d->p + 1, d->end);
      continue;
    }
    if (d->p < d->end && *d->p == '}') break;
    return dec_error(d, "comma or object end", NULL, d->p);
  }
  d->p++;
  d->depth--;
  return D_VAL;
}

static int dec_array(Dec *d) {
  lua_State *L = d->L;
  lua_Integer n = 0;
  if (!dec_descend(d)) return D_ERR;
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setmetatable(L, -2);
  d->p = skip_ws(d->p + 1, d->end);
  if (d->p < d->end && *d->p == ']') {
    d->p++;
    d->depth--;
    return D_VAL;
  }
  for (;;) {
    int r = dec_value(d, "value");
    if (r == D_ERR) return D_ERR;
    if (r == D_VAL) lua_rawseti(L, -2, ++n);  /* nulls leave no hole */
    d->p = skip_ws(d->p, d->end);
    if (d->p < d->end && *d->p == ',') {
      d->p++;
      continue;
    }
    if (d->p < d->end && *d->p == ']') break;
    return dec_error(d, "comma or array end", NULL, d->p);
  }
  d->p++;
  d->depth--;
  return D_VAL;
}

/* The value at d->p (after blanks): D_VAL (pushed), D_NULL (nothing pushed) or D_ERR. */
static int dec_value(Dec *d, const char *exp) {
  lua_State *L = d->L;
  const char *p = d->p = skip_ws(d->p, d->end);
  if (p >= d->end) return dec_error(d, exp, NULL, p);
  switch (*p) {
    case '{': return dec_object(d);
    case '[': return dec_array(d);
    case '"': return dec_string(d, exp);
    case 't':
      if (!literal(p, d->end, "true", 4)) break;
      d->p += 4;
      lua_pushboolean(L, 1);
      return D_VAL;
    case 'f':
      if (!literal(p, d->end, "false", 5)) break;
      d->p += 5;
      lua_pushboolean(L, 0);
      return D_VAL;
    case 'n':
      if (!literal(p, d->end, "null", 4)) break;
      d->p += 4;
      return D_NULL;
    default:
      if (*p == '-' || IS_DIGIT(*p)) return dec_number(d, exp);
  }
  return dec_error(d, exp, NULL, p);
}

/*
** core.json_decode(text) -> value | nil, why. Upvalue: the array marker. Errors, in the
** order scim.json has always checked them: not a string; invalid UTF-8 anywhere; the
** syntax (lua-cjson's words); a document that is just null; a number beyond a double.
** [-0, +1|2, m]
*/
static int json_decode(lua_State *L) {
  Dec d;
  size_t len;
  int r;
  if (lua_type(L, 1) != LUA_TSTRING) {
    luaL_pushfail(L);
    lua_pushliteral(L, "JSON text must be a string");
    return 2;
  }
  lua_settop(L, 1);
  memset(&d, 0, sizeof d);
  d.L = L;
  d.s = d.p = lua_tolstring(L, 1, &len);
  d.end = d.s + len;
  r = dec_value(&d, "value");
  if (r != D_ERR) {
    d.p = skip_ws(d.p, d.end);
    if (d.p < d.end) r = dec_error(&d, "the end", NULL, d.p);
  }
  if (r == D_ERR) {
    size_t bad = utf8_first_bad(d.s, len);
    lua_settop(L, 1);
    luaL_pushfail(L);
    if (bad != 0)
      lua_pushfstring(L, "invalid UTF-8 at byte %I", (LUA_INTEGER)bad);
    else if (d.exp == NULL)
      lua_pushfstring(L, "Found too many nested data structures (%d) at character %I",
                      d.depth, (LUA_INTEGER)d.pos + 1);
    else {
      const char *at = d.s + d.pos;
      const char *found = d.found ? d.found : token_name(&at, d.end);
      lua_pushfstring(L, "Expected %s but found %s at character %I", d.exp, found,
                      (LUA_INTEGER)(at - d.s) + 1);
    }
    return 2;
  }
  if (r == D_NULL || d.range) {
    luaL_pushfail(L);
    lua_pushstring(L, r == D_NULL ? "the document is null"
                                  : "a number is beyond the range of a double");
    return 2;
  }
  return 1;
}

/* }====================================================================== */

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
  lua_pushcclosure(L, json_decode, 1);
  lua_setfield(L, -2, "json_decode");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "json_null");
}
