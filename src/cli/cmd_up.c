/* cmd_up: `msoa up` loads the configuration, starts the gateway and runs it
 * until SIGINT or SIGTERM. */
#include "cli/cmd_up.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/gateway.h"
#include "base/buf.h"
#include "base/config.h"
#include "base/xalloc.h"
#include "cli/pull.h"

static const char up_help[] =
    "usage: msoa up [OPTIONS]\n"
    "\n"
    "Runs the gateway: an OpenAI-compatible API (/v1/chat/completions, /v1/models),\n"
    "JSON-RPC 2.0 (POST /rpc, WebSocket /rpc), /health, /ready and /metrics.\n"
    "\n"
    "options (each also settable in the config file or environment; flags win):\n"
    "  --config FILE                 JSON config file             (MSOA_CONFIG)\n"
    "  --listen HOST:PORT            address to serve             (MSOA_LISTEN, 127.0.0.1:8080)\n"
    "  --node NAME=URL[,model=M][,domain=D][,price_in=X][,price_out=Y][,api_key=K][,max_conns=N]\n"
    "                                an OpenAI-compatible node; repeatable (MSOA_NODES, ';'-separated)\n"
    "  --node-max-connections N      a node's requests in flight per worker, more wait (MSOA_NODE_MAX_CONNECTIONS,\n"
    "                                256; 0: no cap; max_conns=N sets one node's)\n"
    "  --workers N                   event loops, one per core    (MSOA_WORKERS)\n"
    "  --max-body BYTES              request body limit           (MSOA_MAX_BODY, 1m)\n"
    "  --max-header BYTES            request head limit           (MSOA_MAX_HEADER, 16k)\n"
    "  --max-connections N           open connections per worker  (MSOA_MAX_CONNECTIONS, 10000)\n"
    "  --idle-timeout-ms MS          keep-alive idle timeout      (MSOA_IDLE_TIMEOUT_MS, 60000)\n"
    "  --request-timeout-ms MS       time to receive a request    (MSOA_REQUEST_TIMEOUT_MS, 30000)\n"
    "  --upstream-connect-timeout-ms MS                           (MSOA_UPSTREAM_CONNECT_TIMEOUT_MS, 5000)\n"
    "  --upstream-timeout-ms MS      whole upstream call          (MSOA_UPSTREAM_TIMEOUT_MS, 600000)\n"
    "  --upstream-stall-ms MS        no byte from a node this long (MSOA_UPSTREAM_STALL_MS, 60000)\n"
    "  --upstream-wait-ms MS         wait for a node coming back  (MSOA_UPSTREAM_WAIT_MS, 10000)\n"
    "  --baseline-price-in USD       per million input tokens     (MSOA_BASELINE_PRICE_IN, 3)\n"
    "  --baseline-price-out USD      per million output tokens    (MSOA_BASELINE_PRICE_OUT, 10)\n"
    "  --baseline-model NAME         the baseline's name          (MSOA_BASELINE_MODEL, gpt-4.1)\n"
    "  --model-dir DIR               with no node given, serve every .gguf here (MSOA_MODEL_DIR)\n"
    "  --router-model FILE           router + guard model         (MSOA_ROUTER_MODEL, models/router.msoa)\n"
    "  --router-min-confidence P     below it, auto goes to the general pool (MSOA_ROUTER_MIN_CONFIDENCE, 0.5)\n"
    "  --guard-action ACTION         refuse, flag or route (to domain=safety nodes) (MSOA_GUARD_ACTION, refuse)\n"
    "  --hedging 0|1                 ask a second node when the first is slow (MSOA_HEDGING, 1)\n"
    "  --max-attempts N              nodes one request may try    (MSOA_MAX_ATTEMPTS, 3)\n"
    "  --circuit-breaker 0|1         leave failing nodes alone a while (MSOA_CIRCUIT_BREAKER, 1)\n"
    "  --probe-interval-ms MS        health probes of HTTP nodes  (MSOA_PROBE_INTERVAL_MS, 2000)\n"
    "  --cascades 'D=N1,N2;D=...'    per-domain cascades, cheapest node first (MSOA_CASCADES)\n"
    "  --cascade-logprob-floor X     escalate when mean token logprob < -X (MSOA_CASCADE_LOGPROB_FLOOR, off)\n"
    "\n"
    "SIGHUP (or the JSON-RPC method admin.reload_router) reloads the router model.\n"
    "\n"
    "example:\n"
    "  msoa up --listen 127.0.0.1:8080 --node local=http://127.0.0.1:8081/v1,model=qwen2.5-0.5b\n";

