/* it_upstream: nodes that fail in every way, seen from the client: refused
 * connections, 429/500, invalid JSON and SSE, a stream cut mid-way, a node
 * that stalls or dies, and a client that leaves mid-stream (the node's call
 * is cancelled). The mock upstream picks its failure from the request body's
 * "mock_fail" field, which msoa forwards like any other field. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "itgw.h"
#include "testlib.h"

static itgw g;

static it_response post_failing(const char *mode, int stream) {
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"mock-small\",\"stream\":%s,\"mock_fail\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
             stream ? "true" : "false", mode);
    it_response r;
    if (itgw_post(&g, "/v1/chat/completions", body, &r) < 0) r.status = -1;
    return r;
}

static const char *error_code(const char *json) {
    static char code[64];
    cJSON *j = cJSON_Parse(json ? json : "");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "code");
    snprintf(code, sizeof code, "%s", cJSON_IsString(c) ? c->valuestring : "");
    cJSON_Delete(j);
    return code;
}

static void test_status_errors(void) {
    it_response r = post_failing("status:429", 0);
    CHECK_EQ_INT(r.status, 429);
    CHECK(it_header(&r, "retry-after") != NULL);
    CHECK_STR(error_code(r.body.data), "rate_limited");
    it_response_free(&r);

    r = post_failing("status:500", 0);
    CHECK_EQ_INT(r.status, 502);
    CHECK_STR(error_code(r.body.data), "upstream_error");
    CHECK_CONTAINS(r.body.data, "m1");
    it_response_free(&r);

    r = post_failing("status:503", 1); /* before any chunk: still a real status */
    CHECK_EQ_INT(r.status, 502);
    it_response_free(&r);

    r = post_failing("bad-json", 0);
    CHECK_EQ_INT(r.status, 502);
    CHECK_STR(error_code(r.body.data), "upstream_bad_response");
    it_response_free(&r);

    r = post_failing("refuse", 0);
    CHECK_EQ_INT(r.status, 502);
    it_response_free(&r);
}

/* A stream that began and then broke: 200, some chunks, one error event,
 * no [DONE], and the body is well-formed SSE. */
static void check_broken_stream(const char *mode, const char *code) {
    it_response r = post_failing(mode, 1);
    CHECK_EQ_INT(r.status, 200);
    cJSON *events = it_sse_events(r.body.data);
    int n = cJSON_GetArraySize(events);
    CHECK(n >= 2);
    const char *last = n ? cJSON_GetArrayItem(events, n - 1)->valuestring : "";
    CHECK(strcmp(last, "[DONE]") != 0);
    CHECK_STR(error_code(last), code);
    for (int i = 0; i < n - 1; i++) CHECK_CONTAINS(cJSON_GetArrayItem(events, i)->valuestring, "chat.completion.chunk");
    cJSON_Delete(events);
    it_response_free(&r);
}

static void test_broken_streams(void) {
    check_broken_stream("reset-after:2", "upstream_broken");
    /* garbage as the first event: nothing was sent yet, so a real status */
    it_response r = post_failing("bad-sse", 1);
    CHECK_EQ_INT(r.status, 502);
    CHECK_STR(error_code(r.body.data), "upstream_bad_response");
    it_response_free(&r);
    double start = clock_now_ms();
    check_broken_stream("stall-after:2", "upstream_timeout");
    CHECK(clock_now_ms() - start < 3000); /* --upstream-stall-ms 500 */
}

static long node_inflight(void) {
    it_response r;
    const char *q = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"mesh.nodes\"}";
    long v = -1;
    if (itgw_post(&g, "/rpc", q, &r) == 0) {
        cJSON *j = it_json(&r);
        const cJSON *n = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "result"), 0);
        const cJSON *inflight = cJSON_GetObjectItemCaseSensitive(n, "inflight");
        if (cJSON_IsNumber(inflight)) v = (long)inflight->valuedouble;
        cJSON_Delete(j);
    }
    it_response_free(&r);
    return v;
}

