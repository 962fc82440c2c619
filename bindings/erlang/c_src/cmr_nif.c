/* The NIF behind cmr.erl: translates Erlang terms to include/cmr.h calls
 * and back. Binaries in, binaries or atoms out; every failure is
 * {error, {Status, Message}}, never an exception. The router is a NIF
 * resource freed by the garbage collector. Every call is sub-microsecond
 * and runs on a normal scheduler, except handle_iq (~10 us for a real IQ,
 * up to a millisecond for the largest hostile one) on a dirty one. */
#include <erl_nif.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "cmr.h"

static ErlNifResourceType *router_type;
/* Routers made and not yet freed by the garbage collector (live_routers/0). */
static atomic_long live_routers;

typedef struct {
  cmr_router *router;
} router_res;

static void router_dtor(ErlNifEnv *env, void *obj) {
  (void)env;
  router_res *res = obj;
  cmr_router_free(res->router);
  atomic_fetch_sub(&live_routers, 1);
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

static ERL_NIF_TERM text(ErlNifEnv *env, const char *s, size_t len) {
  ERL_NIF_TERM bin;
  unsigned char *dst = enif_make_new_binary(env, len, &bin);
  memcpy(dst, s, len);
  return bin;
}

static ERL_NIF_TERM error2(ErlNifEnv *env, const char *status, const char *s, size_t len) {
  return enif_make_tuple2(env, atom(env, "error"), enif_make_tuple2(env, atom(env, status), text(env, s, len)));
}


/* {error, {Status, Message}} from the library's last error, whatever its
 * length. */
static ERL_NIF_TERM lib_error(ErlNifEnv *env, cmr_status status) {
  size_t len = 0;
  ErlNifBinary message;
  if (cmr_last_error(NULL, 0, &len) == CMR_STATUS_BUFFER_TOO_SMALL && enif_alloc_binary(len, &message)) {
    if (cmr_last_error((char *)message.data, message.size, &len) == CMR_STATUS_OK) {
      ERL_NIF_TERM reason = enif_make_tuple2(env, atom(env, cmr_status_name((uint32_t)status)), enif_make_binary(env, &message));
      return enif_make_tuple2(env, atom(env, "error"), reason);
    }
    enif_release_binary(&message);
  }
  const char *m = cmr_status_message((uint32_t)status);
  return error2(env, cmr_status_name((uint32_t)status), m, strlen(m));
}

static ERL_NIF_TERM ok_or_error(ErlNifEnv *env, cmr_status status) {
  return status == CMR_STATUS_OK ? atom(env, "ok") : lib_error(env, status);
}

static ERL_NIF_TERM badarg(ErlNifEnv *env, const char *what) {
  return error2(env, "badarg", what, strlen(what));
}

#define GET_ROUTER(var)                                                                 \
  router_res *var;                                                                      \
  if (!enif_get_resource(env, argv[0], router_type, (void **)&var))                     \
    return badarg(env, "argument 1 must be a router from cmr:new/1");

#define GET_BINARY(var, i, what)                                                        \
  ErlNifBinary var;                                                                     \
  if (!enif_inspect_binary(env, argv[i], &var)) return badarg(env, what " must be a binary");

#define GET_TOKEN(var, i)                                                               \
  ErlNifUInt64 var;                                                                     \
  if (!enif_get_uint64(env, argv[i], &var)) return badarg(env, "the token must be an integer 0..2^64-1");

#define STR(bin) (const char *)(bin).data, (bin).size

static ERL_NIF_TERM nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_BINARY(options, 0, "the options");
  cmr_router *router = NULL;
  cmr_status status = cmr_router_new(STR(options), &router);
  if (status != CMR_STATUS_OK) return lib_error(env, status);
  router_res *res = enif_alloc_resource(router_type, sizeof *res);
  res->router = router;
  atomic_fetch_add(&live_routers, 1);
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
  int available;
  if (enif_is_identical(argv[5], atom(env, "true"))) available = 1;
  else if (enif_is_identical(argv[5], atom(env, "false"))) available = 0;
  else return badarg(env, "available must be true or false");
  /* Out of int32 range is out of -128..127 too: let the library say so. */
  int32_t p = priority > INT32_MAX ? INT32_MAX : priority < INT32_MIN ? INT32_MIN : (int32_t)priority;
  bool new_account = false;
  cmr_status status = cmr_router_register(res->router, STR(jid), token, p, STR(show), available, &new_account);
  if (status != CMR_STATUS_OK) return lib_error(env, status);
  return atom(env, new_account ? "new_account" : "ok");
}

