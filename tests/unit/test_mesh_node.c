/* Tests for the node registry: URL normalisation, defaults, lookup by model
 * or node name, reachability, silence (streams that stopped talking). */
#include <stdlib.h>

#include "mesh/node.h"
#include "testlib.h"

static node_spec spec(const char *name, const char *url, const char *model) {
    node_spec s = {0};
    s.name = (char *)name;
    s.url = (char *)url;
    s.model = (char *)model;
    return s;
}

static void test_urls_and_defaults(void) {
    node_spec specs[] = {spec("a", "http://127.0.0.1:8081", NULL), spec("b", "http://h:1/v1/", "m"),
                         spec("c", "https://api.example.com/openai/v1", "m")};
    specs[1].api_key = "k";
    specs[1].price_in = 0.5;
    msoa_config cfg = {0};
    cfg.nodes = specs;
    cfg.n_nodes = 3;
    node_registry r;
    char *err = NULL;
    CHECK_EQ_INT(node_registry_init(&r, &cfg, &err), 0);
    CHECK_STR(r.nodes[0].chat_url, "http://127.0.0.1:8081/v1/chat/completions");
    CHECK_STR(r.nodes[0].model, "a");
    CHECK_STR(r.nodes[0].domain, "general");
    CHECK(r.nodes[0].auth_header == NULL);
    CHECK_STR(r.nodes[1].models_url, "http://h:1/v1/models");
    CHECK_STR(r.nodes[1].auth_header, "Authorization: Bearer k");
    CHECK(r.nodes[1].price.in == 0.5);
    CHECK_STR(r.nodes[2].chat_url, "https://api.example.com/openai/v1/chat/completions");
    node_registry_free(&r);
}

/* A node's cap: its own max_conns, else the configured default; -1 (max_conns=0) is none. */
static void test_max_conns(void) {
    node_spec specs[] = {spec("a", "http://h:1", NULL), spec("b", "http://h:2", NULL), spec("c", "http://h:3", NULL)};
    specs[1].max_conns = 5;
    specs[2].max_conns = -1;
    msoa_config cfg = {0};
    cfg.nodes = specs;
    cfg.n_nodes = 3;
    cfg.node_max_connections = 64;
    node_registry r;
    char *err = NULL;
    CHECK_EQ_INT(node_registry_init(&r, &cfg, &err), 0);
    CHECK_EQ_INT(r.nodes[0].max_conns, 64);
    CHECK_EQ_INT(r.nodes[1].max_conns, 5);
    CHECK_EQ_INT(r.nodes[2].max_conns, 0);
    node_registry_free(&r);
}

static void test_lookup(void) {
    node_spec specs[] = {spec("n1", "http://h:1", "shared"), spec("n2", "http://h:2", "shared"),
                         spec("n3", "http://h:3", "solo")};
    msoa_config cfg = {0};
    cfg.nodes = specs;
    cfg.n_nodes = 3;
    node_registry r;
    char *err = NULL;
    CHECK_EQ_INT(node_registry_init(&r, &cfg, &err), 0);
    /* not probed yet is not reachable */
    CHECK(!node_registry_any_reachable(&r));
    atomic_store(&r.nodes[1].reachable, 1);
    CHECK(node_registry_any_reachable(&r));
    CHECK(node_registry_has_model(&r, "shared"));
    CHECK(node_registry_has_model(&r, "n3"));   /* by node name */
    CHECK(node_registry_has_model(&r, "solo"));
    CHECK(!node_registry_has_model(&r, "nope"));
    node_registry_free(&r);
}

/* A node is silent when its streams in mid-answer have sent nothing for
 * 4 x its p99 chunk gap (at least 100 ms), once 20 gaps were seen. */
static void test_silence(void) {
    node_spec specs[] = {spec("n", "http://h:1", "m")};
    msoa_config cfg = {0};
    cfg.nodes = specs;
    cfg.n_nodes = 1;
    node_registry r;
    char *err = NULL;
    CHECK_EQ_INT(node_registry_init(&r, &cfg, &err), 0);
    node *n = &r.nodes[0];
    uint64_t t = 1000000;
    node_stream_start(n, t);
    CHECK(!node_silent(n, t + 5000)); /* no gaps measured yet: never */
    for (int i = 0; i < 20; i++) node_stream_chunk(n, t += 50, 50000);
    CHECK(!node_silent(n, t + 150)); /* 4 x ~50 ms */
    CHECK(node_silent(n, t + 260));
    node_stream_end(n);
    CHECK(!node_silent(n, t + 260)); /* nothing streaming: nothing to hear */
    node_stream_start(n, t + 300);
    CHECK(!node_silent(n, t + 400));
    for (int i = 0; i < 2000; i++) node_stream_chunk(n, t += 1, 1000); /* fast now: the floor holds */
    CHECK(!node_silent(n, t + 90));
    CHECK(node_silent(n, t + 110));
    node_stream_end(n);
    node_registry_free(&r);
}

int main(void) {
    TEST(test_urls_and_defaults);
    TEST(test_max_conns);
    TEST(test_lookup);
    TEST(test_silence);
    return test_done();
}
