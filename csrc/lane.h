/* lane.h: a lane is where tasks of one kind run (loop, background, threads,
 * processes). It owns the admission policy (max_running slots, max_pending
 * waiting queue, on_full), the registry of live tasks and the statistics; the
 * execution itself is delegated to a loop bridge, the thread pool or an
 * external starter (processes).
 *
 * Locking: `mu` guards every field below it. Lock order is GIL -> lane mu ->
 * pool/bridge mutexes; code holding `mu` never waits for the GIL. */
#ifndef OFFLOAD_LANE_H
#define OFFLOAD_LANE_H

#include "common.h"
#include <errno.h>
#include "ring.h"
#include "stats.h"

struct engine_object;
struct task_object;

typedef enum {
    LANE_LOOP = 0,
    LANE_BACKGROUND = 1,
    LANE_THREADS = 2,
    LANE_PROCESSES = 3,
    LANE_COUNT = 4,
} lane_kind;

typedef enum { ON_FULL_REJECT = 0, ON_FULL_DROP = 1, ON_FULL_BLOCK = 2 } on_full_policy;

typedef struct lane {
    lane_kind kind;
    struct engine_object *engine; /* owner (borrowed) */
    pthread_mutex_t mu;
    pthread_cond_t room_cv; /* a waiting slot freed (on_full="block") */
    pthread_cond_t done_cv; /* a task with blocked result() callers finished */
    /* limits */
    Py_ssize_t max_running; /* PY_SSIZE_T_MAX = unbounded */
    Py_ssize_t max_pending; /* PY_SSIZE_T_MAX = unbounded */
    on_full_policy on_full;
    /* admission */
    Py_ssize_t active;      /* tasks holding a running slot */
    Py_ssize_t waiting;     /* tasks in `waiting_q` that are still pending */
    ring waiting_q;         /* tasks without a slot, FIFO (strong refs) */
    ring trash;             /* stale waiting entries to release without `mu` */
    /* registry */
    struct task_object *live_head;
    Py_ssize_t n_pending, n_running;
    Py_ssize_t n_scheduled, n_retrying; /* registered, waiting for their time */
    Py_ssize_t n_overrun;   /* threads whose attempt timed out but still run it */
    lane_stats stats;
    /* loop lanes: module_state.bridge_close_generation at the last scan for
     * dead-loop slots (GIL held) */
    uint64_t reclaim_generation;
} lane;

/* The lane names, indexed by lane_kind: written once, here. */
extern const char *const lane_names[LANE_COUNT];

/* Debug builds: `mu` is held (trylock can only tell that someone holds it). */
#define LANE_ASSERT_LOCKED(l) assert(pthread_mutex_trylock(&(l)->mu) == EBUSY)

void lane_init(lane *l, lane_kind kind, struct engine_object *engine);
/* After fork in the child: fresh locks and an empty registry (old records leak). */
void lane_reset_after_fork(lane *l);
void lane_destroy(lane *l);

/* Accept `t` (GIL held): take a slot and dispatch it, queue it, or apply
 * on_full. Returns 0 when accepted (or dropped: then t is CANCELLED), -1 with
 * an exception set (Full, Closed, MemoryError). */
int lane_submit(lane *l, struct task_object *t);

/* Submit a task created by run() on its first await (GIL held). */
int lane_submit_deferred(struct task_object *t);

/* The lane's half of starting a task (GIL held): pending -> running under `mu`,
 * with its counters. 0 if the task was no longer pending (cancelled). */
int lane_start_task(lane *l, struct task_object *t);

/* What a finished task leaves its lane to do once its own notifications are out. */
typedef struct {
    struct task_object *next; /* inherited the freed slot: to dispatch (new ref) or NULL */
    int has_trash;            /* stale queue entries to release */
} lane_handoff;

/* The lane's half of finishing a registered task (GIL held, `mu` not held):
 * under `mu`, its state and counters, the registry, the slot handed to the next
 * waiting task; then blocked result() callers are woken. Returns 0 if the task
 * was already done, else 1 with *h filled for lane_finish_dispatch. */
int lane_finish_task(lane *l, struct task_object *t, int state, lane_handoff *h);

