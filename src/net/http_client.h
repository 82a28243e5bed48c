/* http_client: outgoing HTTP requests on a libuv loop, so one loop serves
 * the clients of the gateway and its calls to upstream nodes. Plain http://
 * goes through msoa's own HTTP/1.1 client (http_conn.c: pooled keep-alive
 * connections, a fraction of libcurl's cost per request); https:// through
 * libcurl's multi interface (http_client_curl.c). MSOA_HTTP_CLIENT=curl sends
 * everything through libcurl.
 *
 * Contract: every started call ends exactly once, with on_done, unless it is
 * cancelled first with http_call_cancel (then no callback runs). The call is
 * freed after on_done returns. Callbacks run on the loop's thread. */
#ifndef MSOA_HTTP_CLIENT_H
#define MSOA_HTTP_CLIENT_H

#include <stddef.h>
#include <uv.h>

typedef struct http_client http_client;
typedef struct http_call http_call;

enum http_call_error {
    HTTP_CALL_OK = 0,
    HTTP_CALL_CONNECT,    /* refused, unreachable, DNS */
    HTTP_CALL_TIMEOUT,    /* connect, total or stall timeout */
    HTTP_CALL_RESET,      /* connection broken before the response ended */
    HTTP_CALL_PROTOCOL,   /* not valid HTTP */
    HTTP_CALL_OTHER
};
const char *http_call_error_name(enum http_call_error e);

typedef struct http_call_opts {
    const char *method;          /* "GET", "POST" */
    const char *url;
    const char *const *headers;  /* "Name: value" strings, NULL-terminated; may be NULL */
    const char *body;            /* copied */
    size_t body_len;
    unsigned connect_timeout_ms; /* 0: none */
    unsigned total_timeout_ms;   /* 0: none */
    unsigned stall_timeout_ms;   /* no body byte for this long: HTTP_CALL_TIMEOUT; 0: none */
    /* At most this many connections open to the URL's host:port (this
     * client's, i.e. one loop's); a call beyond it waits for one, first come
     * first served, within its total timeout. 0: no cap. Plain http:// only. */
    unsigned max_connections;
    /* Once, when the response head has arrived. */
    void (*on_headers)(http_call *c, int status, void *ud);
    /* Body bytes as they arrive (de-chunked); may be NULL to drop them. */
    void (*on_data)(http_call *c, const char *data, size_t len, void *ud);
    /* err 0 when the whole response arrived; message says what went wrong. */
    void (*on_done)(http_call *c, enum http_call_error err, const char *message, void *ud);
    void *ud;
} http_call_opts;

http_client *http_client_new(uv_loop_t *loop);
/* Cancels open calls (without callbacks) and frees the client. */
void http_client_free(http_client *cl);
/* Starts a call; NULL (and nothing else happens) only on invalid options. */
http_call *http_client_start(http_client *cl, const http_call_opts *opts);
/* Back-pressure: while paused, no on_data runs and curl stops reading. */
void http_call_pause(http_call *c, int paused);
/* Aborts the transfer now; no callback runs afterwards. */
void http_call_cancel(http_call *c);
/* A response header of the call (case-insensitive), valid until on_done returns. */
const char *http_call_header(const http_call *c, const char *name);

#endif
