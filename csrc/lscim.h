/*
** lscim.h - shared declarations of the scim.core Lua binding.
** Each binding file (lcsv.c, lhttp.c) registers its metatables and
** functions through one scim_open_* entry point called from luaopen.
*/
#ifndef LSCIM_H
#define LSCIM_H

#include "lua.h"
#include "lauxlib.h"

#if defined(__GNUC__)
#define SCIM_API __attribute__((visibility("default")))
#else
#define SCIM_API
#endif

#define SCIM_VERSION "0.1.0"

/* Adds the CSV functions to the module table at the stack top. [-0, +0, m] */
void scim_open_csv(lua_State *L);

/* Adds the HTTP functions to the module table at the stack top. [-0, +0, m] */
void scim_open_http(lua_State *L);

/*
** Adds json_encode, json_decode, json_null, json_array_mt and json_array_mts
** (ljson.c) to the module table at the stack top. [-0, +0, m]
*/
void scim_open_json(lua_State *L);

/* Adds the `sys` table (lsys.c: signals, core dumps, isatty, file modes). [-0, +0, m] */
void scim_open_sys(lua_State *L);

/*
** Creates metatable `tname` with `__name`, `__index = methods` and the
** metamethods in `meta`, and pops it. Called once per type in luaopen.
*/
void scim_newclass(lua_State *L, const char *tname, const luaL_Reg *meta,
                   const luaL_Reg *methods);

SCIM_API int luaopen_scim_core(lua_State *L);

#endif
