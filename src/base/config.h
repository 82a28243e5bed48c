/* config: everything msoa up can be told, from defaults, a JSON file,
 * environment variables and command-line flags. Later sources win:
 * defaults < file < environment < flags.
 *
 * Plain data: the layers that use a setting (server limits, node pool,
 * prices) read it from here; this file knows none of their types.
 *
 * Each setting has a file key, a variable and a flag:
 *   listen "HOST:PORT" (port 0: any free one; [v6]:PORT)  MSOA_LISTEN  --listen
 *   workers                       MSOA_WORKERS                     --workers
 *   max_body, max_header (bytes, suffix k/m/g allowed: "1m")
 *                                 MSOA_MAX_BODY, MSOA_MAX_HEADER   --max-body, --max-header
 *   max_connections               MSOA_MAX_CONNECTIONS             --max-connections
 *   idle_timeout_ms, request_timeout_ms, upstream_connect_timeout_ms,
 *   upstream_timeout_ms, upstream_stall_ms, upstream_wait_ms
 *                                 MSOA_IDLE_TIMEOUT_MS ...         --idle-timeout-ms ...
 *   baseline {price_in, price_out, model}
 *                                 MSOA_BASELINE_PRICE_IN/_OUT/_MODEL  --baseline-price-in/-out/-model
 *   model_dir                     MSOA_MODEL_DIR                   --model-dir
 *   node_max_connections          MSOA_NODE_MAX_CONNECTIONS        --node-max-connections
 *   nodes [{name, url, model, domain, api_key, price_in, price_out, max_conns} or "NAME=URL,..."]
 *                                 MSOA_NODES (specs split by ';')  --node SPEC (repeatable)
 * Flags take "--flag value" or "--flag=value"; an empty variable counts as
 * unset. Unknown file keys and flags are errors.
 *
 * Nodes are a list, not merged: the nodes of a later source replace those of
 * an earlier one. Any --node replaces MSOA_NODES, which replaces the file's
 * "nodes" (so a file can list a fleet and a flag can run against one node). */
#ifndef MSOA_CONFIG_H
#define MSOA_CONFIG_H

#include <stddef.h>

#define MAX_NODE_CONNS 1000000

typedef struct node_spec {
    char *name;       /* unique, [A-Za-z0-9._-]+ */
    char *url;        /* base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1,
                         or a path to a .gguf file served by the built-in engine */
    char *model;      /* model name at the upstream; NULL: same as name */
    char *domain;     /* code, math, reasoning, language or NULL (general) */
    char *api_key;    /* sent as Authorization: Bearer; NULL: none */
    double price_in;  /* USD per million input tokens */
    double price_out; /* USD per million output tokens */
    int max_conns;    /* requests in flight to it at once, per worker; 0: node_max_connections; -1: no cap */
} node_spec;

typedef struct msoa_config {
    char *listen_host;            /* default 127.0.0.1 */
    int listen_port;              /* default 8080 */
    int workers;                  /* event loops; default: number of cores */
    size_t max_body;              /* bytes, default 1 MiB */
    size_t max_header;            /* bytes, default 16 KiB */
    int max_connections;          /* per worker, default 10000 */
    unsigned idle_timeout_ms;     /* default 60000 */
    unsigned request_timeout_ms;  /* receiving a request, default 30000 */
    unsigned upstream_connect_timeout_ms; /* default 5000 */
    unsigned upstream_timeout_ms; /* whole upstream call, default 600000 */
    unsigned upstream_stall_ms;   /* no byte from upstream for this long, default 60000 */
    unsigned upstream_wait_ms;    /* a request waits this long for a node when none takes it now (10000) */
    double baseline_price_in;     /* USD per million, default 3 (GPT-4.1) */
    double baseline_price_out;    /* default 10 */
    char *baseline_model;         /* default "gpt-4.1" */
    char *model_dir;              /* GGUF files for the embedded default; NULL: none */
    char *router_model;           /* router + guard model file; NULL: models/router.msoa if present */
    double router_min_confidence; /* below it, `auto` goes to the generalist pool (default 0.5) */
    char *guard_action;           /* refuse (default), flag, or route (to the "safety" pool) */
    int hedging;                  /* 1 (default): a second node when the first is slower than its p95 */
    int max_attempts;             /* nodes one request may try, hedges and failovers included (3) */
    int node_max_connections;     /* a node's max_conns when it gives none (256); 0: no cap */
    int circuit_breaker;          /* 1 (default): a failing node is left alone for a while; 0: never */
    unsigned probe_interval_ms;   /* health probes of HTTP nodes (default 2000) */
    char *cascades;               /* "DOMAIN=NODE,NODE,...;DOMAIN=..." cheapest first; NULL: none */
    double cascade_logprob_floor; /* > 0: escalate when the mean token log-probability is below minus this */
    node_spec *nodes;
    int n_nodes;
} msoa_config;

void config_defaults(msoa_config *c);
void config_free(msoa_config *c);

/* Each returns 0, or -1 with *err set to a message (caller frees) naming
 * the file, variable or flag and what is wrong with it. */
int config_load_file(msoa_config *c, const char *path, char **err);
int config_apply_env(msoa_config *c, char **err);
/* Parses the flags of `msoa up` (argv without the sub-command). Flags it does
 * not know are an error. --config is checked but not read here (config_load
 * reads it before the environment). */
int config_apply_args(msoa_config *c, int argc, char **argv, char **err);
/* NAME=URL[,model=M][,domain=D][,price_in=X][,price_out=Y][,api_key=K][,max_conns=N]
 * These two say what is wrong but not where it came from: callers put the
 * flag or variable in front. config_add_node refuses a duplicate name. */
int config_parse_node(const char *text, node_spec *out, char **err);
int config_add_node(msoa_config *c, const char *text, char **err);
/* All of it, in order: defaults, the file named by --config or MSOA_CONFIG
 * (if any), the environment, then the flags. */
int config_load(msoa_config *c, int argc, char **argv, char **err);

#endif
