/* budget: the retry token bucket and jittered backoff; see budget.h. */
#include "mesh/budget.h"

#include <math.h>

void budget_config_default(budget_config *c) {
    c->ratio = 0.1;
    c->cap = 10;
    c->initial = -1;
    c->per_second = 0;
}

static long long to_milli(double tokens) {
    return tokens > 0 ? llround(tokens * 1000) : 0;
}

void budget_init(budget *b, const budget_config *cfg) {
    budget_config c;
    if (cfg)
        c = *cfg;
    else
        budget_config_default(&c);
    b->ratio_milli = to_milli(c.ratio);
    b->cap_milli = to_milli(c.cap);
    b->per_second_milli = to_milli(c.per_second);
    atomic_store(&b->refilled_ms, 0);
    long long initial = c.initial < 0 ? b->cap_milli : to_milli(c.initial);
    atomic_store(&b->milli, initial < b->cap_milli ? initial : b->cap_milli);
}

static void add(budget *b, long long milli) {
    long long old = atomic_load(&b->milli), next;
    do {
        next = old + milli;
        if (next > b->cap_milli) next = b->cap_milli;
        if (next == old) return;
    } while (!atomic_compare_exchange_weak(&b->milli, &old, next));
}

void budget_deposit(budget *b) {
    add(b, b->ratio_milli);
}

void budget_refill(budget *b, uint64_t now_ms) {
    if (!b->per_second_milli) return;
    uint_least64_t last = atomic_load(&b->refilled_ms);
    /* whoever moves the clock on adds what is due; the others add nothing */
    if (now_ms <= last || !atomic_compare_exchange_strong(&b->refilled_ms, &last, now_ms) || !last) return;
    add(b, (long long)((now_ms - last) * (uint64_t)b->per_second_milli / 1000));
}

int budget_try_withdraw(budget *b) {
    long long old = atomic_load(&b->milli);
    do {
        if (old < 1000) return 0;
    } while (!atomic_compare_exchange_weak(&b->milli, &old, old - 1000));
    return 1;
}

double budget_tokens(budget *b) {
    return (double)atomic_load(&b->milli) / 1000;
}

uint32_t backoff_ms(unsigned attempt, uint32_t base_ms, uint32_t cap_ms, uint32_t rnd) {
    uint64_t ceiling = attempt >= 32 ? UINT64_MAX : (uint64_t)base_ms << attempt;
    if (ceiling > cap_ms) ceiling = cap_ms;
    /* scaled rather than taken modulo, so every delay is equally likely */
    return (uint32_t)(((uint64_t)rnd * (ceiling + 1)) >> 32);
}
