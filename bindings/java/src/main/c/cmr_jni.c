/*
 * JNI shim over include/cmr.h for org.cmr.Native. It only translates:
 * Java byte arrays in (UTF-8, read in place), tokens, text and the
 * library's tables out, and a status other than OK into an
 * org.cmr.CmrException carrying the library's name and message for it.
 * libcmr.a is linked in, so this one .so is all a JVM loads.
 */
#include <jni.h>
#include <stdlib.h>
#include <string.h>

#include "cmr.h"

/* Text results (answers, stats) are first written here, on the stack; a
 * larger one is asked again with a buffer of the size the library gave. */
#define TEXT_STACK_BYTES 4096

static jclass exception_class;
static jmethodID exception_init;
static jclass series_class;
static jmethodID series_init;
static jclass command_class;
static jmethodID command_init;

/* A global reference to `name` and its constructor of `signature`. */
static int find_class(JNIEnv *env, const char *name, const char *signature, jclass *cls,
                      jmethodID *init) {
    jclass local = (*env)->FindClass(env, name);
    if (local == NULL) {
        return 0;
    }
    *cls = (*env)->NewGlobalRef(env, local);
    (*env)->DeleteLocalRef(env, local);
    if (*cls == NULL) {
        return 0;
    }
    *init = (*env)->GetMethodID(env, *cls, "<init>", signature);
    return *init != NULL;
}

JNIEXPORT jint JNICALL JNI_OnLoad(JavaVM *vm, void *reserved) {
    (void)reserved;
    JNIEnv *env;
    if ((*vm)->GetEnv(vm, (void **)&env, JNI_VERSION_1_8) != JNI_OK) {
        return JNI_ERR;
    }
    if (!find_class(env, "org/cmr/CmrException", "([B[BZ)V", &exception_class, &exception_init) ||
        !find_class(env, "org/cmr/MetricSeries", "([B[B[B[B[B[B[BZ)V", &series_class,
                    &series_init) ||
        !find_class(env, "org/cmr/Command", "([B[B)V", &command_class, &command_init)) {
        return JNI_ERR;
    }
    return JNI_VERSION_1_8;
}

JNIEXPORT void JNICALL JNI_OnUnload(JavaVM *vm, void *reserved) {
    (void)reserved;
    JNIEnv *env;
    if ((*vm)->GetEnv(vm, (void **)&env, JNI_VERSION_1_8) == JNI_OK) {
        (*env)->DeleteGlobalRef(env, exception_class);
        (*env)->DeleteGlobalRef(env, series_class);
        (*env)->DeleteGlobalRef(env, command_class);
    }
}

static jbyteArray to_java_bytes(JNIEnv *env, const char *bytes, size_t len) {
    jbyteArray array = (*env)->NewByteArray(env, (jsize)len);
    if (array != NULL) {
        (*env)->SetByteArrayRegion(env, array, 0, (jsize)len, (const jbyte *)bytes);
    }
    return array;
}

static jbyteArray c_string_bytes(JNIEnv *env, const char *text) {
    return to_java_bytes(env, text, strlen(text));
}

/* Throws CmrException(the status' name, this thread's last error message
 * or else the status' description, whether the router failed), whole: the
 * library keeps a message within CMR_MAX_ERROR_BYTES. */
static void throw_status(JNIEnv *env, cmr_status status) {
    char message[CMR_MAX_ERROR_BYTES];
    size_t len = 0;
    if (cmr_last_error(message, sizeof message, &len) != CMR_STATUS_OK || len == 0) {
        const char *description = cmr_status_message(status);
        len = strlen(description);
        len = len < sizeof message ? len : sizeof message;
        memcpy(message, description, len);
    }
    jbyteArray name = c_string_bytes(env, cmr_status_name(status));
    jbyteArray text = name == NULL ? NULL : to_java_bytes(env, message, len);
    if (text == NULL) {
        return; /* OutOfMemoryError is pending */
    }
    jthrowable error = (*env)->NewObject(env, exception_class, exception_init, name, text,
                                         status == CMR_STATUS_PANIC ? JNI_TRUE : JNI_FALSE);
    if (error != NULL) {
        (*env)->Throw(env, error);
    }
}

