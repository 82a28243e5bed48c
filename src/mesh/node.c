/* node: see node.h. */
#include "mesh/node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/xalloc.h"

#define NODE_SILENCE_K 4
#define NODE_SILENCE_FLOOR_MS 100
#define NODE_GAP_MIN_SAMPLES 20

static char *join(const char *a, const char *b) {
    buf out = BUF_INIT;
    buf_puts(&out, a);
    buf_puts(&out, b);
    return buf_detach(&out);
}

/* "http://h:p" and "http://h:p/" mean "http://h:p/v1": every server msoa
 * fronts puts the OpenAI API under /v1, and users often paste the bare host. */
static char *normalise_base_url(const char *url) {
    size_t len = strlen(url);
    while (len && url[len - 1] == '/') len--;
    const char *after_scheme = strstr(url, "://");
    const char *path = after_scheme ? strchr(after_scheme + 3, '/') : NULL;
    if (!path || path >= url + len) {
        char *base = xstrndup(url, len);
        char *with_v1 = join(base, "/v1");
        free(base);
        return with_v1;
    }
    return xstrndup(url, len);
}

int node_is_gguf(const char *url) {
    size_t len = strlen(url);
    return len > 5 && !strcmp(url + len - 5, ".gguf");
}

int node_registry_init(node_registry *r, const msoa_config *cfg, char **err) {
    *err = NULL;
    r->n = cfg->n_nodes;
    r->nodes = xcalloc((size_t)(r->n ? r->n : 1), sizeof(node));
    for (int i = 0; i < r->n; i++) {
        const node_spec *s = &cfg->nodes[i];
        node *n = &r->nodes[i];
        n->name = xstrdup(s->name);
        /* a GGUF path is served in-process (src/node/); its URL stays as given */
        n->base_url = node_is_gguf(s->url) ? xstrdup(s->url) : normalise_base_url(s->url);
        n->chat_url = join(n->base_url, "/chat/completions");
        n->models_url = join(n->base_url, "/models");
        n->model = xstrdup(s->model ? s->model : s->name);
        n->domain = xstrdup(s->domain ? s->domain : "general");
        n->auth_header = s->api_key ? join("Authorization: Bearer ", s->api_key) : NULL;
        n->price.in = s->price_in;
        n->price.out = s->price_out;
        n->max_conns = s->max_conns > 0 ? (unsigned)s->max_conns : s->max_conns < 0 ? 0 : (unsigned)cfg->node_max_connections;
        atomic_init(&n->reachable, -1);
        breaker_config bc;
        breaker_config_default(&bc);
        if (!cfg->circuit_breaker) {
            bc.consecutive_failures = 0;
            bc.error_rate = 0;
        }
        breaker_init(&n->breaker, &bc);
        latency_init(&n->latency, NULL, clock_now_ms_u64());
        latency_hist_init(&n->gaps, NULL, clock_now_ms_u64());
        atomic_init(&n->last_chunk_ms, 0);
        atomic_init(&n->streaming, 0);
        atomic_init(&n->inflight, 0);
        atomic_init(&n->requests, 0);
        atomic_init(&n->failures, 0);
    }
    return 0;
}

void node_registry_free(node_registry *r) {
    for (int i = 0; i < r->n; i++) {
        node *n = &r->nodes[i];
        free(n->name);
        free(n->base_url);
        free(n->chat_url);
        free(n->models_url);
        free(n->model);
        free(n->domain);
        free(n->auth_header);
        breaker_destroy(&n->breaker);
    }
    free(r->nodes);
    r->nodes = NULL;
    r->n = 0;
}

static int serves(const node *n, const char *model) {
    return !strcmp(n->model, model) || !strcmp(n->name, model);
}

int node_registry_has_model(const node_registry *r, const char *model) {
    for (int i = 0; i < r->n; i++)
        if (serves(&r->nodes[i], model)) return 1;
    return 0;
}

int node_registry_any_reachable(const node_registry *r) {
    for (int i = 0; i < r->n; i++)
        if (atomic_load(&r->nodes[i].reachable) == 1) return 1;
    return 0;
}

void node_stream_start(node *n, uint64_t now_ms) {
    atomic_store_explicit(&n->last_chunk_ms, now_ms, memory_order_relaxed);
    atomic_fetch_add(&n->streaming, 1);
}

void node_stream_chunk(node *n, uint64_t now_ms, uint64_t gap_us) {
    atomic_store_explicit(&n->last_chunk_ms, now_ms, memory_order_relaxed);
    latency_hist_add(&n->gaps, now_ms, gap_us);
}

void node_stream_end(node *n) {
    atomic_fetch_sub(&n->streaming, 1);
}

int node_silent(node *n, uint64_t now_ms) {
    if (atomic_load(&n->streaming) <= 0 || latency_hist_count(&n->gaps) < NODE_GAP_MIN_SAMPLES) return 0;
    uint64_t limit = NODE_SILENCE_K * latency_hist_quantile(&n->gaps, 0.99) / 1000;
    if (limit < NODE_SILENCE_FLOOR_MS) limit = NODE_SILENCE_FLOOR_MS;
    uint64_t last = atomic_load_explicit(&n->last_chunk_ms, memory_order_relaxed);
    return now_ms > last && now_ms - last > limit;
}
