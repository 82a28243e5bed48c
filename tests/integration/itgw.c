/* itgw: see itgw.h. */
#include "itgw.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"

int itgw_start(itgw *g, const char *const *extra_args) {
    memset(g, 0, sizeof *g);
    char mock_path[4096];
    snprintf(mock_path, sizeof mock_path, "%s", it_bin("mock_upstream"));
    char *mock_argv[] = {mock_path, "--port", "0", "--model", "mock-small", "--chunks", "5", NULL};
    if (it_start(&g->mock, mock_argv) < 0) return -1;

    char msoa_path[4096], node[256];
    snprintf(msoa_path, sizeof msoa_path, "%s", it_bin("msoa"));
    snprintf(node, sizeof node, "m1=http://127.0.0.1:%d/v1,model=mock-small,domain=general,price_in=0.1,price_out=0.2",
             g->mock.port);
    char *argv[64];
    int n = 0;
    argv[n++] = msoa_path;
    argv[n++] = "up";
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--node";
    argv[n++] = node;
    for (int i = 0; extra_args && extra_args[i] && n < 62; i++) argv[n++] = (char *)extra_args[i];
    argv[n] = NULL;
    if (it_start(&g->msoa, argv) < 0) {
        it_stop(&g->mock, SIGKILL);
        return -1;
    }
    if (it_wait_reachable(g->msoa.port, 1) == 0) return 0;
    fprintf(stderr, "itgw: msoa never became ready\n");
    itgw_stop(g);
    return -1;
}

int it_wait_reachable(int port, int reachable) {
    char want[64];
    snprintf(want, sizeof want, "\"nodes_reachable\":%d", reachable);
    double deadline = clock_now_ms() + 5000;
    while (clock_now_ms() < deadline) {
        it_response r;
        int ok = it_http(port, "GET", "/ready", NULL, NULL, 0, 2000, &r) == 0 && r.body.data && strstr(r.body.data, want);
        it_response_free(&r);
        if (ok) return 0;
        usleep(20000);
    }
    return -1;
}

void itgw_stop(itgw *g) {
    if (g->msoa.pid) it_stop(&g->msoa, SIGTERM);
    if (g->mock.pid) it_stop(&g->mock, SIGTERM);
}

int itgw_post(itgw *g, const char *path, const char *json, it_response *r) {
    return it_http(g->msoa.port, "POST", path, NULL, json, strlen(json), 10000, r);
}

cJSON *it_json(const it_response *r) {
    return r->body.data ? cJSON_ParseWithLength(r->body.data, r->body.len) : NULL;
}

cJSON *it_sse_events(const char *body) {
    cJSON *events = cJSON_CreateArray();
    const char *p = body ? body : "";
    while (*p) {
        const char *end = strstr(p, "\n\n");
        if (!end) break;
        if (!strncmp(p, "data: ", 6)) {
            cJSON_AddItemToArray(events, cJSON_CreateString(""));
            cJSON *last = cJSON_GetArrayItem(events, cJSON_GetArraySize(events) - 1);
            char *text = strndup(p + 6, (size_t)(end - p - 6));
            cJSON_SetValuestring(last, text);
            free(text);
        }
        p = end + 2;
    }
    return events;
}