static void throw_out_of_memory(JNIEnv *env) {
    jclass error = (*env)->FindClass(env, "java/lang/OutOfMemoryError");
    if (error != NULL) {
        (*env)->ThrowNew(env, error, "cmr: no memory for a result");
    }
}

/* A byte array read in place. A null array reads as no bytes: the Java
 * side refuses null where a value is required. JNI allows no other JNI
 * call while an array is held critical, so every length is read first
 * (input_prepare) and only then are the arrays taken (input_take). An
 * input that may take long to parse (a submitted form) is read from a
 * copy instead (input_prepare_copy), so that no garbage collection waits
 * on it. */
typedef struct {
    jbyteArray array;
    const char *bytes;
    size_t len;
    int copied;
} input;

static void input_prepare(JNIEnv *env, jbyteArray array, input *in) {
    in->array = array;
    in->bytes = NULL;
    in->len = array == NULL ? 0 : (size_t)(*env)->GetArrayLength(env, array);
    in->copied = 0;
}

static void input_prepare_copy(JNIEnv *env, jbyteArray array, input *in) {
    input_prepare(env, array, in);
    in->copied = 1;
}

static int input_take(JNIEnv *env, input *in) {
    if (in->array == NULL) {
        return 1;
    }
    in->bytes = in->copied ? (const char *)(*env)->GetByteArrayElements(env, in->array, NULL)
                           : (*env)->GetPrimitiveArrayCritical(env, in->array, NULL);
    return in->bytes != NULL;
}

static void input_close(JNIEnv *env, input *in) {
    if (in->bytes == NULL) {
        return;
    }
    if (in->copied) {
        (*env)->ReleaseByteArrayElements(env, in->array, (jbyte *)in->bytes, JNI_ABORT);
    } else {
        (*env)->ReleasePrimitiveArrayCritical(env, in->array, (void *)in->bytes, JNI_ABORT);
    }
    in->bytes = NULL;
}

/* Releases the taken ones of `n` inputs: those read in place first, as
 * no other JNI call may come while one is held. */
static void inputs_close(JNIEnv *env, input *inputs[], int n) {
    for (int copied = 0; copied <= 1; copied++) {
        for (int i = n; i-- > 0;) {
            if (inputs[i]->copied == copied) {
                input_close(env, inputs[i]);
            }
        }
    }
}

/* Takes `n` prepared inputs: the copies first, then those read in place;
 * on failure releases those taken. */
static int inputs_take(JNIEnv *env, input *inputs[], int n) {
    for (int copied = 1; copied >= 0; copied--) {
        for (int i = 0; i < n; i++) {
            if (inputs[i]->copied == copied && !input_take(env, inputs[i])) {
                inputs_close(env, inputs, n);
                return 0;
            }
        }
    }
    return 1;
}

static const cmr_router *router_of(jlong handle) {
    return (const cmr_router *)(intptr_t)handle;
}

/* A text-producing call: fills (buf, cap) for its (up to two) arguments,
 * and `flags` with what it says beside the text (the routing command's
 * stage and changed signal). */
typedef cmr_status (*text_call)(const cmr_router *router, const input args[2], char *buf,
                                size_t cap, size_t *out_len, jbyte flags[2]);

/* How text_result reads the arguments. */
enum args_mode { IN_PLACE, COPIED };

/* Runs `call` into the stack buffer, or again into one of the size needed
 * (again if the text grew meanwhile), and returns it as a Java byte
 * array, after the first `flag_count` of its flags. Null arguments read
 * as none. */
static jbyteArray text_result(JNIEnv *env, jlong handle, jbyteArray first, jbyteArray second,
                              enum args_mode mode, size_t flag_count, text_call call) {
    char stack[TEXT_STACK_BYTES];
    char *buf = stack;
    size_t cap = sizeof stack - flag_count;
    size_t len = 0;
    jbyte flags[2] = {0, 0};
    jbyteArray result = NULL;
    input args[2];
    input *inputs[] = {&args[0], &args[1]};
    void (*prepare)(JNIEnv *, jbyteArray, input *) =
        mode == COPIED ? input_prepare_copy : input_prepare;
    prepare(env, first, &args[0]);
    prepare(env, second, &args[1]);
    for (;;) {
        if (!inputs_take(env, inputs, 2)) {
            break;
        }
        cmr_status status = call(router_of(handle), args, buf + flag_count, cap, &len, flags);
        inputs_close(env, inputs, 2);
        if (status == CMR_STATUS_BUFFER_TOO_SMALL) {
            if (buf != stack) {
                free(buf);
            }
            buf = malloc(flag_count + len);
            cap = len;
            if (buf == NULL) {
                throw_out_of_memory(env);
                return NULL;
            }
            continue;
        }
        if (status == CMR_STATUS_OK) {
            memcpy(buf, flags, flag_count);
            result = to_java_bytes(env, buf, flag_count + len);
        } else {
            throw_status(env, status);
        }
        break;
    }
    if (buf != stack) {
        free(buf);
    }
    return result;
}

