/* it_failover: two nodes serve one model; when the first fails — before
 * answering or in the middle of a stream — the client still gets one whole,
 * well-formed answer, continued by the second, with both in the report. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itgw.h"
#include "testlib.h"

static it_proc mock_a, mock_b, msoa;

static int start_all(void) {
    char mock[4096], path[4096], node_a[160], node_b[160];
    snprintf(mock, sizeof mock, "%s", it_bin("mock_upstream"));
    char *a_argv[] = {mock, "--port", "0", "--model", "mock-small", "--chunks", "5", "--name", "a", NULL};
    char *b_argv[] = {mock, "--port", "0", "--model", "mock-small", "--chunks", "5", "--name", "b", NULL};
    if (it_start(&mock_a, a_argv) < 0 || it_start(&mock_b, b_argv) < 0) return -1;
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    /* b is far dearer, so the planner always tries a first while a is up */
    snprintf(node_a, sizeof node_a, "a=http://127.0.0.1:%d,model=mock-small,price_in=1,price_out=2", mock_a.port);
    snprintf(node_b, sizeof node_b, "b=http://127.0.0.1:%d,model=mock-small,price_in=500,price_out=900", mock_b.port);
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--workers", "1", "--upstream-stall-ms", "300",
                    "--node", node_a, "--node", node_b, NULL};
    if (it_start(&msoa, argv) < 0) return -1;
    /* both probed reachable, so a is tried first */
    return it_wait_reachable(msoa.port, 2);
}

static it_response post(const char *fail, int stream) {
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"mock-small\",\"stream\":%s,\"mock_fail\":\"%s\",\"mock_fail_node\":\"a\","
             "\"messages\":[{\"role\":\"user\",\"content\":\"tell me\"}]}",
             stream ? "true" : "false", fail);
    it_response r;
    if (it_http(msoa.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 10000, &r) < 0) r.status = -1;
    return r;
}

static void check_nodes(const cJSON *msoa_obj, const char *first, const char *second) {
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(msoa_obj, "nodes");
    CHECK_EQ_INT(cJSON_GetArraySize(nodes), second ? 2 : 1);
    CHECK_STR(cJSON_GetArrayItem(nodes, 0) ? cJSON_GetArrayItem(nodes, 0)->valuestring : NULL, first);
    if (second) CHECK_STR(cJSON_GetArrayItem(nodes, 1) ? cJSON_GetArrayItem(nodes, 1)->valuestring : NULL, second);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(msoa_obj, "failovers");
    CHECK_EQ_INT(cJSON_IsNumber(f) ? f->valueint : -1, second ? 1 : 0);
}

/* A stream cut on node a arrives whole: the text is what one healthy node
 * would have said, one id, one role, one finish, one [DONE]. */
static void check_seamless_stream(const char *fail) {
    it_response r = post(fail, 1);
    CHECK_EQ_INT(r.status, 200);
    cJSON *events = it_sse_events(r.body.data);
    int n = cJSON_GetArraySize(events);
    CHECK(n >= 3);
    CHECK_STR(n ? cJSON_GetArrayItem(events, n - 1)->valuestring : NULL, "[DONE]");
    buf text = BUF_INIT;
    int roles = 0, finishes = 0;
    cJSON *last = NULL;
    for (int i = 0; i < n - 1; i++) {
        cJSON *chunk = cJSON_Parse(cJSON_GetArrayItem(events, i)->valuestring);
        CHECK(chunk && !cJSON_GetObjectItemCaseSensitive(chunk, "error"));
        const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0);
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
        if (cJSON_GetObjectItemCaseSensitive(delta, "role")) roles++;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(content)) buf_puts(&text, content->valuestring);
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(choice, "finish_reason"))) finishes++;
        cJSON_Delete(last);
        last = chunk;
    }
    CHECK_STR(text.data, "echo(tell me) tok0 tok1 tok2 tok3 tok4 ");
    CHECK_EQ_INT(roles, 1);
    CHECK_EQ_INT(finishes, 1);
    const cJSON *report = cJSON_GetObjectItemCaseSensitive(last, "msoa");
    check_nodes(report, "a", "b");
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(report, "node")->valuestring, "b");
    /* every node's tokens: 2 chunks counted on a, 3 reported by b */
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(report, "tokens_out")->valueint, 5);
    cJSON_Delete(last);
    buf_free(&text);
    cJSON_Delete(events);
    it_response_free(&r);
}

static void test_stream_reset_mid_way(void) { check_seamless_stream("reset-after:2"); }
static void test_stream_stall_mid_way(void) { check_seamless_stream("stall-after:2"); }

static void test_retry_before_answer(void) {
    it_response r = post("status:500", 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "b");
    cJSON *j = it_json(&r);
    check_nodes(cJSON_GetObjectItemCaseSensitive(j, "msoa"), "a", "b");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0), "message");
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(msg, "content")->valuestring, "echo(tell me) tok0 tok1 tok2 tok3 tok4 ");
    cJSON_Delete(j);
    it_response_free(&r);
}

static void test_client_errors_are_not_retried(void) {
    it_response r = post("status:400", 0);
    CHECK_EQ_INT(r.status, 400);
    it_response_free(&r);
}

/* Last: node a's process dies mid-stream; b continues, and takes over. */
static void test_node_dies(void) {
    check_seamless_stream("exit-after:2");
    it_response r = post("", 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "b");
    it_response_free(&r);
}

int main(void) {
    if (start_all() < 0) {
        fprintf(stderr, "cannot start the two mocks and msoa\n");
        return 1;
    }
    TEST(test_stream_reset_mid_way);
    TEST(test_stream_stall_mid_way);
    TEST(test_retry_before_answer);
    TEST(test_client_errors_are_not_retried);
    TEST(test_node_dies);
    it_stop(&msoa, SIGTERM);
    it_stop(&mock_a, SIGKILL);
    it_stop(&mock_b, SIGTERM);
    return test_done();
}
