/* test_api_jsonrpc: the JSON-RPC 2.0 layer against the specification's own
 * examples (section 7, verbatim), ids of every type, limits, asynchronous
 * answers, notifications sent by methods, and closing a session with calls
 * still pending (run under -DMSOA_SANITIZE=ON to check nothing leaks). */
#include <stdlib.h>
#include <string.h>

#include "api/jsonrpc.h"
#include "testlib.h"

/* ---- a transport that records what would go on the wire ---- */

#define MAX_OUT 16
static char *out[MAX_OUT];
static int n_out;

static struct jsonrpc_session *close_on_send; /* a transport whose write fails */

static void record(const char *json, size_t len, void *ud) {
    (void)ud;
    if (n_out < MAX_OUT) out[n_out++] = strndup(json, len);
    if (close_on_send) {
        struct jsonrpc_session *s = close_on_send;
        close_on_send = NULL;
        jsonrpc_session_close(s);
    }
}

static void reset_out(void) {
    for (int i = 0; i < n_out; i++) free(out[i]);
    n_out = 0;
}

/* ---- methods ---- */

static int num_param(const cJSON *params, int pos, const char *name, double *v) {
    const cJSON *p = cJSON_IsArray(params) ? cJSON_GetArrayItem(params, pos)
                                            : cJSON_GetObjectItemCaseSensitive(params, name);
    if (!cJSON_IsNumber(p)) return -1;
    *v = p->valuedouble;
    return 0;
}

static void m_subtract(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)ud;
    double a, b;
    if (num_param(params, 0, "minuend", &a) || num_param(params, 1, "subtrahend", &b)) {
        jsonrpc_error(c, JSONRPC_INVALID_PARAMS, NULL, NULL);
        return;
    }
    jsonrpc_result(c, cJSON_CreateNumber(a - b));
}

static void m_sum(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)ud;
    double total = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, params) total += p->valuedouble;
    jsonrpc_result(c, cJSON_CreateNumber(total));
}

static void m_get_data(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    cJSON *r = cJSON_CreateArray();
    cJSON_AddItemToArray(r, cJSON_CreateString("hello"));
    cJSON_AddItemToArray(r, cJSON_CreateNumber(5));
    jsonrpc_result(c, r);
}

static int notified;
static void m_note(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    notified++;
    jsonrpc_result(c, NULL);
}

/* Keeps the call for the test to answer later. */
static jsonrpc_call *held[8];
static int n_held;
static void m_later(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    held[n_held++] = c;
}

/* Two streamed chunks, then the answer. */
static void m_stream(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    jsonrpc_notify(c, "chunk", cJSON_CreateString("a"));
    jsonrpc_notify(c, "chunk", cJSON_CreateString("b"));
    jsonrpc_result(c, cJSON_CreateString("done"));
    jsonrpc_notify(c, "chunk", cJSON_CreateString("too late"));
}

static void m_twice(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    jsonrpc_result(c, cJSON_CreateNumber(1));
    jsonrpc_result(c, cJSON_CreateNumber(2));
    jsonrpc_error(c, -1, "again", cJSON_CreateString("x"));
}

static void m_fail(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    jsonrpc_error(c, JSONRPC_INTERNAL_ERROR, "it broke", cJSON_CreateString("detail"));
}

static void m_echo(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)ud;
    jsonrpc_result(c, params ? cJSON_Duplicate(params, 1) : cJSON_CreateString("no params"));
}

static jsonrpc_session *current;
static void m_close(jsonrpc_call *c, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    jsonrpc_session_close(current);
    jsonrpc_result(c, NULL); /* dropped: the session is gone */
}

static const jsonrpc_method methods[] = {
    {"subtract", m_subtract}, {"sum", m_sum},       {"get_data", m_get_data}, {"notify_hello", m_note},
    {"notify_sum", m_note},   {"update", m_note},   {"later", m_later},       {"stream", m_stream},
    {"twice", m_twice},       {"fail", m_fail},     {"echo", m_echo},         {"close", m_close},
};

