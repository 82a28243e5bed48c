/* it_openai: the OpenAI-compatible API end to end, through a real msoa in
 * front of a real mock upstream: models, completions with and without
 * streaming, the msoa report, headers, errors in OpenAI's shape. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itgw.h"
#include "testlib.h"

static itgw g;

static const char *str_at(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_at(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void check_error_shape(const it_response *r, int status, const char *code) {
    CHECK_EQ_INT(r->status, status);
    cJSON *j = it_json(r);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    CHECK(cJSON_IsObject(err));
    CHECK(str_at(err, "message") && strlen(str_at(err, "message")) > 10);
    CHECK(str_at(err, "type") != NULL);
    if (code) CHECK_STR(str_at(err, "code"), code);
    cJSON_Delete(j);
}

static void test_health_and_models(void) {
    it_response r;
    CHECK_EQ_INT(it_http(g.msoa.port, "GET", "/health", NULL, NULL, 0, 5000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    it_response_free(&r);

    CHECK_EQ_INT(it_http(g.msoa.port, "GET", "/v1/models", NULL, NULL, 0, 5000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = it_json(&r);
    CHECK_STR(str_at(j, "object"), "list");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    CHECK_EQ_INT(cJSON_GetArraySize(data), 2);
    CHECK_STR(str_at(cJSON_GetArrayItem(data, 0), "id"), "auto");
    CHECK_STR(str_at(cJSON_GetArrayItem(data, 1), "id"), "mock-small");
    CHECK_STR(str_at(cJSON_GetArrayItem(data, 1), "object"), "model");
    cJSON_Delete(j);
    it_response_free(&r);
}

static void check_msoa_report(const cJSON *msoa) {
    CHECK(cJSON_IsObject(msoa));
    CHECK_STR(str_at(msoa, "node"), "m1");
    CHECK_STR(str_at(msoa, "model"), "mock-small");
    CHECK_STR(str_at(msoa, "domain"), "general");
    double in = num_at(msoa, "tokens_in"), out = num_at(msoa, "tokens_out");
    CHECK(in > 0);
    CHECK_EQ_INT(out, 5);
    double cost = num_at(msoa, "cost_usd"), base = num_at(msoa, "baseline_cost_usd");
    /* price_in 0.1, price_out 0.2 against the default baseline 3 / 10 */
    CHECK(cost > 0 && cost < 1e-3);
    CHECK(base > cost);
    double expect_base = (in * 3 + out * 10) / 1e6;
    CHECK(base > expect_base * 0.999 && base < expect_base * 1.001);
    double saved = num_at(msoa, "saved_usd");
    CHECK(saved > 0 && saved < base);
    CHECK(num_at(msoa, "latency_ms") > 0);
}

