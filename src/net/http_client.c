/* http_client: the front end of http_client.h. Plain http:// goes to our
 * own HTTP/1.1 client (http_conn.c), which costs a fraction of libcurl's
 * instructions and memory per request; https:// goes to libcurl
 * (http_client_curl.c), created on first use.
 *
 * MSOA_HTTP_CLIENT=curl, read when a client is created, sends http:// to
 * libcurl as well: to compare the two, or to fall back if ours misbehaves. */
#include "net/http_client.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/xalloc.h"
#include "net/http_client_impl.h"

struct http_client {
    uv_loop_t *loop;
    hconn_client *conn;
    hcurl_client *curl;  /* NULL until a call needs it */
    int http_via_curl;
};

const char *http_call_error_name(enum http_call_error e) {
    switch (e) {
    case HTTP_CALL_OK: return "ok";
    case HTTP_CALL_CONNECT: return "connect";
    case HTTP_CALL_TIMEOUT: return "timeout";
    case HTTP_CALL_RESET: return "reset";
    case HTTP_CALL_PROTOCOL: return "protocol";
    case HTTP_CALL_OTHER: return "other";
    }
    return "unknown";
}

http_client *http_client_new(uv_loop_t *loop) {
    http_client *cl = xcalloc(1, sizeof *cl);
    cl->loop = loop;
    cl->conn = hconn_client_new(loop);
    const char *impl = getenv("MSOA_HTTP_CLIENT");
    cl->http_via_curl = impl && !strcmp(impl, "curl");
    return cl;
}

void http_client_free(http_client *cl) {
    if (!cl) return;
    hconn_client_free(cl->conn);
    if (cl->curl) hcurl_client_free(cl->curl);
    free(cl);
}

static http_call *start_curl(http_client *cl, const http_call_opts *opts) {
    if (!cl->curl) cl->curl = hcurl_client_new(cl->loop);
    return cl->curl ? hcurl_start(cl->curl, opts) : NULL;
}

http_call *http_client_start(http_client *cl, const http_call_opts *opts) {
    if (!cl || !opts || !opts->url || !opts->on_done) return NULL;
    if (opts->body_len && !opts->body) return NULL;
    if (!strncasecmp(opts->url, "https://", 8)) return start_curl(cl, opts);
    if (strncasecmp(opts->url, "http://", 7)) return NULL;
    if (cl->http_via_curl) return start_curl(cl, opts);
    int unsupported = 0;
    http_call *c = hconn_start(cl->conn, opts, &unsupported);
    return c || !unsupported ? c : start_curl(cl, opts);
}

static int via_curl(const http_call *c) { return ((const http_call_tag *)(const void *)c)->via_curl; }

void http_call_pause(http_call *c, int paused) {
    if (via_curl(c)) hcurl_pause(c, paused);
    else hconn_pause(c, paused);
}

void http_call_cancel(http_call *c) {
    if (via_curl(c)) hcurl_cancel(c);
    else hconn_cancel(c);
}

const char *http_call_header(const http_call *c, const char *name) {
    return via_curl(c) ? hcurl_header(c, name) : hconn_header(c, name);
}