static cmr_status call_get_algorithm(const cmr_router *router, const input args[2], char *buf,
                                     size_t cap, size_t *out_len, jbyte flags[2]) {
    (void)flags;
    return cmr_router_get_algorithm(router, args[0].bytes, args[0].len, buf, cap, out_len);
}

static cmr_status call_stats(const cmr_router *router, const input args[2], char *buf, size_t cap,
                             size_t *out_len, jbyte flags[2]) {
    (void)flags;
    return cmr_router_stats(router, args[0].bytes, args[0].len, buf, cap, out_len);
}

static cmr_status call_disco_features(const cmr_router *router, const input args[2], char *buf,
                                      size_t cap, size_t *out_len, jbyte flags[2]) {
    (void)args;
    (void)flags;
    return cmr_router_disco_features(router, buf, cap, out_len);
}

/* args: the requester's full JID, the submitted form or none; flags: the
 * stage, then 1 when the account's algorithm changed. */
static cmr_status call_routing_command(const cmr_router *router, const input args[2], char *buf,
                                       size_t cap, size_t *out_len, jbyte flags[2]) {
    cmr_command_stage stage = CMR_COMMAND_STAGE_FORM;
    bool changed = false;
    cmr_status status = cmr_router_routing_command(router, args[0].bytes, args[0].len, args[1].bytes,
                                                   args[1].len, buf, cap, out_len, &stage, &changed);
    flags[0] = (jbyte)stage;
    flags[1] = changed ? 1 : 0;
    return status;
}

static cmr_status call_admin_form(const cmr_router *router, const input args[2], char *buf,
                                  size_t cap, size_t *out_len, jbyte flags[2]) {
    (void)args;
    (void)flags;
    return cmr_router_admin_form(router, buf, cap, out_len);
}

/* args: the submitted form, the field's name; no router. */
static cmr_status call_admin_form_value(const cmr_router *router, const input args[2], char *buf,
                                        size_t cap, size_t *out_len, jbyte flags[2]) {
    (void)router;
    (void)flags;
    return cmr_admin_form_value(args[0].bytes, args[0].len, args[1].bytes, args[1].len, buf, cap,
                                out_len);
}

/* args: the account's bare JID, the algorithm. */
static cmr_status call_choice_note(const cmr_router *router, const input args[2], char *buf,
                                   size_t cap, size_t *out_len, jbyte flags[2]) {
    (void)flags;
    return cmr_router_choice_note(router, args[0].bytes, args[0].len, args[1].bytes, args[1].len, buf,
                                  cap, out_len);
}

/* args: the account's bare JID, the algorithm. */
static cmr_status call_choose_for(const cmr_router *router, const input args[2], char *buf,
                                  size_t cap, size_t *out_len, jbyte flags[2]) {
    (void)flags;
    return cmr_router_choose_for(router, args[0].bytes, args[0].len, args[1].bytes, args[1].len, buf,
                                 cap, out_len);
}

/* args: the account's bare JID, the stored choice or none. */
static cmr_status call_algorithm_for(const cmr_router *router, const input args[2], char *buf,
                                     size_t cap, size_t *out_len, jbyte flags[2]) {
    (void)flags;
    return cmr_router_algorithm_for(router, args[0].bytes, args[0].len, args[1].bytes, args[1].len,
                                    buf, cap, out_len);
}

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_version(JNIEnv *env, jclass cls) {
    (void)cls;
    return c_string_bytes(env, cmr_version());
}

