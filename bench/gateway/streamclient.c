/* streamclient: the two gateway measurements wrk cannot make.
 *
 *   streamclient ttft PORT N      N sequential streamed completions; prints
 *                                 the p50 and p99 time from sending the
 *                                 request to the first SSE event, in µs.
 *   streamclient hold PORT N SECS opens N streamed completions at once and
 *                                 keeps them open SECS seconds, reading
 *                                 slowly; prints how many were open.
 *
 * Plain blocking sockets to 127.0.0.1 only. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"

static const char body[] =
    "{\"model\":\"mock-small\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"benchmark\"}]}";

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_request(int fd) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     sizeof body - 1, body);
    return send(fd, req, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* Reads until the first "data:" appears; returns 0 or -1. Then drains to
 * the end of the response (the terminating chunk). */
static int read_stream(int fd, uint64_t *first_ns) {
    char buf[65536];
    size_t have = 0;
    *first_ns = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = '\0';
        if (!*first_ns && strstr(buf, "data:")) *first_ns = clock_now_ns();
        if (strstr(buf, "\r\n0\r\n\r\n")) return 0;
        if (have > sizeof buf / 2) { /* keep only the tail */
            memmove(buf, buf + have - 16, 16);
            have = 16;
        }
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int ttft(int port, int n) {
    uint64_t *samples = calloc((size_t)n, sizeof *samples);
    int fd = connect_to(port);
    for (int i = 0; i < n; i++) {
        uint64_t t0 = clock_now_ns(), first;
        if (send_request(fd) < 0 || read_stream(fd, &first) < 0 || !first) {
            fprintf(stderr, "streamclient: request %d failed\n", i);
            return 1;
        }
        samples[i] = first - t0;
    }
    close(fd);
    qsort(samples, (size_t)n, sizeof *samples, cmp_u64);
    printf("ttft_p50_us %.1f\nttft_p99_us %.1f\n", samples[n / 2] / 1e3, samples[(size_t)(n * 0.99)] / 1e3);
    free(samples);
    return 0;
}

static int hold(int port, int n, int seconds) {
    struct rlimit rl = {(rlim_t)n + 64, (rlim_t)n + 64};
    setrlimit(RLIMIT_NOFILE, &rl);
    int *fds = calloc((size_t)n, sizeof *fds);
    for (int i = 0; i < n; i++) {
        fds[i] = connect_to(port);
        if (send_request(fds[i]) < 0) return 1;
    }
    /* wait for every stream's first bytes, then hold them open */
    int open_streams = 0;
    for (int i = 0; i < n; i++) {
        struct pollfd p = {fds[i], POLLIN, 0};
        char tmp[4096];
        if (poll(&p, 1, 10000) == 1 && recv(fds[i], tmp, sizeof tmp, 0) > 0) open_streams++;
    }
    printf("open_streams %d\n", open_streams);
    fflush(stdout);
    sleep((unsigned)seconds);
    for (int i = 0; i < n; i++) close(fds[i]);
    free(fds);
    return open_streams == n ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "ttft")) return ttft(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 5 && !strcmp(argv[1], "hold")) return hold(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: streamclient ttft PORT N | hold PORT N SECONDS\n");
    return 2;
}
