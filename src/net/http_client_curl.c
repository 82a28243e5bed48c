/* http_client_curl: the libcurl implementation of http_client.h (see
 * http_client_impl.h): libcurl's multi interface driven by a libuv loop.
 * Used for https:// URLs, and for http:// with MSOA_HTTP_CLIENT=curl.
 *
 * One CURLM per client (so per loop) owns the connection cache: calls to the
 * same upstream reuse keep-alive connections. curl tells us which sockets to
 * watch (CURLMOPT_SOCKETFUNCTION -> one uv_poll per socket) and when to wake
 * it (CURLMOPT_TIMERFUNCTION -> one uv_timer); we hand readiness back with
 * curl_multi_socket_action. Easy handles are pooled so a call costs a few
 * small allocations, not a fresh handle.
 *
 * curl forbids multi_add/remove from inside its callbacks, and users will
 * cancel or start calls from on_data/on_headers. So while curl runs
 * (depth > 0) such requests are queued on `todo` and carried out as soon as
 * curl returns; whenever depth is 0 the queue is empty. */
#include "net/http_client_impl.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "net/http_response_parse.h"

#define EASY_POOL_MAX 64
/* Idle keep-alive connections kept per client. curl's default (4 per
 * running transfer) shrinks the cache as a burst winds down, so the next
 * burst would pay for new connections. */
#define MAX_IDLE_CONNECTIONS 256

typedef struct hcurl_call hcurl_call;

typedef struct sock_watch {
    uv_poll_t poll;
    curl_socket_t fd;
    hcurl_client *cl;
    struct sock_watch *prev, *next;
} sock_watch;

struct hcurl_call {
    http_call_tag tag;  /* first: see http_client_impl.h */
    hcurl_client *cl;
    CURL *easy;
    struct curl_slist *req_headers;
    char *body;
    buf resp_headers;   /* "name\0value\0" pairs of the final response head */
    int in_multi;       /* added to cl->multi */
    int cancelled;      /* no callback may run any more */
    int done;           /* inside on_done */
    int headers_fired;
    int paused;         /* as the user asked */
    int curl_paused;    /* curl holds data for us (we returned CURL_WRITEFUNC_PAUSE) */
    int in_todo;
    struct hcurl_call *prev, *next; /* cl->calls */
    struct hcurl_call *todo_next;
    unsigned stall_ms;
    uint64_t last_byte_ms;
    uv_timer_t stall;   /* initialised only when stall_ms > 0 */
    void (*on_headers)(http_call *c, int status, void *ud);
    void (*on_data)(http_call *c, const char *data, size_t len, void *ud);
    void (*on_done)(http_call *c, enum http_call_error err, const char *message, void *ud);
    void *ud;
    char errbuf[CURL_ERROR_SIZE];
};

struct hcurl_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    hcurl_call *calls;
    sock_watch *socks;
    hcurl_call *todo;
    int depth;
    CURL *pool[EASY_POOL_MAX];
    int n_pool;
};

static enum http_call_error map_curl_code(CURLcode rc) {
    switch (rc) {
    case CURLE_OK: return HTTP_CALL_OK;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return HTTP_CALL_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return HTTP_CALL_TIMEOUT;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
        return HTTP_CALL_RESET;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL: /* also what curl says about an HTTP/0.9 reply */
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return HTTP_CALL_PROTOCOL;
    default:
        return HTTP_CALL_OTHER;
    }
}

/* --- the call's life ---------------------------------------------------- */

static void free_call_cb(uv_handle_t *h) { free(h->data); }

/* Frees everything of a call that is no longer in the multi handle. */
static void call_release(hcurl_call *c) {
    hcurl_client *cl = c->cl;
    if (c->prev) c->prev->next = c->next;
    else cl->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    curl_slist_free_all(c->req_headers);
    free(c->body);
    buf_free(&c->resp_headers);
    if (cl->n_pool < EASY_POOL_MAX) {
        curl_easy_reset(c->easy);
        cl->pool[cl->n_pool++] = c->easy;
    } else {
        curl_easy_cleanup(c->easy);
    }
    if (c->stall_ms) uv_close((uv_handle_t *)&c->stall, free_call_cb);
    else free(c);
}

static void call_detach(hcurl_call *c) {
    if (!c->in_multi) return;
    c->in_multi = 0;
    CURLMcode mc = curl_multi_remove_handle(c->cl->multi, c->easy);
    if (mc != CURLM_OK) log_warn("http_client (curl): curl_multi_remove_handle: %s", curl_multi_strerror(mc));
}

