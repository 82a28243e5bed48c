/* it_node_cap: a node's cap on requests in flight (--node-max-connections),
 * seen from clients: requests beyond it wait in msoa and are all answered,
 * no more than the cap at once at the node, and a waiting request still
 * ends at its own deadline. The mock's "late:MS" holds each answer MS
 * milliseconds, so how many ran at once shows in how long they took. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "itgw.h"
#include "testlib.h"

#define CAP 2
#define HOLD_MS 250

static itgw g;

/* Sends a chat request on a new connection; returns the fd or -1. */
static int send_chat(const char *mock_fail, const char *extra_header) {
    char body[256], req[768];
    snprintf(body, sizeof body,
             "{\"model\":\"mock-small\",\"mock_fail\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
             mock_fail);
    int n = snprintf(req, sizeof req,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %zu\r\n\r\n%s",
                     extra_header ? extra_header : "", strlen(body), body);
    int fd = it_connect(g.msoa.port);
    if (fd < 0) return -1;
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    return fd;
}

static int read_status(int fd, char *code, size_t cap) {
    it_response r;
    memset(&r, 0, sizeof r);
    int status = it_read_response(fd, 10000, &r) == 0 ? r.status : -1;
    code[0] = '\0';
    cJSON *j = it_json(&r);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "code");
    if (cJSON_IsString(c)) snprintf(code, cap, "%s", c->valuestring);
    if (status == 200 && !cJSON_GetObjectItemCaseSensitive(j, "choices")) status = -2;
    cJSON_Delete(j);
    it_response_free(&r);
    close(fd);
    return status;
}

/* 3 x CAP requests, each held HOLD_MS at the node: all answered, and in no
 * less than three rounds of CAP at once. */
static void test_beyond_the_cap_wait_and_complete(void) {
    char hold[32], code[64];
    snprintf(hold, sizeof hold, "late:%d", HOLD_MS);
    int fds[3 * CAP];
    double t0 = clock_now_ms();
    for (int i = 0; i < 3 * CAP; i++) {
        fds[i] = send_chat(hold, NULL);
        CHECK(fds[i] >= 0);
    }
    for (int i = 0; i < 3 * CAP; i++)
        if (fds[i] >= 0) CHECK_EQ_INT(read_status(fds[i], code, sizeof code), 200);
    CHECK(clock_now_ms() - t0 >= 3 * HOLD_MS);
}

/* Both connections held long: a request waiting behind them with a 300 ms
 * deadline gets its 504 then, and the two are answered after. */
static void test_waiting_request_keeps_its_deadline(void) {
    char code[64];
    int a = send_chat("late:1500", NULL), b = send_chat("late:1500", NULL);
    CHECK(a >= 0 && b >= 0);
    usleep(100000); /* both are at the node */
    double t0 = clock_now_ms();
    int c = send_chat("late:1", "x-msoa-timeout-ms: 300\r\n");
    CHECK(c >= 0);
    CHECK_EQ_INT(read_status(c, code, sizeof code), 504);
    CHECK_STR(code, "deadline_exceeded");
    CHECK(clock_now_ms() - t0 < 1300); /* it did not wait for a connection past its deadline */
    CHECK_EQ_INT(read_status(a, code, sizeof code), 200);
    CHECK_EQ_INT(read_status(b, code, sizeof code), 200);
}

int main(void) {
    const char *extra[] = {"--workers", "1", "--node-max-connections", "2", "--hedging", "0", NULL};
    if (itgw_start(&g, extra) < 0) return 1;
    TEST(test_beyond_the_cap_wait_and_complete);
    TEST(test_waiting_request_keeps_its_deadline);
    itgw_stop(&g);
    return test_done();
}
