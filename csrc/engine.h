/* engine.h: the runtime core (offload._engine.Engine, the base of
 * offload.Runtime): lanes, the thread pool, background loops, the home loop,
 * open/closed state and fork handling. */
#ifndef OFFLOAD_ENGINE_H
#define OFFLOAD_ENGINE_H

#include "bridge.h"
#include "common.h"
#include "history.h"
#include "lane.h"
#include "module.h"
#include "threadpool.h"
#include "timer.h"

typedef struct background_loop {
    struct engine_object *engine;
    bridge_object *bridge; /* created before the thread, attached by it */
    PyObject *loop;        /* set by the thread once running */
    int index;
    int state;             /* 0 not started, 1 starting/running, 2 exited */
} background_loop;

typedef struct engine_object {
    PyObject_HEAD
    module_state *st;
    lane lanes[LANE_COUNT];
    thread_pool pool;
    PyObject *views[LANE_COUNT]; /* the Lane objects: loop, background, ... */
    PyObject *auto_view;         /* spawn()/run() dispatch */
    PyObject *starters[LANE_COUNT];  /* external executors (processes) */
    PyObject *preparers[LANE_COUNT]; /* check + serialize inputs at the call site */
    PyObject *killers[LANE_COUNT];   /* stop the worker running a task (timeouts) */
    /* task controls (controls.c), GIL-protected */
    timer_service timer;
    PyObject *keys;      /* dict: dedup key -> the live task holding it */
    PyObject *limiters;  /* dict: limit_key -> limiter capsule */
    PyObject *attempts;  /* dict: task name -> [attempts, retries] */
    uint64_t rng;        /* xorshift state for backoff jitter */
    history finished;    /* records of finished tasks, for lookup */
    /* loops */
    PyObject *home_loop;
    bridge_object *home_bridge;
    /* dict: loop address -> weakref to that loop's Bridge. Weak, so a loop
     * that closes (its reader callback, the bridge's last owner, goes with
     * its selector) frees its bridge and fd, and the bridge frees the loop. */
    PyObject *bridges;
    PyObject *last_bridge_ref;   /* weakref: one-entry cache, or NULL */
    PyObject *loop_factory;
    background_loop *bg;
    int n_bg;
    unsigned int bg_next;        /* round robin */
    pthread_mutex_t bg_mu;       /* guards bg[].state and bg_alive */
    pthread_cond_t bg_cv;
    int bg_alive;
    /* life cycle */
    int initialised;             /* options applied (Engine.__init__ ran): n_bg > 0 */
    int started;
    int closed;
    int stop_requested;
    uint64_t fork_generation;
    PyObject *weakreflist;
} engine_object;

/* The type's slots; module.c's exec slot creates it (its table of types). */
extern PyType_Slot Engine_slots[];

/* The bridge of the loop running on this thread, created on first use (borrowed). */
bridge_object *engine_bridge_for_running_loop(engine_object *e, PyObject *loop);
/* The bridge of this thread's running loop (borrowed), or NULL: with an
 * exception set on error, without one when no loop runs here. Fast path:
 * the last bridge used, if its loop runs on this thread. */
bridge_object *engine_current_bridge(engine_object *e);
/* Pick a background loop's bridge (starting loop threads lazily), borrowed. */
bridge_object *engine_background_bridge(engine_object *e);
/* Raise Closed/RuntimeError if the engine can't accept work; -1 on error. */
int engine_check_open(engine_object *e);
/* RuntimeError (-1) for an engine whose __init__ never ran (a Runtime subclass
 * that forgot super().__init__()): every entry point calls it first. */
int engine_check_ready(engine_object *e);

/* Finish as cancelled the live tasks of lanes [first, last] whose event loop
 * has closed under them (they can never run again, yet hold their slots).
 * Returns a new list of those tasks. */
PyObject *engine_abandon_dead_loops(engine_object *e, int first, int last);
/* Close the bridges of this engine's loops that are closed (their items will
 * never run: unstarted tasks fail, undelivered failures are reported). -1 on
 * error. GIL held. */
int engine_close_dead_bridges(engine_object *e);

/* Wall-clock time in ns, with the timer's test skew (GIL held). */
int64_t engine_wall_ns(engine_object *e);

/* The message of offload.Closed: what happened, then what to do. */
#define ENGINE_CLOSED_MESSAGE                                                     \
    "the offload runtime is shut down and accepts no new tasks; spawn before "     \
    "shutdown() (e.g. inside the app's lifespan), or create a new offload.Runtime()"

#endif
