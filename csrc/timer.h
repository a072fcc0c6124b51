/* timer.h: the engine's one timer structure, shared by delays, retry waits,
 * timeouts and periodic schedules.
 *
 * A binary min-heap of deadlines on the engine clock (CLOCK_MONOTONIC plus a
 * skew that only tests move), served by one thread per engine. The thread
 * sleeps on a condition variable until the earliest deadline: with nothing
 * armed it sleeps until something is (and exits after 10 s of that; the next
 * arm starts it again), so an idle runtime never wakes up.
 *
 * Why a heap and not a timing wheel: arming, cancelling and firing are
 * O(log n) with one pointer per armed timer (a node lives inside its owner),
 * the earliest deadline is always at hand for the sleep, and deadlines range
 * from milliseconds (timeouts) to months (`at=`, cron), which a wheel only
 * covers with several levels and cascading.
 *
 * Every node lives inside its owner (a task's controls, a TimerHandle) and the
 * heap holds a strong reference to that owner while the node is armed.
 *
 * Locking: the heap changes only with `mu` held, and with the GIL held too,
 * except for one case: without the GIL, the timer thread may pop a due
 * TIMER_TASK_START node and hand its owner's reference to the task's loop
 * (bridge inbox) or to an idle pool worker (controls_fire_nogil), reading only
 * task fields fixed before the node was armed; the loop or the worker admits
 * the task with the GIL it holds anyway. That keeps a busy event loop, which
 * holds the GIL nearly all the time, from delaying every timer by the GIL
 * hand-off (CPython restarts a waiter's 5 ms switch interval at every release).
 * Everything else is ordered by the GIL (an owner may re-arm its node the
 * moment it fires); a canceller's disarm waits on `mu`, so the owner is never
 * finished under the timer thread's feet. Lock order: GIL -> mu -> lane mu ->
 * pool / bridge mutex. */
#ifndef OFFLOAD_TIMER_H
#define OFFLOAD_TIMER_H

#include "common.h"

struct engine_object;

typedef enum {
    TIMER_TASK_START = 1,   /* a scheduled or retrying task is due to be admitted */
    TIMER_TASK_TIMEOUT = 2, /* a running attempt reached its timeout */
    TIMER_CALLBACK = 3,     /* a TimerHandle's callback (periodic schedules) */
    TIMER_TASK_READMIT = 4, /* a due task found its lane full (on_full="block"): try again */
} timer_kind;

typedef struct timer_node {
    int64_t due;      /* engine clock, ns */
    uint64_t seq;     /* arming order: equal deadlines fire first-armed first */
    Py_ssize_t index; /* position in the heap; -1 when not armed */
    PyObject *owner;  /* strong while armed */
    uint32_t attempt; /* TIMER_TASK_TIMEOUT: the attempt it times */
    uint8_t kind;     /* timer_kind */
} timer_node;

typedef struct timer_service {
    pthread_mutex_t mu;
    pthread_cond_t wake_cv; /* earliest deadline changed, or stop (monotonic clock) */
    pthread_cond_t exit_cv; /* the thread exited */
    timer_node **heap;
    Py_ssize_t len, cap;
    uint64_t next_seq;
    int64_t skew_ns;   /* added to CLOCK_MONOTONIC: tests move the clock, not sleep */
    int thread_alive;  /* started and not yet exited */
    int stopping;
    uint64_t fired;    /* nodes fired so far (GIL held) */
    struct engine_object *engine;
} timer_service;

void timer_init(timer_service *ts, struct engine_object *engine);
/* After fork in the child: no thread, an empty heap (owners leak by design). */
void timer_reset_after_fork(timer_service *ts);
void timer_destroy(timer_service *ts);

/* The engine clock in ns (monotonic + test skew). */
int64_t timer_now(timer_service *ts);

static inline void
timer_node_init(timer_node *n)
{
    n->due = 0;
    n->seq = 0;
    n->index = -1;
    n->owner = NULL;
    n->attempt = 0;
    n->kind = 0;
}

static inline int
timer_node_armed(const timer_node *n)
{
    return n->index >= 0;
}

/* Arm `n` (not armed) to fire at `due` (GIL held). Takes a new reference to
 * `owner`. Starts the timer thread on first use. -1 with MemoryError or
 * RuntimeError (no thread could start, or the service is stopping). */
int timer_arm(timer_service *ts, timer_node *n, PyObject *owner, int64_t due, timer_kind kind);

/* Disarm `n` if armed (GIL held). Returns the owner's reference the heap held
 * (the caller releases it, outside any lock) or NULL if it wasn't armed. */
PyObject *timer_disarm(timer_service *ts, timer_node *n);

/* Ask the thread to exit (GIL held); nodes still armed are handed to
 * `leftover` one by one (the callback receives the owner's reference). */
void timer_request_stop(timer_service *ts, void (*leftover)(timer_node *n, PyObject *owner));

/* Wait (GIL released by the caller) up to `timeout` s for the thread to exit. */
int timer_join(timer_service *ts, double timeout);

/* How many nodes are armed (a snapshot). */
Py_ssize_t timer_armed_count(timer_service *ts);

/* What a fired node asks for, run by the timer thread with the GIL held; the
 * callee consumes `owner` (the heap's reference). Defined by controls.c. */
/* Without the GIL, `mu` held: hand a due TIMER_TASK_START owner to where it
 * runs; 1 if it took the heap's reference, 0 to fire it with the GIL. */
int controls_fire_nogil(PyObject *owner);
void timer_fire(struct engine_object *e, timer_kind kind, PyObject *owner, uint32_t attempt,
                int64_t due);

/* The TimerHandle type (Engine._call_later): a callback at a time. */
typedef struct {
    PyObject_HEAD
    timer_node node;
    struct engine_object *engine; /* strong */
    PyObject *callback;           /* strong until fired or cancelled */
    uint8_t cancelled;
} timer_handle;

extern PyType_Slot TimerHandle_slots[];
PyObject *timer_handle_new(struct engine_object *e, double seconds, PyObject *callback);
/* Run a fired handle's callback (consumes the heap's reference to it). */
void timer_handle_fire(timer_handle *h);

#endif