static jsonrpc_session *session(void) {
    reset_out();
    n_held = 0;
    notified = 0;
    return jsonrpc_session_new(methods, sizeof methods / sizeof methods[0], NULL, record, (void *)"tr");
}

static void handle(jsonrpc_session *s, const char *text) { jsonrpc_handle(s, text, strlen(text)); }

/* Error data is ours to add; the spec's examples do not show any. */
static void strip_data(cJSON *j) {
    if (cJSON_IsArray(j)) {
        cJSON *m;
        cJSON_ArrayForEach(m, j) strip_data(m);
    } else if (cJSON_IsObject(j)) {
        cJSON_DeleteItemFromObject(cJSON_GetObjectItem(j, "error"), "data");
    }
}

static int same_json(const char *actual, const char *expected) {
    cJSON *a = cJSON_Parse(actual), *e = cJSON_Parse(expected);
    strip_data(a);
    int same = a && e && cJSON_Compare(a, e, 1);
    if (!same) fprintf(stderr, "  got      %s\n  expected %s\n", actual ? actual : "(nothing)", expected);
    cJSON_Delete(a);
    cJSON_Delete(e);
    return same;
}

/* One text in, exactly one text out matching `expected` (or none if NULL). */
static void exchange(const char *in, const char *expected) {
    jsonrpc_session *s = session();
    handle(s, in);
    if (expected) {
        CHECK_EQ_INT(n_out, 1);
        CHECK(same_json(n_out ? out[0] : NULL, expected));
    } else {
        CHECK_EQ_INT(n_out, 0);
    }
    CHECK_EQ_INT(jsonrpc_session_pending(s), 0);
    jsonrpc_session_close(s);
}

/* ---- section 7 of the specification ---- */

static void spec_positional(void) {
    exchange("{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [42, 23], \"id\": 1}",
             "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": 1}");
    exchange("{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [23, 42], \"id\": 2}",
             "{\"jsonrpc\": \"2.0\", \"result\": -19, \"id\": 2}");
}

