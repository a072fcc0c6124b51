/* controls.h: task controls: timeouts, retries with backoff, delays (`delay=`,
 * `at=`), dedup keys and per-key concurrency limits.
 *
 * A Lane view carries an immutable `Controls` object (options() builds it,
 * Python validates the values); a task spawned through it gets a `task_ctl`
 * record, allocated only then, so a task without controls costs one NULL
 * pointer. The record holds the task's one timer node: the wait before it is
 * admitted (delay, retry backoff) or the timeout of the running attempt,
 * never two at once.
 *
 * Life of a controlled task (all with the GIL held):
 *   spawn -> key check (join / reject / replace)
 *         -> scheduled (delay) --timer--> enter
 *         -> enter: per-key limit gate (waits in the key's FIFO) -> lane admission
 *   attempt starts (lane_start_task) -> attempt++, timeout armed
 *   attempt fails -> retry? -> retrying --timer--> enter (a new attempt)
 *                 -> else the task finishes (only this failure is reported)
 *   timeout fires -> loop lanes: the coroutine is cancelled and the attempt
 *   fails with TimeoutError; threads: it fails at once, the thread counts as
 *   overrun until the call returns and its result is discarded; processes:
 *   the worker is killed and replaced. */
#ifndef OFFLOAD_CONTROLS_H
#define OFFLOAD_CONTROLS_H

#include "common.h"
#include "timer.h"

struct engine_object;
struct task_object;

typedef enum { DUP_JOIN = 0, DUP_REJECT = 1, DUP_REPLACE = 2 } on_duplicate_policy;

/* The validated options (immutable; shared by views and tasks). */
typedef struct {
    PyObject_HEAD
    double timeout;            /* seconds; < 0: none */
    int32_t retries;           /* extra attempts after the first */
    double backoff_initial;    /* seconds before the first retry */
    double backoff_factor;     /* >= 1 */
    double backoff_max;        /* cap on one wait */
    uint8_t backoff_jitter;    /* full jitter: uniform in [0, wait] */
    PyObject *retry_on;        /* tuple of exception types */
    double delay;              /* seconds; < 0: none */
    double at;                 /* wall-clock epoch seconds; nan: none */
    PyObject *key;             /* str or NULL */
    uint8_t on_duplicate;      /* on_duplicate_policy */
    PyObject *limit_key;       /* str or NULL */
    Py_ssize_t limit;          /* with limit_key */
    PyObject *spec;            /* dict: the options as validated (options() merges into it) */
} controls_object;

extern PyType_Slot Controls_slots[];

/* Per-task state of a controlled task (owned by the task, GIL-protected). */
typedef struct task_ctl {
    controls_object *controls; /* strong */
    timer_node node;           /* delay / retry wait / timeout of the running attempt */
    uint32_t attempt;          /* attempts started */
    uint32_t timed_out;        /* the attempt whose timeout fired, 0 if none */
    PyObject *fn, *fn_args, *fn_kwargs; /* async function called again for each attempt */
    PyObject *key;             /* the dedup key this task holds in engine->keys, or NULL */
    PyObject *limiter;         /* its limit_key's limiter capsule while waiting/holding */
    uint8_t limit_state;       /* LIMIT_NONE, LIMIT_WAITING, LIMIT_HOLDING */
    double retry_delay;        /* offload.Retry(delay=) of the last attempt, < 0: none */
    int64_t due;               /* engine clock ns when scheduled / retrying, else 0 */
} task_ctl;

enum { LIMIT_NONE = 0, LIMIT_WAITING = 1, LIMIT_HOLDING = 2 };

/* Spawn hooks, called by lane_spawn only when the view has controls. */

/* Refuse what these controls can't do with this target (a coroutine object
 * can't be retried: it runs once). -1 with ValueError. */
int controls_check_target(controls_object *c, int is_coroutine_object);

/* The live task holding c->key on `e`, for on_duplicate (new reference), or
 * NULL (none, or -1 via *err with an exception: reject). */
struct task_object *controls_find_duplicate(struct engine_object *e, controls_object *c,
                                            int *err);

/* Give `t` its controls record; fn/args/kwargs: the async function to call
 * again per attempt (NULL for other targets). -1 with MemoryError. */
int controls_attach(struct task_object *t, controls_object *c, PyObject *fn, PyObject *args,
                    PyObject *kwnames_values);

/* Submit a new controlled task (instead of lane_submit): key, delay, limit
 * gate, admission. -1 with an exception (Closed, Full...) if refused. */
int controls_submit(struct task_object *t);

/* Hooks from task.c / lane.c / threadpool.c (GIL held). */

/* An attempt started (the task just became RUNNING): count it, arm its timeout. */
void controls_attempt_started(struct task_object *t);

/* task_finish's first step for a controlled task that is not done: may turn
 * the outcome into TimeoutError (its attempt timed out) or into a retry.
 * Returns 1 when the task goes on to another attempt (task_finish stops
 * there), 0 to finish with *state / *outcome (possibly replaced: a new
 * reference in *owned, which the caller releases). */
int controls_before_finish(struct task_object *t, int *state, PyObject **outcome,
                           PyObject **owned);

/* The task finished for good: disarm, drop its key, free its key slot. */
void controls_after_finish(struct task_object *t);

/* A pool thread's call for `attempt` returned: 1 if that attempt already
 * ended (timed out): discard its outcome; the thread stops counting as overrun. */
int controls_discard_late(struct task_object *t, uint32_t attempt);

/* Whether the running attempt's timeout fired (its cancellation is offload's). */
int controls_attempt_timed_out(struct task_object *t);

/* Whether a queued BRIDGE_CANCEL still applies to the running attempt. */
int controls_cancel_applies(struct task_object *t);

/* Cancel of a scheduled or retrying task: disarm its timer. */
void controls_on_cancel(struct task_object *t);

/* Free the record (task dealloc / clear). */
void controls_free(struct task_object *t);
int controls_traverse(struct task_object *t, visitproc visit, void *arg);

/* A due scheduled or retrying task (GIL held; the caller keeps its reference):
 * through its key's limit to its lane's admission. Also run by a loop draining
 * a BRIDGE_FIRE and by a pool worker for a task the timer queued without the GIL. */
void controls_fire_start(struct task_object *t);

/* Timer leftovers at engine stop: a task that can no longer start is cancelled. */
void controls_timer_leftover(timer_node *n, PyObject *owner);

#endif
