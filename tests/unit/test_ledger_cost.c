/* Tests for cost: per-million pricing and savings against the baseline. */
#include <math.h>

#include "ledger/cost.h"
#include "testlib.h"

static int near(double a, double b) { return fabs(a - b) < 1e-12; }

static void test_cost(void) {
    price p = {3, 10};
    CHECK(near(cost_usd(p, 1000000, 0), 3));
    CHECK(near(cost_usd(p, 0, 1000000), 10));
    CHECK(near(cost_usd(p, 1000, 500), 0.003 + 0.005));
    CHECK(near(cost_usd(p, 0, 0), 0));
}

static void test_compare(void) {
    price node = {0.1, 0.2}, base = {3, 10};
    cost_report r = cost_compare(node, base, 2000, 1000);
    CHECK(near(r.cost_usd, 0.0002 + 0.0002));
    CHECK(near(r.baseline_cost_usd, 0.006 + 0.01));
    CHECK(near(r.saved_usd, r.baseline_cost_usd - r.cost_usd));
    /* a node dearer than the baseline saves a negative amount */
    cost_report dear = cost_compare(base, node, 10, 10);
    CHECK(dear.saved_usd < 0);
}

int main(void) {
    TEST(test_cost);
    TEST(test_compare);
    return test_done();
}
