/* itlib: see itlib.h. */
#include "itlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

const char *it_bin(const char *name) {
    static char path[4096];
    const char *dir = getenv("MSOA_BIN_DIR");
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : ".", name);
    return path;
}

/* Reads one line from fd, waiting at most until deadline_ms. */
static int read_line(int fd, char *line, size_t cap, double deadline_ms) {
    size_t n = 0;
    while (n + 1 < cap) {
        int wait = (int)(deadline_ms - clock_now_ms());
        if (wait <= 0) return -1;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, wait) <= 0) return -1;
        char c;
        if (read(fd, &c, 1) != 1) return -1;
        if (c == '\n') break;
        line[n++] = c;
    }
    line[n] = '\0';
    return 0;
}

int it_start(it_proc *p, char *const argv[]) {
    int pipefd[2];
    if (pipe(pipefd) < 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        /* If the test dies, its servers die too: ctest would otherwise wait
         * on the output they still hold open. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        execv(argv[0], argv);
        fprintf(stderr, "itlib: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    p->pid = pid;
    p->out_fd = pipefd[0];
    p->port = 0;
    double deadline = clock_now_ms() + 10000;
    char line[512];
    while (read_line(p->out_fd, line, sizeof line, deadline) == 0) {
        if (!strstr(line, "listening")) continue;
        /* the port is the number that ends the line */
        size_t end = strlen(line);
        while (end && (line[end - 1] < '0' || line[end - 1] > '9')) end--;
        size_t start = end;
        while (start && line[start - 1] >= '0' && line[start - 1] <= '9') start--;
        p->port = atoi(line + start);
        if (p->port > 0) return 0;
    }
    fprintf(stderr, "itlib: %s did not say it was listening\n", argv[0]);
    it_stop(p, SIGKILL);
    return -1;
}

int it_closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int p = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        p = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return p;
}

int it_stop(it_proc *p, int sig) {
    if (p->pid <= 0) return -1;
    kill(p->pid, sig);
    int status = 0;
    double deadline = clock_now_ms() + 10000;
    while (waitpid(p->pid, &status, WNOHANG) == 0) {
        if (clock_now_ms() > deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            break;
        }
        usleep(5000);
    }
    close(p->out_fd);
    p->pid = 0;
    return status;
}

void it_response_free(it_response *r) {
    buf_free(&r->head);
    buf_free(&r->body);
}

const char *it_header(const it_response *r, const char *name) {
    static char value[1024];
    size_t nlen = strlen(name);
    const char *line = r->head.data ? strstr(r->head.data, "\r\n") : NULL;
    while (line && line[2]) {
        line += 2;
        const char *end = strstr(line, "\r\n");
        if (!end) break;
        if ((size_t)(end - line) > nlen && line[nlen] == ':' && !strncasecmp(line, name, nlen)) {
            const char *v = line + nlen + 1;
            while (*v == ' ') v++;
            snprintf(value, sizeof value, "%.*s", (int)(end - v), v);
            return value;
        }
        line = end;
    }
    return NULL;
}

int it_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int write_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Appends what arrives within timeout_ms; 0 on data, -1 on timeout, 1 on EOF. */
static int read_some(int fd, buf *in, int timeout_ms) {
    struct pollfd pfd = {fd, POLLIN, 0};
    int rc = poll(&pfd, 1, timeout_ms);
    if (rc <= 0) return -1;
    char tmp[16384];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n < 0) return errno == ECONNRESET ? 1 : -1;
    if (n == 0) return 1;
    buf_append(in, tmp, (size_t)n);
    return 0;
}

/* Tries to take one whole response off the front of `in`. */
static int parse_response(buf *in, it_response *r, int eof) {
    char *end = in->data ? strstr(in->data, "\r\n\r\n") : NULL;
    if (!end) return 0;
    size_t head_len = (size_t)(end - in->data) + 4;
    buf_clear(&r->head);
    buf_append(&r->head, in->data, head_len);
    r->status = atoi(in->data + 9);
    const char *te = it_header(r, "transfer-encoding");
    const char *cl = it_header(r, "content-length");
    buf_clear(&r->body);
    if (te && strstr(te, "chunked")) {
        r->chunked = 1;
        size_t pos = head_len;
        for (;;) {
            char *line_end = strstr(in->data + pos, "\r\n");
            if (!line_end) return 0;
            size_t size = strtoul(in->data + pos, NULL, 16);
            size_t data_at = (size_t)(line_end - in->data) + 2;
            if (data_at + size + 2 > in->len) return 0;
            if (size == 0) {
                /* no trailers expected */
                buf_consume(in, data_at + 2);
                return 1;
            }
            buf_append(&r->body, in->data + data_at, size);
            pos = data_at + size + 2;
        }
    }
    if (cl) {
        size_t n = strtoul(cl, NULL, 10);
        if (in->len < head_len + n) return 0;
        buf_append(&r->body, in->data + head_len, n);
        buf_consume(in, head_len + n);
        return 1;
    }
    if (r->status == 101 || r->status == 204 || r->status == 304) {
        buf_consume(in, head_len);
        return 1;
    }
    if (!eof) return 0;
    buf_append(&r->body, in->data + head_len, in->len - head_len);
    buf_clear(in);
    return 1;
}

