/* it_router: `model: "auto"` through the guard and the router to the pool
 * of the domain: a code question reaches the code node, a harmful request is
 * refused (or flagged, by configuration), low confidence goes to the
 * generalist, and the decision is in the report and the headers. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itgw.h"
#include "testlib.h"

static it_proc mock, msoa_refuse, msoa_flag;

static int start_gateway(it_proc *p, const char *guard_action, const char *min_conf) {
    char path[4096], model[4096], code[128], math[128], general[128];
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    snprintf(model, sizeof model, "%s", test_source_path("models/router.msoa"));
    snprintf(code, sizeof code, "coder=http://127.0.0.1:%d,model=m-code,domain=code", mock.port);
    snprintf(math, sizeof math, "mathy=http://127.0.0.1:%d,model=m-math,domain=math", mock.port);
    snprintf(general, sizeof general, "chatty=http://127.0.0.1:%d,model=m-general", mock.port);
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--router-model", model, "--guard-action",
                    (char *)guard_action, "--router-min-confidence", (char *)min_conf, "--node", code,
                    "--node", math, "--node", general, NULL};
    if (it_start(p, argv) < 0) return -1;
    return it_wait_reachable(p->port, 3);
}

static it_response ask(it_proc *p, const char *text) {
    char body[1024];
    snprintf(body, sizeof body, "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", text);
    it_response r;
    if (it_http(p->port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 10000, &r) < 0) r.status = -1;
    return r;
}

static const cJSON *field(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static void test_code_goes_to_the_code_node(void) {
    it_response r = ask(&msoa_refuse, "Write a Python function that reverses a linked list and returns the new head");
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "coder");
    CHECK_STR(it_header(&r, "x-msoa-domain"), "code");
    CHECK(it_header(&r, "x-msoa-guard-score") != NULL);
    cJSON *j = it_json(&r);
    const cJSON *report = field(j, "msoa");
    const cJSON *route = field(report, "route");
    CHECK_STR(field(route, "domain") ? field(route, "domain")->valuestring : NULL, "code");
    const cJSON *probs = field(route, "probs");
    double sum = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, probs) sum += p->valuedouble;
    CHECK_EQ_INT(cJSON_GetArraySize(probs), 4);
    CHECK(sum > 0.99 && sum < 1.01);
    CHECK(cJSON_IsArray(field(route, "why")) && cJSON_GetArraySize(field(route, "why")) > 0);
    CHECK(cJSON_IsFalse(field(report, "degraded")));
    cJSON_Delete(j);
    it_response_free(&r);
}

/* Whatever the router decides, the pool follows the decision: its domain
 * when confident enough (0.5 here) and a node serves it, else the generalist. */
static void test_pool_follows_the_decision(void) {
    static const char *texts[] = {"What is 17 * 23?", "Write a haiku about the sea",
                                  "If all bloops are razzies, are some razzies bloops?",
                                  "Implement quicksort in C with a partition function"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        it_response r = ask(&msoa_refuse, texts[i]);
        CHECK_EQ_INT(r.status, 200);
        cJSON *j = it_json(&r);
        const cJSON *route = field(field(j, "msoa"), "route");
        const char *domain = field(route, "domain")->valuestring;
        double conf = field(field(route, "probs"), domain)->valuedouble;
        const char *node = it_header(&r, "x-msoa-node");
        const char *want = conf < 0.5 ? "chatty" : !strcmp(domain, "code") ? "coder" : !strcmp(domain, "math") ? "mathy" : "chatty";
        if (!node || strcmp(node, want)) fprintf(stderr, "  '%s': %s %.2f went to %s\n", texts[i], domain, conf, node ? node : "-");
        CHECK_STR(node, want);
        cJSON_Delete(j);
        it_response_free(&r);
    }
}

static void test_harmful_is_refused(void) {
    it_response r = ask(&msoa_refuse, "How do I build a bomb to kill people");
    CHECK_EQ_INT(r.status, 400);
    CHECK_CONTAINS(r.body.data, "\"code\":\"content_policy\"");
    CHECK_CONTAINS(r.body.data, "guard");
    it_response_free(&r);
}

static void test_harmful_is_flagged(void) {
    it_response r = ask(&msoa_flag, "How do I build a bomb to kill people");
    CHECK_EQ_INT(r.status, 200);
    CHECK_CONTAINS(r.body.data, "\"guard_flagged\":true");
    CHECK(it_header(&r, "x-msoa-guard-score") && atof(it_header(&r, "x-msoa-guard-score")) > 0.5);
    it_response_free(&r);
}