static void fire_headers(hcurl_call *c) {
    c->headers_fired = 1;
    long status = 0;
    if (curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK) status = 0;
    if (c->on_headers) c->on_headers((http_call *)c, (int)status, c->ud);
}

static void call_finish(hcurl_call *c, enum http_call_error err, const char *message) {
    call_detach(c);
    c->done = 1;
    if (err == HTTP_CALL_OK && !c->headers_fired) fire_headers(c);
    c->on_done((http_call *)c, err, message, c->ud);
    call_release(c);
}

static void call_complete(hcurl_call *c, CURLcode rc) {
    enum http_call_error err = map_curl_code(rc);
    char msg[CURL_ERROR_SIZE + 64];
    if (rc == CURLE_OK) snprintf(msg, sizeof msg, "ok");
    else if (c->errbuf[0]) snprintf(msg, sizeof msg, "%s: %s", curl_easy_strerror(rc), c->errbuf);
    else snprintf(msg, sizeof msg, "%s", curl_easy_strerror(rc));
    if (err != HTTP_CALL_OK) log_debug("http_client (curl): call failed (%s): %s", http_call_error_name(err), msg);
    call_finish(c, err, msg);
}

/* For a call queued while curl ran: a failure here can only be reported. */
static void add_to_multi(hcurl_call *c) {
    CURLMcode mc = curl_multi_add_handle(c->cl->multi, c->easy);
    if (mc == CURLM_OK) {
        c->in_multi = 1;
        return;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
    call_finish(c, HTTP_CALL_OTHER, msg);
}

/* --- deferred work while curl runs ----------------------------------------- */

static void todo_push(hcurl_call *c) {
    if (c->in_todo) return;
    c->in_todo = 1;
    c->todo_next = c->cl->todo;
    c->cl->todo = c;
}

static void unpause_now(hcurl_call *c);

static void run_todo(hcurl_client *cl) {
    hcurl_call *c;
    while ((c = cl->todo)) {
        cl->todo = c->todo_next;
        c->in_todo = 0;
        if (c->cancelled) {
            call_detach(c);
            call_release(c);
        } else if (!c->in_multi) {
            add_to_multi(c);
        } else if (!c->paused && c->curl_paused) {
            unpause_now(c);
        }
    }
}

static void enter(hcurl_client *cl) { cl->depth++; }

static void leave(hcurl_client *cl) {
    if (--cl->depth == 0) run_todo(cl);
}

static void unpause_now(hcurl_call *c) {
    hcurl_client *cl = c->cl;
    c->curl_paused = 0;
    enter(cl);
    /* May deliver the held data right here, through on_body. */
    CURLcode rc = curl_easy_pause(c->easy, CURLPAUSE_CONT);
    if (rc != CURLE_OK && !c->cancelled) log_warn("http_client (curl): curl_easy_pause: %s", curl_easy_strerror(rc));
    leave(cl);
}

/* --- curl callbacks ------------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t n, void *ud) {
    hcurl_call *c = ud;
    size_t len = size * n;
    if (c->cancelled) return CURL_WRITEFUNC_ERROR;
    if (c->paused) {
        c->curl_paused = 1; /* curl keeps these bytes and stops reading the socket */
        return CURL_WRITEFUNC_PAUSE;
    }
    c->last_byte_ms = uv_now(c->cl->loop);
    if (!c->headers_fired) fire_headers(c);
    if (!c->cancelled && c->on_data && len) c->on_data((http_call *)c, ptr, len, c->ud);
    return c->cancelled ? CURL_WRITEFUNC_ERROR : len;
}

static void store_header(hcurl_call *c, const char *line, size_t len) {
    const char *colon = memchr(line, ':', len);
    if (!colon) return;
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
    buf_append(&c->resp_headers, line, (size_t)(colon - line));
    buf_putc(&c->resp_headers, '\0');
    buf_append(&c->resp_headers, v, (size_t)(end - v));
    buf_putc(&c->resp_headers, '\0');
}

static size_t on_header(char *ptr, size_t size, size_t n, void *ud) {
    hcurl_call *c = ud;
    size_t len = size * n;
    if (c->cancelled) return 0;
    c->last_byte_ms = uv_now(c->cl->loop);
    size_t l = len;
    while (l && (ptr[l - 1] == '\r' || ptr[l - 1] == '\n')) l--;
    if (l >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        buf_clear(&c->resp_headers); /* a new head: after 1xx, only the final one counts */
    } else if (l == 0) {
        long status = 0;
        if (!c->headers_fired && curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
            status >= 200)
            fire_headers(c);
    } else {
        store_header(c, ptr, l);
    }
    return c->cancelled ? 0 : len;
}