JNIEXPORT jlong JNICALL Java_org_cmr_Native_newRouter(JNIEnv *env, jclass cls, jbyteArray options) {
    (void)cls;
    input in;
    cmr_router *router = NULL;
    input_prepare(env, options, &in);
    if (!input_take(env, &in)) {
        return 0;
    }
    cmr_status status = cmr_router_new(in.bytes, in.len, &router);
    input_close(env, &in);
    if (status != CMR_STATUS_OK) {
        throw_status(env, status);
        return 0;
    }
    return (jlong)(intptr_t)router;
}

JNIEXPORT void JNICALL Java_org_cmr_Native_free(JNIEnv *env, jclass cls, jlong handle) {
    (void)env;
    (void)cls;
    cmr_router_free((cmr_router *)(intptr_t)handle);
}

JNIEXPORT jboolean JNICALL Java_org_cmr_Native_register(JNIEnv *env, jclass cls, jlong handle,
                                                        jbyteArray full_jid, jlong token,
                                                        jint priority, jbyteArray show,
                                                        jboolean available) {
    (void)cls;
    input jid, show_in;
    input *inputs[] = {&jid, &show_in};
    bool new_account = false;
    input_prepare(env, full_jid, &jid);
    input_prepare(env, show, &show_in);
    if (!inputs_take(env, inputs, 2)) {
        return JNI_FALSE;
    }
    cmr_status status = cmr_router_register(router_of(handle), jid.bytes, jid.len, (uint64_t)token,
                                            priority, show_in.bytes, show_in.len,
                                            available == JNI_TRUE, &new_account);
    inputs_close(env, inputs, 2);
    if (status != CMR_STATUS_OK) {
        throw_status(env, status);
    }
    return new_account ? JNI_TRUE : JNI_FALSE;
}

/* unregister, session_gone, touch, set_hibernating and set_load: a JID, a
 * token, a value. */
enum session_call { UNREGISTER, SESSION_GONE, TOUCH, SET_HIBERNATING, SET_LOAD };

static void session_call(JNIEnv *env, enum session_call which, jlong handle, jbyteArray jid_array,
                         jlong token, jint value) {
    input jid;
    input_prepare(env, jid_array, &jid);
    if (!input_take(env, &jid)) {
        return;
    }
    const cmr_router *router = router_of(handle);
    cmr_status status = CMR_STATUS_OK;
    switch (which) {
    case UNREGISTER:
        status = cmr_router_unregister(router, jid.bytes, jid.len, (uint64_t)token);
        break;
    case SESSION_GONE:
        status = cmr_router_session_gone(router, jid.bytes, jid.len, (uint64_t)token);
        break;
    case TOUCH:
        status = cmr_router_touch(router, jid.bytes, jid.len, (uint64_t)token);
        break;
    case SET_HIBERNATING:
        status = cmr_router_set_hibernating(router, jid.bytes, jid.len, (uint64_t)token, value != 0);
        break;
    case SET_LOAD:
        status = cmr_router_set_load(router, jid.bytes, jid.len, (uint64_t)token, (uint32_t)value);
        break;
    }
    input_close(env, &jid);
    if (status != CMR_STATUS_OK) {
        throw_status(env, status);
    }
}

JNIEXPORT void JNICALL Java_org_cmr_Native_unregister(JNIEnv *env, jclass cls, jlong handle,
                                                      jbyteArray jid, jlong token) {
    (void)cls;
    session_call(env, UNREGISTER, handle, jid, token, 0);
}

JNIEXPORT void JNICALL Java_org_cmr_Native_sessionGone(JNIEnv *env, jclass cls, jlong handle,
                                                       jbyteArray jid, jlong token) {
    (void)cls;
    session_call(env, SESSION_GONE, handle, jid, token, 0);
}

JNIEXPORT void JNICALL Java_org_cmr_Native_touch(JNIEnv *env, jclass cls, jlong handle,
                                                 jbyteArray full_jid, jlong token) {
    (void)cls;
    session_call(env, TOUCH, handle, full_jid, token, 0);
}

JNIEXPORT void JNICALL Java_org_cmr_Native_setHibernating(JNIEnv *env, jclass cls, jlong handle,
                                                          jbyteArray full_jid, jlong token,
                                                          jboolean hibernating) {
    (void)cls;
    session_call(env, SET_HIBERNATING, handle, full_jid, token, hibernating == JNI_TRUE);
}

