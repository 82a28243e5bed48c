/* Tests for the planner: pool order (specialist, generalist, fallback),
 * the score formula and each of its terms, exclusion of open and
 * unreachable nodes, degradation and its reasons, defaults and ties. */
#include <math.h>

#include "mesh/planner.h"
#include "testlib.h"

static plan_candidate node(const char *name, const char *domain) {
    plan_candidate c = {0};
    c.name = name;
    c.domain = domain;
    c.speed_tps = 100;
    c.ttft_p95_ms = 100;
    c.breaker_allows = 1;
    c.reachable = 1;
    return c;
}

static plan_request request(const char *domain) {
    plan_request r = {0};
    r.domain = domain;
    r.tokens_in = 1000;
    r.tokens_out = 100;
    return r;
}

static int near(double a, double b) {
    return fabs(a - b) < 1e-9 * (fabs(b) + 1);
}

static void test_pool_order(void) {
    plan_candidate c[] = {node("g1", "general"), node("c1", "code"), node("m1", "math"), node("g2", NULL),
                          node("m2", "math")};
    c[2].inflight = 3; /* m2 less loaded than m1 */
    plan_request r = request("math");
    plan_entry e[5];
    plan_summary s;
    CHECK_EQ_INT(plan_nodes(c, 5, &r, e, &s), 5);
    CHECK_EQ_INT(s.n, 5);
    CHECK_EQ_INT(e[0].index, 4);
    CHECK_EQ_INT(e[1].index, 2);
    CHECK_EQ_INT(e[2].index, 0);
    CHECK_EQ_INT(e[3].index, 3);
    CHECK_EQ_INT(e[4].index, 1);
    CHECK_EQ_INT(e[0].tier, PLAN_SPECIALIST);
    CHECK_EQ_INT(e[2].tier, PLAN_GENERALIST);
    CHECK_STR(e[3].pool, "general"); /* no domain = general */
    CHECK_EQ_INT(e[4].tier, PLAN_FALLBACK);
    CHECK_EQ_INT(s.degraded, 0);
    CHECK_STR(s.reason, "");
    CHECK_CONTAINS(e[0].why, "specialist pool 'math', score ");
    CHECK_CONTAINS(e[4].why, "fallback pool 'code'");
    CHECK_STR(plan_tier_name(PLAN_GENERALIST), "generalist");
}

static void test_score_formula(void) {
    plan_candidate c = node("a", "math");
    c.ttft_p95_ms = 100;
    c.inflight = 1;
    c.speed_tps = 50;
    c.price_in = 2;
    c.price_out = 10;
    c.weight = 2;
    plan_request r = request("math");
    r.ms_per_usd = 1e5;
    plan_entry e;
    plan_summary s;
    CHECK_EQ_INT(plan_nodes(&c, 1, &r, &e, &s), 1);
    /* 100 + 2 * 100 * 1000 / 50 */
    CHECK(near(e.est_ms, 4100));
    /* (1000 * 2 + 100 * 10) / 1e6 */
    CHECK(near(e.cost_usd, 0.003));
    /* (4100 + 1e5 * 0.003) / 2 */
    CHECK(near(e.score, 2200));
    CHECK_STR(e.why, "specialist pool 'math', score 2200.0 (est 4100 ms, $0.003000)");
}

static void test_defaults_for_unmeasured(void) {
    plan_candidate c = node("a", "math");
    c.speed_tps = 0;
    c.ttft_p95_ms = 0;
    c.inflight = -4; /* nonsense counts as none */
    plan_request r = {0};
    plan_entry e;
    plan_summary s;
    plan_nodes(&c, 1, &r, &e, &s);
    CHECK(near(e.est_ms, 500 + 256.0 * 1000 / 50));
    CHECK(near(e.cost_usd, 0));
    r.default_speed_tps = 20;
    r.default_ttft_ms = 40;
    r.tokens_out = 10;
    plan_nodes(&c, 1, &r, &e, &s);
    CHECK(near(e.est_ms, 40 + 10.0 * 1000 / 20));
    /* a request without a domain wants the generalists; a math node is a fallback */
    CHECK_EQ_INT(e.tier, PLAN_FALLBACK);
    CHECK_EQ_INT(s.degraded, 1);
}

static void test_load_speed_and_price(void) {
    /* a fast busy node beats a slow idle one when it would still finish first */
    plan_candidate c[] = {node("slow", "code"), node("fast", "code")};
    c[0].speed_tps = 25; /* 100 + 1 * 100 * 40 = 4100 */
    c[1].speed_tps = 100;
    c[1].inflight = 2; /* 100 + 3 * 100 * 10 = 3100 */
    plan_request r = request("code");
    plan_entry e[2];
    plan_summary s;
    plan_nodes(c, 2, &r, e, &s);
    CHECK_EQ_INT(e[0].index, 1);
    c[1].inflight = 4; /* 5100: now the slow one is sooner */
    plan_nodes(c, 2, &r, e, &s);
    CHECK_EQ_INT(e[0].index, 0);
    /* equal time: price decides when it has weight, not when it has none */
    plan_candidate p[] = {node("paid", "code"), node("free", "code")};
    p[0].price_out = 10;
    plan_nodes(p, 2, &r, e, &s);
    CHECK_EQ_INT(e[0].index, 0); /* tie: candidate order */
    r.ms_per_usd = 1e5;
    plan_nodes(p, 2, &r, e, &s);
    CHECK_EQ_INT(e[0].index, 1);
    /* weight prefers, e.g. the local region */
    p[0].weight = 10;
    plan_nodes(p, 2, &r, e, &s);
    CHECK_EQ_INT(e[0].index, 0);
}

