/* itlib: what integration tests need to drive real processes over real
 * sockets: start a program and learn its port, plain blocking HTTP/1.1 and
 * WebSocket clients with timeouts, so a hung server fails a test instead of
 * hanging it. Everything talks to 127.0.0.1 only. */
#ifndef MSOA_ITLIB_H
#define MSOA_ITLIB_H

#include <stddef.h>
#include <sys/types.h>

#include "base/buf.h"

typedef struct it_proc {
    pid_t pid;
    int port;
    int out_fd;  /* the rest of its stdout */
} it_proc;

/* Path of a built program (env MSOA_BIN_DIR), static buffer. */
const char *it_bin(const char *name);
/* Starts argv (argv[0] a path) and waits up to 10 s for a stdout line that
 * contains "listening" and ends with a port number. Returns 0 or -1. */
int it_start(it_proc *p, char *const argv[]);
/* Sends sig and reaps; returns the exit status as from waitpid. */
int it_stop(it_proc *p, int sig);
/* A port nobody listens on (bound, learnt, closed), or -1. */
int it_closed_port(void);

typedef struct it_response {
    int status;
    buf head;    /* status line and headers, as received */
    buf body;    /* de-chunked */
    int chunked;
} it_response;

void it_response_free(it_response *r);
/* Header value (case-insensitive name) in a static buffer, or NULL. */
const char *it_header(const it_response *r, const char *name);

/* One request on a new connection. extra_headers: "Name: value\r\n" lines or
 * NULL. Returns 0, or -1 on a socket error or timeout (timeout_ms). */
int it_http(int port, const char *method, const char *path, const char *extra_headers,
            const char *body, size_t body_len, int timeout_ms, it_response *r);
/* Sends raw bytes, then reads until the server closes or timeout_ms passes
 * with nothing new; returns the bytes read. */
int it_raw(int port, const char *data, size_t len, int timeout_ms, buf *out);
/* Connects; returns the fd or -1. */
int it_connect(int port);
/* Reads one HTTP response from fd (keep-alive aware). */
int it_read_response(int fd, int timeout_ms, it_response *r);

/* WebSocket client (masks its frames as RFC 6455 requires). */
int it_ws_connect(int port, const char *path, int timeout_ms);
int it_ws_send(int fd, int opcode, const char *data, size_t len);
/* Reads one frame; returns its opcode, or -1. */
int it_ws_recv(int fd, int timeout_ms, buf *payload);

#endif