static ERL_NIF_TERM nif_unregister(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the full JID");
  GET_TOKEN(token, 2);
  return ok_or_error(env, cmr_router_unregister(res->router, STR(jid), token));
}

static ERL_NIF_TERM nif_session_gone(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the full or bare JID");
  GET_TOKEN(token, 2);
  return ok_or_error(env, cmr_router_session_gone(res->router, STR(jid), token));
}

static ERL_NIF_TERM nif_touch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the full JID");
  GET_TOKEN(token, 2);
  return ok_or_error(env, cmr_router_touch(res->router, STR(jid), token));
}

static ERL_NIF_TERM nif_set_hibernating(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the full JID");
  GET_TOKEN(token, 2);
  bool hibernating;
  if (enif_is_identical(argv[3], atom(env, "true"))) hibernating = true;
  else if (enif_is_identical(argv[3], atom(env, "false"))) hibernating = false;
  else return badarg(env, "hibernating must be true or false");
  return ok_or_error(env, cmr_router_set_hibernating(res->router, STR(jid), token, hibernating));
}

static ERL_NIF_TERM nif_set_load(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the full JID");
  GET_TOKEN(token, 2);
  ErlNifUInt64 load;
  if (!enif_get_uint64(env, argv[3], &load)) return badarg(env, "the load must be a non-negative integer");
  uint32_t l = load > UINT32_MAX ? UINT32_MAX : (uint32_t)load;
  return ok_or_error(env, cmr_router_set_load(res->router, STR(jid), token, l));
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
    status = cmr_router_pick(res->router, &m, tokens, n, &n);
  }
  ERL_NIF_TERM result;
  if (status == CMR_STATUS_OK) {
    result = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;) result = enif_make_list_cell(env, enif_make_uint64(env, tokens[i]), result);
  } else if (status == CMR_STATUS_NOT_ROUTED) {
    result = atom(env, "not_routed");
  } else {
    result = lib_error(env, status);
  }
  if (tokens != small) enif_free(tokens);
  return result;
}

typedef cmr_status (*text_call)(const cmr_router *r, const char *in, size_t in_len, char *buf, size_t cap,
                                size_t *out_len, bool *changed);

static cmr_status call_get_algorithm(const cmr_router *r, const char *in, size_t in_len, char *buf, size_t cap,
                                     size_t *out_len, bool *changed) {
  (void)changed;
  return cmr_router_get_algorithm(r, in, in_len, buf, cap, out_len);
}

static cmr_status call_stats(const cmr_router *r, const char *in, size_t in_len, char *buf, size_t cap,
                             size_t *out_len, bool *changed) {
  (void)changed;
  return cmr_router_stats(r, in, in_len, buf, cap, out_len);
}

static cmr_status call_disco(const cmr_router *r, const char *in, size_t in_len, char *buf, size_t cap,
                             size_t *out_len, bool *changed) {
  (void)in;
  (void)in_len;
  (void)changed;
  return cmr_router_disco_features(r, buf, cap, out_len);
}

/* Calls `call` into a binary, growing it to the size the library asks. */
static cmr_status call_text(ErlNifEnv *env, text_call call, const cmr_router *r, ErlNifBinary *in,
                            ERL_NIF_TERM *out, bool *changed) {
  ErlNifBinary bin;
  size_t len = 0;
  if (!enif_alloc_binary(1024, &bin)) return CMR_STATUS_PANIC;
  cmr_status status = call(r, in ? (const char *)in->data : NULL, in ? in->size : 0, (char *)bin.data, bin.size,
                           &len, changed);
  if (status == CMR_STATUS_BUFFER_TOO_SMALL && enif_realloc_binary(&bin, len))
    status = call(r, in ? (const char *)in->data : NULL, in ? in->size : 0, (char *)bin.data, bin.size, &len,
                  changed);
  if (status == CMR_STATUS_OK) {
    enif_realloc_binary(&bin, len);
    *out = enif_make_binary(env, &bin);
  } else {
    enif_release_binary(&bin);
  }
  return status;
}

