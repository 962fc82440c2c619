/* The PUC Lua 5.4 backend of the Lua binding (Debian's Prosody runs on Lua
 * 5.4, which has no FFI). It only translates between Lua values and
 * include/cmr.h; cmr.lua documents the API, cmr_ffi.lua is its LuaJIT twin. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "cmr.h"

#define ROUTER_MT "cmr.router"

typedef struct {
  cmr_router *router;
} router_box;

/* The router's methods hold its metatable as their upvalue: comparing with
 * it is what luaL_checkudata does, without a registry lookup by name on
 * every call (a pick's glue would spend a quarter of its time there). */
static cmr_router *check_router(lua_State *L) {
  router_box *box = lua_touserdata(L, 1);
  if (box == NULL || !lua_getmetatable(L, 1)) luaL_typeerror(L, 1, ROUTER_MT);
  if (!lua_rawequal(L, -1, lua_upvalueindex(1))) luaL_typeerror(L, 1, ROUTER_MT);
  lua_pop(L, 1);
  if (box->router == NULL) luaL_error(L, "cmr: router already freed");
  return box->router;
}

/* nil, message, status: the Lua way of reporting an error. */
static int push_error(lua_State *L, cmr_status status) {
  char small[512];
  size_t len = 0;
  lua_pushnil(L);
  cmr_status got = cmr_last_error(small, sizeof small, &len);
  if (got == CMR_STATUS_BUFFER_TOO_SMALL) {
    luaL_Buffer b;
    char *big = luaL_buffinitsize(L, &b, len);
    if (cmr_last_error(big, len, &len) == CMR_STATUS_OK) {
      luaL_pushresultsize(&b, len);
    } else {
      luaL_pushresultsize(&b, 0);
    }
  } else if (got == CMR_STATUS_OK && len > 0) {
    lua_pushlstring(L, small, len);
  } else {
    lua_pushstring(L, cmr_status_message((uint32_t)status));
  }
  /* The status as a word a host can test (`panic`: the router is unusable). */
  lua_pushstring(L, cmr_status_name((uint32_t)status));
  return 3;
}

static int push_ok(lua_State *L, cmr_status status) {
  if (status != CMR_STATUS_OK) return push_error(L, status);
  lua_pushboolean(L, 1);
  return 1;
}

/* Lua integers are 64-bit; the ABI's tokens are unsigned 64-bit. */
static uint64_t check_token(lua_State *L, int arg) {
  return (uint64_t)luaL_checkinteger(L, arg);
}

static int l_new(lua_State *L) {
  size_t len;
  const char *options = luaL_optlstring(L, 1, "", &len);
  router_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->router = NULL;
  luaL_setmetatable(L, ROUTER_MT);
  cmr_status status = cmr_router_new(options, len, &box->router);
  if (status != CMR_STATUS_OK) return push_error(L, status);
  return 1;
}

static int l_gc(lua_State *L) {
  router_box *box = luaL_checkudata(L, 1, ROUTER_MT);
  cmr_router_free(box->router);
  box->router = NULL;
  return 0;
}

static int l_register(lua_State *L) {
  cmr_router *router = check_router(L);
  size_t jid_len, show_len;
  const char *jid = luaL_checklstring(L, 2, &jid_len);
  uint64_t token = check_token(L, 3);
  lua_Integer priority = luaL_checkinteger(L, 4);
  const char *show = luaL_optlstring(L, 5, "", &show_len);
  int available = lua_toboolean(L, 6);
  /* Out of int32 range is out of -128..127 too: let the library say so. */
  int32_t p = priority > INT32_MAX ? INT32_MAX : priority < INT32_MIN ? INT32_MIN : (int32_t)priority;
  bool new_account = false;
  cmr_status status = cmr_router_register(router, jid, jid_len, token, p, show, show_len, available, &new_account);
  if (status != CMR_STATUS_OK) return push_error(L, status);
  lua_pushboolean(L, 1);
  lua_pushboolean(L, new_account);
  return 2;
}

/* The calls on one session: the router, the session's JID and its token,
 * then the call's own argument. */
enum session_call { UNREGISTER, SESSION_GONE, TOUCH, SET_HIBERNATING, SET_LOAD };

/* Any number is a load: the host's count of a client's acknowledgements
 * may come from hostile input. */
static uint32_t check_load(lua_State *L, int arg) {
  lua_Number load = luaL_checknumber(L, arg);
  return !(load > 0) ? 0 : load >= (lua_Number)UINT32_MAX ? UINT32_MAX : (uint32_t)load;
}

