/* rpc: msoa's JSON-RPC 2.0 methods (chat.complete, models.list, mesh.nodes,
 * mesh.health) and their two transports: POST /rpc and a WebSocket at
 * GET /rpc, where streamed chunks arrive as `chat.chunk` notifications. */
#ifndef MSOA_RPC_H
#define MSOA_RPC_H

#include <cjson/cJSON.h>

#include "api/gateway.h"

void rpc_http(worker *w, http_exchange *x, const http_request *req);
void rpc_websocket(worker *w, http_exchange *x);

/* mesh.nodes / mesh.health results, shared with the HTTP endpoints. */
cJSON *rpc_mesh_nodes(const gateway *gw);
cJSON *rpc_mesh_health(const gateway *gw);

#endif