static void on_stall_timer(uv_timer_t *t) {
    hcurl_call *c = t->data;
    uint64_t now = uv_now(c->cl->loop);
    if (c->paused) c->last_byte_ms = now; /* our own pause does not count as a stall */
    uint64_t idle = now - c->last_byte_ms;
    if (idle < c->stall_ms) {
        uv_timer_start(t, on_stall_timer, c->stall_ms - idle, 0);
        return;
    }
    char msg[96];
    snprintf(msg, sizeof msg, "no data from the server for %u ms", c->stall_ms);
    call_finish(c, HTTP_CALL_TIMEOUT, msg);
}

static void check_multi_info(hcurl_client *cl) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(cl->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        char *priv = NULL;
        CURLcode rc = m->data.result;
        if (curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv) != CURLE_OK || !priv) continue;
        call_complete((hcurl_call *)(void *)priv, rc);
    }
}

/* Hands socket readiness or a timeout to curl, then finishes what ended. */
static void drive(hcurl_client *cl, curl_socket_t fd, int flags) {
    int running;
    enter(cl);
    CURLMcode mc = curl_multi_socket_action(cl->multi, fd, flags, &running);
    leave(cl);
    if (mc != CURLM_OK) log_warn("http_client (curl): curl_multi_socket_action: %s", curl_multi_strerror(mc));
    check_multi_info(cl);
}

static void on_poll(uv_poll_t *h, int status, int events) {
    sock_watch *w = h->data;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    drive(w->cl, w->fd, flags);
}

static void on_timeout(uv_timer_t *t) { drive(t->data, CURL_SOCKET_TIMEOUT, 0); }

static int on_curl_timer(CURLM *multi, long ms, void *userp) {
    (void)multi;
    hcurl_client *cl = userp;
    if (ms < 0) uv_timer_stop(&cl->timer);
    else uv_timer_start(&cl->timer, on_timeout, (uint64_t)ms, 0);
    return 0;
}

static void free_handle_cb(uv_handle_t *h) { free(h->data); }

static void unwatch(hcurl_client *cl, sock_watch *w) {
    if (w->prev) w->prev->next = w->next;
    else cl->socks = w->next;
    if (w->next) w->next->prev = w->prev;
    curl_multi_assign(cl->multi, w->fd, NULL);
    uv_close((uv_handle_t *)&w->poll, free_handle_cb);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)easy;
    hcurl_client *cl = userp;
    sock_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w) unwatch(cl, w);
        return 0;
    }
    if (!w) {
        w = xcalloc(1, sizeof *w);
        int rc = uv_poll_init_socket(cl->loop, &w->poll, fd);
        if (rc < 0) {
            log_error("http_client (curl): uv_poll_init_socket(%d): %s", (int)fd, uv_strerror(rc));
            free(w);
            return -1;
        }
        w->fd = fd;
        w->cl = cl;
        w->poll.data = w;
        w->next = cl->socks;
        if (cl->socks) cl->socks->prev = w;
        cl->socks = w;
        curl_multi_assign(cl->multi, fd, w);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    int rc = uv_poll_start(&w->poll, events, on_poll);
    if (rc < 0) {
        log_error("http_client (curl): uv_poll_start(%d): %s", (int)fd, uv_strerror(rc));
        return -1;
    }
    return 0;
}

/* --- public API ----------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

hcurl_client *hcurl_client_new(uv_loop_t *loop) {
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        log_error("http_client (curl): curl_global_init: %s", curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    hcurl_client *cl = xcalloc(1, sizeof *cl);
    cl->loop = loop;
    cl->multi = curl_multi_init();
    if (!cl->multi) {
        log_error("http_client (curl): curl_multi_init failed");
        free(cl);
        return NULL;
    }
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_MAXCONNECTS, (long)MAX_IDLE_CONNECTIONS);
    uv_timer_init(loop, &cl->timer);
    cl->timer.data = cl;
    return cl;
}

void hcurl_client_free(hcurl_client *cl) {
    if (!cl) return;
    while (cl->calls) {
        hcurl_call *c = cl->calls;
        c->cancelled = 1;
        call_detach(c);
        call_release(c);
    }
    /* Close our watchers before curl closes the sockets they watch. */
    while (cl->socks) unwatch(cl, cl->socks);
    for (int i = 0; i < cl->n_pool; i++) curl_easy_cleanup(cl->pool[i]);
    CURLMcode mc = curl_multi_cleanup(cl->multi);
    if (mc != CURLM_OK) log_warn("http_client (curl): curl_multi_cleanup: %s", curl_multi_strerror(mc));
    uv_close((uv_handle_t *)&cl->timer, free_handle_cb);
}

