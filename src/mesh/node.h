/* node: the registry of nodes the gateway can send work to.
 *
 * A node is one OpenAI-compatible endpoint (an upstream server, or later a
 * built-in engine) serving one model. The registry is built once from the
 * configuration and then shared read-only by every worker thread; only the
 * health fields change, and those are atomics (but `probing`, which only
 * the prober's loop touches). */
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
    price price;
    /* NULL for an HTTP node; else who serves it in-process (src/node/). */
    const node_backend *backend;
    void *backend_state;
    atomic_int reachable;        /* 1: the last probe or request reached it; 0: not; -1: not known yet */
    breaker breaker;             /* fed by real requests */
    latency_tracker latency;     /* time to first token, total, tokens/s */
    atomic_long inflight;        /* requests outstanding now */
    atomic_long requests, failures;
    int probing;                 /* a health probe is out (the prober's loop only) */
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

/* Whether some node serves this model name (or is named so). */
int node_registry_has_model(const node_registry *r, const char *model);
int node_registry_any_reachable(const node_registry *r);

#endif
