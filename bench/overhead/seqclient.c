/* seqclient: sequential chat completions on one keep-alive connection, for
 * the orchestration-overhead benchmark: the same requests sent to the mock
 * directly and through msoa differ only by what msoa does.
 *
 *   seqclient PORT N MODEL PROMPT [stream] [--show]
 *
 * Sends N requests one after another (after 50 unmeasured warm-up ones),
 * checks each is a 200 holding the mock's "tok0", and prints the p50 and
 * p99 of the time from sending to the last byte, in µs. --show prints the
 * last response instead, to see what msoa reported (route, cascade).
 *
 * Plain blocking sockets to 127.0.0.1; every receive times out after 10 s. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/xalloc.h"

#define WARMUP 50

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("seqclient: connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static char *request_text(const char *model, const char *prompt, int stream) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "model", model);
    if (stream) cJSON_AddTrueToObject(r, "stream");
    cJSON *msgs = cJSON_AddArrayToObject(r, "messages");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", prompt);
    cJSON_AddItemToArray(msgs, m);
    char *body = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    buf b = BUF_INIT;
    buf_printf(&b,
               "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\n\r\n%s",
               strlen(body), body);
    cJSON_free(body);
    return buf_detach(&b);
}

/* Reads one response into r (head and body); 0 when it was a whole 200. */
static int read_response(int fd, buf *r) {
    buf_clear(r);
    size_t head_end = 0, want = 0;
    int chunked = 0;
    for (;;) {
        buf_reserve(r, 65536);
        ssize_t n = recv(fd, r->data + r->len, 65536, 0);
        if (n <= 0) return -1;
        r->len += (size_t)n;
        r->data[r->len] = '\0';
        if (!head_end) {
            char *e = strstr(r->data, "\r\n\r\n");
            if (!e) continue;
            head_end = (size_t)(e - r->data) + 4;
            char *cl = strcasestr(r->data, "\r\ncontent-length:");
            if (cl && cl < e) want = head_end + strtoul(cl + 17, NULL, 10);
            else chunked = 1;
        }
        if (chunked ? r->len >= 5 && !memcmp(r->data + r->len - 5, "0\r\n\r\n", 5) : r->len >= want) break;
    }
    return strncmp(r->data, "HTTP/1.1 200", 12) == 0 && strstr(r->data + head_end, "tok0") ? 0 : -1;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: seqclient PORT N MODEL PROMPT [stream] [--show]\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]), stream = 0, show = 0;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "stream")) stream = 1;
        else if (!strcmp(argv[i], "--show")) show = 1;
    }
    if (n <= 0) return 2;
    char *req = request_text(argv[3], argv[4], stream);
    size_t req_len = strlen(req);
    uint64_t *samples = xcalloc((size_t)n, sizeof *samples);
    buf r = BUF_INIT;
    int fd = connect_to(port);
    for (int i = -WARMUP; i < n; i++) {
        uint64_t t0 = clock_now_ns();
        if (send(fd, req, req_len, MSG_NOSIGNAL) != (ssize_t)req_len || read_response(fd, &r) < 0) {
            fprintf(stderr, "seqclient: request %d failed:\n%.2000s\n", i, r.data ? r.data : "");
            return 1;
        }
        if (i >= 0) samples[i] = clock_now_ns() - t0;
    }
    close(fd);
    if (show) {
        printf("%s\n", r.data);
    } else {
        qsort(samples, (size_t)n, sizeof *samples, cmp_u64);
        printf("p50_us %.1f\np99_us %.1f\n", samples[n / 2] / 1e3, samples[(size_t)(n * 0.99)] / 1e3);
    }
    buf_free(&r);
    free(samples);
    free(req);
    return 0;
}
