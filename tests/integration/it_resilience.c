/* it_resilience: circuit breakers, hedging and deadlines, each against real
 * mock nodes: a node that keeps failing is left alone; a node slower than
 * its usual first token gets a hedge on another; a request's deadline is
 * kept. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "itgw.h"
#include "testlib.h"

static it_proc mock_a, mock_b;

static int start_mock(it_proc *p, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s", it_bin("mock_upstream"));
    char *argv[] = {path, "--port", "0", "--model", "mock-small", "--chunks", "5", "--name", (char *)name, NULL};
    return it_start(p, argv);
}

/* msoa in front of a (cheap, tried first) and b (dear), plus extra flags. */
static int start_gateway(it_proc *p, const char *extra1, const char *extra2) {
    char path[4096], a[160], b[160];
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    snprintf(a, sizeof a, "a=http://127.0.0.1:%d,model=mock-small,price_in=1,price_out=2", mock_a.port);
    snprintf(b, sizeof b, "b=http://127.0.0.1:%d,model=mock-small,price_in=500,price_out=900", mock_b.port);
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--workers", "1", "--node", a, "--node", b,
                    (char *)extra1, (char *)extra2, NULL};
    if (!extra1) argv[10] = NULL;
    if (it_start(p, argv) < 0) return -1;
    return it_wait_reachable(p->port, 2);
}

static it_response post(it_proc *p, const char *extra_fields, int stream, const char *headers) {
    char body[512];
    snprintf(body, sizeof body, "{\"model\":\"mock-small\",\"stream\":%s%s,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
             stream ? "true" : "false", extra_fields);
    it_response r;
    if (it_http(p->port, "POST", "/v1/chat/completions", headers, body, strlen(body), 10000, &r) < 0) r.status = -1;
    return r;
}

static cJSON *report_of(const it_response *r, int stream) {
    if (!stream) {
        cJSON *j = it_json(r);
        cJSON *m = cJSON_DetachItemFromObjectCaseSensitive(j, "msoa");
        cJSON_Delete(j);
        return m;
    }
    cJSON *events = it_sse_events(r->body.data);
    int n = cJSON_GetArraySize(events);
    cJSON *last = n >= 2 ? cJSON_Parse(cJSON_GetArrayItem(events, n - 2)->valuestring) : NULL;
    cJSON_Delete(events);
    cJSON *m = cJSON_DetachItemFromObjectCaseSensitive(last, "msoa");
    cJSON_Delete(last);
    return m;
}

static int nodes_are(const cJSON *report, const char *want) {
    char got[128] = "";
    const cJSON *n;
    cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(report, "nodes")) {
        strcat(got, n->valuestring);
        strcat(got, ",");
    }
    if (strcmp(got, want)) fprintf(stderr, "  nodes: %s, want %s\n", got, want);
    return !strcmp(got, want);
}

static const char *breaker_of(it_proc *p, const char *node) {
    static char state[32];
    it_response r;
    const char *q = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"mesh.nodes\"}";
    state[0] = '\0';
    if (it_http(p->port, "POST", "/rpc", NULL, q, strlen(q), 5000, &r) == 0) {
        cJSON *j = it_json(&r);
        const cJSON *n;
        cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(j, "result")) {
            if (!strcmp(cJSON_GetObjectItemCaseSensitive(n, "name")->valuestring, node))
                snprintf(state, sizeof state, "%s", cJSON_GetObjectItemCaseSensitive(n, "breaker")->valuestring);
        }
        cJSON_Delete(j);
    }
    it_response_free(&r);
    return state;
}

static void test_breaker_opens_and_skips(void) {
    it_proc gw;
    CHECK_EQ_INT(start_gateway(&gw, NULL, NULL), 0);
    /* five failures in a row on a, each answered by b */
    for (int i = 0; i < 5; i++) {
        it_response r = post(&gw, ",\"mock_fail\":\"status:500\",\"mock_fail_node\":\"a\"", 0, NULL);
        CHECK_EQ_INT(r.status, 200);
        cJSON *rep = report_of(&r, 0);
        CHECK(nodes_are(rep, "a,b,"));
        cJSON_Delete(rep);
        it_response_free(&r);
    }
    CHECK_STR(breaker_of(&gw, "a"), "open");
    CHECK_STR(breaker_of(&gw, "b"), "closed");
    /* a is left alone now: straight to b */
    it_response r = post(&gw, "", 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    cJSON *rep = report_of(&r, 0);
    CHECK(nodes_are(rep, "b,"));
    cJSON_Delete(rep);
    it_response_free(&r);
    it_stop(&gw, SIGTERM);
}

static void test_hedge_beats_a_slow_node(void) {
    it_proc gw;
    CHECK_EQ_INT(start_gateway(&gw, NULL, NULL), 0);
    /* a's usual first-token time: fast */
    for (int i = 0; i < 30; i++) {
        it_response r = post(&gw, "", 1, NULL);
        CHECK_EQ_INT(r.status, 200);
        it_response_free(&r);
    }
    /* now a's first token comes 800 ms late: the hedge on b answers first */
    double t0 = clock_now_ms();
    it_response r = post(&gw, ",\"mock_fail\":\"late:800\",\"mock_fail_node\":\"a\"", 1, NULL);
    double took = clock_now_ms() - t0;
    CHECK_EQ_INT(r.status, 200);
    CHECK(took < 600);
    cJSON *rep = report_of(&r, 1);
    CHECK(nodes_are(rep, "a,b,"));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "hedged")));
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(rep, "node")->valuestring, "b");
    cJSON_Delete(rep);
    CHECK_CONTAINS(r.body.data, "tok4");
    CHECK_CONTAINS(r.body.data, "[DONE]");
    it_response_free(&r);
    it_stop(&gw, SIGTERM);
}

static void test_deadline(void) {
    it_proc gw;
    CHECK_EQ_INT(start_gateway(&gw, "--hedging", "0"), 0);
    double t0 = clock_now_ms();
    it_response r = post(&gw, ",\"mock_fail\":\"slow:2000\"", 0, "x-msoa-timeout-ms: 300\r\n");
    double took = clock_now_ms() - t0;
    CHECK_EQ_INT(r.status, 504);
    CHECK_CONTAINS(r.body.data, "deadline");
    CHECK(took >= 250 && took < 1500);
    it_response_free(&r);
    r = post(&gw, "", 0, "x-msoa-timeout-ms: soon\r\n");
    CHECK_EQ_INT(r.status, 400);
    CHECK_CONTAINS(r.body.data, "x-msoa-timeout-ms");
    it_response_free(&r);
    it_stop(&gw, SIGTERM);
}

int main(void) {
    if (start_mock(&mock_a, "a") < 0 || start_mock(&mock_b, "b") < 0) return 1;
    TEST(test_breaker_opens_and_skips);
    TEST(test_hedge_beats_a_slow_node);
    TEST(test_deadline);
    it_stop(&mock_a, SIGTERM);
    it_stop(&mock_b, SIGTERM);
    return test_done();
}