static int session_call(lua_State *L, enum session_call which) {
  cmr_router *router = check_router(L);
  size_t len;
  const char *jid = luaL_checklstring(L, 2, &len);
  uint64_t token = check_token(L, 3);
  cmr_status status = CMR_STATUS_OK;
  switch (which) {
  case UNREGISTER:
    status = cmr_router_unregister(router, jid, len, token);
    break;
  case SESSION_GONE:
    status = cmr_router_session_gone(router, jid, len, token);
    break;
  case TOUCH:
    status = cmr_router_touch(router, jid, len, token);
    break;
  case SET_HIBERNATING:
    status = cmr_router_set_hibernating(router, jid, len, token, lua_toboolean(L, 4));
    break;
  case SET_LOAD:
    status = cmr_router_set_load(router, jid, len, token, check_load(L, 4));
    break;
  }
  return push_ok(L, status);
}

static int l_unregister(lua_State *L) { return session_call(L, UNREGISTER); }
static int l_session_gone(lua_State *L) { return session_call(L, SESSION_GONE); }
static int l_touch(lua_State *L) { return session_call(L, TOUCH); }
static int l_set_hibernating(lua_State *L) { return session_call(L, SET_HIBERNATING); }
static int l_set_load(lua_State *L) { return session_call(L, SET_LOAD); }

/* luaL_optlstring with one type test where the argument is a string or
 * nil, as a pick's are. */
static const char *opt_string(lua_State *L, int arg, size_t *len) {
  int type = lua_type(L, arg);
  if (type == LUA_TSTRING) return lua_tolstring(L, arg, len);
  if (type <= LUA_TNIL) {
    *len = 0;
    return "";
  }
  return luaL_checklstring(L, arg, len);
}

/* The pick of the message in the arguments from `first` on (recipient,
 * type, sender, hint, sender_is_local): its status, with `*tokens` and
 * `*n` the picked sessions. The first buffer is the caller's `small`; more
 * tokens than it holds go to a userdata left on the stack. */
static cmr_status pick_tokens(lua_State *L, cmr_router *router, int first, uint64_t small[16], uint64_t **tokens,
                              size_t *n) {
  cmr_message m;
  m.recipient = luaL_checklstring(L, first, &m.recipient_len);
  m.message_type = opt_string(L, first + 1, &m.message_type_len);
  m.sender = opt_string(L, first + 2, &m.sender_len);
  m.hint = opt_string(L, first + 3, &m.hint_len);
  m.sender_is_local = lua_toboolean(L, first + 4);
  *tokens = small;
  cmr_status status = cmr_router_pick(router, &m, small, 16, n);
  if (status == CMR_STATUS_BUFFER_TOO_SMALL) {
    *tokens = lua_newuserdatauv(L, *n * sizeof **tokens, 0);
    status = cmr_router_pick(router, &m, *tokens, *n, n);
  }
  return status;
}

/* pick(recipient, type, sender, hint, sender_is_local) -> n, token... */
static int l_pick(lua_State *L) {
  uint64_t small[16], *tokens;
  size_t n = 0;
  cmr_status status = pick_tokens(L, check_router(L), 2, small, &tokens, &n);
  if (status == CMR_STATUS_NOT_ROUTED) {
    lua_pushinteger(L, 0);
    return 1;
  }
  if (status != CMR_STATUS_OK) return push_error(L, status);
  luaL_checkstack(L, (int)n + 1, "cmr: too many tokens");
  lua_pushinteger(L, (lua_Integer)n);
  for (size_t i = 0; i < n; i++) lua_pushinteger(L, (lua_Integer)tokens[i]);
  return (int)n + 1;
}

/* A picker's call: pick(recipient, type, sender, hint, sender_is_local)
 * -> n, the tokens in tokens[1..n] (what lies beyond stays). The router's
 * box and the table are its upvalues, so nothing needs checking. */
static int l_pick_with(lua_State *L) {
  router_box *box = lua_touserdata(L, lua_upvalueindex(1));
  if (box->router == NULL) luaL_error(L, "cmr: router already freed");
  uint64_t small[16], *tokens;
  size_t n = 0;
  cmr_status status = pick_tokens(L, box->router, 1, small, &tokens, &n);
  if (status == CMR_STATUS_NOT_ROUTED) n = 0;
  else if (status != CMR_STATUS_OK) return push_error(L, status);
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, (lua_Integer)tokens[i]);
    lua_rawseti(L, lua_upvalueindex(2), (lua_Integer)i + 1);
  }
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* picker(tokens) -> the router's pick as a function that writes into
 * `tokens`, for a host that picks for every message. */
