/* gateway: the running gateway. Shared state (configuration, nodes, metrics)
 * plus one worker per event loop; each worker has its own HTTP server on the
 * shared port (SO_REUSEPORT) and its own upstream client, so a request lives
 * on one thread from socket to ledger. */
#ifndef MSOA_GATEWAY_H
#define MSOA_GATEWAY_H

#include <uv.h>

#include "base/config.h"
#include "mesh/node.h"
#include "net/http_client.h"
#include "net/http_server.h"

typedef struct gateway gateway;

typedef struct worker {
    gateway *gw;
    int index;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t stop;
    http_server *server;
    http_client *client;
    unsigned long next_id;    /* for response ids */
} worker;

struct gateway {
    msoa_config cfg;          /* owned */
    node_registry nodes;
    price baseline;
    int port;                 /* bound port */
    int n_workers;
    worker *workers;
    uv_timer_t probe_timer;   /* on worker 0's loop */
    int probes_pending;
};

/* Builds and binds the gateway (takes over cfg). Returns 0, or -1 with *err. */
int gateway_start(gateway *gw, msoa_config *cfg, char **err);
/* Runs until gateway_stop (from a signal handler thread or another thread). */
void gateway_wait(gateway *gw);
void gateway_stop(gateway *gw);
void gateway_free(gateway *gw);

#endif
