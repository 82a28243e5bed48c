/* it_cascade: a domain's cascade tries the cheap node first and accepts its
 * answer when the checks pass, else escalates: "What is 2+2?" is checked by
 * recomputing the sum. The mocks answer "... tok0 .. tok<N-1>", so the last
 * number of the small node's answer (3 chunks) is 2, wrong, and the big
 * node's (5 chunks) is 4, right. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itgw.h"
#include "testlib.h"

static it_proc small, big, msoa;

static int start_all(void) {
    char mock[4096], path[4096], a[160], b[160];
    snprintf(mock, sizeof mock, "%s", it_bin("mock_upstream"));
    char *s_argv[] = {mock, "--port", "0", "--model", "m-small", "--chunks", "3", NULL};
    char *b_argv[] = {mock, "--port", "0", "--model", "m-big", "--chunks", "5", NULL};
    if (it_start(&small, s_argv) < 0 || it_start(&big, b_argv) < 0) return -1;
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    snprintf(a, sizeof a, "small=http://127.0.0.1:%d,model=m-small,price_in=0.1,price_out=0.2", small.port);
    snprintf(b, sizeof b, "big=http://127.0.0.1:%d,model=m-big,price_in=3,price_out=10", big.port);
    /* the same cascade for every domain, whatever the router decides */
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--node", a, "--node", b, "--cascades",
                    "general=small,big;code=small,big;math=small,big;reasoning=small,big;language=small,big", NULL};
    return it_start(&msoa, argv);
}

static it_response ask(const char *question, int stream) {
    char body[512];
    snprintf(body, sizeof body, "{\"model\":\"auto\",\"stream\":%s,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
             stream ? "true" : "false", question);
    it_response r;
    if (it_http(msoa.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 10000, &r) < 0) r.status = -1;
    return r;
}

static void test_wrong_sum_escalates(void) {
    it_response r = ask("What is 2+2?", 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "big");
    CHECK_CONTAINS(r.body.data, "tok4");
    CHECK_CONTAINS(r.body.data, "\"cascade\":[{\"node\":\"small\",\"check\":\"math\",\"verdict\":\"escalated\"");
    CHECK_CONTAINS(r.body.data, "\"nodes\":[\"small\",\"big\"]");
    it_response_free(&r);
}

static void test_unchecked_answer_is_accepted(void) {
    it_response r = ask("Write a haiku about rain", 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STR(it_header(&r, "x-msoa-node"), "small");
    CHECK_CONTAINS(r.body.data, "accepted (no check applies)");
    it_response_free(&r);
}

static void test_streamed_cascade(void) {
    /* accepted cheap answer: buffered, then streamed whole */
    it_response r = ask("Write a haiku about rain", 1);
    CHECK_EQ_INT(r.status, 200);
    CHECK_CONTAINS(r.body.data, "chat.completion.chunk");
    CHECK_CONTAINS(r.body.data, "tok2");
    CHECK_CONTAINS(r.body.data, "data: [DONE]");
    it_response_free(&r);
    /* escalated: the last node streams live */
    r = ask("What is 2+2?", 1);
    CHECK_EQ_INT(r.status, 200);
    CHECK_CONTAINS(r.body.data, "tok4");
    CHECK_CONTAINS(r.body.data, "\"verdict\":\"escalated\"");
    CHECK_CONTAINS(r.body.data, "data: [DONE]");
    it_response_free(&r);
}

int main(void) {
    if (start_all() < 0) return 1;
    if (it_wait_reachable(msoa.port, 2) < 0) return 1;
    TEST(test_wrong_sum_escalates);
    TEST(test_unchecked_answer_is_accepted);
    TEST(test_streamed_cascade);
    it_stop(&msoa, SIGTERM);
    it_stop(&small, SIGTERM);
    it_stop(&big, SIGTERM);
    return test_done();
}