static const char no_nodes_hint[] =
    "msoa: no nodes are configured, so chat requests will get 503.\n"
    "      add one with --node NAME=URL (an OpenAI-compatible server such as llama-server,\n"
    "      Ollama or vLLM), e.g. --node local=http://127.0.0.1:8081/v1,model=MODEL,\n"
    "      or set MSOA_NODES, or list \"nodes\" in a config file (--config FILE).\n";

/* The embedded default: with no node configured, every GGUF file in the
 * model directory becomes a built-in node named after the file. */
static int add_model_dir_nodes(msoa_config *cfg, char **err) {
    DIR *dir = opendir(cfg->model_dir);
    if (!dir) {
        buf e = BUF_INIT;
        buf_printf(&e, "--model-dir: cannot read '%s'", cfg->model_dir);
        *err = buf_detach(&e);
        return -1;
    }
    struct dirent *ent;
    int rc = 0;
    while (rc == 0 && (ent = readdir(dir))) {
        size_t len = strlen(ent->d_name);
        if (len <= 5 || strcmp(ent->d_name + len - 5, ".gguf") != 0) continue;
        buf spec = BUF_INIT;
        buf_printf(&spec, "%.*s=%s/%s", (int)(len - 5), ent->d_name, cfg->model_dir, ent->d_name);
        rc = config_add_node(cfg, spec.data, err);
        buf_free(&spec);
    }
    closedir(dir);
    return rc;
}

int cmd_up(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(up_help, stdout);
            return 0;
        }
    }
    msoa_config cfg;
    char *err = NULL;
    if (config_load(&cfg, argc, argv, &err) < 0) {
        fprintf(stderr, "msoa up: %s\n", err);
        free(err);
        config_free(&cfg);
        return 2;
    }
    /* With no node and no model directory, look where `msoa pull` saves. */
    if (cfg.n_nodes == 0 && !cfg.model_dir) {
        char cache[4096];
        if (pull_default_dir(cache, sizeof cache) == 0 && access(cache, R_OK) == 0) cfg.model_dir = xstrdup(cache);
    }
    if (cfg.n_nodes == 0 && cfg.model_dir && add_model_dir_nodes(&cfg, &err) < 0) {
        fprintf(stderr, "msoa up: %s\n", err);
        free(err);
        config_free(&cfg);
        return 2;
    }
    if (cfg.n_nodes == 0) fputs(no_nodes_hint, stderr);

    /* Signals go to this thread only, which waits for them below; the
     * workers inherit the mask. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    gateway gw;
    if (gateway_start(&gw, &cfg, &err) < 0) {
        fprintf(stderr, "msoa up: %s\n", err);
        free(err);
        gateway_free(&gw);
        return 1;
    }
    printf("msoa: %d workers, %d nodes; listening on http://%s:%d\n", gw.n_workers, gw.nodes.n,
           gw.cfg.listen_host, gw.port);
    fflush(stdout);

    int sig = 0;
    /* SIGHUP reloads the router model; SIGINT and SIGTERM stop. */
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
        if (gateway_reload_router(&gw, &err) < 0) {
            fprintf(stderr, "msoa: router reload failed, keeping the old model: %s\n", err);
            free(err);
        }
    }
    fprintf(stderr, "msoa: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    gateway_stop(&gw);
    gateway_wait(&gw);
    gateway_free(&gw);
    return 0;
}
