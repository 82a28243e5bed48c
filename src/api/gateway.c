/* gateway: see gateway.h. Also the request router: which handler serves
 * which path, and the health probes that keep node reachability current. */
#include "api/gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/chat.h"
#include "api/metrics.h"
#include "api/openai.h"
#include "api/rpc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "node/engine_node.h"

#define PROBE_TIMEOUT_MS 2000
/* A node that is down is probed this often, whatever the interval: a
 * restarted process is back in a quarter of a second. */
#define PROBE_DOWN_MS 250

/* ---- plain endpoints ---- */

static void respond_json(http_exchange *x, int status, cJSON *obj) {
    char *text = cJSON_PrintUnformatted(obj);
    http_respond(x, status, "application/json", text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(obj);
}

static int serve_ready(worker *w, http_exchange *x) {
    cJSON *health = rpc_mesh_health(w->gw);
    int status = node_registry_any_reachable(&w->gw->nodes) ? 200 : 503;
    respond_json(x, status, health);
    return status;
}

static int serve_metrics(worker *w, http_exchange *x) {
    gateway *gw = w->gw;
    long connections = 0, streams = 0;
    for (int i = 0; i < gw->n_workers; i++) {
        http_server_stats st;
        http_server_stats_get(gw->workers[i].server, &st);
        connections += st.connections;
        streams += st.streams;
    }
    buf out = BUF_INIT;
    metrics_render(&out, connections, streams);
    http_respond(x, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    buf_free(&out);
    return 200;
}

/* ---- routing ---- */

static int is(const http_request *req, const char *method, const char *path) {
    return !strcmp(req->method, method) && !strcmp(req->path, path);
}

static const char *known_paths[] = {"/health", "/ready", "/metrics", "/v1/models", "/v1/chat/completions", "/rpc"};

static int serve_unknown(http_exchange *x, const http_request *req) {
    char msg[300];
    for (size_t i = 0; i < sizeof known_paths / sizeof *known_paths; i++) {
        if (!strcmp(req->path, known_paths[i])) {
            snprintf(msg, sizeof msg, "method %s is not allowed on %s", req->method, req->path);
            api_respond_error(x, 405, msg, "invalid_request_error", "method_not_allowed");
            return 405;
        }
    }
    snprintf(msg, sizeof msg, "no such endpoint: %s %.200s", req->method, req->path);
    api_respond_error(x, 404, msg, "invalid_request_error", "not_found");
    return 404;
}

/* Chat completions and JSON-RPC answer later and count themselves; the
 * rest answer now and are counted here. */
static void on_request(http_exchange *x, const http_request *req, void *ud) {
    worker *w = ud;
    uint64_t t0 = clock_now_ns();
    int status;
    const char *route = req->path;
    if (is(req, "POST", "/v1/chat/completions")) {
        openai_chat_completions(w, x, req);
        return;
    }
    if (is(req, "POST", "/rpc")) {
        rpc_http(w, x, req);
        return;
    }
    if (is(req, "GET", "/rpc")) {
        rpc_websocket(w, x);
        return;
    }
    if (is(req, "GET", "/v1/models")) {
        openai_models(w, x);
        status = 200;
    } else if (is(req, "GET", "/health")) {
        http_respond(x, 200, "application/json", "{\"status\":\"ok\"}", 15);
        status = 200;
    } else if (is(req, "GET", "/ready")) {
        status = serve_ready(w, x);
    } else if (is(req, "GET", "/metrics")) {
        status = serve_metrics(w, x);
    } else {
        status = serve_unknown(x, req);
        route = "other"; /* unknown paths must not grow the label set */
    }
    metrics_request(route, status, NULL, (double)(clock_now_ns() - t0) / 1e9);
}

/* ---- health probes (worker 0) ---- */

typedef struct probe {
    gateway *gw;
    node *node;
    int status;
} probe;

static void probe_headers(http_call *c, int status, void *ud) {
    (void)c;
    probe *p = ud;
    p->status = status;
}

static void probe_done(http_call *c, enum http_call_error err, const char *message, void *ud) {
    (void)c;
    probe *p = ud;
    int ok = err == HTTP_CALL_OK && p->status >= 200 && p->status < 500;
    if (ok) breaker_node_alive(&p->node->breaker, clock_now_ms_u64());
    if (atomic_exchange(&p->node->reachable, ok) != ok)
        log_info("node %s is %s%s%s", p->node->name, ok ? "reachable" : "unreachable", ok ? "" : ": ",
                 ok ? "" : (err == HTTP_CALL_OK ? "bad status" : message));
    p->node->probing = 0;
    free(p);
}

static unsigned probe_every_ms(const gateway *gw) {
    return gw->cfg.probe_interval_ms ? gw->cfg.probe_interval_ms : 5000;
}

static void probe_all(uv_timer_t *t) {
    gateway *gw = t->data;
    http_client *cl = gw->workers[0].client;
    uint64_t now = clock_now_ms_u64();
    for (int i = 0; i < gw->nodes.n; i++) {
        node *n = &gw->nodes.nodes[i];
        /* in-process nodes are reachable while attached; a node whose last
         * probe is still out (a stopped process holds it until the timeout)
         * is skipped alone, so the others' are not held up */
        if (n->backend || n->probing) continue;
        unsigned every = atomic_load(&n->reachable) == 0 && probe_every_ms(gw) > PROBE_DOWN_MS ? PROBE_DOWN_MS
                                                                                              : probe_every_ms(gw);
        if (n->probed_ms && now - n->probed_ms < every) continue;
        probe *p = xcalloc(1, sizeof *p);
        p->gw = gw;
        p->node = n;
        const char *headers[2] = {n->auth_header, NULL};
        http_call_opts o;
        memset(&o, 0, sizeof o);
        o.method = "GET";
        o.url = n->models_url;
        o.headers = headers;
        o.connect_timeout_ms = PROBE_TIMEOUT_MS;
        o.total_timeout_ms = PROBE_TIMEOUT_MS;
        o.on_headers = probe_headers;
        o.on_done = probe_done;
        o.ud = p;
        if (http_client_start(cl, &o)) {
            n->probing = 1;
            n->probed_ms = now;
        } else {
            free(p);
        }
    }
}

/* ---- workers ---- */

static void on_stop(uv_async_t *a) {
    worker *w = a->data;
    uv_stop(&w->loop);
}

static void worker_run(void *arg) {
    worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static int worker_init(gateway *gw, worker *w, int index, char **err) {
    w->gw = gw;
    w->index = index;
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->stop, on_stop);
    w->stop.data = w;
    http_limits lim;
    http_limits_default(&lim);
    lim.max_body = gw->cfg.max_body;
    lim.max_header = gw->cfg.max_header;
    lim.max_connections = gw->cfg.max_connections;
    lim.idle_timeout_ms = gw->cfg.idle_timeout_ms;
    lim.request_timeout_ms = gw->cfg.request_timeout_ms;
    w->server = http_server_new(&w->loop, &lim, on_request, w);
    http_server_batch_writes(w->server);
    w->client = http_client_new(&w->loop);
    int port = index == 0 ? gw->cfg.listen_port : gw->port;
    int rc = http_server_listen(w->server, gw->cfg.listen_host, port, gw->n_workers > 1);
    if (rc < 0) {
        buf e = BUF_INIT;
        buf_printf(&e, "cannot listen on %s:%d: %s", gw->cfg.listen_host, port, uv_strerror(rc));
        *err = buf_detach(&e);
        return -1;
    }
    if (index == 0) gw->port = http_server_port(w->server);
    return 0;
}

/* Slots: requests generated at once per model; the queue holds the next
 * ones; past both a node answers 503. */
#define ENGINE_SLOTS 4
#define ENGINE_QUEUE 16

static int attach_engines(gateway *gw, char **err) {
    int threads = (int)uv_available_parallelism();
    for (int i = 0; i < gw->nodes.n; i++) {
        node *n = &gw->nodes.nodes[i];
        if (!node_is_gguf(n->base_url)) continue;
        if (engine_node_attach(n, n->base_url, threads, ENGINE_SLOTS, ENGINE_QUEUE, err) < 0) return -1;
        log_info("node %s: serving %s with the built-in engine", n->name, n->base_url);
    }
    return 0;
}

/* ---- the router ---- */

#define DEFAULT_ROUTER_MODEL "models/router.msoa"

static int parse_guard_action(const char *s) {
    if (!strcmp(s, "refuse")) return GUARD_REFUSE;
    if (!strcmp(s, "flag")) return GUARD_FLAG;
    if (!strcmp(s, "route")) return GUARD_ROUTE;
    return -1;
}

/* The configured model, or the default one when it exists: a checkout run
 * from its root routes out of the box. */
static int load_router(gateway *gw, char **err) {
    gw->guard_action = parse_guard_action(gw->cfg.guard_action);
    if (gw->guard_action < 0) {
        buf e = BUF_INIT;
        buf_printf(&e, "--guard-action must be refuse, flag or route; got '%s'", gw->cfg.guard_action);
        *err = buf_detach(&e);
        return -1;
    }
    if (gw->cfg.router_model) gw->router_path = xstrdup(gw->cfg.router_model);
    else if (access(DEFAULT_ROUTER_MODEL, R_OK) == 0) gw->router_path = xstrdup(DEFAULT_ROUTER_MODEL);
    else {
        log_warn("no router model (%s not found, --router-model not given): `auto` goes to the first healthy node",
                 DEFAULT_ROUTER_MODEL);
        return 0;
    }
    gw->router = route_model_load(gw->router_path, err);
    if (!gw->router) return -1;
    log_info("router: %s", gw->router_path);
    return 0;
}

int gateway_reload_router(gateway *gw, char **err) {
    if (!gw->router_path) {
        *err = xstrdup("no router model is configured (--router-model)");
        return -1;
    }
    route_model *fresh = route_model_load(gw->router_path, err);
    if (!fresh) return -1;
    pthread_rwlock_wrlock(&gw->router_lock);
    route_model *old = gw->router;
    gw->router = fresh;
    pthread_rwlock_unlock(&gw->router_lock);
    route_model_free(old);
    log_info("router: reloaded %s", gw->router_path);
    return 0;
}

int gateway_classify(gateway *gw, const char *system, size_t system_len, const char *user, size_t user_len,
                     route_result *out) {
    int rc = -1;
    pthread_rwlock_rdlock(&gw->router_lock);
    if (gw->router) {
        route_decision d;
        route_classify(gw->router, system, system_len, user, user_len, ROUTE_EXPLAIN, &d);
        snprintf(out->domain, sizeof out->domain, "%s", d.domain_name);
        out->confidence = d.probs[d.domain];
        out->guard_score = d.has_guard ? d.guard_score : 0;
        out->unsafe = d.has_guard && d.unsafe;
        route_decision_json(gw->router, &d, &out->json);
        rc = 0;
    }
    pthread_rwlock_unlock(&gw->router_lock);
    return rc;
}

/* ---- cascades ---- */

static node *node_named(node_registry *r, const char *name, size_t len) {
    for (int i = 0; i < r->n; i++)
        if (strlen(r->nodes[i].name) == len && !strncmp(r->nodes[i].name, name, len)) return &r->nodes[i];
    return NULL;
}

static int cascade_error(char **err, const char *what, const char *text, size_t len) {
    buf e = BUF_INIT;
    buf_printf(&e, "--cascades: %s: '%.*s'", what, (int)len, text);
    *err = buf_detach(&e);
    return -1;
}

/* "DOMAIN=NODE,NODE;DOMAIN=NODE,NODE" */
static int parse_cascades(gateway *gw, char **err) {
    const char *p = gw->cfg.cascades;
    if (!p || !*p) return 0;
    while (*p) {
        size_t len = strcspn(p, ";");
        const char *eq = memchr(p, '=', len);
        if (!eq || eq == p) return cascade_error(err, "expected DOMAIN=NODE,NODE", p, len);
        gw->cascades = xrealloc(gw->cascades, (size_t)(gw->n_cascades + 1) * sizeof *gw->cascades);
        cascade_policy *cp = &gw->cascades[gw->n_cascades++];
        memset(cp, 0, sizeof *cp);
        snprintf(cp->domain, sizeof cp->domain, "%.*s", (int)(eq - p), p);
        const char *q = eq + 1, *end = p + len;
        while (q < end) {
            size_t n = strcspn(q, ",;");
            if (n > (size_t)(end - q)) n = (size_t)(end - q);
            node *nd = node_named(&gw->nodes, q, n);
            if (!nd) return cascade_error(err, "no node is named", q, n);
            if (cp->n == CASCADE_MAX_NODES) return cascade_error(err, "too many nodes in", p, len);
            cp->nodes[cp->n++] = nd;
            q += n + (q + n < end);
        }
        if (cp->n < 2) return cascade_error(err, "a cascade needs two nodes or more", p, len);
        p += len + (p[len] == ';');
    }
    return 0;
}

const cascade_policy *gateway_cascade(const gateway *gw, const char *domain) {
    for (int i = 0; i < gw->n_cascades; i++)
        if (!strcmp(gw->cascades[i].domain, domain)) return &gw->cascades[i];
    return NULL;
}

int gateway_start(gateway *gw, msoa_config *cfg, char **err) {
    memset(gw, 0, sizeof *gw);
    pthread_rwlock_init(&gw->router_lock, NULL);
    gw->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg);
    gw->baseline.in = gw->cfg.baseline_price_in;
    gw->baseline.out = gw->cfg.baseline_price_out;
    if (node_registry_init(&gw->nodes, &gw->cfg, err) < 0) return -1;
    if (attach_engines(gw, err) < 0) return -1;
    if (load_router(gw, err) < 0) return -1;
    if (parse_cascades(gw, err) < 0) return -1;
    /* 10% extra load over time, as the budget's default; bursts of up to
     * 100 retries, since one node dying cuts every request it was serving. */
    budget_config bc;
    budget_config_default(&bc);
    bc.cap = 100;
    bc.initial = -1;
    /* and one a second even when quiet: a retry waiting for a token gets one */
    bc.per_second = 1;
    budget_init(&gw->retries, &bc);
    metrics_init();
    gw->n_workers = gw->cfg.workers > 0 ? gw->cfg.workers : 1;
    gw->workers = xcalloc((size_t)gw->n_workers, sizeof(worker));
    for (int i = 0; i < gw->n_workers; i++) {
        if (worker_init(gw, &gw->workers[i], i, err) < 0) {
            gw->n_workers = i + 1; /* what gateway_free must undo */
            return -1;
        }
    }

    uv_timer_init(&gw->workers[0].loop, &gw->probe_timer);
    gw->probe_timer.data = gw;
    /* the timer ticks often enough for the nodes that are down; each node
     * is probed when its own interval has passed */
    unsigned tick = probe_every_ms(gw) < PROBE_DOWN_MS ? probe_every_ms(gw) : PROBE_DOWN_MS;
    if (gw->nodes.n) uv_timer_start(&gw->probe_timer, probe_all, 0, tick);
    for (int i = 0; i < gw->n_workers; i++)
        uv_thread_create(&gw->workers[i].thread, worker_run, &gw->workers[i]);
    return 0;
}

void gateway_wait(gateway *gw) {
    for (int i = 0; i < gw->n_workers; i++) uv_thread_join(&gw->workers[i].thread);
}

void gateway_stop(gateway *gw) {
    for (int i = 0; i < gw->n_workers; i++) uv_async_send(&gw->workers[i].stop);
}

static void walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void gateway_free(gateway *gw) {
    for (int i = 0; i < gw->n_workers; i++) {
        worker *w = &gw->workers[i];
        if (w->server) http_server_close(w->server, NULL, NULL);
        if (w->client) http_client_free(w->client);
        uv_walk(&w->loop, walk_close, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        chat_free_spares(w);
        uv_loop_close(&w->loop);
    }
    free(gw->workers);
    for (int i = 0; i < gw->nodes.n; i++) engine_node_detach(&gw->nodes.nodes[i]);
    node_registry_free(&gw->nodes);
    free(gw->cascades);
    route_model_free(gw->router);
    free(gw->router_path);
    pthread_rwlock_destroy(&gw->router_lock);
    config_free(&gw->cfg);
}
