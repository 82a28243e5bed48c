/* cost: see cost.h. */
#include "ledger/cost.h"

double cost_usd(price p, long tokens_in, long tokens_out) {
    return ((double)tokens_in * p.in + (double)tokens_out * p.out) / 1e6;
}

cost_report cost_compare(price node, price baseline, long tokens_in, long tokens_out) {
    cost_report r;
    r.cost_usd = cost_usd(node, tokens_in, tokens_out);
    r.baseline_cost_usd = cost_usd(baseline, tokens_in, tokens_out);
    r.saved_usd = r.baseline_cost_usd - r.cost_usd;
    return r;
}
