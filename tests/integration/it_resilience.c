/* it_resilience: circuit breakers, hedging, deadlines and waiting for a
 * node, each against real mock nodes: a node that keeps failing is left
 * alone; a node slower than its usual first token gets a hedge on another;
 * a request's deadline is kept; a request no node takes now waits for one
 * coming back (bounded), and so does a cut stream. */
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

/* A node's field in mesh.nodes, as text ("closed", "true"), in a static
 * buffer; "" when absent. */
static const char *field_of(it_proc *p, const char *node, const char *field) {
    static char value[32];
    it_response r;
    const char *q = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"mesh.nodes\"}";
    value[0] = '\0';
    if (it_http(p->port, "POST", "/rpc", NULL, q, strlen(q), 5000, &r) == 0) {
        cJSON *j = it_json(&r);
        const cJSON *n;
        cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(j, "result")) {
            if (strcmp(cJSON_GetObjectItemCaseSensitive(n, "name")->valuestring, node) != 0) continue;
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(n, field);
            snprintf(value, sizeof value, "%s", cJSON_IsString(f) ? f->valuestring : cJSON_IsTrue(f) ? "true" : "false");
        }
        cJSON_Delete(j);
    }
    it_response_free(&r);
    return value;
}

static const char *breaker_of(it_proc *p, const char *node) { return field_of(p, node, "breaker"); }

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

/* msoa in front of a alone, with one flag and its value. */
static int start_gateway_a(it_proc *p, const char *flag, const char *value) {
    char path[4096], a[160];
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    snprintf(a, sizeof a, "a=http://127.0.0.1:%d,model=mock-small", mock_a.port);
    /* probes only at the start: a circuit half-opens when its period
     * ends; one attempt per request: each failure is one request's */
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--workers", "1", "--probe-interval-ms", "600000",
                    "--max-attempts", "1", "--node", a, (char *)flag, (char *)value, NULL};
    if (it_start(p, argv) < 0) return -1;
    return it_wait_reachable(p->port, 1);
}

static void open_circuit_of_a(it_proc *gw) {
    for (int i = 0; i < 10 && strcmp(breaker_of(gw, "a"), "open") != 0; i++) {
        it_response r = post(gw, ",\"mock_fail\":\"status:500\"", 0, NULL);
        CHECK_EQ_INT(r.status, 502);
        it_response_free(&r);
    }
    CHECK_STR(breaker_of(gw, "a"), "open");
}

/* a's circuit is open but a is up: a request waits for the circuit to
 * half-open (its 5 s period) and is answered, instead of a 503. */
static void test_waits_for_a_circuit_to_close(void) {
    it_proc gw;
    CHECK_EQ_INT(start_gateway_a(&gw, "--upstream-wait-ms", "10000"), 0);
    open_circuit_of_a(&gw);
    double t0 = clock_now_ms();
    it_response r = post(&gw, "", 1, NULL);
    double took = clock_now_ms() - t0;
    CHECK_EQ_INT(r.status, 200);
    CHECK(took > 3000);
    CHECK_CONTAINS(r.body.data, "tok4");
    CHECK_CONTAINS(r.body.data, "[DONE]");
    cJSON *rep = report_of(&r, 1);
    CHECK(nodes_are(rep, "a,"));
    cJSON_Delete(rep);
    it_response_free(&r);
    CHECK_STR(breaker_of(&gw, "a"), "closed");
    it_stop(&gw, SIGTERM);
}

/* The wait is bounded by --upstream-wait-ms: then 503, saying what is
 * unavailable, with Retry-After. */
static void test_wait_is_bounded(void) {
    it_proc gw;
    CHECK_EQ_INT(start_gateway_a(&gw, "--upstream-wait-ms", "600"), 0);
    open_circuit_of_a(&gw);
    double t0 = clock_now_ms();
    it_response r = post(&gw, "", 0, NULL);
    double took = clock_now_ms() - t0;
    CHECK_EQ_INT(r.status, 503);
    CHECK(took >= 550 && took < 2500);
    CHECK_CONTAINS(r.body.data, "no_healthy_node");
    CHECK_CONTAINS(r.body.data, "circuit open");
    CHECK(it_header(&r, "retry-after") != NULL);
    it_response_free(&r);
    it_stop(&gw, SIGTERM);
}

/* A stream cut when its node dies, with the only other node down: msoa
 * tries the dead node once more, then waits for a node to come back and
 * continues there; the client sees one whole stream. */
