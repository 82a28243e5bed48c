/* http_server: HTTP/1.1 and WebSocket server on one libuv loop.
 *
 * One http_server lives on one loop; for more cores, run one per loop on the
 * same port with SO_REUSEPORT (the kernel spreads connections). HTTP/2 is not
 * spoken. Requests are handed over whole (head + body, chunked bodies
 * decoded) once they fit the limits; anything over a limit is answered by the
 * server itself (400, 408, 413, 431, 501, 505...) and never reaches the handler.
 *
 * Contract for an exchange (one request and its response):
 *  - the handler must finish every exchange exactly once, with http_respond(),
 *    http_stream_end() or http_upgrade_websocket(), now or later from the same
 *    loop;
 *  - if the client goes away first, on_abort runs (if set) and the exchange
 *    stays valid: later writes are dropped, but it must still be finished;
 *  - pipelined requests on one connection are handled one after another.
 *
 * Contract for a WebSocket: the ws_conn is valid until its on_close callback
 * returns; cancel anything that would still write to it from inside on_close.
 * Pings are answered, fragmented messages are joined (up to max_ws_message),
 * protocol errors close the connection with the right status code. */
#ifndef MSOA_HTTP_SERVER_H
#define MSOA_HTTP_SERVER_H

#include <stddef.h>
#include <uv.h>

typedef struct http_server http_server;
typedef struct http_exchange http_exchange;
typedef struct ws_conn ws_conn;

/* Zero fields passed to http_server_new take the default. */
typedef struct http_limits {
    size_t max_body;              /* request body bytes (default 1 MiB) */
    size_t max_header;            /* request line + headers bytes (default 16 KiB) */
    int max_connections;          /* open connections per server (default 10000) */
    unsigned idle_timeout_ms;     /* keep-alive idle before close (default 60000) */
    unsigned request_timeout_ms;  /* first byte to full request; slow clients get 408 (default 30000) */
    size_t max_ws_message;        /* joined WebSocket message bytes (default 1 MiB) */
} http_limits;

void http_limits_default(http_limits *lim);

typedef struct http_header {
    const char *name;  /* lower-case */
    const char *value; /* surrounding whitespace trimmed */
} http_header;

/* Valid until the exchange is finished. */
typedef struct http_request {
    const char *method;
    const char *path;   /* target without the query, e.g. "/v1/models" */
    const char *query;  /* after '?', or "" */
    const http_header *headers;
    int n_headers;
    const char *body;   /* NUL-terminated for convenience; may contain NULs */
    size_t body_len;
} http_request;

/* Case-insensitive lookup; NULL when absent. */
const char *http_request_header(const http_request *req, const char *name);

typedef void (*http_handler)(http_exchange *x, const http_request *req, void *ud);

typedef struct http_server_stats {
    long connections;   /* open now */
    long streams;       /* streamed responses and WebSockets open now */
    long requests;      /* handled since start */
    long rejected;      /* answered by the server itself (limits, bad requests) */
} http_server_stats;

http_server *http_server_new(uv_loop_t *loop, const http_limits *lim, http_handler handler, void *ud);
/* Output waits for the end of the loop phase that produced it, so the
 * responses made from one poll's events leave together and a client's
 * process wakes once for them, not once for each (a gateway's choice: the
 * handler answers from other sockets' events). */
void http_server_batch_writes(http_server *s);
/* Binds and listens. reuseport: set SO_REUSEPORT so several loops can share
 * the port. Returns 0 or a negative libuv error code. */
int http_server_listen(http_server *s, const char *host, int port, int reuseport);
int http_server_port(const http_server *s);  /* bound port, useful after port 0 */
void http_server_stats_get(const http_server *s, http_server_stats *out);
/* Stops accepting, closes every connection (aborting open exchanges), then
 * calls done(ud) once all handles are closed and every aborted exchange has
 * been finished; the server is freed after. done may be NULL. */
void http_server_close(http_server *s, void (*done)(void *ud), void *ud);

/* --- responding --- */
uv_loop_t *http_exchange_loop(const http_exchange *x);
void http_exchange_on(http_exchange *x, void (*on_drain)(void *ud), void (*on_abort)(void *ud), void *ud);
int http_exchange_aborted(const http_exchange *x);
/* Adds a response header; call before http_respond / http_stream_start. */
void http_add_header(http_exchange *x, const char *name, const char *value);
/* Whole response with Content-Length; finishes the exchange. */
void http_respond(http_exchange *x, int status, const char *content_type, const char *body, size_t len);
/* Streamed response (Transfer-Encoding: chunked). */
void http_stream_start(http_exchange *x, int status, const char *content_type);
void http_stream_write(http_exchange *x, const char *data, size_t len);
/* Bytes queued but not yet taken by the socket. Stop producing while this is
 * above a few hundred KB; on_drain runs when the queue has emptied. */
size_t http_stream_backlog(const http_exchange *x);
void http_stream_end(http_exchange *x);

/* Finishes the exchange by dropping the connection once what was already
 * written has gone out: no response at all, or a stream cut short (no final
 * chunk). What a crashed server looks like; the mock upstream uses it. */
void http_exchange_abort(http_exchange *x);

/* --- WebSocket (RFC 6455) --- */
typedef struct ws_callbacks {
    /* data is valid during the call only */
    void (*on_message)(ws_conn *ws, int is_text, const char *data, size_t len, void *ud);
    void (*on_drain)(ws_conn *ws, void *ud);  /* optional */
    void (*on_close)(ws_conn *ws, void *ud);
} ws_callbacks;

/* Completes the handshake and finishes the exchange. If the request is not a
 * valid WebSocket upgrade, answers 400 (or 426) and returns NULL; also NULL
 * (exchange finished) when the client has already gone. */
ws_conn *http_upgrade_websocket(http_exchange *x, const ws_callbacks *cb, void *ud);
void ws_send_text(ws_conn *ws, const char *data, size_t len);
size_t ws_backlog(const ws_conn *ws);
/* Starts the close handshake; on_close follows. */
void ws_close(ws_conn *ws, int code, const char *reason);
uv_loop_t *ws_loop(const ws_conn *ws);

#endif
