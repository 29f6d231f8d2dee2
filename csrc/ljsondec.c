/*
** ljsondec.c - scim.json's decoder (core.json_decode), the other half of ljson.c.
** A recursive descent over the text that builds the Lua values as it goes: arrays get
** the marker metatable, nulls are left out, integers stay exact to 64 bits. Errors are
** returned, not raised (only memory errors raise): each level passes D_ERR up and the
** first error's words and position are kept in the Dec, phrased as lua-cjson does.
*/
#include <math.h>
#include <string.h>

#include "ljson.h"

#define DEC_MAX_DEPTH 1000  /* lua-cjson's decode_max_depth default */

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
      size_t k = scim_utf8_seq((const unsigned char *)p, (size_t)(end - p));
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
          size_t k = scim_utf8_seq((const unsigned char *)p, (size_t)(end - p));
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
int scim_json_decode(lua_State *L) {
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
    size_t bad = scim_utf8_first_bad(d.s, len);
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
