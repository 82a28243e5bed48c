/* test_api_chat_request: what msoa reads in a chat request, from its JSON
 * tape: the checks and their messages, the router's input (escapes decoded,
 * text parts, the first system prompt and the last user message), the split
 * into parts, the token estimate and the true-valued options. */
#include <stdlib.h>
#include <string.h>

#include "api/chat_request.h"
#include "testlib.h"

static json_tok space[256];
static json_doc doc;

static const json_doc *read_doc(const char *text) {
    json_doc_init(&doc, space, 256);
    CHECK_EQ_INT(json_parse(&doc, text, strlen(text)), 0);
    return &doc;
}

static const char *check(const char *text) {
    static char msg[256];
    return chat_request_check(read_doc(text), msg, sizeof msg);
}

#define MSG(content) "{\"messages\":[{\"role\":\"user\",\"content\":" content "}]"

static void test_check(void) {
    CHECK(check(MSG("\"hi\"") "}") == NULL);
    CHECK(check(MSG("null") ",\"model\":null,\"stream\":null,\"stream_options\":null,\"max_tokens\":null}") == NULL);
    CHECK(check(MSG("[{\"type\":\"text\",\"text\":\"hi\"}]") ",\"stream\":true,\"max_tokens\":5,"
                "\"temperature\":2,\"msoa\":{\"split\":false}}") == NULL);
    CHECK_STR(check("[1]"), "the request body must be a JSON object");
    CHECK_STR(check("{\"model\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"), "'model' must be a string");
    CHECK_STR(check("{}"), "'messages' is required");
    CHECK_STR(check("{\"messages\":{}}"), "'messages' must be an array");
    CHECK_STR(check("{\"messages\":[]}"), "'messages' must not be empty");
    CHECK_STR(check("{\"messages\":[{\"role\":\"user\"},3]}"), "'messages[1]' must be an object");
    CHECK_STR(check("{\"messages\":[{\"content\":\"x\"}]}"), "'messages[0].role' must be a string");
    CHECK_STR(check("{\"messages\":[{\"role\":\"wiz\\u0061rd\"}]}"),
              "'messages[0].role' must be one of system, developer, user, assistant, tool; got 'wizard'");
    CHECK(check("{\"messages\":[{\"role\":\"us\\u0065r\"}]}") == NULL); /* escaped, still "user" */
    CHECK_STR(check(MSG("5") "}"), "'messages[0].content' must be a string, an array of parts or null");
    CHECK_STR(check(MSG("\"x\"") ",\"stream\":1}"), "'stream' must be a boolean");
    CHECK_STR(check(MSG("\"x\"") ",\"stream_options\":[]}"), "'stream_options' must be an object");
    CHECK_STR(check(MSG("\"x\"") ",\"max_tokens\":0}"), "'max_tokens' must be an integer >= 1");
    CHECK_STR(check(MSG("\"x\"") ",\"max_tokens\":1.5}"), "'max_tokens' must be an integer >= 1");
    CHECK_STR(check(MSG("\"x\"") ",\"max_tokens\":\"9\"}"), "'max_tokens' must be an integer >= 1");
    CHECK_STR(check(MSG("\"x\"") ",\"msoa\":true}"), "'msoa' must be an object (e.g. {\"split\": true})");
    CHECK_STR(check(MSG("\"x\"") ",\"msoa\":{\"split\":1}}"), "'msoa.split' must be a boolean");
    CHECK_STR(check(MSG("\"x\"") ",\"temperature\":2.5}"), "'temperature' must be a number between 0 and 2");
    CHECK_STR(check(MSG("\"x\"") ",\"temperature\":-1e-9}"), "'temperature' must be a number between 0 and 2");
}

static void test_router_input(void) {
    buf sys = BUF_INIT, user = BUF_INIT;
    int has_sys = -1, has_user = -1;
    chat_request_router_input(read_doc("{\"messages\":["
                                       "{\"role\":\"developer\",\"content\":\"be \\\"brief\\\"\"},"
                                       "{\"role\":\"system\",\"content\":\"second system\"},"
                                       "{\"role\":\"user\",\"content\":\"first\"},"
                                       "{\"role\":\"assistant\",\"content\":\"reply\"},"
                                       "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"},"
                                       "{\"type\":\"text\",\"text\":\"caf\\u00e9\\n2+2?\"}]}]}"),
                              &sys, &has_sys, &user, &has_user);
    CHECK(has_sys && has_user);
    CHECK_STR(sys.data, "be \"brief\"");
    CHECK_STR(user.data, "caf\xc3\xa9\n2+2?");
    buf_free(&sys);
    buf_free(&user);
    chat_request_router_input(read_doc("{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"},"
                                       "{\"role\":\"user\",\"content\":null}]}"),
                              &sys, &has_sys, &user, &has_user);
    CHECK(!has_sys && !has_user);
    CHECK(sys.len == 0 && user.len == 0);
}

static void test_split(void) {
    char **parts = NULL;
    CHECK_EQ_INT(chat_request_split(read_doc("{\"msoa\":{\"split\":true},\"messages\":[{\"role\":\"user\",\"content\":"
                                             "\"Please:\\n1. add 2+2\\n  more on one\\n2) name a colour\\n- last\"}]}"),
                                    &parts),
                 3);
    if (parts) {
        CHECK_STR(parts[0], "add 2+2\n  more on one");
        CHECK_STR(parts[1], "name a colour");
        CHECK_STR(parts[2], "last");
        for (int i = 0; i < 3; i++) free(parts[i]);
        free(parts);
    }
    /* not asked for, or one item only */
    CHECK_EQ_INT(chat_request_split(read_doc(MSG("\"1. a\\n2. b\"") "}"), &parts), 0);
    CHECK(parts == NULL);
    CHECK_EQ_INT(chat_request_split(read_doc("{\"msoa\":{\"split\":true},\"messages\":[{\"role\":\"user\","
                                             "\"content\":\"1. only\"}]}"), &parts), 0);
}

static void test_estimate_and_true(void) {
    /* 8 + 4 characters (the escape decoded), ~4 a token */
    const json_doc *d = read_doc("{\"stream\":true,\"stream_options\":{\"include_usage\":false},\"messages\":["
                                 "{\"role\":\"system\",\"content\":\"abcdefgh\"},"
                                 "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"ab\\tc\"}]}]}");
    CHECK_EQ_INT(chat_request_estimate_tokens(d), 3);
    CHECK(chat_request_true(d, 0, "stream"));
    CHECK(!chat_request_true(d, json_get(d, 0, "stream_options"), "include_usage"));
    CHECK(!chat_request_true(d, json_get(d, 0, "nothing"), "include_usage"));
    CHECK(!chat_request_true(d, 0, "messages"));
}

int main(void) {
    TEST(test_check);
    TEST(test_router_input);
    TEST(test_split);
    TEST(test_estimate_and_true);
    return test_done();
}
