/* clock: see clock.h. */
#include "base/clock.h"

#include <time.h>

uint64_t clock_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double clock_now_ms(void) { return (double)clock_now_ns() / 1e6; }

uint64_t clock_now_ms_u64(void) { return clock_now_ns() / 1000000u; }

int64_t clock_unix_s(void) { return (int64_t)time(NULL); }
