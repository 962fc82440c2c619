/* Exercises every function of include/cmr.h, good and bad input, through
 * the shared library. Run under valgrind by `make test`. */
#define _GNU_SOURCE /* memmem */
#include "cmr.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int passed, failed;

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (cond) {                                                              \
      passed++;                                                              \
    } else {                                                                 \
      failed++;                                                              \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
    }                                                                        \
  } while (0)

#define S(text) text, strlen(text)

static int contains(const char *buf, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(buf + i, needle, n) == 0) return 1;
  return 0;
}

/* The thread's last error, NUL-terminated for printing. */
static const char *last_error(void) {
  static char buf[512];
  size_t len = 0;
  if (cmr_last_error(buf, sizeof buf - 1, &len) != CMR_STATUS_OK) return "?";
  buf[len] = '\0';
  return buf;
}


static cmr_message message(const char *recipient, const char *type, const char *hint) {
  cmr_message m = {0};
  m.recipient = recipient;
  m.recipient_len = strlen(recipient);
  m.message_type = type;
  m.message_type_len = type ? strlen(type) : 0;
  m.sender = "sensor@example.net/probe";
  m.sender_len = strlen(m.sender);
  m.hint = hint;
  m.hint_len = hint ? strlen(hint) : 0;
  m.sender_is_local = true;
  return m;
}

static void test_version_and_messages(void) {
  CHECK(strcmp(cmr_version(), "0.1.0") == 0);
  CHECK(strstr(cmr_status_message(CMR_STATUS_NOT_ROUTED), "not routed") != NULL);
  CHECK(strcmp(cmr_status_message(9999), "unknown status") == 0);
  CHECK(strcmp(cmr_status_name(CMR_STATUS_INVALID_JID), "invalid_jid") == 0);
  CHECK(strcmp(cmr_status_name(CMR_STATUS_PANIC), "panic") == 0);
  CHECK(strcmp(cmr_status_name(9999), "error") == 0);
  size_t len;
  CHECK(cmr_last_error(NULL, 0, NULL) == CMR_STATUS_NULL_PARAMETER);
  CHECK(strstr(last_error(), "out_len is NULL") != NULL);
  CHECK(cmr_last_error(NULL, 5, &len) == CMR_STATUS_NULL_PARAMETER);
}

/* A buffer too small for the last error gives the size needed and keeps
 * the message; a message about a huge input quotes it shortened. */
static void test_last_error_sizes(void) {
  cmr_router *router = NULL;
  CHECK(cmr_router_new(S(""), &router) == CMR_STATUS_OK);
  static char jid[70000];
  memset(jid, 'r', sizeof jid);
  memcpy(jid, "a@x/", 4);
  CHECK(cmr_router_register(router, jid, 2000, 1, 0, NULL, 0, true, NULL) == CMR_STATUS_INVALID_JID);
  size_t needed = 0;
  char small[8];
  CHECK(cmr_last_error(small, sizeof small, &needed) == CMR_STATUS_BUFFER_TOO_SMALL);
  CHECK(needed > sizeof small && needed < 512);
  CHECK(cmr_last_error(NULL, 0, &needed) == CMR_STATUS_BUFFER_TOO_SMALL);
  char *buf = malloc(needed);
  size_t len = 0;
  CHECK(cmr_last_error(buf, needed, &len) == CMR_STATUS_OK && len == needed);
  CHECK(contains(buf, len, "not a valid JID") && contains(buf, len, "(2000 bytes in all)"));
  free(buf);
  /* A 64 KB JID: the message stays short. */
  CHECK(cmr_router_set_algorithm(router, jid, sizeof jid, S("all")) == CMR_STATUS_INVALID_JID);
  CHECK(cmr_last_error(NULL, 0, &needed) == CMR_STATUS_BUFFER_TOO_SMALL && needed < 512);
  cmr_router_free(router);
  /* A bad option quotes its name and its value, each escaped: control
   * characters, five bytes each once escaped, still give a message within
   * the bound, with each input's length at the end of its quote. */
  static char options[1600];
  memset(options, '\x01', sizeof options);
  memcpy(options + 700, "=\x01,", 3);
  router = NULL;
  CHECK(cmr_router_new(options, sizeof options, &router) == CMR_STATUS_INVALID_OPTION && router == NULL);
  CHECK(cmr_last_error(NULL, 0, &needed) == CMR_STATUS_BUFFER_TOO_SMALL);
  CHECK(needed > 200 && needed <= CMR_MAX_ERROR_BYTES);
  char message[CMR_MAX_ERROR_BYTES];
  CHECK(cmr_last_error(message, sizeof message, &len) == CMR_STATUS_OK && len == needed);
  CHECK(contains(message, len, "(700 bytes in all)") && contains(message, len, "(899 bytes in all)"));
}

static void test_router_new(void) {
  cmr_router *router = NULL;
  CHECK(cmr_router_new(NULL, 0, NULL) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_new(NULL, 3, &router) == CMR_STATUS_NULL_PARAMETER);
  CHECK(router == NULL);
  CHECK(cmr_router_new(S("offered=roundrobin"), &router) == CMR_STATUS_INVALID_OPTION);
  CHECK(strstr(last_error(), "offered='roundrobin'") != NULL);
  CHECK(router == NULL);
  CHECK(cmr_router_new(S("colour=blue"), &router) == CMR_STATUS_INVALID_OPTION);
  CHECK(strstr(last_error(), "colour") != NULL);
  CHECK(cmr_router_new("hints=\xff", 7, &router) == CMR_STATUS_INVALID_UTF8);
  CHECK(cmr_router_new(S("default=sticky hints=any"), &router) == CMR_STATUS_OK);
  CHECK(router != NULL);
  cmr_router_free(router);
  cmr_router_free(NULL);
}

