/* The NIF behind cmr.erl: translates Erlang terms to include/cmr.h calls
 * and back. Binaries in, binaries or atoms out; every failure is
 * {error, {Status, Message}}, never an exception. The router is a NIF
 * resource freed by the garbage collector. Every call is sub-microsecond
 * and runs on a normal scheduler, except those that parse what a client
 * sent, handle_iq (~10 us for a real IQ, up to a millisecond for the
 * largest hostile one) and the commands' submitted forms, on a dirty one.
 *
 * Built with -DCMR_TEST, the same source is the NIF of the test module
 * cmr_test instead (bindings/erlang/test): new/1, a count of the routers
 * not yet freed and an empty NIF, none of which the shipped NIF has. */
#include <erl_nif.h>
#include <stdint.h>
#include <string.h>

#include "cmr.h"

static ErlNifResourceType *router_type;

#ifdef CMR_TEST
#include <stdatomic.h>
/* cmr_test has only what the tests need beside cmr: cmr's other calls are
 * compiled, unused. */
#pragma GCC diagnostic ignored "-Wunused-function"
/* Routers made and not yet freed by the garbage collector (live_routers/0). */
static atomic_long live_routers;
#define COUNT_ROUTERS(n) atomic_fetch_add(&live_routers, (n))
#else
#define COUNT_ROUTERS(n) ((void)0)
#endif

typedef struct {
  cmr_router *router;
} router_res;

static void router_dtor(ErlNifEnv *env, void *obj) {
  (void)env;
  router_res *res = obj;
  cmr_router_free(res->router);
  COUNT_ROUTERS(-1);
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
  (void)priv;
  (void)info;
  router_type = enif_open_resource_type(env, NULL, "cmr_router", router_dtor, ERL_NIF_RT_CREATE, NULL);
  return router_type == NULL;
}

static ERL_NIF_TERM atom(ErlNifEnv *env, const char *name) {
  ERL_NIF_TERM a;
  if (!enif_make_existing_atom(env, name, &a, ERL_NIF_LATIN1)) a = enif_make_atom(env, name);
  return a;
}

/* A binary holding a NUL-terminated string (the library's static ones). */
static ERL_NIF_TERM cstring(ErlNifEnv *env, const char *s) {
  size_t len = strlen(s);
  ERL_NIF_TERM bin;
  memcpy(enif_make_new_binary(env, len, &bin), s, len);
  return bin;
}

/* The library's name of a status, as an atom (not_routed, not_mine). */
static ERL_NIF_TERM status_atom(ErlNifEnv *env, cmr_status status) {
  return atom(env, cmr_status_name((uint32_t)status));
}

static ERL_NIF_TERM error2(ErlNifEnv *env, ERL_NIF_TERM status, ERL_NIF_TERM message) {
  return enif_make_tuple2(env, atom(env, "error"), enif_make_tuple2(env, status, message));
}

/* {error, {Status, Message}} from the library's last error, whatever its
 * length, or its message for the status. */
static ERL_NIF_TERM lib_error(ErlNifEnv *env, cmr_status status) {
  size_t len = 0;
  ErlNifBinary message;
  if (cmr_last_error(NULL, 0, &len) == CMR_STATUS_BUFFER_TOO_SMALL && enif_alloc_binary(len, &message)) {
    if (cmr_last_error((char *)message.data, message.size, &len) == CMR_STATUS_OK)
      return error2(env, status_atom(env, status), enif_make_binary(env, &message));
    enif_release_binary(&message);
  }
  return error2(env, status_atom(env, status), cstring(env, cmr_status_message((uint32_t)status)));
}

static ERL_NIF_TERM uint64_list(ErlNifEnv *env, const uint64_t *values, size_t n) {
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (size_t i = n; i-- > 0;) list = enif_make_list_cell(env, enif_make_uint64(env, values[i]), list);
  return list;
}

