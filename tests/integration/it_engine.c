/* it_engine: the embedded default end to end: `msoa up --model-dir` serves
 * the GGUF files it finds with the built-in engine, through the same API,
 * and a greedy answer is llama.cpp's (the golden continuation). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itgw.h"
#include "testlib.h"

static it_proc p;

/* The golden text after "<s> " and the prompt. */
static char *golden_continuation(const char *file, const char *prompt) {
    FILE *f = fopen(test_shared_path(file), "rb");
    if (!f) return NULL;
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    size_t skip = 4 + strlen(prompt);
    return n > skip ? strdup(text + skip) : NULL;
}

static void test_models_listed(void) {
    it_response r;
    CHECK_EQ_INT(it_http(p.port, "GET", "/v1/models", NULL, NULL, 0, 5000, &r), 0);
    CHECK_CONTAINS(r.body.data, "\"stories260K\"");
    CHECK_CONTAINS(r.body.data, "\"stories260K-Q4_0-mixed\"");
    it_response_free(&r);
    CHECK_EQ_INT(it_http(p.port, "GET", "/ready", NULL, NULL, 0, 5000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    it_response_free(&r);
}

static void check_greedy(const char *model, const char *golden_file) {
    char body[512];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"temperature\":0,\"max_tokens\":40,"
             "\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}]}", model);
    it_response r;
    CHECK_EQ_INT(it_http(p.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 20000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), model);
    cJSON *j = it_json(&r);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0), "message");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    char *want = golden_continuation(golden_file, "Once upon a time");
    CHECK(want && cJSON_IsString(content) && strlen(content->valuestring) > 20);
    if (want && cJSON_IsString(content))
        CHECK(!strncmp(want, content->valuestring, strlen(content->valuestring)));
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens")->valueint, 40);
    free(want);
    cJSON_Delete(j);
    it_response_free(&r);
}

static void test_greedy_matches_llama_cpp(void) {
    check_greedy("stories260K", "models/golden/stories260K.p1.txt");
    check_greedy("stories260K-Q4_0-mixed", "models/golden/stories260K-Q4_0-mixed.p1.txt");
}

static void test_stream(void) {
    const char *body = "{\"model\":\"stories260K\",\"stream\":true,\"max_tokens\":10,"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"Lily wanted to\"}]}";
    it_response r;
    CHECK_EQ_INT(it_http(p.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 20000, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    cJSON *events = it_sse_events(r.body.data);
    int n = cJSON_GetArraySize(events);
    CHECK(n >= 3);
    CHECK_STR(cJSON_GetArrayItem(events, n - 1)->valuestring, "[DONE]");
    cJSON *last = cJSON_Parse(cJSON_GetArrayItem(events, n - 2)->valuestring);
    const cJSON *msoa = cJSON_GetObjectItemCaseSensitive(last, "msoa");
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(msoa, "tokens_out")->valueint, 10);
    cJSON_Delete(last);
    cJSON_Delete(events);
    it_response_free(&r);
}

int main(void) {
    char path[4096], dir[4096];
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    snprintf(dir, sizeof dir, "%s", test_shared_path("models"));
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--model-dir", dir, NULL};
    if (it_start(&p, argv) < 0) return 1;
    TEST(test_models_listed);
    TEST(test_greedy_matches_llama_cpp);
    TEST(test_stream);
    it_stop(&p, SIGTERM);
    return test_done();
}