/* After lane_finish_task: dispatch h->next (its reference is consumed) and
 * release stale queue references. */
void lane_finish_dispatch(lane *l, lane_handoff *h);

/* Controlled tasks (controls.c), GIL held, `mu` not held. */

/* Register a new task that doesn't compete for a slot yet: TASK_SCHEDULED
 * (delay) or TASK_PENDING (waits for its limit_key). -1 with Closed. */
int lane_register_waiting(lane *l, struct task_object *t, int state);

/* Admit a registered task that was scheduled, retrying or waiting for its
 * limit_key: a slot (dispatched), the waiting queue, or on_full (drop:
 * cancelled and reported; reject: failed with Full; block: 1 is returned, the
 * caller tries again later). 0 otherwise. */
int lane_readmit(lane *l, struct task_object *t);

/* A running attempt failed and will be retried: RUNNING -> RETRYING, its
 * slot handed on; the caller dispatches `out` with lane_finish_dispatch. */
void lane_retry_task(lane *l, struct task_object *t, lane_handoff *out);

/* A scheduled or retrying task that is due but waits for its limit_key: PENDING. */
void lane_mark_pending(lane *l, struct task_object *t);

/* Counters of controlled tasks (under `mu`). */
void lane_count_timeout(lane *l, int overrun);
void lane_count_overrun_end(lane *l);

/* The loop a new loop-lane task will run on (its bridge), chosen at spawn. */
int lane_prepare_new(struct task_object *t);

/* Block (GIL released by the caller) up to `slice` seconds for `t` to finish. */
void lane_wait_done_unlocked(lane *l, struct task_object *t, double slice);

/* Release stale queue references (GIL held, `mu` not held). */
void lane_sweep_trash(lane *l);

/* Hand a task that holds a slot to its executor (GIL held, `mu` not held). */
void lane_dispatch(lane *l, struct task_object *t);

/* The Lane Python type: a view of one lane (or of automatic dispatch when
 * kind == -1) with per-call options such as the task name. */
typedef struct {
    PyObject_HEAD
    struct engine_object *engine; /* strong; NULL when following the default */
    struct module_state *st;      /* borrowed: the view's type keeps its module alive */
    int follows_default;          /* works on st->default_engine, read at each call */
    int kind;                     /* lane_kind, or -1 for automatic dispatch */
    PyObject *name;               /* task name override or NULL */
    PyObject *controls;           /* controls.h Controls for its tasks, or NULL */
} lane_view;

/* The type's slots; module.c's exec slot creates it (its table of types). */
extern PyType_Slot Lane_slots[];
PyObject *lane_view_new(struct engine_object *engine, int kind, PyObject *name);
/* A view of the module's default runtime, whichever it is at each call
 * (`offload.spawn`, `offload.threads`, ...); its options() views follow too. */
PyObject *lane_view_new_following(struct module_state *st, int kind);
int lane_parse_name(PyObject *obj, int *kind);

/* How lane_spawn hands the task back. */
typedef enum {
    SPAWN_DETACHED = 0, /* spawn(): runs now; failures nobody awaits are reported */
    SPAWN_DEFERRED = 1, /* run(): submitted when first awaited */
    SPAWN_OBSERVED = 2, /* runs now; the caller takes the outcome (offload.call) */
} spawn_mode;

/* Spawn through a view: shared by Lane.spawn/run and Engine.spawn/run. */
PyObject *lane_spawn(struct engine_object *engine, int kind, PyObject *name, PyObject *controls,
                     spawn_mode mode, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames);

/* The options() view shared by Lane.options and Engine.options (kind == -1:
 * automatic dispatch): a new Lane view with the given name and/or lane. */
PyObject *lane_options(struct engine_object *e, int kind, PyObject *default_name,
                       PyObject *controls, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames);

/* A lane name ("loop", "background", "threads", "processes") to its kind; -1
 * with ValueError/TypeError set otherwise. */
int lane_parse_name(PyObject *obj, int *kind);

/* One lane's counters and percentiles as a new dict (GIL held). */
PyObject *lane_stats_dict(lane *l);

#endif
