/* What the registry costs the process (issue 21): the growth of VmRSS per
 * session with ACCOUNTS accounts of 4 sessions, registered through the C
 * ABI, and what stays above the start once every session has left, before
 * and after malloc_trim(0). The host's allocator (glibc's) is not replaced.
 *
 *   make bench-rss             (1,000,000 accounts)
 *   build/bin/bench_rss 10000  (another count) */
#define _GNU_SOURCE
#include "cmr.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SESSIONS 4

/* The process's resident set, in bytes. */
static long rss_bytes(void) {
  FILE *status = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (status && fgets(line, sizeof line, status)) {
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  }
  if (status) fclose(status);
  return kb * 1024;
}

static void check(cmr_status status, const char *what) {
  if (status != CMR_STATUS_OK) {
    fprintf(stderr, "%s: %s\n", what, cmr_status_name(status));
    exit(1);
  }
}

static size_t jid(char *buf, size_t cap, size_t account, int session) {
  return (size_t)snprintf(buf, cap, "user%zu@example.org/node-%d", account, session);
}

int main(int argc, char **argv) {
  size_t accounts = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
  size_t sessions = accounts * SESSIONS;
  cmr_router *router = NULL;
  check(cmr_router_new(NULL, 0, &router), "new");
  char buf[64];
  long start = rss_bytes();
  for (size_t a = 0; a < accounts; a++) {
    for (int s = 0; s < SESSIONS; s++) {
      bool first;
      check(cmr_router_register(router, buf, jid(buf, sizeof buf, a, s), a * SESSIONS + (size_t)s + 1, 0, "", 0,
                                true, &first),
            "register");
    }
  }
  long peak = rss_bytes();
  for (size_t a = 0; a < accounts; a++) {
    for (int s = 0; s < SESSIONS; s++) {
      check(cmr_router_unregister(router, buf, jid(buf, sizeof buf, a, s), a * SESSIONS + (size_t)s + 1),
            "unregister");
    }
  }
  long left = rss_bytes();
  malloc_trim(0);
  long trimmed = rss_bytes();
  double growth = (double)(peak - start);
  printf("| accounts × %d sessions | RSS per session | left after all leave | after malloc_trim(0) |\n"
         "|---|---|---|---|\n",
         SESSIONS);
  printf("| %zu | %.1f bytes | %.1f MB (%.0f%% of the growth) | %.1f MB (%.0f%%) |\n", accounts, growth / (double)sessions,
         (double)(left - start) / 1e6, 100.0 * (double)(left - start) / growth, (double)(trimmed - start) / 1e6,
         100.0 * (double)(trimmed - start) / growth);
  cmr_router_free(router);
  return 0;
}
