/* gateway: the running gateway. Shared state (configuration, nodes, metrics)
 * plus one worker per event loop; each worker has its own HTTP server on the
 * shared port (SO_REUSEPORT) and its own upstream client, so a request lives
 * on one thread from socket to ledger. */
#ifndef MSOA_GATEWAY_H
#define MSOA_GATEWAY_H

#include <pthread.h>
#include <uv.h>

#include "base/config.h"
#include "mesh/budget.h"
#include "mesh/node.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "route/router.h"

typedef struct gateway gateway;

/* A domain's cascade: its nodes, cheapest first. */
#define CASCADE_MAX_NODES 8
typedef struct cascade_policy {
    char domain[32];
    node *nodes[CASCADE_MAX_NODES];
    int n;
} cascade_policy;

typedef struct worker {
    gateway *gw;
    int index;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t stop;
    http_server *server;
    http_client *client;
    unsigned long next_id;    /* for response ids */
    struct chat *spare_chats; /* finished chats kept for reuse (chat.c) */
    int n_spare_chats;
} worker;

struct gateway {
    msoa_config cfg;          /* owned */
    node_registry nodes;
    price baseline;
    int port;                 /* bound port */
    int n_workers;
    worker *workers;
    uv_timer_t probe_timer;   /* on worker 0's loop */
    /* The router and guard for `auto`; NULL: auto goes to the first healthy
     * node. Swapped under the write lock by gateway_reload_router. */
    route_model *router;
    char *router_path;
    pthread_rwlock_t router_lock;
    int guard_action;         /* GUARD_REFUSE, GUARD_FLAG, GUARD_ROUTE */
    budget retries;           /* retries and hedges spend it; each request adds a little */
    cascade_policy *cascades;
    int n_cascades;
};

enum { GUARD_REFUSE, GUARD_FLAG, GUARD_ROUTE };

/* Builds and binds the gateway (takes over cfg). Returns 0, or -1 with *err. */
int gateway_start(gateway *gw, msoa_config *cfg, char **err);
/* Runs until gateway_stop (from a signal handler thread or another thread). */
void gateway_wait(gateway *gw);
void gateway_stop(gateway *gw);
void gateway_free(gateway *gw);
/* Loads the router model file again and swaps it in; in-flight
 * classifications finish on the old one. Returns 0, or -1 with *err (the
 * old model stays). */
int gateway_reload_router(gateway *gw, char **err);
/* The cascade for a domain, or NULL. */
const cascade_policy *gateway_cascade(const gateway *gw, const char *domain);

/* A router decision, copied out of the model so a reload cannot free it. */
typedef struct route_result {
    char domain[32];
    float confidence;   /* probability of that domain */
    float guard_score;
    int unsafe;
    buf json;           /* {"domain","probs","guard","why"}: caller frees */
} route_result;

/* Classifies with the current router; returns -1 when there is none. */
int gateway_classify(gateway *gw, const char *system, size_t system_len, const char *user, size_t user_len,
                     route_result *out);

#endif