static void spec_named(void) {
    exchange("{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": {\"subtrahend\": 23, \"minuend\": 42}, \"id\": 3}",
             "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": 3}");
    exchange("{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": {\"minuend\": 42, \"subtrahend\": 23}, \"id\": 4}",
             "{\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": 4}");
}

static void spec_notification(void) {
    exchange("{\"jsonrpc\": \"2.0\", \"method\": \"update\", \"params\": [1,2,3,4,5]}", NULL);
    CHECK_EQ_INT(notified, 1);
    exchange("{\"jsonrpc\": \"2.0\", \"method\": \"foobar\"}", NULL);
}

static void spec_method_not_found(void) {
    exchange("{\"jsonrpc\": \"2.0\", \"method\": \"foobar\", \"id\": \"1\"}",
             "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32601, \"message\": \"Method not found\"}, \"id\": \"1\"}");
}

static void spec_invalid_json(void) {
    exchange("{\"jsonrpc\": \"2.0\", \"method\": \"foobar, \"params\": \"bar\", \"baz]",
             "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32700, \"message\": \"Parse error\"}, \"id\": null}");
}

static void spec_invalid_request(void) {
    exchange("{\"jsonrpc\": \"2.0\", \"method\": 1, \"params\": \"bar\"}",
             "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid Request\"}, \"id\": null}");
}

static void spec_batch_invalid_json(void) {
    exchange("[\n"
             "  {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n"
             "  {\"jsonrpc\": \"2.0\", \"method\"\n"
             "]",
             "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32700, \"message\": \"Parse error\"}, \"id\": null}");
}

static void spec_empty_array(void) {
    exchange("[]", "{\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid Request\"}, \"id\": null}");
}

static void spec_invalid_batch(void) {
    exchange("[1]", "[\n  {\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid Request\"}, \"id\": null}\n]");
    exchange("[1,2,3]",
             "[\n"
             "  {\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid Request\"}, \"id\": null},\n"
             "  {\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid Request\"}, \"id\": null},\n"
             "  {\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid Request\"}, \"id\": null}\n"
             "]");
}

static void spec_batch(void) {
    exchange("[\n"
             "        {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n"
             "        {\"jsonrpc\": \"2.0\", \"method\": \"notify_hello\", \"params\": [7]},\n"
             "        {\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [42,23], \"id\": \"2\"},\n"
             "        {\"foo\": \"boo\"},\n"
             "        {\"jsonrpc\": \"2.0\", \"method\": \"foo.get\", \"params\": {\"name\": \"myself\"}, \"id\": \"5\"},\n"
             "        {\"jsonrpc\": \"2.0\", \"method\": \"get_data\", \"id\": \"9\"} \n"
             "    ]",
             "[\n"
             "        {\"jsonrpc\": \"2.0\", \"result\": 7, \"id\": \"1\"},\n"
             "        {\"jsonrpc\": \"2.0\", \"result\": 19, \"id\": \"2\"},\n"
             "        {\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32600, \"message\": \"Invalid Request\"}, \"id\": null},\n"
             "        {\"jsonrpc\": \"2.0\", \"error\": {\"code\": -32601, \"message\": \"Method not found\"}, \"id\": \"5\"},\n"
             "        {\"jsonrpc\": \"2.0\", \"result\": [\"hello\", 5], \"id\": \"9\"}\n"
             "    ]");
    CHECK_EQ_INT(notified, 1);
}

static void spec_batch_all_notifications(void) {
    exchange("[\n"
             "        {\"jsonrpc\": \"2.0\", \"method\": \"notify_sum\", \"params\": [1,2,4]},\n"
             "        {\"jsonrpc\": \"2.0\", \"method\": \"notify_hello\", \"params\": [7]}\n"
             "    ]",
             NULL);
    CHECK_EQ_INT(notified, 2);
}

/* ---- ids ---- */

static void id_echo(const char *id, const char *expect_text) {
    char in[256], want[256];
    snprintf(in, sizeof in, "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":%s}", id);
    snprintf(want, sizeof want, "\"id\":%s}", expect_text);
    jsonrpc_session *s = session();
    handle(s, in);
    CHECK_EQ_INT(n_out, 1);
    if (n_out) {
        CHECK_CONTAINS(out[0], want);
        CHECK_CONTAINS(out[0], "\"result\":[\"hello\",5]");
    }
    jsonrpc_session_close(s);
}

static void ids_of_every_type(void) {
    id_echo("\"abc\"", "\"abc\"");
    id_echo("\"\\u00e9\\n\"", "\"\xc3\xa9\\n\"");
    id_echo("7", "7");
    id_echo("-3", "-3");
    id_echo("1.5", "1.5");
    id_echo("1.50", "1.50");
    id_echo("1e3", "1e3");
    id_echo("-0", "-0");
    id_echo("9007199254740993", "9007199254740993");
    id_echo("123456789012345678901234567890", "123456789012345678901234567890");
    id_echo("null", "null"); /* a request, not a notification */
}

static void ids_in_batch_keep_their_text(void) {
    jsonrpc_session *s = session();
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1],\"id\":0.10},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[2],\"id\":\"0.10\"},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":2E+2},"
              "{\"id\":18446744073709551617}]");
    CHECK_EQ_INT(n_out, 1);
    if (n_out) {
        CHECK_CONTAINS(out[0], "{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":0.10}");
        CHECK_CONTAINS(out[0], "{\"jsonrpc\":\"2.0\",\"result\":2,\"id\":\"0.10\"}");
        CHECK_CONTAINS(out[0], "\"code\":-32601");
        CHECK_CONTAINS(out[0], "\"id\":2E+2}");
        /* invalid (no method) but its id was fine: echoed */
        CHECK_CONTAINS(out[0], "\"id\":18446744073709551617}");
    }
    jsonrpc_session_close(s);
}

static void ids_of_wrong_type(void) {
    const char *bad[] = {"{}", "[1]", "true", "false"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char in[128];
        snprintf(in, sizeof in, "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":%s}", bad[i]);
        exchange(in, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\"},\"id\":null}");
    }
}

