/* node: the registry of nodes the gateway can send work to.
 *
 * A node is one OpenAI-compatible endpoint (an upstream server, or later a
 * built-in engine) serving one model. The registry is built once from the
 * configuration and then shared read-only by every worker thread; only the
 * health fields change, and those are atomics (but `probing` and
 * `probed_ms`, which only the prober's loop touches). */
#ifndef MSOA_NODE_H
#define MSOA_NODE_H

#include <stdatomic.h>

#include "base/config.h"
#include "ledger/cost.h"
#include "mesh/backend.h"
#include "mesh/breaker.h"
#include "mesh/latency.h"

typedef struct node {
    char *name;
    char *base_url;      /* without trailing slash, e.g. http://127.0.0.1:8080/v1 */
    char *chat_url;      /* base_url + /chat/completions */
    char *models_url;    /* base_url + /models, used by health probes */
    char *model;         /* the model's name at the upstream; clients use it too */
    char *domain;        /* "general" when not given */
    char *auth_header;   /* "Authorization: Bearer KEY" or NULL */
    unsigned max_conns;  /* requests in flight to it at once, per worker; more wait in msoa; 0: no cap */
    price price;
    /* NULL for an HTTP node; else who serves it in-process (src/node/). */
    const node_backend *backend;
    void *backend_state;
    atomic_int reachable;        /* 1: the last probe or request reached it; 0: not; -1: not known yet */
    breaker breaker;             /* fed by real requests */
    latency_tracker latency;     /* time to first token, total, tokens/s */
    atomic_long inflight;        /* requests outstanding now */
    atomic_long requests, failures;
    /* what its streams say: the gaps between a stream's chunks, the last
     * chunk of any stream, and the streams past their first chunk now */
    latency_hist gaps;
    atomic_uint_least64_t last_chunk_ms;
    atomic_long streaming;
    int probing;                 /* a health probe is out (the prober's loop only) */
    uint64_t probed_ms;          /* when the last probe went out (the prober's loop only) */
} node;

typedef struct node_registry {
    node *nodes;
    int n;
} node_registry;

/* Whether a node URL names a GGUF file for the built-in engine. */
int node_is_gguf(const char *url);

/* Builds the registry from the configured nodes. Returns 0, or -1 with *err. */
int node_registry_init(node_registry *r, const msoa_config *cfg, char **err);
void node_registry_free(node_registry *r);

/* A stream on n got its first chunk (node_stream_start) or another one,
 * gap_us after the one before (node_stream_chunk); it ended
 * (node_stream_end, only for streams that had started). */
void node_stream_start(node *n, uint64_t now_ms);
void node_stream_chunk(node *n, uint64_t now_ms, uint64_t gap_us);
void node_stream_end(node *n);
/* Whether n has gone silent: it has streams in the middle of an answer,
 * and none has had a chunk for NODE_SILENCE_K times its p99 chunk gap (at
 * least NODE_SILENCE_FLOOR_MS, once NODE_GAP_MIN_SAMPLES gaps were seen).
 * A stopped process shows so in ~100 ms, long before one stream's stall
 * limit; a node busy with many streams seldom has even one gap that long. */
int node_silent(node *n, uint64_t now_ms);

/* Whether some node serves this model name (or is named so). */
int node_registry_has_model(const node_registry *r, const char *model);
int node_registry_any_reachable(const node_registry *r);

#endif