static void test_options_are_validated(void) {
  cmr_router *router = NULL;
  const char *bad[] = {"prefix=tag:a\x01:", "offered=all,,mostactive", "offered=all,all,all", "offered=all,"};
  for (int i = 0; i < 4; i++) {
    CHECK(cmr_router_new(S(bad[i]), &router) == CMR_STATUS_INVALID_OPTION);
    CHECK(router == NULL);
  }
}

/* Exactly one register call gives an account its first session, in
 * whichever order two sessions bind, so the host restores once. */
static void test_first_session(void) {
  cmr_router *router = NULL;
  CHECK(cmr_router_new(S(""), &router) == CMR_STATUS_OK);
  const char *first[] = {"m@x/a", "m@x/b"};
  for (int order = 0; order < 2; order++) {
    bool new_a = false, new_b = true;
    CHECK(cmr_router_register(router, S(first[order]), 1, 0, NULL, 0, false, &new_a) == CMR_STATUS_OK);
    CHECK(cmr_router_register(router, S(first[1 - order]), 2, 0, NULL, 0, false, &new_b) == CMR_STATUS_OK);
    CHECK(new_a && !new_b);
    /* A presence update is not a first session either. */
    CHECK(cmr_router_register(router, S(first[order]), 1, 0, NULL, 0, true, &new_a) == CMR_STATUS_OK && !new_a);
    CHECK(cmr_router_unregister(router, S(first[0]), order == 0 ? 1 : 2) == CMR_STATUS_OK);
    CHECK(cmr_router_unregister(router, S(first[1]), order == 0 ? 2 : 1) == CMR_STATUS_OK);
  }
  cmr_router_free(router);
}

/* Round robin over four sessions while one re-sends its unchanged presence
 * after every second message: the turn goes on (it restarted before, and
 * two sessions got everything). */
