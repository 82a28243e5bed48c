/* threadpool: persistent workers that run one task on every thread at once.
 *
 * Inference is a long series of short parallel steps (one per matrix
 * product or attention pass, often tens of microseconds each), so starting
 * threads per step or queueing work items costs more than the work. Here
 * the caller is thread 0 and n-1 workers wait for the next step: they spin
 * briefly (the next step usually follows at once) and then sleep on a
 * condition variable (between tokens, or when the node is idle), so an idle
 * pool uses no CPU. tp_run returns when every thread has finished. */
#ifndef MSOA_ENGINE_THREADPOOL_H
#define MSOA_ENGINE_THREADPOOL_H

/* Runs on every thread with its index ith in [0, nth). */
typedef void (*tp_task)(void *arg, int ith, int nth);

typedef struct threadpool threadpool;

/* n_threads counts the caller; values < 1 mean 1 (no workers). Returns NULL
 * if a worker thread cannot be started. */
threadpool *tp_create(int n_threads);
void tp_destroy(threadpool *tp);
int tp_size(const threadpool *tp);

/* Runs task on all threads and waits for them. Not reentrant: one caller at
 * a time (a pool belongs to one inference context). */
void tp_run(threadpool *tp, tp_task task, void *arg);

/* The part [*lo, *hi) of n items that thread ith of nth should take. */
void tp_split(long n, int ith, int nth, long *lo, long *hi);

#endif