/* ---- request validation ---- */

static void invalid_requests(void) {
    const char *want = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\"},\"id\":5}";
    exchange("{\"jsonrpc\":\"1.0\",\"method\":\"sum\",\"id\":5}", want);
    exchange("{\"jsonrpc\":2.0,\"method\":\"sum\",\"id\":5}", want);
    exchange("{\"jsonrpc\":\"2.0 \",\"method\":\"sum\",\"id\":5}", want);
    exchange("{\"method\":\"sum\",\"id\":5}", want);
    exchange("{\"jsonrpc\":\"2.0\",\"id\":5}", want);
    exchange("{\"jsonrpc\":\"2.0\",\"method\":null,\"id\":5}", want);
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":\"x\",\"id\":5}", want);
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":3,\"id\":5}", want);
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":null,\"id\":5}", want);
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":true,\"id\":5}", want);
    exchange("\"just a string\"",
             "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\"},\"id\":null}");
}

static void invalid_request_says_why(void) {
    jsonrpc_session *s = session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":\"x\",\"id\":1}");
    CHECK_EQ_INT(n_out, 1);
    if (n_out) CHECK_CONTAINS(out[0], "\"data\":\"params must be an object or an array\"");
    jsonrpc_session_close(s);
}

static void method_errors(void) {
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":[\"a\"],\"id\":1}",
             "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"Invalid params\"},\"id\":1}");
    jsonrpc_session *s = session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"fail\",\"id\":1}");
    CHECK_EQ_INT(n_out, 1);
    if (n_out)
        {
            const char *want_ = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":\"it broke\",\"data\":\"detail\"},\"id\":1}";
            CHECK_STR(out[0], want_);
        }
    jsonrpc_session_close(s);
    /* a failing or unknown notification is still never answered */
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"fail\"}", NULL);
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":[]}", NULL);
    exchange("[{\"jsonrpc\":\"2.0\",\"method\":\"fail\"},{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}]", NULL);
}

static void params_reach_the_method(void) {
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":{\"a\":[1,{\"b\":null}]},\"id\":1}",
             "{\"jsonrpc\":\"2.0\",\"result\":{\"a\":[1,{\"b\":null}]},\"id\":1}");
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}",
             "{\"jsonrpc\":\"2.0\",\"result\":\"no params\",\"id\":1}");
}

/* ---- strict JSON ---- */

static void not_json(void) {
    const char *parse_error = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32700,\"message\":\"Parse error\"},\"id\":null}";
    const char *bad[] = {
        "",
        "   ",
        "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":1} x",
        "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":01}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":1.}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":+1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"s\tum\",\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"s\xff\",\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"s\xc0\xaf\",\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"s\xed\xa0\x80\",\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"\\ud800\",\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"\\x\",\"id\":1}",
        "\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":1}",
        "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":1,}",
        "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":1},]",
        "{'jsonrpc':'2.0'}",
        "nul",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) exchange(bad[i], parse_error);
    /* a NUL inside the received bytes */
    jsonrpc_session *s = session();
    jsonrpc_handle(s, "{}\0{}", 5);
    CHECK_EQ_INT(n_out, 1);
    if (n_out) CHECK(same_json(out[0], parse_error));
    jsonrpc_session_close(s);
    /* valid UTF-8 is fine */
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"],\"id\":1}",
             "{\"jsonrpc\":\"2.0\",\"result\":[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"],\"id\":1}");
}

/* params nested so that the deepest container is at `depth` */
static char *nested_request(int depth) {
    size_t n = (size_t)depth * 2 + 128;
    char *t = malloc(n);
    int len = snprintf(t, n, "{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1,\"params\":");
    for (int i = 1; i < depth; i++) t[len++] = '[';
    for (int i = 1; i < depth; i++) t[len++] = ']';
    t[len++] = '}';
    t[len] = '\0';
    return t;
}