static void test_rotation_survives_presence_updates(void) {
  cmr_router *router = NULL;
  CHECK(cmr_router_new(S("default=roundrobin"), &router) == CMR_STATUS_OK);
  const char *nodes[] = {"rr@x/n1", "rr@x/n2", "rr@x/n3", "rr@x/n4"};
  for (int i = 0; i < 4; i++) CHECK(cmr_router_register(router, S(nodes[i]), i, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  cmr_message m = message("rr@x", "chat", NULL);
  int counts[4] = {0};
  for (int i = 0; i < 300; i++) {
    uint64_t token;
    size_t n;
    CHECK(cmr_router_pick(router, &m, &token, 1, &n) == CMR_STATUS_OK && n == 1 && token < 4);
    counts[token]++;
    if (i % 2 == 1) CHECK(cmr_router_register(router, S(nodes[1]), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  }
  CHECK(counts[0] == 75 && counts[1] == 75 && counts[2] == 75 && counts[3] == 75);
  cmr_router_free(router);
}

/* A session waiting for resumption gets messages only when no other is
 * live; it is back in the turn when it resumes. */
static void test_hibernation(void) {
  cmr_router *router = NULL;
  CHECK(cmr_router_new(S("default=roundrobin"), &router) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("h@x/a"), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("h@x/b"), 2, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_set_hibernating(router, S("h@x/b"), 2, true) == CMR_STATUS_OK);
  CHECK(cmr_router_set_hibernating(router, S("h@x/b"), 3, true) == CMR_STATUS_NOT_FOUND);
  CHECK(cmr_router_set_hibernating(NULL, S("h@x/b"), 2, true) == CMR_STATUS_NULL_PARAMETER);
  cmr_message m = message("h@x", "chat", NULL);
  uint64_t token;
  size_t n;
  for (int i = 0; i < 4; i++) CHECK(cmr_router_pick(router, &m, &token, 1, &n) == CMR_STATUS_OK && token == 1);
  CHECK(cmr_router_unregister(router, S("h@x/a"), 1) == CMR_STATUS_OK);
  CHECK(cmr_router_pick(router, &m, &token, 1, &n) == CMR_STATUS_OK && token == 2);
  CHECK(cmr_router_register(router, S("h@x/a"), 4, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_set_hibernating(router, S("h@x/b"), 2, false) == CMR_STATUS_OK);
  int got_b = 0;
  for (int i = 0; i < 4; i++) {
    CHECK(cmr_router_pick(router, &m, &token, 1, &n) == CMR_STATUS_OK);
    got_b += token == 2;
  }
  CHECK(got_b == 2);
  char buf[256];
  size_t len;
  CHECK(cmr_router_stats(router, S("h@x"), buf, sizeof buf, &len) == CMR_STATUS_OK);
  CHECK(contains(buf, len, "\thibernating\n") && contains(buf, len, "\t2\tfalse\n"));
  cmr_router_free(router);
}

/* A set for an account with no registered session changes nothing, so the
 * host has nothing to persist (it used to persist the default). */
static void test_set_without_a_session(void) {
  cmr_router *router = NULL;
  CHECK(cmr_router_new(S(""), &router) == CMR_STATUS_OK);
  const char *set = "<iq type='set' from='ghost@x/r' id='s'><cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:roundrobin'/></iq>";
  char buf[1024];
  size_t len;
  bool changed = true;
  CHECK(cmr_router_handle_iq(router, S(set), buf, sizeof buf, &len, &changed) == CMR_STATUS_OK);
  CHECK(!changed && contains(buf, len, "<unexpected-request"));
  cmr_router_free(router);
}

static void test_register_and_pick(cmr_router *router) {
  CHECK(cmr_router_register(NULL, S("a@x/1"), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_register(router, NULL, 5, 1, 0, NULL, 0, true, NULL) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_register(router, S("a@x"), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_INVALID_JID);
  CHECK(strstr(last_error(), "'a@x'") != NULL);
  CHECK(cmr_router_register(router, S("@@/r"), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_INVALID_JID);
  CHECK(cmr_router_register(router, "a@x/\xc3", 5, 1, 0, NULL, 0, true, NULL) == CMR_STATUS_INVALID_UTF8);
  CHECK(cmr_router_register(router, S("a@x/1"), 1, 128, NULL, 0, true, NULL) == CMR_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(last_error(), "priority '128'") != NULL);
  CHECK(cmr_router_register(router, S("a@x/1"), 1, -129, NULL, 0, true, NULL) == CMR_STATUS_INVALID_ARGUMENT);
  CHECK(cmr_router_register(router, S("a@x/1"), 1, 0, S("busy"), true, NULL) == CMR_STATUS_INVALID_ARGUMENT);

  CHECK(cmr_router_register(router, S("Cluster@X/node-1"), 11, 0, S(""), true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("cluster@x/node-2"), 12, 0, S("chat"), true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("cluster@x/node-3"), 13, -1, S("away"), true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("cluster@x/node-4"), 14, 5, S("dnd"), false, NULL) == CMR_STATUS_OK);

  uint64_t tokens[4];
  size_t len = 99;
  cmr_message m = message("cluster@x", NULL, NULL);
  CHECK(cmr_router_pick(NULL, &m, tokens, 4, &len) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_pick(router, NULL, tokens, 4, &len) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_pick(router, &m, NULL, 4, &len) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_pick(router, &m, tokens, 4, NULL) == CMR_STATUS_NULL_PARAMETER);
  cmr_message bad = m;
  bad.recipient = "\xff\xfe";
  bad.recipient_len = 2;
  CHECK(cmr_router_pick(router, &bad, tokens, 4, &len) == CMR_STATUS_INVALID_UTF8);
  bad = m;
  bad.sender = NULL;
  CHECK(cmr_router_pick(router, &bad, tokens, 4, &len) == CMR_STATUS_NULL_PARAMETER);

  /* sticky (the default here): one of the two eligible, always the same. */
  CHECK(cmr_router_pick(router, &m, tokens, 4, &len) == CMR_STATUS_OK);
  CHECK(len == 1 && (tokens[0] == 11 || tokens[0] == 12));
  uint64_t first = tokens[0];
  CHECK(cmr_router_pick(router, &m, tokens, 4, &len) == CMR_STATUS_OK && tokens[0] == first);

  /* all: both priority-0 sessions; a buffer of one is too small. */
  CHECK(cmr_router_set_algorithm(router, S("cluster@x"), S("urn:xmpp:cmr:all")) == CMR_STATUS_OK);
  CHECK(cmr_router_pick(router, &m, tokens, 1, &len) == CMR_STATUS_BUFFER_TOO_SMALL && len == 2);
  CHECK(cmr_router_pick(router, &m, NULL, 0, &len) == CMR_STATUS_BUFFER_TOO_SMALL && len == 2);
  CHECK(cmr_router_pick(router, &m, tokens, 4, &len) == CMR_STATUS_OK);
  CHECK(len == 2 && tokens[0] == 11 && tokens[1] == 12);

  /* A hint (allowed from anyone here) overrides the active algorithm. */
  cmr_message hinted = message("cluster@x", "chat", "urn:xmpp:cmr:mostactive");
  CHECK(cmr_router_pick(router, &hinted, tokens, 4, &len) == CMR_STATUS_OK);
  CHECK(len == 1 && tokens[0] == 12); /* chat beats none */

  /* Not routed: headline, groupchat, error, unknown account. */
  const char *not_routed[] = {"headline", "groupchat", "error"};
  for (int i = 0; i < 3; i++) {
    cmr_message other = message("cluster@x", not_routed[i], NULL);
    CHECK(cmr_router_pick(router, &other, tokens, 4, &len) == CMR_STATUS_NOT_ROUTED && len == 0);
  }
  cmr_message nobody = message("nobody@x", "chat", NULL);
  CHECK(cmr_router_pick(router, &nobody, tokens, 4, &len) == CMR_STATUS_NOT_ROUTED);

  /* Activity and load. */
  CHECK(cmr_router_touch(router, S("cluster@x/node-1"), 11) == CMR_STATUS_OK);
  CHECK(cmr_router_touch(router, S("cluster@x/node-1"), 99) == CMR_STATUS_NOT_FOUND);
  CHECK(cmr_router_touch(router, S("cluster@x"), 11) == CMR_STATUS_INVALID_JID);
  CHECK(cmr_router_touch(NULL, S("cluster@x/node-1"), 11) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_set_load(router, S("cluster@x/node-1"), 11, 40) == CMR_STATUS_OK);
  CHECK(cmr_router_set_load(router, S("cluster@x/node-9"), 11, 40) == CMR_STATUS_NOT_FOUND);
  CHECK(cmr_router_set_load(router, NULL, 3, 11, 40) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_set_algorithm(router, S("cluster@x"), S("leastloaded")) == CMR_STATUS_OK);
  CHECK(cmr_router_pick(router, &m, tokens, 4, &len) == CMR_STATUS_OK && len == 1 && tokens[0] == 12);
}

static void test_algorithm_calls(cmr_router *router) {
  char buf[128];
  size_t len;
  CHECK(cmr_router_get_algorithm(router, S("cluster@x"), buf, sizeof buf, &len) == CMR_STATUS_OK);
  CHECK(len == strlen("urn:x-cmr:algorithm:leastloaded") && memcmp(buf, "urn:x-cmr:algorithm:leastloaded", len) == 0);
  CHECK(cmr_router_get_algorithm(router, S("cluster@x"), buf, 3, &len) == CMR_STATUS_BUFFER_TOO_SMALL);
  CHECK(len == strlen("urn:x-cmr:algorithm:leastloaded"));
  CHECK(cmr_router_get_algorithm(router, S("cluster@x"), NULL, 3, &len) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_get_algorithm(router, S("cluster@x"), buf, sizeof buf, NULL) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_get_algorithm(router, S("not a jid@"), buf, sizeof buf, &len) == CMR_STATUS_INVALID_JID);
  /* An account without sessions has the default. */
  CHECK(cmr_router_get_algorithm(router, S("nobody@x"), buf, sizeof buf, &len) == CMR_STATUS_OK);
  CHECK(memcmp(buf, "urn:x-cmr:algorithm:sticky", len) == 0);
  CHECK(cmr_router_set_algorithm(router, S("cluster@x"), S("fastest")) == CMR_STATUS_UNKNOWN_ALGORITHM);
  CHECK(strstr(last_error(), "'fastest'") != NULL);
  CHECK(cmr_router_set_algorithm(router, S("nobody@x"), S("all")) == CMR_STATUS_NOT_FOUND);
  CHECK(cmr_router_set_algorithm(router, S("cluster@x"), NULL, 2) == CMR_STATUS_NULL_PARAMETER);

  cmr_router *narrow = NULL;
  CHECK(cmr_router_new(S("offered=all,roundrobin"), &narrow) == CMR_STATUS_OK);
  CHECK(cmr_router_register(narrow, S("a@x/r"), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_set_algorithm(narrow, S("a@x"), S("urn:xmpp:cmr:weighted")) == CMR_STATUS_NOT_OFFERED);
  cmr_router_free(narrow);
}

static void test_iq(cmr_router *router) {
  char buf[1024];
  size_t len;
  bool changed = true;
  const char *query = "<iq type='get' from='cluster@x/node-1' id='q1'><query xmlns='urn:xmpp:cmr:0'/></iq>";
  CHECK(cmr_router_handle_iq(router, S(query), buf, sizeof buf, &len, &changed) == CMR_STATUS_OK);
  CHECK(!changed);
  CHECK(contains(buf, len, "<active algorithm='urn:x-cmr:algorithm:leastloaded'/>"));
  CHECK(contains(buf, len, "<available algorithm='urn:xmpp:cmr:roundrobin'/>"));
  CHECK(contains(buf, len, "id='q1'") && contains(buf, len, "to='cluster@x/node-1'"));

  const char *set = "<iq type='set' from='cluster@x/node-1' id='s1'>"
                    "<cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:roundrobin'/></iq>";
  /* Too small: the size needed, and the change is not applied. */
  CHECK(cmr_router_handle_iq(router, S(set), buf, 10, &len, &changed) == CMR_STATUS_BUFFER_TOO_SMALL);
  CHECK(len > 10 && !changed);
  CHECK(cmr_router_get_algorithm(router, S("cluster@x"), buf, sizeof buf, &len) == CMR_STATUS_OK);
  CHECK(memcmp(buf, "urn:x-cmr:algorithm:leastloaded", len) == 0);
  CHECK(cmr_router_handle_iq(router, S(set), buf, sizeof buf, &len, &changed) == CMR_STATUS_OK);
  CHECK(changed && contains(buf, len, "type='result'"));
  CHECK(cmr_router_get_algorithm(router, S("cluster@x"), buf, sizeof buf, &len) == CMR_STATUS_OK);
  CHECK(memcmp(buf, "urn:xmpp:cmr:roundrobin", len) == 0);

  const char *other = "<iq type='set' from='mallory@x/r' to='cluster@x' id='s2'>"
                      "<cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:all'/></iq>";
  CHECK(cmr_router_handle_iq(router, S(other), buf, sizeof buf, &len, &changed) == CMR_STATUS_OK);
  CHECK(!changed && contains(buf, len, "<forbidden"));
  const char *unknown = "<iq type='set' from='cluster@x/node-1' id='s3'>"
                        "<cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:example:fastest'/></iq>";
  CHECK(cmr_router_handle_iq(router, S(unknown), buf, sizeof buf, &len, &changed) == CMR_STATUS_OK);
  CHECK(contains(buf, len, "<item-not-found"));
  const char *no_attr = "<iq type='set' from='cluster@x/node-1' id='s4'><cmr xmlns='urn:xmpp:cmr:0'/></iq>";
  CHECK(cmr_router_handle_iq(router, S(no_attr), buf, sizeof buf, &len, &changed) == CMR_STATUS_OK);
  CHECK(contains(buf, len, "<bad-request"));

  const char *version = "<iq type='get' from='cluster@x/node-1' id='v'><query xmlns='jabber:iq:version'/></iq>";
  CHECK(cmr_router_handle_iq(router, S(version), buf, sizeof buf, &len, &changed) == CMR_STATUS_NOT_MINE);
  const char *result = "<iq type='result' from='cluster@x/node-1' id='r'/>";
  CHECK(cmr_router_handle_iq(router, S(result), buf, sizeof buf, &len, &changed) == CMR_STATUS_NOT_MINE);
  CHECK(cmr_router_handle_iq(router, S("<iq type='get'><query"), buf, sizeof buf, &len, &changed) == CMR_STATUS_INVALID_XML);
  CHECK(strstr(last_error(), "invalid stanza") != NULL);
  CHECK(cmr_router_handle_iq(router, S("<iq type='get' from='cluster@x/node-1' id='x'><query xmlns='urn:xmpp:cmr:0'></iq>"),
                             buf, sizeof buf, &len, &changed) == CMR_STATUS_INVALID_XML);
  const char *bad_from = "<iq type='get' from='@x' id='q'><query xmlns='urn:xmpp:cmr:0'/></iq>";
  CHECK(cmr_router_handle_iq(router, S(bad_from), buf, sizeof buf, &len, &changed) == CMR_STATUS_INVALID_JID);
  CHECK(cmr_router_handle_iq(router, "<iq \xff/>", 7, buf, sizeof buf, &len, &changed) == CMR_STATUS_INVALID_UTF8);
  CHECK(cmr_router_handle_iq(router, S(query), buf, sizeof buf, &len, NULL) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_handle_iq(router, NULL, 4, buf, sizeof buf, &len, &changed) == CMR_STATUS_NULL_PARAMETER);
}

static void test_disco_and_stats(cmr_router *router) {
  char buf[512];
  size_t len;
  CHECK(cmr_router_disco_features(router, buf, sizeof buf, &len) == CMR_STATUS_OK);
  CHECK(len == strlen("urn:xmpp:cmr:0\nurn:xmpp:cmr:hints:0"));
  CHECK(memcmp(buf, "urn:xmpp:cmr:0\nurn:xmpp:cmr:hints:0", len) == 0);
  CHECK(cmr_router_disco_features(router, NULL, 0, &len) == CMR_STATUS_BUFFER_TOO_SMALL);
  CHECK(cmr_router_disco_features(NULL, buf, sizeof buf, &len) == CMR_STATUS_NULL_PARAMETER);

  CHECK(cmr_router_stats(router, S("cluster@x"), buf, sizeof buf, &len) == CMR_STATUS_OK);
  CHECK(contains(buf, len, "resource\trouted\tpriority\tshow\tavailable\tload\ttoken\thibernating\n"));
  CHECK(contains(buf, len, "node-3\t0\t-1\taway\ttrue\t0\t13\tfalse\n"));
  CHECK(contains(buf, len, "node-4\t0\t5\tdnd\tfalse\t0\t14\tfalse\n"));
  CHECK(cmr_router_stats(router, S("cluster@x"), buf, 8, &len) == CMR_STATUS_BUFFER_TOO_SMALL);
  CHECK(cmr_router_stats(router, S("nobody@x"), buf, sizeof buf, &len) == CMR_STATUS_NOT_FOUND);
  CHECK(cmr_router_stats(router, S("cluster@x/node-1"), buf, sizeof buf, &len) == CMR_STATUS_INVALID_JID);

  /* Unregister: a stale token removes nothing; the last session drops the account. */
  CHECK(cmr_router_unregister(router, S("cluster@x/node-1"), 12) == CMR_STATUS_NOT_FOUND);
  CHECK(cmr_router_unregister(NULL, S("cluster@x/node-1"), 11) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_unregister(router, S("@x/1"), 11) == CMR_STATUS_INVALID_JID);
  /* The account's bare JID removes whichever session has the token. */
  CHECK(cmr_router_unregister(router, S("cluster@x"), 99) == CMR_STATUS_NOT_FOUND);
  CHECK(cmr_router_register(router, S("cluster@x/node-5"), 15, 0, S(""), true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_unregister(router, S("cluster@x"), 15) == CMR_STATUS_OK);
  CHECK(cmr_router_unregister(router, S("cluster@x/node-5"), 15) == CMR_STATUS_NOT_FOUND);
  const char *nodes[] = {"cluster@x/node-1", "cluster@x/node-2", "cluster@x/node-3", "cluster@x/node-4"};
  for (int i = 0; i < 4; i++) CHECK(cmr_router_unregister(router, S(nodes[i]), 11 + i) == CMR_STATUS_OK);
  CHECK(cmr_router_stats(router, S("cluster@x"), buf, sizeof buf, &len) == CMR_STATUS_NOT_FOUND);
}

/* The bad-stanza corpus (tests/corpus/stanzas): each IQ through
 * cmr_router_handle_iq must give the status, or the answer, its manifest
 * line expects. */
typedef struct {
  cmr_router *router;
  const char *xml;
  size_t len;
  cmr_status status;
  char answer[2048];
  size_t answer_len;
} corpus_call;

static void *call_handle_iq(void *arg) {
  corpus_call *c = arg;
  bool changed;
  c->status = cmr_router_handle_iq(c->router, c->xml, c->len, c->answer, sizeof c->answer, &c->answer_len, &changed);
  return NULL;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *data = malloc((size_t)size + 1);
  *len = fread(data, 1, (size_t)size, f);
  fclose(f);
  return data;
}

static void test_corpus(const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/cases.tsv", dir);
  FILE *manifest = fopen(path, "r");
  CHECK(manifest != NULL);
  if (!manifest) return;
  cmr_router *router = NULL;
  CHECK(cmr_router_new(S(""), &router) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("juliet@capulet.lit/balcony"), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  /* A small stack, as some hosts give their threads: the parse must not
   * depend on it (9,000 levels of nesting crashed 256 KB). */
  pthread_attr_t small_stack;
  pthread_attr_init(&small_stack);
  pthread_attr_setstacksize(&small_stack, 128 * 1024);
  char line[1024];
  int cases = 0;
  while (fgets(line, sizeof line, manifest)) {
    if (line[0] == '#' || line[0] == '\n') continue;
    char file[256], expected[64];
    if (sscanf(line, "%255[^\t]\t%63[^\t\n]", file, expected) != 2) continue;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    corpus_call call = {.router = router};
    char *xml = read_file(path, &call.len);
    call.xml = xml;
    CHECK(xml != NULL);
    if (!xml) continue;
    pthread_t thread;
    CHECK(pthread_create(&thread, &small_stack, call_handle_iq, &call) == 0);
    pthread_join(thread, NULL);
    cases++;
    bool ok;
    if (call.status == CMR_STATUS_OK) {
      /* An answer: `result`, or the error condition it carries. */
      if (strcmp(expected, "result") == 0) {
        ok = contains(call.answer, call.answer_len, "type='result'");
      } else {
        char condition[128];
        snprintf(condition, sizeof condition, "<%s xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'", expected);
        ok = contains(call.answer, call.answer_len, condition);
      }
    } else {
      ok = strcasecmp(expected, cmr_status_name(call.status)) == 0;
    }
    if (!ok)
      fprintf(stderr, "corpus %s: expected %s, got %s %.*s\n", file, expected, cmr_status_name(call.status),
              (int)(call.answer_len < 300 ? call.answer_len : 300), call.answer);
    CHECK(ok);
    free(xml);
  }
  CHECK(cases >= 30);
  pthread_attr_destroy(&small_stack);
  fclose(manifest);
  cmr_router_free(router);
}

/* The metrics after known traffic, with the names of their indexes. */
static void test_metrics(void) {
  CHECK(strcmp(cmr_algorithm_name(0), "all") == 0);
  CHECK(strcmp(cmr_algorithm_name(CMR_ALGORITHM_COUNT - 1), "leastloaded") == 0);
  CHECK(cmr_algorithm_name(CMR_ALGORITHM_COUNT) == NULL);
  CHECK(cmr_algorithm_name((size_t)-1) == NULL);
  cmr_router *router = NULL;
  CHECK(cmr_router_new(S("default=roundrobin"), &router) == CMR_STATUS_OK);
  cmr_metrics m;
  CHECK(cmr_router_metrics(router, NULL) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_metrics(NULL, &m) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_register(router, S("m@x/1"), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("m@x/2"), 2, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("n@x/1"), 3, -1, NULL, 0, true, NULL) == CMR_STATUS_OK);
  uint64_t out[2];
  size_t len = 0;
  cmr_message to_m = message("m@x", "chat", NULL), to_n = message("n@x", NULL, NULL),
              to_nobody = message("nobody@x", NULL, NULL);
  for (int i = 0; i < 3; i++) CHECK(cmr_router_pick(router, &to_m, out, 2, &len) == CMR_STATUS_OK);
  CHECK(cmr_router_pick(router, &to_n, out, 2, &len) == CMR_STATUS_NOT_ROUTED);
  CHECK(cmr_router_pick(router, &to_nobody, out, 2, &len) == CMR_STATUS_NOT_ROUTED);
  char buf[1024];
  bool changed = false;
  CHECK(cmr_router_handle_iq(router, S("<iq type='get' from='m@x/1' id='q'><query xmlns='urn:xmpp:cmr:0'/></iq>"),
                             buf, sizeof buf, &len, &changed) == CMR_STATUS_OK);
  CHECK(cmr_router_handle_iq(router, S("<iq type='get'"), buf, sizeof buf, &len, &changed) ==
        CMR_STATUS_INVALID_XML);
  CHECK(cmr_router_session_gone(router, S("m@x"), 2) == CMR_STATUS_OK);
  CHECK(cmr_router_session_gone(router, S("m@x/2"), 2) == CMR_STATUS_NOT_FOUND);
  CHECK(cmr_router_session_gone(router, S("@x/2"), 2) == CMR_STATUS_INVALID_JID);
  CHECK(cmr_router_session_gone(NULL, S("m@x/2"), 2) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_metrics(router, &m) == CMR_STATUS_OK);
  size_t roundrobin = 2;
  CHECK(strcmp(cmr_algorithm_name(roundrobin), "roundrobin") == 0);
  uint64_t routed = 0, left = 0;
  for (size_t i = 0; i < CMR_ALGORITHM_COUNT; i++) routed += m.routed[i], left += m.left_to_server[i];
  CHECK(m.routed[roundrobin] == 3 && routed == 3);
  CHECK(m.left_to_server[roundrobin] == 1 && left == 1);
  CHECK(m.left_to_server_unclaimed == 1);
  CHECK(m.gone_sessions == 2);
  CHECK(m.iq_results == 1 && m.iq_errors == 1);
  CHECK(m.sessions == 2 && m.accounts == 2);
  /* The same figures through the table a host walks. */
  uint64_t values[64];
  size_t count = 0;
  while (cmr_metric_series_at(count) != NULL) count++;
  CHECK(cmr_router_metric_values(router, values, 1, &len) == CMR_STATUS_BUFFER_TOO_SMALL && len == count);
  CHECK(cmr_router_metric_values(router, NULL, sizeof values / sizeof *values, &len) == CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_metric_values(router, values, sizeof values / sizeof *values, &len) == CMR_STATUS_OK);
  CHECK(len == count && count == 2 * CMR_ALGORITHM_COUNT + 6);
  CHECK(memcmp(values, &m, sizeof m) == 0); /* the table's order is the struct's */
  const cmr_metric_series *series = cmr_metric_series_at(roundrobin);
  CHECK(strcmp(series->key, "routed_roundrobin") == 0 && strcmp(series->metric, "cmr_messages_routed_total") == 0);
  CHECK(strcmp(series->label, "algorithm") == 0 && strcmp(series->label_value, "roundrobin") == 0);
  CHECK(series->kind == CMR_METRIC_KIND_COUNTER && strlen(series->help) > 0);
  CHECK(cmr_metric_series_at(count - 1)->kind == CMR_METRIC_KIND_GAUGE);
  /* A type CMR does not route is left to the server, unclaimed. */
  cmr_message headline = message("m@x", "headline", NULL);
  CHECK(cmr_router_pick(router, &headline, out, 2, &len) == CMR_STATUS_NOT_ROUTED);
  CHECK(cmr_router_metrics(router, &m) == CMR_STATUS_OK && m.left_to_server_unclaimed == 2);
  CHECK(cmr_max_picks_per_message() == 8 && cmr_activity_interval_ms() == 1000);
  cmr_router_free(router);
}

/* An answer counts once, when it is written: a try with a buffer too
 * small changes no figure (and no algorithm), the try with room counts 1. */
static void test_an_answer_counts_once_written(void) {
  cmr_router *router = NULL;
  CHECK(cmr_router_new(S(""), &router) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("d@x/1"), 1, 0, NULL, 0, true, NULL) == CMR_STATUS_OK);
  static char iq[2200], answer[4096];
  int n = snprintf(iq, sizeof iq, "<iq type='get' from='d@x/1' id='");
  memset(iq + n, 'i', 2000);
  n += 2000;
  n += snprintf(iq + n, sizeof iq - (size_t)n, "'><query xmlns='urn:xmpp:cmr:0'/></iq>");
  cmr_metrics before, after;
  size_t len = 0;
  bool changed = true;
  CHECK(cmr_router_metrics(router, &before) == CMR_STATUS_OK);
  CHECK(cmr_router_handle_iq(router, iq, (size_t)n, answer, 16, &len, &changed) == CMR_STATUS_BUFFER_TOO_SMALL);
  CHECK(len > 2000 && !changed);
  CHECK(cmr_router_metrics(router, &after) == CMR_STATUS_OK);
  CHECK(memcmp(&before, &after, sizeof before) == 0);
  CHECK(cmr_router_handle_iq(router, iq, (size_t)n, answer, len, &len, &changed) == CMR_STATUS_OK);
  CHECK(cmr_router_metrics(router, &after) == CMR_STATUS_OK);
  CHECK(after.iq_results == 1 && after.iq_errors == 0);
  /* The same for a set: too small neither counts nor switches. */
  const char *set = "<iq type='set' from='d@x/1' id='s'><cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:roundrobin'/></iq>";
  CHECK(cmr_router_handle_iq(router, S(set), answer, 16, &len, &changed) == CMR_STATUS_BUFFER_TOO_SMALL && !changed);
  CHECK(cmr_router_get_algorithm(router, S("d@x"), answer, sizeof answer, &len) == CMR_STATUS_OK);
  CHECK(contains(answer, len, "urn:xmpp:cmr:all"));
  CHECK(cmr_router_metrics(router, &after) == CMR_STATUS_OK);
  CHECK(after.iq_results == 1 && after.iq_errors == 0);
  CHECK(cmr_router_handle_iq(router, S(set), answer, sizeof answer, &len, &changed) == CMR_STATUS_OK && changed);
  CHECK(cmr_router_metrics(router, &after) == CMR_STATUS_OK);
  CHECK(after.iq_results == 2 && after.iq_errors == 0);
  cmr_router_free(router);
}

/* The ad-hoc commands: the form, a submitted choice written only when it
 * fits, hostile forms refused with nothing changed, the operators' calls. */
static void test_commands(void) {
  cmr_router *router = NULL;
  char buf[4096];
  size_t len;
  bool changed = true, new_account;
  cmr_command_stage stage = CMR_COMMAND_STAGE_REFUSED;
  CHECK(strcmp(cmr_routing_command()->node, "urn:xmpp:cmr:0#routing") == 0);
  CHECK(strcmp(cmr_admin_command()->name, "Set an account's message routing") == 0);
  CHECK(cmr_router_new(S("offered=all,roundrobin"), &router) == CMR_STATUS_OK);
  CHECK(cmr_router_register(router, S("a@x/r"), 1, 0, S(""), true, &new_account) == CMR_STATUS_OK);
  CHECK(cmr_router_routing_command(router, S("a@x/r"), NULL, 0, buf, sizeof buf, &len, &stage, &changed) ==
        CMR_STATUS_OK);
  CHECK(stage == CMR_COMMAND_STAGE_FORM && !changed && len > 0 && memmem(buf, len, "Round robin", 11) != NULL);
  const char *submit = "<x xmlns='jabber:x:data' type='submit'><field var='algorithm'>"
                       "<value>urn:xmpp:cmr:roundrobin</value></field></x>";
  CHECK(cmr_router_routing_command(router, S("a@x/r"), S(submit), buf, 4, &len, &stage, &changed) ==
        CMR_STATUS_BUFFER_TOO_SMALL && !changed);
  CHECK(cmr_router_routing_command(router, S("a@x/r"), S(submit), NULL, 0, &len, &stage, NULL) ==
        CMR_STATUS_NULL_PARAMETER);
  CHECK(cmr_router_routing_command(router, S("a@x/r"), "\xff", 1, buf, sizeof buf, &len, &stage, &changed) ==
        CMR_STATUS_INVALID_UTF8);
  CHECK(cmr_router_routing_command(router, S("a@x/r"), S("<x xmlns='jabber:x:data' type='submit'><x><x><x><x>"
                                                         "<x><x><x><x><x><x><x><x><x><x><x><x><x>"),
                                   buf, sizeof buf, &len, &stage, &changed) == CMR_STATUS_INVALID_XML);
  CHECK(cmr_router_get_algorithm(router, S("a@x"), buf, sizeof buf, &len) == CMR_STATUS_OK &&
        memcmp(buf, "urn:xmpp:cmr:all", len) == 0);
  CHECK(cmr_router_routing_command(router, S("a@x/r"), S(submit), buf, sizeof buf, &len, &stage, &changed) ==
        CMR_STATUS_OK);
  CHECK(stage == CMR_COMMAND_STAGE_COMPLETED && changed);
  CHECK(cmr_router_admin_form(router, buf, sizeof buf, &len) == CMR_STATUS_OK && memmem(buf, len, "accountjid", 10));
  const char *admin = "<x xmlns='jabber:x:data' type='submit'><field var='accountjid'><value>b@x</value></field>"
                      "<field var='algorithm'><value>all</value></field></x>";
  CHECK(cmr_admin_form_value(S(admin), S("accountjid"), buf, sizeof buf, &len) == CMR_STATUS_OK &&
        len == 3 && memcmp(buf, "b@x", 3) == 0);
  CHECK(cmr_admin_form_value(S(admin), S("FORM_TYPE"), buf, sizeof buf, &len) == CMR_STATUS_INVALID_ARGUMENT);
  CHECK(cmr_router_choose_for(router, S("b@x"), S("all"), buf, sizeof buf, &len) == CMR_STATUS_OK &&
        memcmp(buf, "urn:xmpp:cmr:all", len) == 0);
  CHECK(cmr_router_choose_for(router, S("a@x"), S("weighted"), buf, sizeof buf, &len) == CMR_STATUS_NOT_OFFERED);
  CHECK(cmr_router_choice_note(router, S("b@x"), S("urn:xmpp:cmr:all"), buf, sizeof buf, &len) == CMR_STATUS_OK &&
        len == strlen("Messages to b@x are now routed by: All resources.") &&
        memcmp(buf, "Messages to b@x are now routed by: All resources.", len) == 0);
  CHECK(cmr_router_choice_note(router, S("b@x"), S("fastest"), buf, sizeof buf, &len) ==
        CMR_STATUS_UNKNOWN_ALGORITHM);
  CHECK(cmr_router_algorithm_for(router, S("b@x"), S("urn:xmpp:cmr:roundrobin"), buf, sizeof buf, &len) ==
            CMR_STATUS_OK &&
        memcmp(buf, "urn:xmpp:cmr:roundrobin", len) == 0);
  CHECK(cmr_router_algorithm_for(router, S("a@x"), NULL, 0, buf, sizeof buf, &len) == CMR_STATUS_OK &&
        memcmp(buf, "urn:xmpp:cmr:roundrobin", len) == 0);
  cmr_router_free(router);
}

int main(int argc, char **argv) {
  test_version_and_messages();
  test_last_error_sizes();
  test_router_new();
  test_options_are_validated();
  test_first_session();
  test_rotation_survives_presence_updates();
  test_hibernation();
  test_set_without_a_session();
  test_metrics();
  test_an_answer_counts_once_written();
  test_commands();
  cmr_router *router = NULL;
  if (cmr_router_new(S("default=sticky hints=any"), &router) != CMR_STATUS_OK) {
    fprintf(stderr, "cmr_router_new: %s\n", last_error());
    return 1;
  }
  test_register_and_pick(router);
  test_algorithm_calls(router);
  test_iq(router);
  test_disco_and_stats(router);
  cmr_router_free(router);
  if (argc > 1) test_corpus(argv[1]);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
