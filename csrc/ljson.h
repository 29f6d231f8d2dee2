/*
** ljson.h - what the JSON encoder (ljson.c) and decoder (ljsondec.c) share.
*/
#ifndef LJSON_H
#define LJSON_H

#include <stddef.h>

#include "lscim.h"

#define ARRAY_T "scim.json.array"  /* the array marker's __name */

/*
** Length of the valid UTF-8 sequence at s (n > 0 bytes available), or 0: overlong
** forms, surrogates and code points past U+10FFFF are invalid, as in utf8.len (strict).
*/
size_t scim_utf8_seq(const unsigned char *s, size_t n);

/* 1-based position of the first invalid UTF-8 sequence in s[0..n), 0 if none. */
size_t scim_utf8_first_bad(const char *s, size_t n);

/* core.json_decode(text) -> value | nil, why. Upvalue 1: the array marker. [-0, +1|2, m] */
int scim_json_decode(lua_State *L);

#endif