static void depth_limit(void) {
    char *ok = nested_request(JSONRPC_MAX_DEPTH);
    jsonrpc_session *s = session();
    handle(s, ok);
    CHECK_EQ_INT(n_out, 1);
    if (n_out) CHECK_CONTAINS(out[0], "\"result\":[[[");
    jsonrpc_session_close(s);
    free(ok);

    char *deep = nested_request(JSONRPC_MAX_DEPTH + 1);
    s = session();
    handle(s, deep);
    CHECK_EQ_INT(n_out, 1);
    if (n_out) {
        CHECK_CONTAINS(out[0], "\"code\":-32600");
        CHECK_CONTAINS(out[0], "deeper than 64");
        CHECK_CONTAINS(out[0], "\"id\":null");
    }
    jsonrpc_session_close(s);
    free(deep);

    /* far past cJSON's own limit: refused without recursing */
    size_t n = 200000;
    char *huge = malloc(n);
    memset(huge, '[', n);
    s = session();
    jsonrpc_handle(s, huge, n);
    CHECK_EQ_INT(n_out, 1);
    if (n_out) CHECK_CONTAINS(out[0], "\"code\":-32600");
    jsonrpc_session_close(s);
    free(huge);
}

static char *batch_of(size_t n) {
    char *t = malloc(n * 2 + 2);
    size_t len = 0;
    t[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i) t[len++] = ',';
        t[len++] = '1';
    }
    t[len++] = ']';
    t[len] = '\0';
    return t;
}

static void batch_limit(void) {
    jsonrpc_session *s = session();
    jsonrpc_session_set_max_batch(s, 3);
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1],\"id\":1},2,3]");
    CHECK_EQ_INT(n_out, 1);
    if (n_out) CHECK(out[0][0] == '[');
    reset_out();
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1],\"id\":1},2,3,4]");
    CHECK_EQ_INT(n_out, 1);
    if (n_out) {
        CHECK(out[0][0] == '{');
        CHECK_CONTAINS(out[0], "\"code\":-32600");
        CHECK_CONTAINS(out[0], "batch of 4 requests is over the limit of 3");
    }
    jsonrpc_session_close(s);

    char *t = batch_of(JSONRPC_DEFAULT_MAX_BATCH);
    s = session();
    handle(s, t);
    CHECK_EQ_INT(n_out, 1);
    if (n_out) CHECK(out[0][0] == '[');
    jsonrpc_session_close(s);
    free(t);
    t = batch_of(JSONRPC_DEFAULT_MAX_BATCH + 1);
    s = session();
    handle(s, t);
    CHECK_EQ_INT(n_out, 1);
    if (n_out) CHECK_CONTAINS(out[0], "over the limit of 1000");
    jsonrpc_session_close(s);
    free(t);
}

/* ---- asynchronous answers, notifications, cancel ---- */

static void async_single(void) {
    jsonrpc_session *s = session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":\"x\"}");
    CHECK_EQ_INT(n_out, 0);
    CHECK_EQ_INT(n_held, 1);
    CHECK_EQ_INT(jsonrpc_session_pending(s), 1);
    CHECK(!jsonrpc_call_is_notification(held[0]));
    CHECK_STR(cJSON_GetStringValue(jsonrpc_call_id(held[0])), "x");
    CHECK_STR(jsonrpc_call_transport(held[0]), "tr");
    jsonrpc_result(held[0], cJSON_CreateNumber(42));
    CHECK_EQ_INT(n_out, 1);
    if (n_out) {
            const char *want_ = "{\"jsonrpc\":\"2.0\",\"result\":42,\"id\":\"x\"}";
            CHECK_STR(out[0], want_);
        }
    CHECK_EQ_INT(jsonrpc_session_pending(s), 0);
    jsonrpc_session_close(s);
}