static int l_picker(lua_State *L) {
  check_router(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_pushcclosure(L, l_pick_with, 2);
  return 1;
}

/* The calls that answer with text: the router (but for ADMIN_FORM_VALUE),
 * then the call's strings. */
enum text_call {
  GET_ALGORITHM,
  HANDLE_IQ,
  DISCO_FEATURES,
  STATS,
  ROUTING_COMMAND,
  ADMIN_FORM,
  ADMIN_FORM_VALUE,
  CHOOSE_FOR,
  CHOICE_NOTE,
  ALGORITHM_FOR
};

typedef struct {
  enum text_call which;
  cmr_router *router;
  const char *text, *text2;
  size_t len, len2;
  bool changed;
  cmr_command_stage stage;
} text_args;

static cmr_status call_text(text_args *a, char *buf, size_t cap, size_t *out_len) {
  switch (a->which) {
  case GET_ALGORITHM:
    return cmr_router_get_algorithm(a->router, a->text, a->len, buf, cap, out_len);
  case HANDLE_IQ:
    return cmr_router_handle_iq(a->router, a->text, a->len, buf, cap, out_len, &a->changed);
  case DISCO_FEATURES:
    return cmr_router_disco_features(a->router, buf, cap, out_len);
  case STATS:
    return cmr_router_stats(a->router, a->text, a->len, buf, cap, out_len);
  case ROUTING_COMMAND:
    return cmr_router_routing_command(a->router, a->text, a->len, a->text2, a->len2, buf, cap, out_len,
                                      &a->stage, &a->changed);
  case ADMIN_FORM:
    return cmr_router_admin_form(a->router, buf, cap, out_len);
  case ADMIN_FORM_VALUE:
    return cmr_admin_form_value(a->text, a->len, a->text2, a->len2, buf, cap, out_len);
  case CHOOSE_FOR:
    return cmr_router_choose_for(a->router, a->text, a->len, a->text2, a->len2, buf, cap, out_len);
  case CHOICE_NOTE:
    return cmr_router_choice_note(a->router, a->text, a->len, a->text2, a->len2, buf, cap, out_len);
  case ALGORITHM_FOR:
    return cmr_router_algorithm_for(a->router, a->text, a->len, a->text2, a->len2, buf, cap, out_len);
  }
  return CMR_STATUS_INVALID_ARGUMENT;
}

/* Makes the call with a stack buffer, and again with one of the size
 * needed when that was too small; pushes the text. Returns the final
 * status. */
static cmr_status push_text(lua_State *L, text_args *a) {
  char small[1024];
  size_t len = 0;
  cmr_status status = call_text(a, small, sizeof small, &len);
  if (status == CMR_STATUS_OK) {
    lua_pushlstring(L, small, len);
  } else if (status == CMR_STATUS_BUFFER_TOO_SMALL) {
    luaL_Buffer b;
    char *big = luaL_buffinitsize(L, &b, len);
    status = call_text(a, big, len, &len);
    if (status == CMR_STATUS_OK) luaL_pushresultsize(&b, len);
  }
  return status;
}

static const char *const stage_names[] = {
    [CMR_COMMAND_STAGE_FORM] = "form",
    [CMR_COMMAND_STAGE_COMPLETED] = "completed",
    [CMR_COMMAND_STAGE_REFUSED] = "refused",
};

static int text_call(lua_State *L, enum text_call which) {
  text_args a = {which, NULL, NULL, NULL, 0, 0, false, CMR_COMMAND_STAGE_REFUSED};
  int arg = 1;
  if (which != ADMIN_FORM_VALUE) {
    a.router = check_router(L);
    arg = 2;
  }
  switch (which) {
  case DISCO_FEATURES:
  case ADMIN_FORM:
    break;
  case ROUTING_COMMAND:
  case ALGORITHM_FOR:
    a.text = luaL_checklstring(L, arg, &a.len);
    a.text2 = luaL_optlstring(L, arg + 1, "", &a.len2);
    break;
  case ADMIN_FORM_VALUE:
  case CHOOSE_FOR:
  case CHOICE_NOTE:
    a.text = luaL_checklstring(L, arg, &a.len);
    a.text2 = luaL_checklstring(L, arg + 1, &a.len2);
    break;
  default:
    a.text = luaL_checklstring(L, arg, &a.len);
  }
  cmr_status status = push_text(L, &a);
  if (which == HANDLE_IQ && status == CMR_STATUS_NOT_MINE) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (status != CMR_STATUS_OK) return push_error(L, status);
  if (which == ROUTING_COMMAND) {
    /* stage, text, changed */
    lua_pushstring(L, stage_names[a.stage]);
    lua_insert(L, -2);
    lua_pushboolean(L, a.changed);
    return 3;
  }
  if (which != HANDLE_IQ) return 1;
  lua_pushboolean(L, a.changed);
  return 2;
}

static int l_get_algorithm(lua_State *L) { return text_call(L, GET_ALGORITHM); }

static int l_set_algorithm(lua_State *L) {
  cmr_router *router = check_router(L);
  size_t jid_len, alg_len;
  const char *jid = luaL_checklstring(L, 2, &jid_len);
  const char *alg = luaL_checklstring(L, 3, &alg_len);
  return push_ok(L, cmr_router_set_algorithm(router, jid, jid_len, alg, alg_len));
}

/* handle_iq(xml) -> reply, changed | false (not a CMR IQ) | nil, err */
static int l_handle_iq(lua_State *L) { return text_call(L, HANDLE_IQ); }
static int l_disco_features(lua_State *L) { return text_call(L, DISCO_FEATURES); }
static int l_stats(lua_State *L) { return text_call(L, STATS); }
/* routing_command(requester, submitted or nil) -> stage, text, changed */
static int l_routing_command(lua_State *L) { return text_call(L, ROUTING_COMMAND); }
static int l_admin_form(lua_State *L) { return text_call(L, ADMIN_FORM); }
static int l_admin_form_value(lua_State *L) { return text_call(L, ADMIN_FORM_VALUE); }
static int l_choose_for(lua_State *L) { return text_call(L, CHOOSE_FOR); }
static int l_choice_note(lua_State *L) { return text_call(L, CHOICE_NOTE); }
/* algorithm_for(bare_jid, stored or nil) -> uri */
static int l_algorithm_for(lua_State *L) { return text_call(L, ALGORITHM_FOR); }

/* A command's node and name, as a table. */
static void push_command(lua_State *L, const cmr_command *command) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, command->node);
  lua_setfield(L, -2, "node");
  lua_pushstring(L, command->name);
  lua_setfield(L, -2, "name");
}

