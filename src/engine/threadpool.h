/* threadpool: persistent workers that share out the work of one step.
 *
 * Inference is a long series of short parallel steps (one per matrix
 * product or attention pass, often tens of microseconds each), so starting
 * threads per step or queueing work items costs more than the work. Here
 * the caller is thread 0 and n-1 workers wait for the next step: they spin
 * briefly (the next step usually follows at once) and then sleep on a
 * condition variable (between tokens, or when the node is idle), so an idle
 * pool uses no CPU.
 *
 * A step is shared, not split in fixed parts: the task takes its work items
 * from a shared counter (tp_claim) until none are left, and a worker joins
 * the step only if the caller has not finished it yet. On a machine whose
 * cores are also busy with other programs, a worker that is not running
 * when a step starts therefore costs nothing: the caller does its share and
 * goes on, instead of waiting a scheduler time slice for a thread that would
 * find nothing left to do. tp_run returns when the work is done and every
 * worker that joined has left.
 *
 * A worker that finds itself on the CPU the caller runs on narrows its own
 * CPU set to the others (see leave_caller_cpu in threadpool.c), unless the
 * pool has more threads than the machine has CPUs or MSOA_PIN_THREADS is
 * "0". */
#ifndef MSOA_ENGINE_THREADPOOL_H
#define MSOA_ENGINE_THREADPOOL_H

#include <stdatomic.h>

/* Runs on the caller (ith 0) and on each worker that joins (ith in
 * [1, nth)); it must take its work with tp_claim, so that any subset of the
 * threads that includes the caller completes it. ith indexes per-thread
 * scratch space: no two threads in a step share one. */
typedef void (*tp_task)(void *arg, int ith, int nth);

typedef struct threadpool threadpool;

/* n_threads counts the caller; values < 1 mean 1 (no workers). Returns NULL
 * if a worker thread cannot be started. */
threadpool *tp_create(int n_threads);
void tp_destroy(threadpool *tp);
int tp_size(const threadpool *tp);

/* Runs task as one step and waits for it. Not reentrant: one caller at a
 * time (contexts sharing a pool take turns). */
void tp_run(threadpool *tp, tp_task task, void *arg);

/* Work sharing: *next counts the items of a step already taken (start it at
 * 0). Takes the next run of items [*lo, *hi) out of n; 0 when none are
 * left. Runs of about 1/16 of the step for 2 threads keep the cost of
 * taking them small and the wait for the last one short. */
int tp_claim(atomic_long *next, long n, long run, long *lo, long *hi);

/* Waits until *v == want (an acquire load): for a step whose items wait
 * for other items (stored with a release store). It spins, yielding the
 * CPU now and then as the pool's threads do between steps. The item waited
 * for must be done by a thread that does not wait itself, so that any
 * subset of the threads still completes the step. */
void tp_wait_until(_Atomic unsigned *v, unsigned want);

/* Work sharing that keeps each thread's memory contiguous: items [0, n)
 * cut in `parts` ranges (one per thread of the pool), thread ith taking
 * runs from the front of its own range, in order, then, once it is empty,
 * runs from the back of the others' (a run is at most half of what is left
 * in its range, so the last ones are small). Why: a thread that streams a matrix's
 * rows in one direction has the rows after its run already prefetched (its
 * kernels prefetch ahead), where runs taken from one shared counter
 * alternate between the threads and every run starts cold. Any subset of
 * the threads still completes the step. Initialise before the step
 * (tp_ranges_init), claim with tp_ranges_claim. */
#define TP_RANGES_MAX 16
typedef struct tp_ranges {
    struct { _Alignas(64) _Atomic unsigned long long lohi; } r[TP_RANGES_MAX];   /* lo << 32 | hi */
    int parts;
} tp_ranges;

/* n < 2^31; parts is capped at TP_RANGES_MAX and at n. */
void tp_ranges_init(tp_ranges *s, long n, int parts);
int tp_ranges_claim(tp_ranges *s, int ith, long run, long *lo, long *hi);

#endif