static void async_batch_waits_for_all(void) {
    jsonrpc_session *s = session();
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[2],\"id\":2},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"later\"},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":3}]");
    CHECK_EQ_INT(n_held, 3);
    CHECK(jsonrpc_call_is_notification(held[1]));
    CHECK(jsonrpc_call_id(held[1]) == NULL);
    CHECK_EQ_INT(jsonrpc_session_pending(s), 3);
    jsonrpc_result(held[2], cJSON_CreateString("third"));
    jsonrpc_result(held[1], NULL);
    CHECK_EQ_INT(n_out, 0);
    jsonrpc_error(held[0], -32000, "first failed", NULL);
    CHECK_EQ_INT(n_out, 1);
    if (n_out)
        {
            const char *want_ = "[{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32000,\"message\":\"first failed\"},\"id\":1},"
                          "{\"jsonrpc\":\"2.0\",\"result\":2,\"id\":2},"
                          "{\"jsonrpc\":\"2.0\",\"result\":\"third\",\"id\":3}]";
            CHECK_STR(out[0], want_);
        }
    CHECK_EQ_INT(jsonrpc_session_pending(s), 0);
    jsonrpc_session_close(s);
}

static void notify_before_response(void) {
    jsonrpc_session *s = session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"stream\",\"id\":7}");
    CHECK_EQ_INT(n_out, 3);
    if (n_out == 3) {
        {
            const char *want_ = "{\"jsonrpc\":\"2.0\",\"method\":\"chunk\",\"params\":\"a\"}";
            CHECK_STR(out[0], want_);
        }
        {
            const char *want_ = "{\"jsonrpc\":\"2.0\",\"method\":\"chunk\",\"params\":\"b\"}";
            CHECK_STR(out[1], want_);
        }
        {
            const char *want_ = "{\"jsonrpc\":\"2.0\",\"result\":\"done\",\"id\":7}";
            CHECK_STR(out[2], want_);
        }
    }
    reset_out();
    /* in a batch the array comes after every member's notifications */
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"stream\",\"id\":1},{\"jsonrpc\":\"2.0\",\"method\":\"stream\",\"id\":2}]");
    CHECK_EQ_INT(n_out, 5);
    if (n_out == 5) {
        CHECK_CONTAINS(out[3], "\"params\":\"b\"");
        {
            const char *want_ = "[{\"jsonrpc\":\"2.0\",\"result\":\"done\",\"id\":1},{\"jsonrpc\":\"2.0\",\"result\":\"done\",\"id\":2}]";
            CHECK_STR(out[4], want_);
        }
    }
    jsonrpc_session_close(s);
}

static void second_answer_ignored(void) {
    exchange("{\"jsonrpc\":\"2.0\",\"method\":\"twice\",\"id\":1}", "{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":1}");
    /* an async call answered twice while its batch is still waiting */
    jsonrpc_session *s = session();
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":2}]");
    jsonrpc_result(held[0], cJSON_CreateNumber(1));
    jsonrpc_result(held[0], cJSON_CreateNumber(99));
    CHECK_EQ_INT(jsonrpc_session_pending(s), 1);
    jsonrpc_result(held[1], cJSON_CreateNumber(2));
    CHECK_EQ_INT(n_out, 1);
    if (n_out) {
            const char *want_ = "[{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":1},{\"jsonrpc\":\"2.0\",\"result\":2,\"id\":2}]";
            CHECK_STR(out[0], want_);
        }
    jsonrpc_session_close(s);
}

static int cancels;
static void count_cancel(void *ud) {
    cancels++;
    CHECK_STR(ud, "ud");
}

static void cancel_on_close(void) {
    cancels = 0;
    jsonrpc_session *s = session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1}");
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":2},{\"jsonrpc\":\"2.0\",\"method\":\"later\"}]");
    CHECK_EQ_INT(n_held, 3);
    for (int i = 0; i < 3; i++) {
        jsonrpc_call_on_cancel(held[i], count_cancel, "ud");
        CHECK(!jsonrpc_call_cancelled(held[i]));
    }
    jsonrpc_result(held[2], NULL); /* the notification finished first */
    jsonrpc_session_close(s);
    CHECK_EQ_INT(cancels, 2);
    CHECK(jsonrpc_call_cancelled(held[0]));
    CHECK(jsonrpc_call_cancelled(held[1]));
    /* still alive for the stragglers; their answers go nowhere */
    jsonrpc_notify(held[0], "chunk", cJSON_CreateString("late"));
    jsonrpc_result(held[1], cJSON_CreateNumber(1));
    jsonrpc_error(held[0], 1, "late", cJSON_CreateString("data"));
    CHECK_EQ_INT(n_out, 0);
    CHECK_EQ_INT(cancels, 2);
}