static ERL_NIF_TERM ok_or_error(ErlNifEnv *env, cmr_status status) {
  return status == CMR_STATUS_OK ? atom(env, "ok") : lib_error(env, status);
}

static ERL_NIF_TERM badarg(ErlNifEnv *env, const char *what) {
  return error2(env, atom(env, "badarg"), cstring(env, what));
}

#define GET_ROUTER(var)                                                                 \
  router_res *var;                                                                      \
  if (!enif_get_resource(env, argv[0], router_type, (void **)&var))                     \
    return badarg(env, "argument 1 must be a router from cmr:new/1");

#define GET_BINARY(var, i, what)                                                        \
  ErlNifBinary var;                                                                     \
  if (!enif_inspect_binary(env, argv[i], &var)) return badarg(env, what " must be a binary");

/* Input k of a text call (text_args below) from argument i. */
#define GET_INPUT(args, k, i, what)                                                     \
  if (!enif_inspect_binary(env, argv[i], &(args).in[k])) return badarg(env, what " must be a binary");

#define GET_TOKEN(var, i)                                                               \
  ErlNifUInt64 var;                                                                     \
  if (!enif_get_uint64(env, argv[i], &var)) return badarg(env, "the token must be an integer 0..2^64-1");

#define STR(bin) (const char *)(bin).data, (bin).size

/* 1 for true, 0 for false, -1 for anything else. */
static int boolean(ErlNifEnv *env, ERL_NIF_TERM term) {
  if (enif_is_identical(term, atom(env, "true"))) return 1;
  if (enif_is_identical(term, atom(env, "false"))) return 0;
  return -1;
}

static ERL_NIF_TERM nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_BINARY(options, 0, "the options");
  cmr_router *router = NULL;
  cmr_status status = cmr_router_new(STR(options), &router);
  if (status != CMR_STATUS_OK) return lib_error(env, status);
  router_res *res = enif_alloc_resource(router_type, sizeof *res);
  res->router = router;
  COUNT_ROUTERS(1);
  ERL_NIF_TERM term = enif_make_resource(env, res);
  enif_release_resource(res);
  return enif_make_tuple2(env, atom(env, "ok"), term);
}

static ERL_NIF_TERM nif_register(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the full JID");
  GET_TOKEN(token, 2);
  long priority;
  if (!enif_get_long(env, argv[3], &priority)) return badarg(env, "the priority must be an integer");
  GET_BINARY(show, 4, "the show");
  int available = boolean(env, argv[5]);
  if (available < 0) return badarg(env, "available must be true or false");
  /* Out of int32 range is out of -128..127 too: let the library say so. */
  int32_t p = priority > INT32_MAX ? INT32_MAX : priority < INT32_MIN ? INT32_MIN : (int32_t)priority;
  bool new_account = false;
  cmr_status status = cmr_router_register(res->router, STR(jid), token, p, STR(show), available, &new_account);
  if (status != CMR_STATUS_OK) return lib_error(env, status);
  return atom(env, new_account ? "new_account" : "ok");
}

enum session_call { UNREGISTER, SESSION_GONE, TOUCH, SET_HIBERNATING, SET_LOAD };

/* The calls on one session, (Router, Jid, Token) and for the last two a
 * value the caller read: ok or {error, {Status, Message}}. */
static ERL_NIF_TERM session_call(ErlNifEnv *env, const ERL_NIF_TERM argv[], enum session_call which,
                                 uint32_t value) {
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the JID");
  GET_TOKEN(token, 2);
  cmr_status status = CMR_STATUS_OK;
  switch (which) {
  case UNREGISTER: status = cmr_router_unregister(res->router, STR(jid), token); break;
  case SESSION_GONE: status = cmr_router_session_gone(res->router, STR(jid), token); break;
  case TOUCH: status = cmr_router_touch(res->router, STR(jid), token); break;
  case SET_HIBERNATING: status = cmr_router_set_hibernating(res->router, STR(jid), token, value != 0); break;
  case SET_LOAD: status = cmr_router_set_load(res->router, STR(jid), token, value); break;
  }
  return ok_or_error(env, status);
}