static void test_cut_stream_waits_for_a_node(void) {
    it_proc c, d = {0}, gw;
    char mock[4096], path[4096], nc[160], nd[160], port_d[16];
    snprintf(mock, sizeof mock, "%s", it_bin("mock_upstream"));
    char *c_argv[] = {mock, "--port", "0", "--model", "mock-small", "--chunks", "5", "--name", "c", NULL};
    CHECK_EQ_INT(it_start(&c, c_argv), 0);
    snprintf(port_d, sizeof port_d, "%d", it_closed_port());
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    snprintf(nc, sizeof nc, "c=http://127.0.0.1:%d,model=mock-small,price_in=1,price_out=2", c.port);
    snprintf(nd, sizeof nd, "d=http://127.0.0.1:%s,model=mock-small,price_in=500,price_out=900", port_d);
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--workers", "1", "--probe-interval-ms", "100",
                    "--node", nc, "--node", nd, NULL};
    CHECK_EQ_INT(it_start(&gw, argv), 0);
    CHECK_EQ_INT(it_wait_reachable(gw.port, 1), 0);
    const char *body = "{\"model\":\"mock-small\",\"stream\":true,\"mock_fail\":\"exit-after:2\","
                       "\"mock_fail_node\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":\"tell me\"}]}";
    char req[1024];
    int n = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    int fd = it_connect(gw.port);
    CHECK(fd >= 0 && write(fd, req, (size_t)n) == n);
    /* c is gone after two chunks; d starts well after that */
    usleep(400000);
    char *d_argv[] = {mock, "--port", port_d, "--model", "mock-small", "--chunks", "5", "--name", "d", NULL};
    CHECK_EQ_INT(it_start(&d, d_argv), 0);
    it_response r;
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(it_read_response(fd, 10000, &r), 0);
    close(fd);
    CHECK_EQ_INT(r.status, 200);
    cJSON *events = it_sse_events(r.body.data);
    int k = cJSON_GetArraySize(events);
    CHECK_STR(k ? cJSON_GetArrayItem(events, k - 1)->valuestring : NULL, "[DONE]");
    buf text = BUF_INIT;
    for (int i = 0; i + 1 < k; i++) {
        cJSON *chunk = cJSON_Parse(cJSON_GetArrayItem(events, i)->valuestring);
        CHECK(chunk && !cJSON_GetObjectItemCaseSensitive(chunk, "error"));
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0), "delta");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(content)) buf_puts(&text, content->valuestring);
        cJSON_Delete(chunk);
    }
    CHECK_STR(text.data, "echo(tell me) tok0 tok1 tok2 tok3 tok4 ");
    cJSON *rep = report_of(&r, 1);
    CHECK(nodes_are(rep, "c,c,d,"));
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(rep, "node") ? cJSON_GetObjectItemCaseSensitive(rep, "node")->valuestring : NULL, "d");
    cJSON_Delete(rep);
    buf_free(&text);
    cJSON_Delete(events);
    it_response_free(&r);
    it_stop(&gw, SIGTERM);
    if (d.pid) it_stop(&d, SIGTERM);
    it_stop(&c, SIGKILL);
}

/* A stopped node holds its health probe until the probe's timeout; the
 * other nodes' probes go on meanwhile, so a node that dies then is seen
 * down at the next probe, not a round or two later. */
static void test_probes_are_per_node(void) {
    it_proc e, f, gw;
    char mock[4096], path[4096], ne[160], nf[160];
    snprintf(mock, sizeof mock, "%s", it_bin("mock_upstream"));
    char *e_argv[] = {mock, "--port", "0", "--model", "mock-small", NULL};
    CHECK_EQ_INT(it_start(&e, e_argv), 0);
    CHECK_EQ_INT(it_start(&f, e_argv), 0);
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    snprintf(ne, sizeof ne, "e=http://127.0.0.1:%d,model=mock-small", e.port);
    snprintf(nf, sizeof nf, "f=http://127.0.0.1:%d,model=mock-small", f.port);
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--workers", "1", "--probe-interval-ms", "100",
                    "--node", ne, "--node", nf, NULL};
    CHECK_EQ_INT(it_start(&gw, argv), 0);
    CHECK_EQ_INT(it_wait_reachable(gw.port, 2), 0);
    kill(e.pid, SIGSTOP);
    usleep(300000); /* e's probe is out now, for 2 s */
    it_stop(&f, SIGKILL);
    double t0 = clock_now_ms();
    while (clock_now_ms() - t0 < 1000 && strcmp(field_of(&gw, "f", "reachable"), "false") != 0) usleep(20000);
    CHECK_STR(field_of(&gw, "f", "reachable"), "false");
    CHECK(clock_now_ms() - t0 < 1000);
    kill(e.pid, SIGCONT);
    it_stop(&gw, SIGTERM);
    it_stop(&e, SIGTERM);
}

/* A node that is down is probed every 250 ms whatever the interval, so a
 * restarted process is back at once, not a whole interval later. */