JNIEXPORT void JNICALL Java_org_cmr_Native_setLoad(JNIEnv *env, jclass cls, jlong handle,
                                                   jbyteArray full_jid, jlong token, jint load) {
    (void)cls;
    session_call(env, SET_LOAD, handle, full_jid, token, load);
}

/* The message's four strings and the caller's token array, read in place
 * for the length of one pick. */
typedef struct {
    input recipient, type, sender, hint;
    jlongArray out_array;
    size_t out_cap;
    jlong *out;
} pick_args;

static int pick_open(JNIEnv *env, pick_args *a, jbyteArray recipient, jbyteArray type,
                     jbyteArray sender, jbyteArray hint, jlongArray out) {
    input *inputs[] = {&a->recipient, &a->type, &a->sender, &a->hint};
    input_prepare(env, recipient, &a->recipient);
    input_prepare(env, type, &a->type);
    input_prepare(env, sender, &a->sender);
    input_prepare(env, hint, &a->hint);
    a->out_array = out;
    a->out_cap = out == NULL ? 0 : (size_t)(*env)->GetArrayLength(env, out);
    a->out = NULL;
    if (!inputs_take(env, inputs, 4)) {
        return 0;
    }
    if (a->out_cap > 0) {
        a->out = (*env)->GetPrimitiveArrayCritical(env, out, NULL);
        if (a->out == NULL) {
            inputs_close(env, inputs, 4);
            return 0;
        }
    }
    return 1;
}

/* Releases what pick_open took; `mode` 0 copies the tokens back. */
static void pick_close(JNIEnv *env, pick_args *a, jint mode) {
    input *inputs[] = {&a->recipient, &a->type, &a->sender, &a->hint};
    if (a->out != NULL) {
        (*env)->ReleasePrimitiveArrayCritical(env, a->out_array, a->out, mode);
    }
    inputs_close(env, inputs, 4);
}

JNIEXPORT jint JNICALL Java_org_cmr_Native_pick(JNIEnv *env, jclass cls, jlong handle,
                                                jbyteArray recipient, jbyteArray type,
                                                jbyteArray sender, jbyteArray hint,
                                                jboolean sender_is_local, jlongArray out) {
    (void)cls;
    pick_args a;
    if (!pick_open(env, &a, recipient, type, sender, hint, out)) {
        return 0; /* OutOfMemoryError is pending */
    }
    cmr_message message = {
        .recipient = a.recipient.bytes,
        .recipient_len = a.recipient.len,
        .message_type = a.type.bytes,
        .message_type_len = a.type.len,
        .sender = a.sender.bytes,
        .sender_len = a.sender.len,
        .hint = a.hint.bytes,
        .hint_len = a.hint.len,
        .sender_is_local = sender_is_local == JNI_TRUE,
    };
    size_t len = 0;
    cmr_status status =
        cmr_router_pick(router_of(handle), &message, (uint64_t *)a.out, a.out_cap, &len);
    pick_close(env, &a, status == CMR_STATUS_OK ? 0 : JNI_ABORT);
    switch (status) {
    case CMR_STATUS_OK:
    case CMR_STATUS_BUFFER_TOO_SMALL:
        return (jint)len;
    case CMR_STATUS_NOT_ROUTED:
        return 0;
    default:
        throw_status(env, status);
        return 0;
    }
}

#ifdef CMR_TEST
/* The same arguments as pick, read and released the same way, and no
 * call: the baseline that the JNI overhead of a pick is measured against
 * (org.cmr.EmptyPick, in the tests). Only in the tests' build. */
JNIEXPORT jint JNICALL Java_org_cmr_EmptyPick_emptyPick(JNIEnv *env, jclass cls, jlong handle,
                                                        jbyteArray recipient, jbyteArray type,
                                                        jbyteArray sender, jbyteArray hint,
                                                        jboolean sender_is_local, jlongArray out) {
    (void)cls;
    (void)handle;
    (void)sender_is_local;
    pick_args a;
    if (!pick_open(env, &a, recipient, type, sender, hint, out)) {
        return 0;
    }
    pick_close(env, &a, JNI_ABORT);
    return 1;
}
#endif

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_getAlgorithm(JNIEnv *env, jclass cls,
                                                              jlong handle, jbyteArray bare_jid) {
    (void)cls;
    return text_result(env, handle, bare_jid, NULL, IN_PLACE, 0, call_get_algorithm);
}

