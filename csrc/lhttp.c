/*
** lhttp.c - scim.core HTTP binding over libcurl's multi interface.
*/
#include "lscim.h"

void scim_open_http(lua_State *L) {
  (void)L;
}