/* The library's table of metric series, as a list of tables. */
static int l_metric_series(lua_State *L) {
  lua_newtable(L);
  const cmr_metric_series *series;
  for (size_t i = 0; (series = cmr_metric_series_at(i)) != NULL; i++) {
    lua_createtable(L, 0, 8);
    const char *fields[][2] = {{"key", series->key},     {"metric", series->metric},
                               {"family", series->family}, {"unit", series->unit},
                               {"label", series->label}, {"label_value", series->label_value},
                               {"help", series->help}};
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
      lua_pushstring(L, fields[f][1]);
      lua_setfield(L, -2, fields[f][0]);
    }
    lua_pushstring(L, series->kind == CMR_METRIC_KIND_GAUGE ? "gauge" : "counter");
    lua_setfield(L, -2, "kind");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* metric_values() -> the values, in the order of metric_series(). Counts
 * stay far below 2^63, where lua_Integer ends. */
static int l_metric_values(lua_State *L) {
  cmr_router *router = check_router(L);
  uint64_t small[32];
  uint64_t *values = small;
  size_t n = 0;
  cmr_status status = cmr_router_metric_values(router, values, sizeof small / sizeof small[0], &n);
  if (status == CMR_STATUS_BUFFER_TOO_SMALL) {
    values = lua_newuserdatauv(L, n * sizeof *values, 0);
    status = cmr_router_metric_values(router, values, n, &n);
  }
  if (status != CMR_STATUS_OK) return push_error(L, status);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, (lua_Integer)values[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int l_version(lua_State *L) {
  lua_pushstring(L, cmr_version());
  return 1;
}

static const luaL_Reg router_methods[] = {
    {"register", l_register},         {"unregister", l_unregister},
    {"session_gone", l_session_gone},
    {"touch", l_touch},               {"set_load", l_set_load},
    {"set_hibernating", l_set_hibernating},
    {"pick", l_pick},                 {"picker", l_picker},
    {"get_algorithm", l_get_algorithm},
    {"set_algorithm", l_set_algorithm}, {"handle_iq", l_handle_iq},
    {"disco_features", l_disco_features}, {"stats", l_stats},
    {"metric_values", l_metric_values},
    {"routing_command", l_routing_command}, {"admin_form", l_admin_form},
    {"choose_for", l_choose_for},     {"choice_note", l_choice_note},
    {"algorithm_for", l_algorithm_for},
    {NULL, NULL}};

int luaopen_cmr_core(lua_State *L) {
  luaL_newmetatable(L, ROUTER_MT);
  luaL_newlibtable(L, router_methods);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, router_methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "new");
  lua_pushcfunction(L, l_version);
  lua_setfield(L, -2, "version");
  lua_pushcfunction(L, l_metric_series);
  lua_setfield(L, -2, "metric_series");
  lua_pushinteger(L, cmr_max_picks_per_message());
  lua_setfield(L, -2, "max_picks_per_message");
  lua_pushinteger(L, cmr_activity_interval_ms());
  lua_setfield(L, -2, "activity_interval_ms");
  lua_pushcfunction(L, l_admin_form_value);
  lua_setfield(L, -2, "admin_form_value");
  push_command(L, cmr_routing_command());
  lua_setfield(L, -2, "routing_command");
  push_command(L, cmr_admin_command());
  lua_setfield(L, -2, "admin_command");
  lua_pushstring(L, "lua");
  lua_setfield(L, -2, "backend");
  return 1;
}
