/* What each call costs as one account grows (issue 21): picks per algorithm
 * at 4 to 10,000 sessions, and register (a new session), presence update
 * and unregister at 64 to 50,000, then again at 10,000 and 80,000 once the
 * weighted rotation is in use, through the C ABI as a host calls it.
 * Each figure is the median of 31 batches, in ns per call.
 *
 *   make bench-scale    (cc -O2; prints two Markdown tables) */
#define _POSIX_C_SOURCE 200809L
#include "cmr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCHES 31
#define ACCOUNT "fleet@example.org"

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v) {
  qsort(v, BATCHES, sizeof *v, by_value);
  return v[BATCHES / 2];
}

static void check(cmr_status status, const char *what) {
  if (status != CMR_STATUS_OK) {
    fprintf(stderr, "%s: %s\n", what, cmr_status_name(status));
    exit(1);
  }
}

static size_t resource(char *buf, size_t cap, size_t i) {
  return (size_t)snprintf(buf, cap, ACCOUNT "/node-%zu", i);
}

/* A router whose one account has `n` sessions (token i + 1, priority i % 3:
 * weighted sees unequal weights). */
static cmr_router *account_of(size_t n) {
  cmr_router *router = NULL;
  check(cmr_router_new("hints=any", strlen("hints=any"), &router), "new");
  char jid[64];
  for (size_t i = 0; i < n; i++) {
    size_t len = resource(jid, sizeof jid, i);
    bool first;
    check(cmr_router_register(router, jid, len, i + 1, (int32_t)(i % 3), "", 0, true, &first), "register");
  }
  return router;
}

static double pick_ns(cmr_router *router, size_t n, const char *algorithm) {
  check(cmr_router_set_algorithm(router, ACCOUNT, strlen(ACCOUNT), algorithm, strlen(algorithm)), "set");
  size_t cap = n;
  uint64_t *tokens = malloc(cap * sizeof *tokens);
  cmr_message m = {0};
  m.recipient = ACCOUNT;
  m.recipient_len = strlen(ACCOUNT);
  m.message_type = "chat";
  m.message_type_len = 4;
  m.sender_is_local = true;
  char sender[64];
  /* Enough calls per batch to take about a millisecond at any size. */
  size_t calls = n >= 1024 ? 64 : 2048;
  double batches[BATCHES];
  for (int b = 0; b < BATCHES; b++) {
    double start = now_ns();
    for (size_t c = 0; c < calls; c++) {
      /* Senders vary, as sticky sees them. */
      m.sender = sender;
      m.sender_len = (size_t)snprintf(sender, sizeof sender, "sensor-%zu@example.net/probe", c % 97);
      size_t len = 0;
      check(cmr_router_pick(router, &m, tokens, cap, &len), "pick");
    }
    batches[b] = (now_ns() - start) / (double)calls;
  }
  free(tokens);
  return median(batches);
}

/* Register of a new session then its unregister, and a presence update of
 * an existing one, on an account of `n` sessions: each op's ns per call.
 * With `weighted`, the account routes by weighted and has routed a message
 * to every other session first (not a whole cycle, which would end at
 * rest), so every change carries the rotation over. */
static void session_ns(size_t n, bool weighted, double *reg, double *update, double *unreg) {
  cmr_router *router = account_of(n);
  if (weighted) {
    check(cmr_router_set_algorithm(router, ACCOUNT, strlen(ACCOUNT), "weighted", strlen("weighted")), "set");
    cmr_message m = {0};
    m.recipient = ACCOUNT;
    m.recipient_len = strlen(ACCOUNT);
    m.message_type = "chat";
    m.message_type_len = 4;
    m.sender = "sensor@example.net/probe";
    m.sender_len = strlen(m.sender);
    m.sender_is_local = true;
    for (size_t i = 0; i < n / 2 + 1; i++) {
      uint64_t token;
      size_t len = 0;
      check(cmr_router_pick(router, &m, &token, 1, &len), "pick");
    }
  }
  size_t calls = n >= 10000 ? 16 : 256;
  char jid[64];
  double r[BATCHES], u[BATCHES], d[BATCHES];
  for (int b = 0; b < BATCHES; b++) {
    double start = now_ns();
    for (size_t c = 0; c < calls; c++) {
      size_t len = resource(jid, sizeof jid, n + c);
      bool first;
      check(cmr_router_register(router, jid, len, n + c + 1, 0, "", 0, true, &first), "register new");
    }
    r[b] = (now_ns() - start) / (double)calls;
    start = now_ns();
    for (size_t c = 0; c < calls; c++) {
      /* Sessions spread over the account, each changing its priority. */
      size_t i = (c * 7919 + (size_t)b) % n;
      size_t len = resource(jid, sizeof jid, i);
      bool first;
      check(cmr_router_register(router, jid, len, i + 1, (int32_t)((b + 1) % 3), "away", 4, true, &first),
            "update");
    }
    u[b] = (now_ns() - start) / (double)calls;
    start = now_ns();
    for (size_t c = 0; c < calls; c++) {
      size_t len = resource(jid, sizeof jid, n + c);
      check(cmr_router_unregister(router, jid, len, n + c + 1), "unregister");
    }
    d[b] = (now_ns() - start) / (double)calls;
  }
  cmr_router_free(router);
  *reg = median(r);
  *update = median(u);
  *unreg = median(d);
}

int main(void) {
  static const size_t pick_sizes[] = {4, 64, 1024, 10000};
  printf("| sessions on one account |");
  for (size_t a = 0; a < CMR_ALGORITHM_COUNT; a++) printf(" %s |", cmr_algorithm_name(a));
  printf("\n|---|");
  for (size_t a = 0; a < CMR_ALGORITHM_COUNT; a++) printf("---|");
  printf("\n");
  for (size_t s = 0; s < sizeof pick_sizes / sizeof *pick_sizes; s++) {
    cmr_router *router = account_of(pick_sizes[s]);
    printf("| %zu |", pick_sizes[s]);
    for (size_t a = 0; a < CMR_ALGORITHM_COUNT; a++) {
      printf(" %.0f |", pick_ns(router, pick_sizes[s], cmr_algorithm_name(a)));
      fflush(stdout);
    }
    printf("\n");
    cmr_router_free(router);
  }
  static const size_t session_sizes[] = {64, 1024, 10000, 50000};
  static const size_t weighted_sizes[] = {10000, 80000};
  for (int weighted = 0; weighted < 2; weighted++) {
    const size_t *sizes = weighted ? weighted_sizes : session_sizes;
    size_t count = weighted ? sizeof weighted_sizes / sizeof *weighted_sizes
                            : sizeof session_sizes / sizeof *session_sizes;
    printf("\n| sessions on one account%s | register | presence update | unregister |\n|---|---|---|---|\n",
           weighted ? ", weighted in use" : "");
    for (size_t s = 0; s < count; s++) {
      double reg, update, unreg;
      session_ns(sizes[s], weighted, &reg, &update, &unreg);
      printf("| %zu | %.0f | %.0f | %.0f |\n", sizes[s], reg, update, unreg);
      fflush(stdout);
    }
  }
  return 0;
}
