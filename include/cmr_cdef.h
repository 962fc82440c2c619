static const int CMR_ALGORITHM_COUNT = 7;
static const int CMR_MAX_IQ_BYTES = 65536;
static const int CMR_MAX_DEPTH = 16;
static const int CMR_MAX_ELEMENTS = 64;
static const int CMR_MAX_ATTRIBUTES = 32;
static const int CMR_MAX_TOKEN_BYTES = 8192;
static const int CMR_MAX_ERROR_BYTES = 1024;
typedef enum {
  CMR_STATUS_OK = 0,
  CMR_STATUS_NOT_ROUTED = 1,
  CMR_STATUS_NOT_MINE = 2,
  CMR_STATUS_BUFFER_TOO_SMALL = 3,
  CMR_STATUS_NOT_FOUND = 4,
  CMR_STATUS_NULL_PARAMETER = 100,
  CMR_STATUS_INVALID_UTF8 = 101,
  CMR_STATUS_INVALID_JID = 102,
  CMR_STATUS_INVALID_XML = 103,
  CMR_STATUS_INVALID_ARGUMENT = 104,
  CMR_STATUS_UNKNOWN_ALGORITHM = 105,
  CMR_STATUS_NOT_OFFERED = 106,
  CMR_STATUS_INVALID_OPTION = 107,
  CMR_STATUS_PANIC = 200,
} cmr_status;

typedef enum {
  CMR_COMMAND_STAGE_FORM = 0,
  CMR_COMMAND_STAGE_COMPLETED = 1,
  CMR_COMMAND_STAGE_REFUSED = 2,
} cmr_command_stage;

typedef enum {
  CMR_METRIC_KIND_COUNTER = 0,
  CMR_METRIC_KIND_GAUGE = 1,
} cmr_metric_kind;

typedef struct cmr_router cmr_router;

typedef struct {
  const char *recipient;
  size_t recipient_len;
  const char *message_type;
  size_t message_type_len;
  const char *sender;
  size_t sender_len;
  const char *hint;
  size_t hint_len;
  bool sender_is_local;
} cmr_message;

typedef struct {
  const char *node;
  const char *name;
} cmr_command;

typedef struct {
  uint64_t routed[CMR_ALGORITHM_COUNT];
  uint64_t left_to_server[CMR_ALGORITHM_COUNT];
  uint64_t left_to_server_unclaimed;
  uint64_t gone_sessions;
  uint64_t iq_results;
  uint64_t iq_errors;
  uint64_t sessions;
  uint64_t accounts;
} cmr_metrics;

typedef struct {
  const char *key;
  const char *metric;
  const char *family;
  const char *unit;
  const char *label;
  const char *label_value;
  const char *help;
  cmr_metric_kind kind;
} cmr_metric_series;

const char *cmr_version(void);

const char *cmr_status_message(uint32_t status);

const char *cmr_status_name(uint32_t status);

cmr_status cmr_last_error(char *buf, size_t cap, size_t *out_len);

cmr_status cmr_router_new(const char *options, size_t options_len, cmr_router **out_router);

void cmr_router_free(cmr_router *router);

cmr_status cmr_router_register(const cmr_router *router,
                               const char *full_jid,
                               size_t full_jid_len,
                               uint64_t token,
                               int32_t priority,
                               const char *show,
                               size_t show_len,
                               bool available,
                               bool *out_new_account);

cmr_status cmr_router_unregister(const cmr_router *router,
                                 const char *jid,
                                 size_t jid_len,
                                 uint64_t token);

cmr_status cmr_router_session_gone(const cmr_router *router,
                                   const char *jid,
                                   size_t jid_len,
                                   uint64_t token);

cmr_status cmr_router_touch(const cmr_router *router,
                            const char *full_jid,
                            size_t full_jid_len,
                            uint64_t token);

cmr_status cmr_router_set_hibernating(const cmr_router *router,
                                      const char *full_jid,
                                      size_t full_jid_len,
                                      uint64_t token,
                                      bool hibernating);

cmr_status cmr_router_set_load(const cmr_router *router,
                               const char *full_jid,
                               size_t full_jid_len,
                               uint64_t token,
                               uint32_t load);

cmr_status cmr_router_pick(const cmr_router *router,
                           const cmr_message *message,
                           uint64_t *out_tokens,
                           size_t out_cap,
                           size_t *out_len);

cmr_status cmr_router_get_algorithm(const cmr_router *router,
                                    const char *bare_jid,
                                    size_t bare_jid_len,
                                    char *buf,
                                    size_t cap,
                                    size_t *out_len);

cmr_status cmr_router_set_algorithm(const cmr_router *router,
                                    const char *bare_jid,
                                    size_t bare_jid_len,
                                    const char *algorithm,
                                    size_t algorithm_len);

cmr_status cmr_router_handle_iq(const cmr_router *router,
                                const char *xml,
                                size_t xml_len,
                                char *buf,
                                size_t cap,
                                size_t *out_len,
                                bool *out_changed);

cmr_status cmr_router_routing_command(const cmr_router *router,
                                      const char *requester,
                                      size_t requester_len,
                                      const char *submitted,
                                      size_t submitted_len,
                                      char *buf,
                                      size_t cap,
                                      size_t *out_len,
                                      cmr_command_stage *out_stage,
                                      bool *out_changed);

const cmr_command *cmr_routing_command(void);

const cmr_command *cmr_admin_command(void);

cmr_status cmr_router_admin_form(const cmr_router *router, char *buf, size_t cap, size_t *out_len);

cmr_status cmr_admin_form_value(const char *submitted,
                                size_t submitted_len,
                                const char *var,
                                size_t var_len,
                                char *buf,
                                size_t cap,
                                size_t *out_len);

cmr_status cmr_router_choose_for(const cmr_router *router,
                                 const char *bare_jid,
                                 size_t bare_jid_len,
                                 const char *algorithm,
                                 size_t algorithm_len,
                                 char *buf,
                                 size_t cap,
                                 size_t *out_len);

cmr_status cmr_router_choice_note(const cmr_router *router,
                                  const char *bare_jid,
                                  size_t bare_jid_len,
                                  const char *algorithm,
                                  size_t algorithm_len,
                                  char *buf,
                                  size_t cap,
                                  size_t *out_len);

cmr_status cmr_router_algorithm_for(const cmr_router *router,
                                    const char *bare_jid,
                                    size_t bare_jid_len,
                                    const char *stored,
                                    size_t stored_len,
                                    char *buf,
                                    size_t cap,
                                    size_t *out_len);

cmr_status cmr_router_disco_features(const cmr_router *router,
                                     char *buf,
                                     size_t cap,
                                     size_t *out_len);

cmr_status cmr_router_stats(const cmr_router *router,
                            const char *bare_jid,
                            size_t bare_jid_len,
                            char *buf,
                            size_t cap,
                            size_t *out_len);

cmr_status cmr_router_metrics(const cmr_router *router, cmr_metrics *out);

const cmr_metric_series *cmr_metric_series_at(size_t index);

cmr_status cmr_router_metric_values(const cmr_router *router,
                                    uint64_t *out,
                                    size_t cap,
                                    size_t *out_len);

uint32_t cmr_max_picks_per_message(void);

uint32_t cmr_activity_interval_ms(void);

const char *cmr_algorithm_name(size_t index);