static struct curl_slist *slist_add(struct curl_slist *l, const char *s) {
    struct curl_slist *n = curl_slist_append(l, s);
    if (!n) {
        log_error("http_client (curl): out of memory");
        abort();
    }
    return n;
}

/* The method and body options; curl infers POST from POSTFIELDS, anything
 * else is named explicitly. */
static void set_method(hcurl_call *c, const http_call_opts *o) {
    const char *m = o->method ? o->method : (o->body ? "POST" : "GET");
    if (!strcmp(m, "HEAD")) {
        curl_easy_setopt(c->easy, CURLOPT_NOBODY, 1L);
        return;
    }
    if (o->body || !strcmp(m, "POST")) {
        c->body = xmalloc(o->body_len + 1);
        if (o->body_len) memcpy(c->body, o->body, o->body_len);
        c->body[o->body_len] = '\0';
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->body);
        /* curl would wait up to a second for "100 Continue" on big bodies */
        c->req_headers = slist_add(c->req_headers, "Expect:");
    }
    if (strcmp(m, "GET") && strcmp(m, "POST")) curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, m);
}

static void set_options(hcurl_call *c, const http_call_opts *o) {
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    if (o->connect_timeout_ms) curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)o->connect_timeout_ms);
    if (o->total_timeout_ms) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->total_timeout_ms);
    set_method(c, o);
    for (const char *const *h = o->headers; h && *h; h++) c->req_headers = slist_add(c->req_headers, *h);
    if (c->req_headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->req_headers);
}

http_call *hcurl_start(hcurl_client *cl, const http_call_opts *opts) {
    CURL *easy = cl->n_pool ? cl->pool[--cl->n_pool] : curl_easy_init();
    if (!easy) return NULL;
    hcurl_call *c = xcalloc(1, sizeof *c);
    c->tag.via_curl = 1;
    c->cl = cl;
    c->easy = easy;
    c->on_headers = opts->on_headers;
    c->on_data = opts->on_data;
    c->on_done = opts->on_done;
    c->ud = opts->ud;
    set_options(c, opts);
    c->next = cl->calls;
    if (cl->calls) cl->calls->prev = c;
    cl->calls = c;
    c->last_byte_ms = uv_now(cl->loop);
    if (opts->stall_timeout_ms) {
        c->stall_ms = opts->stall_timeout_ms;
        uv_timer_init(cl->loop, &c->stall);
        c->stall.data = c;
        uv_timer_start(&c->stall, on_stall_timer, c->stall_ms, 0);
    }
    if (cl->depth) {
        todo_push(c);
        return (http_call *)c;
    }
    CURLMcode mc = curl_multi_add_handle(cl->multi, easy);
    if (mc != CURLM_OK) {
        log_error("http_client (curl): curl_multi_add_handle: %s", curl_multi_strerror(mc));
        call_release(c);
        return NULL;
    }
    c->in_multi = 1;
    return (http_call *)c;
}

void hcurl_pause(http_call *call, int paused) {
    hcurl_call *c = (hcurl_call *)call;
    if (c->cancelled || c->done) return;
    paused = paused != 0;
    if (paused == c->paused) return;
    c->paused = paused;
    if (paused) return; /* on_body refuses the next bytes, which makes curl stop reading */
    c->last_byte_ms = uv_now(c->cl->loop);
    if (!c->curl_paused) return;
    if (c->cl->depth) todo_push(c);
    else unpause_now(c);
}

void hcurl_cancel(http_call *call) {
    hcurl_call *c = (hcurl_call *)call;
    if (c->cancelled || c->done) return;
    c->cancelled = 1;
    if (c->cl->depth) {
        todo_push(c);
        return;
    }
    call_detach(c);
    call_release(c);
}

const char *hcurl_header(const http_call *call, const char *name) {
    const hcurl_call *c = (const hcurl_call *)call;
    return http_header_pairs_find(c->resp_headers.data, c->resp_headers.len, name);
}
