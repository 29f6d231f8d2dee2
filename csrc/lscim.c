/*
** lscim.c - luaopen_scim_core: the one C module of scim-agent.
*/
#include "lscim.h"

void scim_newclass(lua_State *L, const char *tname, const luaL_Reg *meta,
                   const luaL_Reg *methods) {
  luaL_newmetatable(L, tname);  /* sets __name */
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

SCIM_API int luaopen_scim_core(lua_State *L) {
  lua_newtable(L);
  lua_pushliteral(L, SCIM_VERSION);
  lua_setfield(L, -2, "_VERSION");
  scim_open_csv(L);
  scim_open_http(L);
  scim_open_json(L);
  scim_open_sys(L);
  return 1;
}
