/* cost: what a request cost on the node that served it, what the same tokens
 * would have cost on the monolithic baseline API, and the difference.
 * Prices are USD per million tokens, as every provider quotes them. */
#ifndef MSOA_COST_H
#define MSOA_COST_H

typedef struct price {
    double in;   /* USD per million input tokens */
    double out;  /* USD per million output tokens */
} price;

typedef struct cost_report {
    double cost_usd;
    double baseline_cost_usd;
    double saved_usd;  /* baseline - cost; negative when the node is dearer */
} cost_report;

double cost_usd(price p, long tokens_in, long tokens_out);
cost_report cost_compare(price node, price baseline, long tokens_in, long tokens_out);

#endif