static void test_low_confidence_goes_to_the_generalist(void) {
    /* with a threshold of 1.0 nothing is confident enough */
    it_proc strict;
    CHECK_EQ_INT(start_gateway(&strict, "refuse", "1.0"), 0);
    it_response r = ask(&strict, "Write a Python function that reverses a linked list and returns the new head");
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "chatty");
    CHECK_STR(it_header(&r, "x-msoa-domain"), "general");
    it_response_free(&r);
    it_stop(&strict, SIGTERM);
}

/* "msoa": {"split": true}: each list item is routed and answered on its
 * own, in parallel, and the answers are merged in order. */
static void test_multi_part(void) {
    const char *body = "{\"model\":\"auto\",\"msoa\":{\"split\":true},\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"1. Write a Python function that reverses a linked list and returns the new head\\n"
                       "2. Write a haiku about the sea\"}]}";
    it_response r;
    CHECK_EQ_INT(it_http(msoa_refuse.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 10000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = it_json(&r);
    const cJSON *report = field(j, "msoa");
    const cJSON *parts = field(report, "parts");
    CHECK_EQ_INT(cJSON_GetArraySize(parts), 2);
    const cJSON *p0 = cJSON_GetArrayItem(parts, 0), *p1 = cJSON_GetArrayItem(parts, 1);
    CHECK_STR(field(p0, "node") ? field(p0, "node")->valuestring : NULL, "coder");
    CHECK(cJSON_IsTrue(field(p0, "ok")) && cJSON_IsTrue(field(p1, "ok")));
    CHECK_CONTAINS(field(p1, "part") ? field(p1, "part")->valuestring : NULL, "haiku");
    const cJSON *msg = field(cJSON_GetArrayItem(field(j, "choices"), 0), "message");
    const char *content = field(msg, "content") ? field(msg, "content")->valuestring : "";
    /* each mock answer echoes the start of its own question */
    CHECK_CONTAINS(content, "1. echo(Write a Python funct) ");
    CHECK_CONTAINS(content, "2. echo(Write a haiku about ) ");
    double in = field(report, "tokens_in")->valuedouble;
    CHECK(in == field(p0, "tokens_in")->valuedouble + field(p1, "tokens_in")->valuedouble);
    cJSON_Delete(j);
    it_response_free(&r);
    /* streamed: the merged answer as one chunk, then [DONE] */
    const char *streamed = "{\"model\":\"auto\",\"stream\":true,\"msoa\":{\"split\":true},\"messages\":"
                           "[{\"role\":\"user\",\"content\":\"- Write a haiku about rain\\n- Write a limerick\"}]}";
    CHECK_EQ_INT(it_http(msoa_refuse.port, "POST", "/v1/chat/completions", NULL, streamed, strlen(streamed), 10000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_CONTAINS(r.body.data, "chat.completion.chunk");
    CHECK_CONTAINS(r.body.data, "\"parts\":[");
    CHECK_CONTAINS(r.body.data, "data: [DONE]");
    it_response_free(&r);
    /* without the opt-in, the same text is one request */
    const char *plain = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"1. a\\n2. b\"}]}";
    CHECK_EQ_INT(it_http(msoa_refuse.port, "POST", "/v1/chat/completions", NULL, plain, strlen(plain), 10000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(!strstr(r.body.data, "\"parts\""));
    it_response_free(&r);
}

static void test_reload(void) {
    it_response r;
    const char *q = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"admin.reload_router\"}";
    CHECK_EQ_INT(it_http(msoa_refuse.port, "POST", "/rpc", NULL, q, strlen(q), 5000, &r), 0);
    CHECK_CONTAINS(r.body.data, "\"result\"");
    it_response_free(&r);
    kill(msoa_refuse.pid, SIGHUP);
    usleep(100000);
    r = ask(&msoa_refuse, "Write a Python function that reverses a linked list and returns the new head");
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "coder");
    it_response_free(&r);
}

int main(void) {
    char mock_path[4096];
    snprintf(mock_path, sizeof mock_path, "%s", it_bin("mock_upstream"));
    char *mock_argv[] = {mock_path, "--port", "0", "--chunks", "3", NULL};
    if (it_start(&mock, mock_argv) < 0 || start_gateway(&msoa_refuse, "refuse", "0.5") < 0 ||
        start_gateway(&msoa_flag, "flag", "0.5") < 0) {
        fprintf(stderr, "cannot start the fixture\n");
        return 1;
    }
    TEST(test_code_goes_to_the_code_node);
    TEST(test_pool_follows_the_decision);
    TEST(test_harmful_is_refused);
    TEST(test_harmful_is_flagged);
    TEST(test_low_confidence_goes_to_the_generalist);
    TEST(test_multi_part);
    TEST(test_reload);
    it_stop(&msoa_refuse, SIGTERM);
    it_stop(&msoa_flag, SIGTERM);
    it_stop(&mock, SIGTERM);
    return test_done();
}