JNIEXPORT void JNICALL Java_org_cmr_Native_setAlgorithm(JNIEnv *env, jclass cls, jlong handle,
                                                        jbyteArray bare_jid, jbyteArray algorithm) {
    (void)cls;
    input jid, name;
    input *inputs[] = {&jid, &name};
    input_prepare(env, bare_jid, &jid);
    input_prepare(env, algorithm, &name);
    if (!inputs_take(env, inputs, 2)) {
        return;
    }
    cmr_status status =
        cmr_router_set_algorithm(router_of(handle), jid.bytes, jid.len, name.bytes, name.len);
    inputs_close(env, inputs, 2);
    if (status != CMR_STATUS_OK) {
        throw_status(env, status);
    }
}

/* The answer, with one byte in front: 1 when the account's algorithm
 * changed (org.cmr.IqAnswer reads it); null when the IQ is not CMR's. An
 * IQ may take up to a millisecond to parse, so it is copied out of the
 * Java heap rather than held in a critical region. */
JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_handleIq(JNIEnv *env, jclass cls, jlong handle,
                                                          jbyteArray xml) {
    (void)cls;
    if (xml == NULL) {
        return NULL;
    }
    jsize xml_len = (*env)->GetArrayLength(env, xml);
    jbyte *stanza = (*env)->GetByteArrayElements(env, xml, NULL);
    if (stanza == NULL) {
        return NULL;
    }
    char stack[TEXT_STACK_BYTES];
    char *buf = stack;
    size_t cap = sizeof stack - 1;
    size_t len = 0;
    bool changed = false;
    cmr_status status;
    for (;;) {
        status = cmr_router_handle_iq(router_of(handle), (const char *)stanza, (size_t)xml_len,
                                      buf + 1, cap, &len, &changed);
        if (status != CMR_STATUS_BUFFER_TOO_SMALL) {
            break;
        }
        if (buf != stack) {
            free(buf);
        }
        buf = malloc(len + 1);
        cap = len;
        if (buf == NULL) {
            break;
        }
    }
    (*env)->ReleaseByteArrayElements(env, xml, stanza, JNI_ABORT);
    jbyteArray result = NULL;
    if (buf == NULL) {
        throw_out_of_memory(env);
        return NULL;
    }
    if (status == CMR_STATUS_OK) {
        buf[0] = changed ? 1 : 0;
        result = to_java_bytes(env, buf, len + 1);
    } else if (status != CMR_STATUS_NOT_MINE) {
        throw_status(env, status);
    }
    if (buf != stack) {
        free(buf);
    }
    return result;
}

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_discoFeatures(JNIEnv *env, jclass cls,
                                                               jlong handle) {
    (void)cls;
    return text_result(env, handle, NULL, NULL, IN_PLACE, 0, call_disco_features);
}

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_stats(JNIEnv *env, jclass cls, jlong handle,
                                                       jbyteArray bare_jid) {
    (void)cls;
    return text_result(env, handle, bare_jid, NULL, IN_PLACE, 0, call_stats);
}

/* The routing command, with `admin` the admin command: its node and
 * name (org.cmr.Command). */
JNIEXPORT jobject JNICALL Java_org_cmr_Native_command(JNIEnv *env, jclass cls, jboolean admin) {
    (void)cls;
    const cmr_command *command = admin == JNI_TRUE ? cmr_admin_command() : cmr_routing_command();
    jbyteArray node = c_string_bytes(env, command->node);
    jbyteArray name = node == NULL ? NULL : c_string_bytes(env, command->name);
    if (name == NULL) {
        return NULL; /* OutOfMemoryError is pending */
    }
    return (*env)->NewObject(env, command_class, command_init, node, name);
}

/* The routing command's answer (org.cmr.CommandAnswer reads it): its
 * stage, 1 when the account's algorithm changed, then the form or the
 * note. The submitted form is read from a copy: it takes a while to
 * parse. */
JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_routingCommand(JNIEnv *env, jclass cls,
                                                                jlong handle, jbyteArray requester,
                                                                jbyteArray submitted) {
    (void)cls;
    return text_result(env, handle, requester, submitted, COPIED, 2, call_routing_command);
}

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_adminForm(JNIEnv *env, jclass cls, jlong handle) {
    (void)cls;
    return text_result(env, handle, NULL, NULL, IN_PLACE, 0, call_admin_form);
}

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_adminFormValue(JNIEnv *env, jclass cls,
                                                                jbyteArray submitted,
                                                                jbyteArray var) {
    (void)cls;
    return text_result(env, 0, submitted, var, COPIED, 0, call_admin_form_value);
}

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_chooseFor(JNIEnv *env, jclass cls, jlong handle,
                                                           jbyteArray bare_jid,
                                                           jbyteArray algorithm) {
    (void)cls;
    return text_result(env, handle, bare_jid, algorithm, IN_PLACE, 0, call_choose_for);
}

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_choiceNote(JNIEnv *env, jclass cls, jlong handle,
                                                            jbyteArray bare_jid,
                                                            jbyteArray algorithm) {
    (void)cls;
    return text_result(env, handle, bare_jid, algorithm, IN_PLACE, 0, call_choice_note);
}

JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_algorithmFor(JNIEnv *env, jclass cls,
                                                              jlong handle, jbyteArray bare_jid,
                                                              jbyteArray stored) {
    (void)cls;
    return text_result(env, handle, bare_jid, stored, IN_PLACE, 0, call_algorithm_for);
}

/* The description of the metrics' series at `index` (org.cmr.MetricSeries),
 * or null past the last. */
JNIEXPORT jobject JNICALL Java_org_cmr_Native_metricSeries(JNIEnv *env, jclass cls, jint index) {
    (void)cls;
    const cmr_metric_series *series = index < 0 ? NULL : cmr_metric_series_at((size_t)index);
    if (series == NULL) {
        return NULL;
    }
    const char *texts[] = {series->key,   series->metric,      series->family, series->unit,
                           series->label, series->label_value, series->help};
    enum { TEXTS = sizeof texts / sizeof texts[0] };
    jbyteArray bytes[TEXTS];
    for (size_t i = 0; i < TEXTS; i++) {
        bytes[i] = c_string_bytes(env, texts[i]);
        if (bytes[i] == NULL) {
            return NULL; /* OutOfMemoryError is pending */
        }
    }
    return (*env)->NewObject(env, series_class, series_init, bytes[0], bytes[1], bytes[2],
                             bytes[3], bytes[4], bytes[5], bytes[6],
                             series->kind == CMR_METRIC_KIND_COUNTER ? JNI_TRUE : JNI_FALSE);
}

/* The router's figures, one per series in the order of metricSeries. */
JNIEXPORT jlongArray JNICALL Java_org_cmr_Native_metricValues(JNIEnv *env, jclass cls,
                                                              jlong handle) {
    (void)cls;
    size_t n = 0;
    cmr_status status = cmr_router_metric_values(router_of(handle), NULL, 0, &n);
    uint64_t *values = NULL;
    if (status == CMR_STATUS_BUFFER_TOO_SMALL) {
        values = malloc(n * sizeof *values);
        if (values == NULL) {
            throw_out_of_memory(env);
            return NULL;
        }
        status = cmr_router_metric_values(router_of(handle), values, n, &n);
    }
    jlongArray array = NULL;
    if (status != CMR_STATUS_OK) {
        throw_status(env, status);
    } else {
        array = (*env)->NewLongArray(env, (jsize)n);
        if (array != NULL && n > 0) {
            (*env)->SetLongArrayRegion(env, array, 0, (jsize)n, (const jlong *)values);
        }
    }
    free(values);
    return array;
}

/* The short name of the algorithm at `index` of the library's list, or
 * null past the last. */
JNIEXPORT jbyteArray JNICALL Java_org_cmr_Native_algorithmName(JNIEnv *env, jclass cls, jint index) {
    (void)cls;
    const char *name = index < 0 ? NULL : cmr_algorithm_name((size_t)index);
    return name == NULL ? NULL : c_string_bytes(env, name);
}

JNIEXPORT jint JNICALL Java_org_cmr_Native_maxPicksPerMessage(JNIEnv *env, jclass cls) {
    (void)env;
    (void)cls;
    return (jint)cmr_max_picks_per_message();
}

JNIEXPORT jint JNICALL Java_org_cmr_Native_activityIntervalMillis(JNIEnv *env, jclass cls) {
    (void)env;
    (void)cls;
    return (jint)cmr_activity_interval_ms();
}