static ERL_NIF_TERM nif_unregister(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  return session_call(env, argv, UNREGISTER, 0);
}

static ERL_NIF_TERM nif_session_gone(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  return session_call(env, argv, SESSION_GONE, 0);
}

static ERL_NIF_TERM nif_touch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  return session_call(env, argv, TOUCH, 0);
}

static ERL_NIF_TERM nif_set_hibernating(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  int hibernating = boolean(env, argv[3]);
  if (hibernating < 0) return badarg(env, "hibernating must be true or false");
  return session_call(env, argv, SET_HIBERNATING, (uint32_t)hibernating);
}

static ERL_NIF_TERM nif_set_load(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  ErlNifUInt64 load;
  if (!enif_get_uint64(env, argv[3], &load)) return badarg(env, "the load must be a non-negative integer");
  return session_call(env, argv, SET_LOAD, load > UINT32_MAX ? UINT32_MAX : (uint32_t)load);
}

/* pick(Router, Recipient, Type, Sender, Hint, SenderIsLocal) -> [Token] | not_routed */
static ERL_NIF_TERM nif_pick(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(recipient, 1, "the recipient");
  GET_BINARY(type, 2, "the type");
  GET_BINARY(sender, 3, "the sender");
  GET_BINARY(hint, 4, "the hint");
  cmr_message m = {STR(recipient), STR(type), STR(sender), STR(hint),
                   enif_is_identical(argv[5], atom(env, "true"))};
  uint64_t small[16];
  uint64_t *tokens = small;
  size_t n = 0;
  cmr_status status = cmr_router_pick(res->router, &m, tokens, 16, &n);
  if (status == CMR_STATUS_BUFFER_TOO_SMALL) {
    tokens = enif_alloc(n * sizeof *tokens);
    if (tokens == NULL) return enif_raise_exception(env, atom(env, "enomem"));
    status = cmr_router_pick(res->router, &m, tokens, n, &n);
  }
  ERL_NIF_TERM result;
  if (status == CMR_STATUS_OK) {
    result = uint64_list(env, tokens, n);
  } else if (status == CMR_STATUS_NOT_ROUTED) {
    result = status_atom(env, status);
  } else {
    result = lib_error(env, status);
  }
  if (tokens != small) enif_free(tokens);
  return result;
}

/* A call that writes text into a caller's buffer: its inputs (a zeroed
 * binary is an absent one, as the library takes NULL with length 0) and
 * what it says beside the text. */
typedef struct {
  ErlNifBinary in[2];
  bool changed;
  cmr_command_stage stage;
} text_args;

typedef cmr_status (*text_call)(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len);

static cmr_status call_get_algorithm(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len) {
  return cmr_router_get_algorithm(r, STR(a->in[0]), buf, cap, out_len);
}

static cmr_status call_stats(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len) {
  return cmr_router_stats(r, STR(a->in[0]), buf, cap, out_len);
}

static cmr_status call_disco(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len) {
  (void)a;
  return cmr_router_disco_features(r, buf, cap, out_len);
}

static cmr_status call_handle_iq(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len) {
  return cmr_router_handle_iq(r, STR(a->in[0]), buf, cap, out_len, &a->changed);
}

static cmr_status call_routing_command(const cmr_router *r, text_args *a, char *buf, size_t cap,
                                       size_t *out_len) {
  return cmr_router_routing_command(r, STR(a->in[0]), STR(a->in[1]), buf, cap, out_len, &a->stage, &a->changed);
}

static cmr_status call_admin_form(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len) {
  (void)a;
  return cmr_router_admin_form(r, buf, cap, out_len);
}

