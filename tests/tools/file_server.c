/* file_server: a static file server for the `msoa pull` integration test,
 * on msoa's own http_server. It serves the files of one directory with
 * Range support and can be told to fail the way real downloads fail:
 *
 *   GET /NAME              the file; "Range: bytes=N-" or "bytes=N-M" gives
 *                          206 + Content-Range, N past the end gives 416
 *   GET /norange/NAME      the same file, the Range header ignored (200)
 *   POST /debug/cut?N      the next file answer stops after N body bytes and
 *                          the connection drops (an interrupted download)
 *   GET /debug/log         one line per file request: "PATH range=VALUE|-"
 *
 * Prints "listening PORT" once bound (port 0 picks a free one). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "net/http_server.h"

static const char *root = ".";
static long cut_after = -1; /* bytes, for the next file answer only */
static buf request_log = BUF_INIT;

/* Whole file in memory: fixtures are small. */
static int read_file(const char *name, buf *out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, name);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf_append(out, tmp, n);
    int bad = ferror(f);
    fclose(f);
    return bad ? -1 : 0;
}

/* "bytes=N-" or "bytes=N-M" -> [*from, *to]; 0 when usable. */
static int parse_range(const char *v, size_t size, size_t *from, size_t *to) {
    char *end;
    if (strncmp(v, "bytes=", 6)) return -1;
    unsigned long long a = strtoull(v + 6, &end, 10);
    if (end == v + 6 || *end != '-') return -1;
    const char *m = end + 1;
    unsigned long long b = *m ? strtoull(m, &end, 10) : size - 1;
    if (*m && *end) return -1;
    *from = (size_t)a;
    *to = b >= size ? size - 1 : (size_t)b;
    return 0;
}

/* Sends body[from, from+len): whole, or cut short when a cut is armed. */
static void send_body(http_exchange *x, int status, const char *data, size_t len) {
    if (cut_after < 0) {
        http_respond(x, status, "application/octet-stream", data, len);
        return;
    }
    size_t n = (size_t)cut_after < len ? (size_t)cut_after : len;
    cut_after = -1;
    http_stream_start(x, status, "application/octet-stream");
    http_stream_write(x, data, n);
    http_exchange_abort(x);
}

static void serve_file(http_exchange *x, const http_request *req) {
    int honour_range = 1;
    const char *name = req->path + 1;
    if (!strncmp(name, "norange/", 8)) {
        name += 8;
        honour_range = 0;
    }
    const char *range = http_request_header(req, "range");
    buf_printf(&request_log, "%s range=%s\n", req->path, range ? range : "-");
    buf file = BUF_INIT;
    if (!*name || strchr(name, '/') || name[0] == '.' || read_file(name, &file) < 0) {
        http_respond(x, 404, "text/plain", "no such file\n", 13);
        buf_free(&file);
        return;
    }
    size_t from, to;
    char cr[96];
    if (honour_range && range && parse_range(range, file.len, &from, &to) == 0) {
        if (from >= file.len) {
            snprintf(cr, sizeof cr, "bytes */%zu", file.len);
            http_add_header(x, "Content-Range", cr);
            http_respond(x, 416, "text/plain", "range not satisfiable\n", 22);
        } else {
            snprintf(cr, sizeof cr, "bytes %zu-%zu/%zu", from, to, file.len);
            http_add_header(x, "Content-Range", cr);
            send_body(x, 206, file.data + from, to - from + 1);
        }
    } else {
        http_add_header(x, "Accept-Ranges", honour_range ? "bytes" : "none");
        send_body(x, 200, file.data ? file.data : "", file.len);
    }
    buf_free(&file);
}

static void on_request(http_exchange *x, const http_request *req, void *ud) {
    (void)ud;
    if (!strcmp(req->method, "POST") && !strcmp(req->path, "/debug/cut")) {
        cut_after = atol(req->query);
        http_respond(x, 200, "text/plain", "ok\n", 3);
    } else if (!strcmp(req->method, "GET") && !strcmp(req->path, "/debug/log")) {
        http_respond(x, 200, "text/plain", request_log.data ? request_log.data : "", request_log.len);
    } else if (!strcmp(req->method, "GET")) {
        serve_file(x, req);
    } else {
        http_respond(x, 405, "text/plain", "GET only\n", 9);
    }
}

int main(int argc, char **argv) {
    int port = 0;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 < argc && !strcmp(argv[i], "--root")) root = argv[i + 1];
        else if (i + 1 < argc && !strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: file_server --root DIR [--port P]\n");
            return 2;
        }
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    http_server *s = http_server_new(&loop, NULL, on_request, NULL);
    int rc = s ? http_server_listen(s, "127.0.0.1", port, 0) : UV_ENOMEM;
    if (rc < 0) {
        fprintf(stderr, "file_server: listen 127.0.0.1:%d: %s\n", port, uv_strerror(rc));
        return 1;
    }
    printf("listening %d\n", http_server_port(s));
    fflush(stdout);
    return uv_run(&loop, UV_RUN_DEFAULT) < 0;
}