static void test_client_leaves_mid_stream(void) {
    int fd = it_connect(g.msoa.port);
    const char *body = "{\"model\":\"mock-small\",\"stream\":true,\"mock_fail\":\"slow:300\","
                       "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    char req[512];
    int n = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    CHECK_EQ_INT(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    char tmp[4096];
    CHECK(recv(fd, tmp, sizeof tmp, 0) > 0); /* the stream has begun */
    CHECK(node_inflight() >= 1);
    close(fd);
    double deadline = clock_now_ms() + 2000;
    long inflight = -1;
    while (clock_now_ms() < deadline && (inflight = node_inflight()) != 0) usleep(20000);
    CHECK_EQ_INT(inflight, 0);
}

static void test_unreachable_node_and_ready(void) {
    char node[128], msoa_path[4096];
    snprintf(node, sizeof node, "dead=http://127.0.0.1:%d/v1,model=ghost", it_closed_port());
    snprintf(msoa_path, sizeof msoa_path, "%s", it_bin("msoa"));
    char *argv[] = {msoa_path, "up", "--listen", "127.0.0.1:0", "--node", node, NULL};
    it_proc p;
    CHECK_EQ_INT(it_start(&p, argv), 0);
    if (!p.pid) return;
    it_response r;
    CHECK_EQ_INT(it_http(p.port, "GET", "/ready", NULL, NULL, 0, 3000, &r), 0);
    CHECK_EQ_INT(r.status, 503);
    it_response_free(&r);
    /* A node down is still tried (its probe may be stale): 502 naming it;
     * five failures open its circuit, and then it is 503 at once, saying
     * what is unavailable, with Retry-After. */
    const char *body = "{\"model\":\"ghost\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(it_http(p.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 5000, &r), 0);
        CHECK_EQ_INT(r.status, 502);
        CHECK_STR(error_code(r.body.data), "upstream_unreachable");
        CHECK_CONTAINS(r.body.data, "dead");
        it_response_free(&r);
    }
    CHECK_EQ_INT(it_http(p.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 5000, &r), 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK_STR(error_code(r.body.data), "no_healthy_node");
    CHECK_CONTAINS(r.body.data, "no healthy node in pool");
    CHECK(it_header(&r, "retry-after") != NULL);
    it_response_free(&r);
    it_stop(&p, SIGTERM);
}

/* What reaches the node: its own model name, the client's fields, usage
 * asked for in streams, and the node's API key as a bearer token. */
static const char *str_field(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_what_the_node_receives(void) {
    char node[256], msoa_path[4096];
    snprintf(node, sizeof node, "keyed=http://127.0.0.1:%d,model=mock-small,api_key=sekrit-42", g.mock.port);
    snprintf(msoa_path, sizeof msoa_path, "%s", it_bin("msoa"));
    char *argv[] = {msoa_path, "up", "--listen", "127.0.0.1:0", "--node", node, NULL};
    it_proc p;
    CHECK_EQ_INT(it_start(&p, argv), 0);
    if (!p.pid) return;
    /* Its first health probe (a GET) must be over, or it could be the
     * request the mock remembers last. */
    CHECK_EQ_INT(it_wait_reachable(p.port, 1), 0);
    it_response r;
    /* every member but model, stream and msoa's own goes as it came: key and value byte for byte */
    const char *body = "{\"model\":\"keyed\",\"stream\":true,\"seed\":7,\"msoa\":{\"split\":false},"
                       "\"logit_bias\": {\"50256\" : -100},\"messages\":[{\"role\":\"user\",\"content\":\"x\\u00e9\"}]}";
    CHECK_EQ_INT(it_http(p.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 5000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    it_response_free(&r);
    CHECK_EQ_INT(it_http(g.mock.port, "GET", "/debug/last", NULL, NULL, 0, 5000, &r), 0);
    cJSON *last = it_json(&r);
    CHECK_STR(str_field(last, "method"), "POST");
    CHECK_STR(str_field(cJSON_GetObjectItemCaseSensitive(last, "headers"), "authorization"), "Bearer sekrit-42");
    const char *sent = str_field(last, "body");
    CHECK_CONTAINS(sent, "\"logit_bias\":{\"50256\" : -100}");
    CHECK_CONTAINS(sent, "\"messages\":[{\"role\":\"user\",\"content\":\"x\\u00e9\"}]");
    CHECK(sent && !strstr(sent, "msoa") && !strstr(sent, "keyed"));
    CHECK(sent && strstr(sent, "\"stream\"") == strstr(sent, "\"stream\":true") &&
          !strstr(strstr(sent, "\"stream\"") + 1, "\"stream\""));
    cJSON *sent_body = cJSON_Parse(sent ? sent : "");
    CHECK_STR(str_field(sent_body, "model"), "mock-small");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(sent_body, "seed");
    CHECK(cJSON_IsNumber(seed) && seed->valueint == 7);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(sent_body, "stream_options"), "include_usage")));
    cJSON_Delete(sent_body);
    cJSON_Delete(last);
    it_response_free(&r);
    it_stop(&p, SIGTERM);
}

/* Last: the node process dies mid-stream. */
static void test_node_dies_mid_stream(void) {
    check_broken_stream("exit-after:2", "upstream_broken");
    it_response r;
    CHECK_EQ_INT(it_http(g.msoa.port, "GET", "/health", NULL, NULL, 0, 3000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    it_response_free(&r);
}

int main(void) {
    /* the failures here would open m1's circuit: keep it closed */
    const char *extra[] = {"--upstream-stall-ms", "500", "--circuit-breaker", "0", NULL};
    if (itgw_start(&g, extra) < 0) return 1;
    TEST(test_status_errors);
    TEST(test_broken_streams);
    TEST(test_client_leaves_mid_stream);
    TEST(test_unreachable_node_and_ready);
    TEST(test_what_the_node_receives);
    TEST(test_node_dies_mid_stream);
    itgw_stop(&g);
    return test_done();
}