/* A cancel callback that answers its call at once (the usual shape). */
static void answer_on_cancel(void *ud) {
    cancels++;
    jsonrpc_error(ud, -32000, "cancelled", NULL);
}

static void cancel_that_answers(void) {
    cancels = 0;
    jsonrpc_session *s = session();
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":2}]");
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":3}");
    for (int i = 0; i < n_held; i++) jsonrpc_call_on_cancel(held[i], answer_on_cancel, held[i]);
    jsonrpc_session_close(s);
    CHECK_EQ_INT(cancels, 3);
    CHECK_EQ_INT(n_out, 0);
}

static void cancel_registered_after_close(void) {
    cancels = 0;
    jsonrpc_session *s = session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1}");
    jsonrpc_session_close(s);
    jsonrpc_call_on_cancel(held[0], count_cancel, "ud");
    CHECK_EQ_INT(cancels, 1);
    jsonrpc_result(held[0], NULL);
    CHECK_EQ_INT(n_out, 0);
}

static void close_inside_a_method(void) {
    jsonrpc_session *s = session();
    current = s;
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1},{\"jsonrpc\":\"2.0\",\"method\":\"close\",\"id\":2},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":3}]");
    CHECK_EQ_INT(n_held, 1); /* the member after the close did not run */
    CHECK(jsonrpc_call_cancelled(held[0]));
    jsonrpc_result(held[0], NULL);
    CHECK_EQ_INT(n_out, 0);
}

static void close_from_inside_send(void) {
    cancels = 0;
    jsonrpc_session *s = session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1}");
    jsonrpc_call_on_cancel(held[0], count_cancel, "ud");
    close_on_send = s;
    handle(s, "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1],\"id\":2}]");
    CHECK_EQ_INT(n_out, 1);
    CHECK_EQ_INT(cancels, 1);
    jsonrpc_result(held[0], NULL);
    CHECK_EQ_INT(n_out, 1);

    s = session();
    close_on_send = s;
    handle(s, "not json"); /* the parse error's send closes it */
    CHECK_EQ_INT(n_out, 1);

    s = session();
    handle(s, "{\"jsonrpc\":\"2.0\",\"method\":\"later\",\"id\":1}");
    close_on_send = s;
    jsonrpc_result(held[0], cJSON_CreateTrue());
    CHECK_EQ_INT(n_out, 1);
}

static void close_when_idle(void) {
    jsonrpc_session *s = session();
    jsonrpc_session_close(s);
    CHECK_EQ_INT(n_out, 0);
}

int main(void) {
    TEST(spec_positional);
    TEST(spec_named);
    TEST(spec_notification);
    TEST(spec_method_not_found);
    TEST(spec_invalid_json);
    TEST(spec_invalid_request);
    TEST(spec_batch_invalid_json);
    TEST(spec_empty_array);
    TEST(spec_invalid_batch);
    TEST(spec_batch);
    TEST(spec_batch_all_notifications);
    TEST(ids_of_every_type);
    TEST(ids_in_batch_keep_their_text);
    TEST(ids_of_wrong_type);
    TEST(invalid_requests);
    TEST(invalid_request_says_why);
    TEST(method_errors);
    TEST(params_reach_the_method);
    TEST(not_json);
    TEST(depth_limit);
    TEST(batch_limit);
    TEST(async_single);
    TEST(async_batch_waits_for_all);
    TEST(notify_before_response);
    TEST(second_answer_ignored);
    TEST(cancel_on_close);
    TEST(cancel_that_answers);
    TEST(cancel_registered_after_close);
    TEST(close_inside_a_method);
    TEST(close_from_inside_send);
    TEST(close_when_idle);
    reset_out();
    return test_done();
}
