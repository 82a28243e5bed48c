/* jsonrpc_fuzz: arbitrary bytes into a JSON-RPC session.
 *
 * The first byte picks how the session is driven (whether held calls are
 * answered in order or reversed, whether the transport goes away first or
 * from inside its first write, a small batch limit); the
 * rest is the received text. Methods answer at once, later, twice, with
 * errors or with notifications first. Every text the session sends must be
 * valid JSON of the right shape; ASan/UBSan catch the rest (leaks included). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/jsonrpc.h"
#include "base/log.h"

static void check(int ok) {
    if (!ok) abort();
}

static void check_response(const cJSON *r) {
    check(cJSON_IsObject(r));
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "jsonrpc");
    check(cJSON_IsString(v) && strcmp(v->valuestring, "2.0") == 0);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(r, "id");
    check(cJSON_IsString(id) || cJSON_IsNumber(id) || cJSON_IsNull(id));
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(r, "result");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(r, "error");
    check((res == NULL) != (err == NULL));
    if (err) {
        check(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(err, "code")));
        check(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(err, "message")));
    }
}

/* mode bit 16: the transport fails on its first write and goes away */
static jsonrpc_session *session;
static int close_on_send, closed;

static void close_session(void) {
    closed = 1;
    jsonrpc_session_close(session);
}

static void on_send(const char *json, size_t len, void *ud) {
    (void)ud;
    check(strlen(json) == len);
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    check(j != NULL && end == json + len);
    if (cJSON_IsArray(j)) {
        check(cJSON_GetArraySize(j) > 0);
        const cJSON *m;
        cJSON_ArrayForEach(m, j) check_response(m);
    } else if (cJSON_GetObjectItemCaseSensitive(j, "method")) {
        check(!cJSON_GetObjectItemCaseSensitive(j, "id")); /* our notifications */
    } else {
        check_response(j);
    }
    cJSON_Delete(j);
    if (close_on_send && !closed) close_session();
}

#define MAX_HELD 2048
static jsonrpc_call *held[MAX_HELD];
static int done[MAX_HELD]; /* answered by its cancel callback: gone */
static size_t n_held;

static void m_echo(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)ud;
    jsonrpc_result(c, params ? cJSON_Duplicate(params, 1) : NULL);
}

static void m_fail(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)ud;
    jsonrpc_error(c, JSONRPC_INVALID_PARAMS, NULL, params ? cJSON_Duplicate(params, 1) : NULL);
}

static void m_later(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    if (n_held < MAX_HELD) {
        done[n_held] = 0;
        held[n_held++] = c;
    } else {
        jsonrpc_result(c, NULL);
    }
}

static void m_stream(jsonrpc_call *c, const cJSON *params, void *ud) {
    jsonrpc_notify(c, "chunk", params ? cJSON_Duplicate(params, 1) : NULL);
    m_later(c, params, ud);
}

static void m_twice(jsonrpc_call *c, const cJSON *params, void *ud) {
    m_echo(c, params, ud);
    jsonrpc_result(c, cJSON_CreateTrue());
}

static void cancelled(void *ud) {
    size_t i = (size_t)(uintptr_t)ud;
    jsonrpc_error(held[i], -32000, "cancelled", NULL);
    done[i] = 1;
}

static void m_cancellable(jsonrpc_call *c, const cJSON *params, void *ud) {
    m_later(c, params, ud);
    if (n_held && held[n_held - 1] == c) jsonrpc_call_on_cancel(c, cancelled, (void *)(uintptr_t)(n_held - 1));
}

static const jsonrpc_method methods[] = {
    {"echo", m_echo},     {"fail", m_fail},   {"later", m_later},
    {"stream", m_stream}, {"twice", m_twice}, {"cancellable", m_cancellable},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int quiet;
    if (!quiet) {
        log_set_level(LOG_ERROR); /* "answered twice" warnings are expected here */
        quiet = 1;
    }
    if (size < 1) return 0;
    uint8_t mode = data[0];
    session = jsonrpc_session_new(methods, sizeof methods / sizeof methods[0], NULL, on_send, NULL);
    if (mode & 4) jsonrpc_session_set_max_batch(session, 3);
    close_on_send = mode & 16;
    closed = 0;
    n_held = 0;
    /* a copy exactly as long as the text, so over-reads are caught */
    char *text = malloc(size - 1 ? size - 1 : 1);
    memcpy(text, data + 1, size - 1);
    jsonrpc_handle(session, text, size - 1);
    free(text);
    if ((mode & 1) && !closed) close_session();
    for (size_t i = 0; i < n_held; i++) {
        size_t k = (mode & 2) ? n_held - 1 - i : i;
        if (done[k]) continue;
        if (mode & 8) jsonrpc_notify(held[k], "late", NULL);
        jsonrpc_result(held[k], cJSON_CreateString("later"));
    }
    if (!closed) {
        check(jsonrpc_session_pending(session) == 0);
        close_session();
    }
    return 0;
}