/* The one call without a router (r is NULL). */
static cmr_status call_admin_form_value(const cmr_router *r, text_args *a, char *buf, size_t cap,
                                        size_t *out_len) {
  (void)r;
  return cmr_admin_form_value(STR(a->in[0]), STR(a->in[1]), buf, cap, out_len);
}

static cmr_status call_choose_for(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len) {
  return cmr_router_choose_for(r, STR(a->in[0]), STR(a->in[1]), buf, cap, out_len);
}

static cmr_status call_choice_note(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len) {
  return cmr_router_choice_note(r, STR(a->in[0]), STR(a->in[1]), buf, cap, out_len);
}

static cmr_status call_algorithm_for(const cmr_router *r, text_args *a, char *buf, size_t cap, size_t *out_len) {
  return cmr_router_algorithm_for(r, STR(a->in[0]), STR(a->in[1]), buf, cap, out_len);
}

/* Calls `call` into a binary, growing it to the size the library asks. */
static cmr_status call_text(ErlNifEnv *env, text_call call, const cmr_router *r, text_args *a, ERL_NIF_TERM *out) {
  ErlNifBinary bin;
  size_t len = 0;
  if (!enif_alloc_binary(1024, &bin)) return CMR_STATUS_PANIC;
  cmr_status status = call(r, a, (char *)bin.data, bin.size, &len);
  if (status == CMR_STATUS_BUFFER_TOO_SMALL && enif_realloc_binary(&bin, len))
    status = call(r, a, (char *)bin.data, bin.size, &len);
  if (status == CMR_STATUS_OK) {
    enif_realloc_binary(&bin, len);
    *out = enif_make_binary(env, &bin);
  } else {
    enif_release_binary(&bin);
  }
  return status;
}

/* {ok, Text} or {error, {Status, Message}}. */
static ERL_NIF_TERM text_result(ErlNifEnv *env, text_call call, const cmr_router *r, text_args *a) {
  ERL_NIF_TERM out;
  cmr_status status = call_text(env, call, r, a, &out);
  return status == CMR_STATUS_OK ? enif_make_tuple2(env, atom(env, "ok"), out) : lib_error(env, status);
}

static ERL_NIF_TERM nif_get_algorithm(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  text_args a = {0};
  GET_INPUT(a, 0, 1, "the bare JID");
  return text_result(env, call_get_algorithm, res->router, &a);
}

static ERL_NIF_TERM nif_set_algorithm(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the bare JID");
  GET_BINARY(algorithm, 2, "the algorithm");
  return ok_or_error(env, cmr_router_set_algorithm(res->router, STR(jid), STR(algorithm)));
}

/* handle_iq(Router, Xml) -> {ok, Reply, Changed} | not_mine | {error, _} */
static ERL_NIF_TERM nif_handle_iq(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  text_args a = {0};
  GET_INPUT(a, 0, 1, "the IQ");
  ERL_NIF_TERM out;
  cmr_status status = call_text(env, call_handle_iq, res->router, &a, &out);
  if (status == CMR_STATUS_NOT_MINE) return status_atom(env, status);
  if (status != CMR_STATUS_OK) return lib_error(env, status);
  return enif_make_tuple3(env, atom(env, "ok"), out, atom(env, a.changed ? "true" : "false"));
}

static ERL_NIF_TERM nif_disco_features(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  text_args a = {0};
  return text_result(env, call_disco, res->router, &a);
}

static ERL_NIF_TERM nif_stats(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  text_args a = {0};
  GET_INPUT(a, 0, 1, "the bare JID");
  return text_result(env, call_stats, res->router, &a);
}

/* routing_command(Router, Requester, Submitted) -> {form, Xml} |
 * {completed, Note, Changed} | {refused, Note} | {error, _}; Submitted is
 * <<>> for the command's first stage. */