static void test_down_node_is_probed_often(void) {
    it_proc g = {0}, gw;
    char mock[4096], path[4096], ng[160], port_g[16];
    snprintf(mock, sizeof mock, "%s", it_bin("mock_upstream"));
    snprintf(port_g, sizeof port_g, "%d", it_closed_port());
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    snprintf(ng, sizeof ng, "g=http://127.0.0.1:%s,model=mock-small", port_g);
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--workers", "1", "--probe-interval-ms", "10000",
                    "--node", ng, NULL};
    CHECK_EQ_INT(it_start(&gw, argv), 0);
    double t0 = clock_now_ms();
    while (clock_now_ms() - t0 < 2000 && strcmp(field_of(&gw, "g", "reachable"), "false") != 0) usleep(20000);
    CHECK_STR(field_of(&gw, "g", "reachable"), "false");
    char *g_argv[] = {mock, "--port", port_g, "--model", "mock-small", NULL};
    CHECK_EQ_INT(it_start(&g, g_argv), 0);
    t0 = clock_now_ms();
    while (clock_now_ms() - t0 < 3000 && strcmp(field_of(&gw, "g", "reachable"), "true") != 0) usleep(20000);
    CHECK_STR(field_of(&gw, "g", "reachable"), "true");
    CHECK(clock_now_ms() - t0 < 1500);
    it_stop(&gw, SIGTERM);
    if (g.pid) it_stop(&g, SIGTERM);
}

/* Every request fails on a and is retried on b until the retry budget
 * (100 tokens, 0.1 back per request) is spent; then a retry waits for a
 * token (one a second comes whatever the traffic) instead of failing. */
static void test_retry_waits_for_the_budget(void) {
    it_proc gw;
    CHECK_EQ_INT(start_gateway(&gw, "--circuit-breaker", "0"), 0);
    int waited = 0, all_ok = 1, i;
    for (i = 0; i < 300 && !waited; i++) {
        double t0 = clock_now_ms();
        it_response r = post(&gw, ",\"mock_fail\":\"status:500\",\"mock_fail_node\":\"a\"", 0, NULL);
        waited = clock_now_ms() - t0 > 400;
        all_ok &= r.status == 200;
        if (r.status != 200) fprintf(stderr, "  request %d: status %d\n", i, r.status);
        it_response_free(&r);
    }
    CHECK(all_ok);
    CHECK(waited);
    CHECK(i > 100); /* the budget held at first */
    it_stop(&gw, SIGTERM);
}

/* A node whose streams all stop talking in mid-answer (a stopped process)
 * gets no new request once it has been silent for 4 x its p99 chunk gap,
 * long before the stall limit cuts its streams: a new request goes to the
 * other node at once. */
static void test_silent_node_gets_no_new_work(void) {
    it_proc s_mock, gw;
    char mock[4096], path[4096], ns[160], nb[160];
    snprintf(mock, sizeof mock, "%s", it_bin("mock_upstream"));
    char *s_argv[] = {mock, "--port", "0", "--model", "mock-small", "--chunks", "60", "--chunk-delay-ms", "10", NULL};
    CHECK_EQ_INT(it_start(&s_mock, s_argv), 0);
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    /* s is far cheaper: the planner always picks it while it is healthy */
    snprintf(ns, sizeof ns, "s=http://127.0.0.1:%d,model=mock-small,price_in=1,price_out=2", s_mock.port);
    snprintf(nb, sizeof nb, "b=http://127.0.0.1:%d,model=mock-small,price_in=500,price_out=900", mock_b.port);
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--workers", "1", "--hedging", "0",
                    "--upstream-stall-ms", "5000", "--node", ns, "--node", nb, NULL};
    CHECK_EQ_INT(it_start(&gw, argv), 0);
    CHECK_EQ_INT(it_wait_reachable(gw.port, 2), 0);
    it_response r = post(&gw, "", 1, NULL); /* s's chunk gaps, measured */
    CHECK_EQ_INT(r.status, 200);
    it_response_free(&r);
    const char *body = "{\"model\":\"mock-small\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}";
    char req[512];
    int n = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    int fd = it_connect(gw.port);
    CHECK(fd >= 0 && write(fd, req, (size_t)n) == n);
    usleep(150000); /* the stream is in mid-answer on s */
    kill(s_mock.pid, SIGSTOP);
    usleep(400000);
    double t0 = clock_now_ms();
    r = post(&gw, "", 0, NULL);
    double took = clock_now_ms() - t0;
    CHECK_EQ_INT(r.status, 200);
    CHECK(took < 2000);
    cJSON *rep = report_of(&r, 0);
    CHECK(nodes_are(rep, "b,"));
    cJSON_Delete(rep);
    it_response_free(&r);
    kill(s_mock.pid, SIGCONT);
    /* the stream on s goes on where it stopped */
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(it_read_response(fd, 10000, &r), 0);
    CHECK_CONTAINS(r.body.data, "tok59");
    CHECK_CONTAINS(r.body.data, "[DONE]");
    it_response_free(&r);
    close(fd);
    it_stop(&gw, SIGTERM);
    it_stop(&s_mock, SIGTERM);
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
    TEST(test_probes_are_per_node);
    TEST(test_down_node_is_probed_often);
    TEST(test_retry_waits_for_the_budget);
    TEST(test_silent_node_gets_no_new_work);
    TEST(test_waits_for_a_circuit_to_close);
    TEST(test_wait_is_bounded);
    TEST(test_cut_stream_waits_for_a_node);
    it_stop(&mock_a, SIGTERM);
    it_stop(&mock_b, SIGTERM);
    return test_done();
}