static ERL_NIF_TERM text_result(ErlNifEnv *env, text_call call, const cmr_router *r, ErlNifBinary *in) {
  ERL_NIF_TERM out;
  bool changed = false;
  cmr_status status = call_text(env, call, r, in, &out, &changed);
  return status == CMR_STATUS_OK ? enif_make_tuple2(env, atom(env, "ok"), out) : lib_error(env, status);
}

static ERL_NIF_TERM nif_get_algorithm(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the bare JID");
  return text_result(env, call_get_algorithm, res->router, &jid);
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
  GET_BINARY(xml, 1, "the IQ");
  ERL_NIF_TERM out;
  bool changed = false;
  cmr_status status = call_text(env, cmr_router_handle_iq, res->router, &xml, &out, &changed);
  if (status == CMR_STATUS_NOT_MINE) return atom(env, "not_mine");
  if (status != CMR_STATUS_OK) return lib_error(env, status);
  return enif_make_tuple3(env, atom(env, "ok"), out, atom(env, changed ? "true" : "false"));
}

static ERL_NIF_TERM nif_disco_features(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  return text_result(env, call_disco, res->router, NULL);
}

static ERL_NIF_TERM nif_stats(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  GET_BINARY(jid, 1, "the bare JID");
  return text_result(env, call_stats, res->router, &jid);
}

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))
_Static_assert(COUNT_OF(((cmr_metrics *)0)->routed) == CMR_ALGORITHM_COUNT &&
                   COUNT_OF(((cmr_metrics *)0)->left_to_server) == CMR_ALGORITHM_COUNT,
               "cmr_metrics' per-algorithm arrays have CMR_ALGORITHM_COUNT entries");

/* One figure per algorithm, keyed by the library's name for it. */
static ERL_NIF_TERM per_algorithm(ErlNifEnv *env, const uint64_t values[CMR_ALGORITHM_COUNT]) {
  ERL_NIF_TERM keys[CMR_ALGORITHM_COUNT];
  ERL_NIF_TERM counts[CMR_ALGORITHM_COUNT];
  size_t n = 0;
  for (const char *name; n < CMR_ALGORITHM_COUNT && (name = cmr_algorithm_name(n)) != NULL; n++) {
    keys[n] = text(env, name, strlen(name));
    counts[n] = enif_make_uint64(env, values[n]);
  }
  ERL_NIF_TERM map;
  enif_make_map_from_arrays(env, keys, counts, n, &map);
  return map;
}

/* metrics(Router) -> {ok, #{routed => #{Algorithm => N}, ...}} | {error, _} */
static ERL_NIF_TERM nif_metrics(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  GET_ROUTER(res);
  cmr_metrics m;
  cmr_status status = cmr_router_metrics(res->router, &m);
  if (status != CMR_STATUS_OK) return lib_error(env, status);
  ERL_NIF_TERM keys[] = {atom(env, "routed"),       atom(env, "left_to_server"), atom(env, "left_to_server_unclaimed"),
                         atom(env, "gone_sessions"), atom(env, "iq_results"),     atom(env, "iq_errors"),
                         atom(env, "sessions"),      atom(env, "accounts")};
  ERL_NIF_TERM values[] = {per_algorithm(env, m.routed),
                           per_algorithm(env, m.left_to_server),
                           enif_make_uint64(env, m.left_to_server_unclaimed),
                           enif_make_uint64(env, m.gone_sessions),
                           enif_make_uint64(env, m.iq_results),
                           enif_make_uint64(env, m.iq_errors),
                           enif_make_uint64(env, m.sessions),
                           enif_make_uint64(env, m.accounts)};
  ERL_NIF_TERM map;
  enif_make_map_from_arrays(env, keys, values, COUNT_OF(keys), &map);
  return enif_make_tuple2(env, atom(env, "ok"), map);
}

static ERL_NIF_TERM nif_version(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  const char *v = cmr_version();
  return text(env, v, strlen(v));
}

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
    {"register", 6, nif_register, 0},
    {"unregister", 3, nif_unregister, 0},
    {"session_gone", 3, nif_session_gone, 0},
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
    {"metrics", 1, nif_metrics, 0},
    {"version", 0, nif_version, 0},
    {"live_routers", 0, nif_live_routers, 0},
    {"noop", 6, nif_noop, 0},
};

ERL_NIF_INIT(cmr, funcs, load, NULL, NULL, NULL)