static ERL_NIF_TERM nif_routing_command(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  text_args a = {0};
  GET_INPUT(a, 0, 1, "the requester");
  GET_INPUT(a, 1, 2, "the submitted form");
  ERL_NIF_TERM out;
  cmr_status status = call_text(env, call_routing_command, res->router, &a, &out);
  if (status != CMR_STATUS_OK) return lib_error(env, status);
  switch (a.stage) {
  case CMR_COMMAND_STAGE_FORM: return enif_make_tuple2(env, atom(env, "form"), out);
  case CMR_COMMAND_STAGE_COMPLETED:
    return enif_make_tuple3(env, atom(env, "completed"), out, atom(env, a.changed ? "true" : "false"));
  case CMR_COMMAND_STAGE_REFUSED: break;
  }
  return enif_make_tuple2(env, atom(env, "refused"), out);
}

/* #{node => Node, name => Name} of one of the library's commands. */
static ERL_NIF_TERM command_info(ErlNifEnv *env, const cmr_command *command) {
  ERL_NIF_TERM keys[] = {atom(env, "node"), atom(env, "name")};
  ERL_NIF_TERM values[] = {cstring(env, command->node), cstring(env, command->name)};
  ERL_NIF_TERM map;
  enif_make_map_from_arrays(env, keys, values, 2, &map);
  return map;
}

static ERL_NIF_TERM nif_routing_command_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  return command_info(env, cmr_routing_command());
}

static ERL_NIF_TERM nif_admin_command_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  return command_info(env, cmr_admin_command());
}

static ERL_NIF_TERM nif_admin_form(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  text_args a = {0};
  return text_result(env, call_admin_form, res->router, &a);
}

/* admin_form_value(Submitted, Var) -> {ok, Value} | {error, _} */
static ERL_NIF_TERM nif_admin_form_value(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  text_args a = {0};
  GET_INPUT(a, 0, 0, "the submitted form");
  GET_INPUT(a, 1, 1, "the field's name");
  return text_result(env, call_admin_form_value, NULL, &a);
}

/* The calls on an account: the router, its bare JID, then one more text
 * (`not_binary`: the badarg when it is not a binary). */
static ERL_NIF_TERM account_text_call(ErlNifEnv *env, const ERL_NIF_TERM argv[], text_call call,
                                      const char *not_binary) {
  GET_ROUTER(res);
  text_args a = {0};
  GET_INPUT(a, 0, 1, "the bare JID");
  if (!enif_inspect_binary(env, argv[2], &a.in[1])) return badarg(env, not_binary);
  return text_result(env, call, res->router, &a);
}

static ERL_NIF_TERM nif_choose_for(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  return account_text_call(env, argv, call_choose_for, "the algorithm must be a binary");
}

static ERL_NIF_TERM nif_choice_note(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  return account_text_call(env, argv, call_choice_note, "the algorithm must be a binary");
}

static ERL_NIF_TERM nif_algorithm_for(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  return account_text_call(env, argv, call_algorithm_for, "the stored algorithm must be a binary");
}

/* metric_series() -> [#{key, metric, family, unit, label, label_value,
 * help => binary(), kind => counter | gauge}], the library's table in the
 * order of metric_values/1. */
static ERL_NIF_TERM nif_metric_series(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  size_t count = 0;
  while (cmr_metric_series_at(count) != NULL) count++;
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (size_t i = count; i-- > 0;) {
    const cmr_metric_series *m = cmr_metric_series_at(i);
    ERL_NIF_TERM keys[] = {atom(env, "key"),   atom(env, "metric"),      atom(env, "family"), atom(env, "unit"),
                           atom(env, "label"), atom(env, "label_value"), atom(env, "help"),   atom(env, "kind")};
    ERL_NIF_TERM values[] = {cstring(env, m->key),   cstring(env, m->metric),      cstring(env, m->family),
                             cstring(env, m->unit),  cstring(env, m->label),       cstring(env, m->label_value),
                             cstring(env, m->help),
                             atom(env, m->kind == CMR_METRIC_KIND_GAUGE ? "gauge" : "counter")};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, sizeof keys / sizeof keys[0], &map);
    list = enif_make_list_cell(env, map, list);
  }
  return list;
}

