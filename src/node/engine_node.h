/* engine_node: a node served in-process by msoa's own GGUF engine.
 *
 * Attaching a model file to a node gives it a backend (mesh/backend.h): the
 * gateway's dispatch then hands chat completions to the engine instead of
 * calling an HTTP server, and gets the same events back (OpenAI chunks, a
 * chat.completion, or an error with an HTTP status).
 *
 * Concurrency: max_slots sequences at once, each with its own llama context
 * (KV cache), all served by one generation thread that goes round the busy
 * slots doing one step each (a prompt piece or one token): every stream
 * advances at the same pace and a new request starts without waiting for
 * the others to end. This is time-slicing, not batched matrix products, so
 * the node's total tokens/s stays that of one sequence (memory-bound decode
 * reads all weights per token either way); each step uses n_threads
 * threads, from one pool the slots share. Requests beyond the slots wait in a FIFO queue of max_queue;
 * beyond that a call fails at once (from a later loop turn) with 503
 * "node_busy" (type "service_unavailable", retry_after_s 1).
 *
 * Results reach the call's loop through one uv_async_t per call and a
 * mutex-protected event list (uv_async_send coalesces wakeups, never
 * events). cancel() stops the slot before its next step and frees it; no
 * callback follows. pause() holds delivery (no callback until unpaused) and
 * stops generating after the step under way (the slot stays taken). Request handling: see engine_request.h and
 * engine_gen.h. */
#ifndef MSOA_NODE_ENGINE_NODE_H
#define MSOA_NODE_ENGINE_NODE_H

#include "mesh/node.h"

/* Loads gguf_path (mmap), its tokenizer and chat template family (none: the
 * plain fallback of engine_request.h), makes max_slots contexts of the
 * model's context length (capped at 4096) and starts the generation thread.
 * Sets n->backend and n->backend_state and marks n reachable. n->model names
 * the model in responses (NULL: n->name). Returns 0, or -1 with *err (caller
 * frees) and n unchanged. n_threads < 1 means 1; max_slots < 1 means 1;
 * max_queue < 0 means 0. */
int engine_node_attach(node *n, const char *gguf_path, int n_threads, int max_slots, int max_queue, char **err);

/* Stops the generation thread and frees the engine; n->backend becomes NULL
 * and n unreachable. Call it when no call on the node is outstanding (every
 * dispatch to it has ended or been cancelled), e.g. after the gateway's
 * loops have stopped; a call still in the engine then gets a 503
 * "node_stopped" error posted to its loop. Does nothing if n has no engine. */
void engine_node_detach(node *n);

#endif
