/* clock: monotonic and wall time in the units msoa reports. */
#ifndef MSOA_CLOCK_H
#define MSOA_CLOCK_H

#include <stdint.h>

uint64_t clock_now_ns(void);     /* monotonic, for durations */
double clock_now_ms(void);       /* monotonic, milliseconds */
uint64_t clock_now_ms_u64(void); /* monotonic, whole milliseconds */
int64_t clock_unix_s(void);      /* wall clock, for `created` fields */

#endif