static void test_exclusions_and_degraded_to_general(void) {
    plan_candidate c[] = {node("m1", "math"), node("m2", "math"), node("g1", "general"), node("g2", "general")};
    c[0].breaker_allows = 0;
    c[1].reachable = 0;
    c[2].reachable = 0;
    c[2].breaker_allows = 0; /* unreachable wins: counted once */
    plan_request r = request("math");
    plan_entry e[4];
    plan_summary s;
    CHECK_EQ_INT(plan_nodes(c, 4, &r, e, &s), 1);
    CHECK_EQ_INT(e[0].index, 3);
    CHECK_EQ_INT(s.degraded, 1);
    CHECK_STR(s.reason, "no healthy node in pool 'math' (1 circuit open, 1 unreachable); answered by pool 'general'");
}

static void test_no_specialist_pool(void) {
    plan_candidate c[] = {node("g1", "general")};
    plan_request r = request("law");
    plan_entry e[1];
    plan_summary s;
    plan_nodes(c, 1, &r, e, &s);
    CHECK_EQ_INT(s.degraded, 1);
    CHECK_STR(s.reason, "no node serves pool 'law'; answered by pool 'general'");
}

static void test_fallback_to_any(void) {
    plan_candidate c[] = {node("m1", "math"), node("c1", "code"), node("c2", "code"), node("g1", "general")};
    c[0].breaker_allows = 0;
    c[2].reachable = 0;
    c[3].reachable = 0;
    plan_request r = request("math");
    plan_entry e[4];
    plan_summary s;
    CHECK_EQ_INT(plan_nodes(c, 4, &r, e, &s), 1);
    CHECK_EQ_INT(e[0].index, 1);
    CHECK_EQ_INT(s.degraded, 1);
    CHECK_STR(s.reason, "no healthy node in pool 'math' (1 circuit open); no healthy node in pool 'general' "
                        "(1 unreachable); falling back to node 'c1' of pool 'code'");
    /* without a generalist pool at all */
    plan_nodes(c, 3, &r, e, &s);
    CHECK_STR(s.reason, "no healthy node in pool 'math' (1 circuit open); no node serves pool 'general'; "
                        "falling back to node 'c1' of pool 'code'");
}

static void test_nothing_left(void) {
    plan_candidate c[] = {node("m1", "math"), node("c1", "code"), node("c2", "code"), node("g1", "general")};
    for (int i = 0; i < 4; i++) c[i].breaker_allows = 0;
    plan_request r = request("math");
    plan_entry e[4];
    plan_summary s;
    CHECK_EQ_INT(plan_nodes(c, 4, &r, e, &s), 0);
    CHECK_EQ_INT(s.degraded, 1);
    CHECK_STR(s.reason, "no healthy node in pool 'math' (1 circuit open); no healthy node in pool 'general' "
                        "(1 circuit open); 2 other nodes unavailable");
    CHECK_EQ_INT(plan_nodes(c, 0, &r, e, &s), 0);
    CHECK_STR(s.reason, "no node serves pool 'math'; no node serves pool 'general'");
    CHECK_EQ_INT(plan_nodes(c + 1, 1, &r, e, &s), 0);
    CHECK_CONTAINS(s.reason, "; 1 other node unavailable");
}

static void test_general_request(void) {
    plan_candidate c[] = {node("m1", "math"), node("g1", ""), node("g2", "general")};
    c[1].inflight = 1;
    plan_request r = request(PLAN_GENERAL);
    plan_entry e[3];
    plan_summary s;
    plan_nodes(c, 3, &r, e, &s);
    CHECK_EQ_INT(e[0].index, 2);
    CHECK_EQ_INT(e[1].index, 1);
    CHECK_EQ_INT(e[2].index, 0);
    CHECK_EQ_INT(e[0].tier, PLAN_GENERALIST);
    CHECK_EQ_INT(s.degraded, 0);
    c[1].reachable = c[2].reachable = 0;
    r.domain = NULL;
    plan_nodes(c, 3, &r, e, &s);
    CHECK_EQ_INT(s.degraded, 1);
    CHECK_STR(s.reason, "no healthy node in pool 'general' (2 unreachable); falling back to node 'm1' of pool 'math'");
}

int main(void) {
    TEST(test_pool_order);
    TEST(test_score_formula);
    TEST(test_defaults_for_unmeasured);
    TEST(test_load_speed_and_price);
    TEST(test_exclusions_and_degraded_to_general);
    TEST(test_no_specialist_pool);
    TEST(test_fallback_to_any);
    TEST(test_nothing_left);
    TEST(test_general_request);
    return test_done();
}
