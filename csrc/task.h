/* task.h: the per-task record (offload.Task) and its life cycle.
 *
 * A task is created by a lane, lives in its lane's registry (a strong
 * reference the GC never sees, so it can't be collected mid-flight) and is
 * finished exactly once by task_finish(), which updates the lane, wakes every
 * waiter and reports a failure nobody else will see. */
#ifndef OFFLOAD_TASK_H
#define OFFLOAD_TASK_H

#include "common.h"

struct engine_object;
struct lane;
struct module_state;

typedef enum {
    TASK_PENDING = 0,   /* accepted, waiting for a slot or a worker */
    TASK_RUNNING = 1,
    TASK_SCHEDULED = 2, /* delay= / at=: not admitted before its time */
    TASK_RETRYING = 3,  /* an attempt failed; waiting for the next */
    TASK_SUCCEEDED = 4, /* the done states: from here on */
    TASK_FAILED = 5,
    TASK_CANCELLED = 6,
    TASK_STATE_COUNT = 7,
} task_state;

/* flags */
#define TF_DEFERRED 0x01       /* created by run(): submitted when first awaited */
#define TF_HAS_SLOT 0x02       /* holds one of the lane's max_running slots */
#define TF_OBSERVED 0x04       /* an awaiter will receive the outcome: don't log it */
#define TF_CANCEL_ON_AWAIT 0x08 /* cancelling the await cancels the task (run()) */
#define TF_IS_CORO 0x10        /* target is a coroutine (loop lanes) */
#define TF_DROPPED 0x20        /* finished as cancelled by on_full="drop" */
#define TF_WAITING 0x40        /* sits in the lane's waiting queue (no slot yet) */

typedef struct task_object {
    PyObject_HEAD
    struct engine_object *engine; /* strong */
    struct lane *lane;            /* inside engine */
    struct task_object *live_prev, *live_next; /* registry links (lane mutex) */
    PyObject *target;    /* callable, or the coroutine to run */
    PyObject *args;      /* tuple or NULL */
    PyObject *kwargs;    /* dict or NULL */
    PyObject *context;   /* contextvars.Context copied at spawn */
    PyObject *name;      /* NULL until asked for / finished: derived from target */
    PyObject *outcome;   /* result value, or the exception */
    PyObject *bridge;    /* loop lanes: the Bridge of the loop it runs on */
    PyObject *runner;    /* loop lanes: the asyncio.Task driving it, while running */
    PyObject *waiters;   /* list: futures (awaiters) and callables (done callbacks) */
    struct task_ctl *ctl; /* controls (timeout, retries, delay, keys) or NULL */
    uint64_t id;
    int64_t t_submit, t_start, t_end;
    uint8_t state;
    uint8_t flags;
    uint8_t sync_waited;  /* a thread blocks in result()/_wait() on it (lane mutex) */
    uint8_t cancel_requested; /* cancel() was called through offload (GIL) */
    uint8_t claimed;          /* target is in module_state.claimed_coros (GIL) */
    uint8_t delivered;        /* a failure was raised to / reported for a caller (GIL) */
} task_object;

/* The type's slots; module.c's exec slot creates it (its table of types). */
extern PyType_Slot Task_slots[];

/* A new pending task owned by the caller (one reference). Steals nothing. */
task_object *task_new(struct engine_object *engine, struct lane *lane, PyObject *target,
                      PyObject *args, PyObject *kwargs, PyObject *name, int flags);

/* Move the task to RUNNING. Returns 0 if it was no longer pending (cancelled). */
int task_mark_running(task_object *t);

/* Finish a pending or running task (GIL held). `outcome` is borrowed: the
 * result for SUCCEEDED, the exception for FAILED, NULL for CANCELLED.
 * Returns 1 if this call finished it, 0 if it was already done. */
int task_finish(task_object *t, task_state state, PyObject *outcome);

/* Finish from the current exception (clears it): FAILED, or CANCELLED for
 * asyncio.CancelledError. */
void task_finish_from_error(task_object *t);

/* Record that the task owns the coroutine object the caller passed (its
 * target), or forget it once the task lets go of it. */
int task_claim_coroutine(task_object *t);
void task_unclaim_coroutine(task_object *t);

/* coroutine.close() that keeps the caller's pending exception intact. */
void task_close_coroutine(struct module_state *st, PyObject *coro);

/* Resolve one awaiter future on its loop's thread (called by bridges). */
void task_resolve_future(struct module_state *st, PyObject *fut);

/* Flag the task as counted by its lane's registry (lane mutex held). */
void task_set_registered(task_object *t);

/* Wake `obj` (an awaiter or an asyncio future) through bridge `b` when the
 * task ends. GIL held. 0: added; 1: the task has already ended (nothing was
 * added, no wakeup will come); -1: error. */
struct bridge_object;
int task_add_waiter(task_object *t, struct bridge_object *b, PyObject *obj);

/* The outcome of a finished task: a new reference to the result, or NULL
 * with its exception (or CancelledError) set. Marks the failure delivered. */
PyObject *task_outcome_value(task_object *t);

/* An awaiter that was to receive the outcome went away without it (its
 * coroutine was cancelled after the task ended): a failure nobody got is
 * reported now, so it is never lost. */
void task_outcome_abandoned(task_object *t);
PyObject *task_raise_outcome(task_object *t);

/* Request cancellation; same meaning as Task.cancel(). -1 on error. */
int task_cancel(task_object *t);

/* The display name (new reference): the override, else the target's __qualname__. */
PyObject *task_name(task_object *t);

/* The lookup dict of a live task (history.h's fields; `task` is itself). */
PyObject *task_info_dict(task_object *t, int64_t wall_minus_mono);

static inline int
task_is_done(const task_object *t)
{
    return t->state >= TASK_SUCCEEDED;
}

#endif
