/*
** lcsv.c - scim.core CSV binding.
*/
#include "lscim.h"

void scim_open_csv(lua_State *L) {
  (void)L;
}