/* metric_values(Router) -> {ok, [N]} in the order of metric_series/0. */
static ERL_NIF_TERM nif_metric_values(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  uint64_t small[32];
  uint64_t *values = small;
  size_t n = 0;
  cmr_status status = cmr_router_metric_values(res->router, values, 32, &n);
  if (status == CMR_STATUS_BUFFER_TOO_SMALL) {
    values = enif_alloc(n * sizeof *values);
    if (values == NULL) return enif_raise_exception(env, atom(env, "enomem"));
    status = cmr_router_metric_values(res->router, values, n, &n);
  }
  ERL_NIF_TERM result;
  if (status == CMR_STATUS_OK) {
    result = enif_make_tuple2(env, atom(env, "ok"), uint64_list(env, values, n));
  } else {
    result = lib_error(env, status);
  }
  if (values != small) enif_free(values);
  return result;
}

static ERL_NIF_TERM nif_max_picks_per_message(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  return enif_make_uint(env, cmr_max_picks_per_message());
}

static ERL_NIF_TERM nif_activity_interval_ms(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  return enif_make_uint(env, cmr_activity_interval_ms());
}

static ERL_NIF_TERM nif_version(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  return cstring(env, cmr_version());
}

#ifdef CMR_TEST
static ERL_NIF_TERM nif_live_routers(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  return enif_make_long(env, atomic_load(&live_routers));
}

static ERL_NIF_TERM nif_noop(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  return atom(env, "ok");
}

static ErlNifFunc funcs[] = {
    {"new", 1, nif_new, 0},
    {"live_routers", 0, nif_live_routers, 0},
    {"noop", 6, nif_noop, 0},
};

ERL_NIF_INIT(cmr_test, funcs, load, NULL, NULL, NULL)
#else
static ErlNifFunc funcs[] = {
    {"new", 1, nif_new, 0},
    {"register", 6, nif_register, 0},
    /* A removal may hand the memory of a mass logout back to the system
     * (malloc_trim: some milliseconds for millions of sessions), more than
     * a normal scheduler's slice. */
    {"unregister", 3, nif_unregister, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"session_gone", 3, nif_session_gone, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"touch", 3, nif_touch, 0},
    {"set_load", 4, nif_set_load, 0},
    {"set_hibernating", 4, nif_set_hibernating, 0},
    {"pick", 6, nif_pick, 0},
    {"get_algorithm", 2, nif_get_algorithm, 0},
    {"set_algorithm", 3, nif_set_algorithm, 0},
    /* A hostile IQ of the largest size takes up to about a millisecond to
     * refuse: more than a normal scheduler's slice. */
    {"handle_iq", 2, nif_handle_iq, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"disco_features", 1, nif_disco_features, 0},
    {"stats", 2, nif_stats, 0},
    /* The two that parse a submitted form, as handle_iq parses an IQ. */
    {"routing_command", 3, nif_routing_command, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"routing_command", 0, nif_routing_command_info, 0},
    {"admin_command", 0, nif_admin_command_info, 0},
    {"admin_form", 1, nif_admin_form, 0},
    {"admin_form_value", 2, nif_admin_form_value, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"choose_for", 3, nif_choose_for, 0},
    {"choice_note", 3, nif_choice_note, 0},
    {"algorithm_for", 3, nif_algorithm_for, 0},
    {"metric_series", 0, nif_metric_series, 0},
    {"metric_values", 1, nif_metric_values, 0},
    {"max_picks_per_message", 0, nif_max_picks_per_message, 0},
    {"activity_interval_ms", 0, nif_activity_interval_ms, 0},
    {"version", 0, nif_version, 0},
};

ERL_NIF_INIT(cmr, funcs, load, NULL, NULL, NULL)
#endif
