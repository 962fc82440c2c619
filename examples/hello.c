/* The README's C example: a router, two sessions of one account, and a
 * round-robin pick. Build: cc hello.c $(pkg-config --cflags --libs cmr) */
#include <cmr.h>
#include <stdio.h>
#include <string.h>

#define S(text) text, strlen(text)

int main(void) {
  cmr_router *router;
  if (cmr_router_new(S("default=roundrobin"), &router) != CMR_STATUS_OK) return 1;

  /* The host registers each session with its own token (its session handle). */
  cmr_router_register(router, S("sensors@example.org/node-1"), 1, 0, S(""), true, NULL);
  cmr_router_register(router, S("sensors@example.org/node-2"), 2, 0, S(""), true, NULL);

  cmr_message msg = {0};
  msg.recipient = "sensors@example.org";
  msg.recipient_len = strlen(msg.recipient);
  msg.message_type = "chat";
  msg.message_type_len = 4;

  for (int i = 0; i < 4; i++) {
    uint64_t tokens[8];
    size_t n;
    cmr_status status = cmr_router_pick(router, &msg, tokens, 8, &n);
    if (status == CMR_STATUS_NOT_ROUTED) {
      puts("not routed: the server delivers as it always does");
    } else if (status == CMR_STATUS_OK) {
      for (size_t k = 0; k < n; k++) printf("message %d -> session %llu\n", i, (unsigned long long)tokens[k]);
    } else {
      char err[256];
      size_t len;
      cmr_last_error(err, sizeof err, &len);
      fprintf(stderr, "pick failed: %.*s\n", (int)len, err);
    }
  }
  cmr_router_free(router);
  return 0;
}
