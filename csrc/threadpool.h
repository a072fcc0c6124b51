/* threadpool.h: the C thread pool behind the `threads` lane.
 *
 * Worker threads are plain pthreads with their own Python thread state; they
 * hold the GIL only while running Python code and run queued tasks back to
 * back while work is available (one GIL hand-off per burst, not per task).
 * The pool grows on demand up to `max_threads` and idle threads beyond
 * `min_threads` exit after `idle_timeout`.
 *
 * Growth policy: a monitor thread (no GIL while it watches) adds a worker
 * when queued work has waited GROW_AFTER (1 ms) while no worker was free.
 * Workers blocked in I/O or sleep thus get company within a millisecond,
 * while GIL-bound bursts, which one worker drains quickly, don't start
 * threads that would only fight over the GIL. */
#ifndef OFFLOAD_THREADPOOL_H
#define OFFLOAD_THREADPOOL_H

#include "common.h"
#include "ring.h"

struct engine_object;
struct task_object;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* work arrived or stop requested */
    pthread_cond_t exit_cv;  /* a worker exited */
    pthread_cond_t monitor_cv; /* work queued while no worker is idle */
    ring ready;              /* tasks holding a slot, waiting for a worker (strong refs) */
    int max_threads, min_threads;
    double idle_timeout;
    int threads;             /* alive */
    int idle;                /* blocked in work_cv */
    int wakeups;             /* signals sent but not yet consumed */
    int busy;                /* running a task */
    int starting;            /* created, not yet looking for work */
    unsigned long named;     /* workers named so far (GIL held): offload-threads-N */
    int stopping;
    int monitor_alive;       /* the growth monitor thread runs */
    int monitor_watching;    /* it already re-checks within GROW_AFTER: don't signal it */
    struct engine_object *engine;
} thread_pool;

void pool_init(thread_pool *p, struct engine_object *engine);
void pool_reset_after_fork(thread_pool *p);
void pool_destroy(thread_pool *p);
/* Queue a task that holds a slot (steals the reference). GIL held. */
int pool_submit(thread_pool *p, struct task_object *t);
/* The timer thread, without the GIL: queue a due scheduled or retrying task
 * (handing over the caller's reference) if a worker is idle to take it; the
 * worker admits it to the lane with the GIL it takes anyway (one GIL
 * acquisition instead of two). -1 (nothing done) otherwise. */
int pool_push_due_nogil(thread_pool *p, struct task_object *t);
/* Ask every worker to exit once the queue is empty. */
void pool_request_stop(thread_pool *p);
/* Wait (GIL released) up to `timeout` seconds for all workers to exit. */
int pool_join(thread_pool *p, double timeout);
/* The threads-lane task whose callable the calling pool thread is running (borrowed,
 * GIL held), or NULL on any other thread: lets drain/close tell they run inside one. */
struct task_object *pool_task_running_here(void);

#endif