static void test_completion(void) {
    it_response r;
    const char *req = "{\"model\":\"mock-small\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there msoa\"}]}";
    CHECK_EQ_INT(itgw_post(&g, "/v1/chat/completions", req, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "m1");
    CHECK_STR(it_header(&r, "x-msoa-domain"), "general");
    CHECK(it_header(&r, "x-msoa-cost-usd") && atof(it_header(&r, "x-msoa-cost-usd")) > 0);
    cJSON *j = it_json(&r);
    CHECK_STR(str_at(j, "object"), "chat.completion");
    CHECK(str_at(j, "id") && !strncmp(str_at(j, "id"), "chatcmpl-", 9));
    CHECK_STR(str_at(j, "model"), "mock-small");
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    CHECK_STR(str_at(msg, "role"), "assistant");
    CHECK_CONTAINS(str_at(msg, "content"), "tok");
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    CHECK_EQ_INT(num_at(usage, "completion_tokens"), 5);
    check_msoa_report(cJSON_GetObjectItemCaseSensitive(j, "msoa"));
    cJSON_Delete(j);
    it_response_free(&r);
}

static void test_auto_model(void) {
    it_response r;
    CHECK_EQ_INT(itgw_post(&g, "/v1/chat/completions",
                           "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "m1");
    it_response_free(&r);
    CHECK_EQ_INT(itgw_post(&g, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    it_response_free(&r);
}

static void check_stream(int include_usage) {
    char req[256];
    snprintf(req, sizeof req,
             "{\"model\":\"mock-small\",\"stream\":true%s,\"messages\":[{\"role\":\"user\",\"content\":\"stream please\"}]}",
             include_usage ? ",\"stream_options\":{\"include_usage\":true}" : "");
    it_response r;
    CHECK_EQ_INT(itgw_post(&g, "/v1/chat/completions", req, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.chunked);
    CHECK_CONTAINS(it_header(&r, "content-type"), "text/event-stream");
    CHECK_STR(it_header(&r, "x-msoa-node"), "m1");
    cJSON *events = it_sse_events(r.body.data);
    int n = cJSON_GetArraySize(events);
    CHECK(n >= 7);
    CHECK_STR(cJSON_GetArrayItem(events, n - 1)->valuestring, "[DONE]");
    char id[64] = "";
    int finishes = 0, usage_chunks = 0;
    buf text = BUF_INIT;
    cJSON *last = NULL;
    for (int i = 0; i < n - 1; i++) {
        cJSON *chunk = cJSON_Parse(cJSON_GetArrayItem(events, i)->valuestring);
        CHECK(chunk != NULL);
        CHECK_STR(str_at(chunk, "object"), "chat.completion.chunk");
        CHECK_STR(str_at(chunk, "model"), "mock-small");
        if (!*id) snprintf(id, sizeof id, "%s", str_at(chunk, "id") ? str_at(chunk, "id") : "?");
        CHECK_STR(str_at(chunk, "id"), id);
        const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
        const cJSON *choice = cJSON_GetArrayItem(choices, 0);
        if (choice) {
            if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(choice, "finish_reason"))) finishes++;
            const char *piece = str_at(cJSON_GetObjectItemCaseSensitive(choice, "delta"), "content");
            if (piece) buf_puts(&text, piece);
        } else {
            usage_chunks++;
            CHECK_EQ_INT(num_at(cJSON_GetObjectItemCaseSensitive(chunk, "usage"), "completion_tokens"), 5);
        }
        cJSON_Delete(last);
        last = chunk;
    }
    CHECK_EQ_INT(finishes, 1);
    CHECK_EQ_INT(usage_chunks, include_usage ? 1 : 0);
    CHECK_CONTAINS(text.data, "tok");
    check_msoa_report(cJSON_GetObjectItemCaseSensitive(last, "msoa"));
    cJSON_Delete(last);
    buf_free(&text);
    cJSON_Delete(events);
    it_response_free(&r);
}

static void test_stream(void) { check_stream(0); }
static void test_stream_with_usage(void) { check_stream(1); }

static void test_unknown_model(void) {
    it_response r;
    CHECK_EQ_INT(itgw_post(&g, "/v1/chat/completions",
                           "{\"model\":\"gpt-17\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r), 0);
    check_error_shape(&r, 404, "model_not_found");
    CHECK_CONTAINS(r.body.data, "gpt-17");
    it_response_free(&r);
}

static void test_bad_requests(void) {
    static const struct { const char *body; const char *needle; } cases[] = {
        {"{not json", "not valid JSON"},
        {"[1,2]", "JSON object"},
        {"{\"model\":\"mock-small\"}", "'messages' is required"},
        {"{\"messages\":\"hi\"}", "'messages' must be an array"},
        {"{\"messages\":[]}", "must not be empty"},
        {"{\"messages\":[{\"role\":7,\"content\":\"x\"}]}", "messages[0].role"},
        {"{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "wizard"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content"},
        {"{\"model\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "'model' must be a string"},
        {"{\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "'stream' must be a boolean"},
        {"{\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "max_tokens"},
        {"{\"temperature\":9,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "temperature"},
        {"{\"messages\":[]} trailing", "after the JSON value"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        it_response r;
        CHECK_EQ_INT(it_http(g.msoa.port, "POST", "/v1/chat/completions", NULL, cases[i].body,
                             strlen(cases[i].body), 5000, &r), 0);
        check_error_shape(&r, 400, NULL);
        CHECK_CONTAINS(r.body.data, cases[i].needle);
        it_response_free(&r);
    }
    /* invalid UTF-8 inside a string */
    const char bad_utf8[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}";
    it_response r;
    CHECK_EQ_INT(it_http(g.msoa.port, "POST", "/v1/chat/completions", NULL, bad_utf8, sizeof bad_utf8 - 1, 5000, &r), 0);
    check_error_shape(&r, 400, NULL);
    CHECK_CONTAINS(r.body.data, "UTF-8");
    it_response_free(&r);
}

static void test_unknown_paths(void) {
    it_response r;
    CHECK_EQ_INT(it_http(g.msoa.port, "GET", "/v2/nothing", NULL, NULL, 0, 5000, &r), 0);
    check_error_shape(&r, 404, "not_found");
    it_response_free(&r);
    CHECK_EQ_INT(it_http(g.msoa.port, "GET", "/v1/chat/completions", NULL, NULL, 0, 5000, &r), 0);
    check_error_shape(&r, 405, "method_not_allowed");
    it_response_free(&r);
}

static void test_metrics(void) {
    it_response r;
    CHECK_EQ_INT(it_http(g.msoa.port, "GET", "/metrics", NULL, NULL, 0, 5000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_CONTAINS(it_header(&r, "content-type"), "text/plain");
    CHECK_CONTAINS(r.body.data, "# TYPE msoa_requests_total counter");
    CHECK_CONTAINS(r.body.data, "msoa_requests_total{route=\"/v1/chat/completions\",status=\"200\",node=\"m1\"}");
    CHECK_CONTAINS(r.body.data, "msoa_request_duration_seconds_bucket");
    CHECK_CONTAINS(r.body.data, "msoa_tokens_total{node=\"m1\",direction=\"out\"}");
    CHECK_CONTAINS(r.body.data, "msoa_open_connections");
    it_response_free(&r);
}

int main(void) {
    const char *extra[] = {"--workers", "2", NULL};
    if (itgw_start(&g, extra) < 0) {
        fprintf(stderr, "cannot start the gateway fixture\n");
        return 1;
    }
    TEST(test_health_and_models);
    TEST(test_completion);
    TEST(test_auto_model);
    TEST(test_stream);
    TEST(test_stream_with_usage);
    TEST(test_unknown_model);
    TEST(test_bad_requests);
    TEST(test_unknown_paths);
    TEST(test_metrics);
    itgw_stop(&g);
    return test_done();
}