int it_read_response(int fd, int timeout_ms, it_response *r) {
    buf in = BUF_INIT;
    double deadline = clock_now_ms() + timeout_ms;
    int eof = 0, rc = -1;
    for (;;) {
        if (in.len && parse_response(&in, r, eof)) {
            rc = 0;
            break;
        }
        if (eof) break;
        int wait = (int)(deadline - clock_now_ms());
        if (wait <= 0) break;
        int got = read_some(fd, &in, wait);
        if (got < 0) break;
        if (got > 0) eof = 1;
    }
    buf_free(&in);
    return rc;
}

int it_http(int port, const char *method, const char *path, const char *extra_headers,
            const char *body, size_t body_len, int timeout_ms, it_response *r) {
    memset(r, 0, sizeof *r);
    int fd = it_connect(port);
    if (fd < 0) return -1;
    buf req = BUF_INIT;
    buf_printf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n", method, path, port);
    if (body) buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
    if (extra_headers) buf_puts(&req, extra_headers);
    buf_puts(&req, "\r\n");
    if (body) buf_append(&req, body, body_len);
    int rc = write_all(fd, req.data, req.len);
    buf_free(&req);
    if (rc == 0) rc = it_read_response(fd, timeout_ms, r);
    close(fd);
    return rc;
}

int it_raw(int port, const char *data, size_t len, int timeout_ms, buf *out) {
    int fd = it_connect(port);
    if (fd < 0) return -1;
    if (write_all(fd, data, len) < 0) {
        close(fd);
        return -1;
    }
    while (read_some(fd, out, timeout_ms) == 0) {}
    close(fd);
    return 0;
}

/* ---- WebSocket ---- */

int it_ws_connect(int port, const char *path, int timeout_ms) {
    int fd = it_connect(port);
    if (fd < 0) return -1;
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, port);
    if (write_all(fd, req, (size_t)n) < 0) goto fail;
    /* read the head byte by byte so no frame bytes are swallowed */
    buf head = BUF_INIT;
    double deadline = clock_now_ms() + timeout_ms;
    while (!head.data || !strstr(head.data, "\r\n\r\n")) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int wait = (int)(deadline - clock_now_ms());
        char c;
        if (wait <= 0 || poll(&pfd, 1, wait) <= 0 || recv(fd, &c, 1, 0) != 1) {
            buf_free(&head);
            goto fail;
        }
        buf_putc(&head, c);
    }
    /* the accept value for this key is given in RFC 6455 section 1.3 */
    int ok = strstr(head.data, " 101 ") && strstr(head.data, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    buf_free(&head);
    if (ok) return fd;
fail:
    close(fd);
    return -1;
}

int it_ws_send(int fd, int opcode, const char *data, size_t len) {
    unsigned char hdr[14];
    size_t h = 0;
    hdr[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) hdr[h++] = (unsigned char)(0x80 | len);
    else if (len < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(len >> 8);
        hdr[h++] = (unsigned char)len;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[h++] = (unsigned char)((unsigned long long)len >> (8 * i));
    }
    unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(hdr + h, mask, 4);
    h += 4;
    buf frame = BUF_INIT;
    buf_append(&frame, hdr, h);
    for (size_t i = 0; i < len; i++) buf_putc(&frame, (char)(data[i] ^ mask[i % 4]));
    int rc = write_all(fd, frame.data, frame.len);
    buf_free(&frame);
    return rc;
}

static int recv_exact(int fd, void *out, size_t len, double deadline) {
    char *p = out;
    while (len) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int wait = (int)(deadline - clock_now_ms());
        if (wait <= 0 || poll(&pfd, 1, wait) <= 0) return -1;
        ssize_t n = recv(fd, p, len, 0);
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int it_ws_recv(int fd, int timeout_ms, buf *payload) {
    double deadline = clock_now_ms() + timeout_ms;
    unsigned char h[2];
    if (recv_exact(fd, h, 2, deadline) < 0) return -1;
    unsigned long long len = h[1] & 0x7f;
    if (len == 126) {
        unsigned char e[2];
        if (recv_exact(fd, e, 2, deadline) < 0) return -1;
        len = ((unsigned)e[0] << 8) | e[1];
    } else if (len == 127) {
        unsigned char e[8];
        if (recv_exact(fd, e, 8, deadline) < 0) return -1;
        len = 0;
        for (int i = 0; i < 8; i++) len = (len << 8) | e[i];
    }
    if (len > (64u << 20)) return -1;
    buf_clear(payload);
    buf_reserve(payload, (size_t)len);
    if (len && recv_exact(fd, payload->data, (size_t)len, deadline) < 0) return -1;
    payload->len = (size_t)len;
    payload->data[len] = '\0';
    return h[0] & 0x0f;
}
