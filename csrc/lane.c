/* lane.c: admission (slots, waiting queue, on_full), the registry of live
 * tasks, dispatch to executors, and the Lane Python type with spawn/run. */
#include "common.h" /* first: Python.h sets the feature macros */
#include <errno.h>

#include "bridge.h"
#include "controls.h"
#include "engine.h"
#include "lane.h"
#include "module.h"
#include "runner.h"
#include "task.h"
#include "threadpool.h"

/* ------------------------------------------------------------------------ */
/* core                                                                      */

const char *const lane_names[LANE_COUNT] = {"loop", "background", "threads", "processes"};

/* Fresh locks, no task admitted, registered or counted: a new lane, and the
 * child's lanes after fork. */
static void
lane_reset(lane *l)
{
    pthread_mutex_init(&l->mu, NULL);
    offload_cond_init(&l->room_cv);
    offload_cond_init(&l->done_cv);
    l->active = l->waiting = 0;
    ring_init(&l->waiting_q);
    ring_init(&l->trash);
    l->live_head = NULL;
    l->n_pending = l->n_running = 0;
    l->n_scheduled = l->n_retrying = l->n_overrun = 0;
    lane_stats_reset(&l->stats);
}

void
lane_init(lane *l, lane_kind kind, engine_object *engine)
{
    l->kind = kind;
    l->engine = engine;
    l->max_running = PY_SSIZE_T_MAX;
    l->max_pending = PY_SSIZE_T_MAX;
    l->on_full = ON_FULL_REJECT;
    lane_reset(l);
}

void
lane_reset_after_fork(lane *l)
{
    /* The parent's threads don't exist here; their records are abandoned
     * (leaked on purpose: touching them could deadlock on parent locks). */
    lane_reset(l);
}

/* The stats identity (tests/engine/test_stats.py), at every release of `mu`. */
static void
lane_assert_accounted(lane *l)
{
    LANE_ASSERT_LOCKED(l);
    assert(l->n_pending >= 0 && l->n_running >= 0 && l->active >= 0 && l->waiting >= 0);
    assert(l->n_scheduled >= 0 && l->n_retrying >= 0 && l->n_overrun >= 0);
    assert(l->stats.submitted == l->stats.succeeded + l->stats.failed + l->stats.cancelled +
                                     l->stats.rejected + l->stats.dropped +
                                     (uint64_t)l->n_pending + (uint64_t)l->n_running +
                                     (uint64_t)l->n_scheduled + (uint64_t)l->n_retrying);
    (void)l;
}

void
lane_destroy(lane *l)
{
    /* Only reached when no task references the engine: the queue is empty. */
    ring_free(&l->waiting_q);
    ring_free(&l->trash);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->room_cv);
    pthread_cond_destroy(&l->done_cv);
}

static void
registry_link(lane *l, task_object *t)
{
    t->live_prev = NULL;
    t->live_next = l->live_head;
    if (l->live_head) {
        l->live_head->live_prev = t;
    }
    l->live_head = t;
}

static void
registry_unlink(lane *l, task_object *t)
{
    if (t->live_prev) {
        t->live_prev->live_next = t->live_next;
    }
    else if (l->live_head == t) {
        l->live_head = t->live_next;
    }
    if (t->live_next) {
        t->live_next->live_prev = t->live_prev;
    }
    t->live_prev = t->live_next = NULL;
}

/* Pop the first still-pending task of the waiting queue. Entries of tasks
 * cancelled while waiting are stale: they move to `trash`, released later by
 * lane_sweep_trash() without the mutex (a finalizer could re-enter the lane). */
static task_object *
waiting_pop_locked(lane *l)
{
    task_object *t;
    while ((t = ring_pop(&l->waiting_q)) != NULL) {
        t->flags &= (uint8_t)~TF_WAITING;
        if (t->state == TASK_PENDING) {
            l->waiting--;
            return t; /* the queue's reference moves to the caller */
        }
        if (ring_push(&l->trash, t) < 0) {
            /* Out of memory: leak this one reference rather than risk re-entry. */
            continue;
        }
    }
    return NULL;
}

/* No task waits any more: every entry left in waiting_q is stale (cancelled
 * while queued). Nothing would pop them (a pop happens only while some task
 * waits), so they would keep their tasks alive forever: move them to `trash`. */
static void
lane_discard_stale_locked(lane *l)
{
    LANE_ASSERT_LOCKED(l);
    task_object *t;
    while ((t = ring_pop(&l->waiting_q)) != NULL) {
        t->flags &= (uint8_t)~TF_WAITING;
        if (ring_push(&l->trash, t) < 0) {
            continue; /* out of memory: leak this one reference rather than risk re-entry */
        }
    }
}

static task_object *
lane_release_locked(lane *l, task_object *t)
{
    LANE_ASSERT_LOCKED(l);
    registry_unlink(l, t);
    if (!(t->flags & TF_HAS_SLOT)) {
        if (l->on_full == ON_FULL_BLOCK) {
            pthread_cond_signal(&l->room_cv);
        }
        return NULL;
    }
    t->flags &= (uint8_t)~TF_HAS_SLOT;
    l->active--;
    task_object *next = l->waiting ? waiting_pop_locked(l) : NULL;
    if (next != NULL) {
        l->active++;
        next->flags |= TF_HAS_SLOT;
    }
    if (l->on_full == ON_FULL_BLOCK) {
        pthread_cond_signal(&l->room_cv);
    }
    return next;
}

int
lane_start_task(lane *l, task_object *t)
{
    assert(PyGILState_Check());
    pthread_mutex_lock(&l->mu);
    if (t->state != TASK_PENDING) {
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    t->state = TASK_RUNNING;
    t->t_start = offload_now_ns();
    l->n_pending--;
    l->n_running++;
    hist_record(&l->stats.queue_wait, t->t_start - t->t_submit);
    lane_assert_accounted(l);
    pthread_mutex_unlock(&l->mu);
    if (t->ctl != NULL) {
        controls_attempt_started(t);
    }
    return 1;
}

/* Under `mu`: the task's final state and the lane's counters; returns the task
 * that inherits the freed slot (new reference) or NULL. */
static task_object *
lane_finish_locked(lane *l, task_object *t, task_state state)
{
    LANE_ASSERT_LOCKED(l);
    int64_t now = offload_now_ns();
    switch (t->state) {
    case TASK_RUNNING:
        l->n_running--;
        hist_record(&l->stats.run_time, now - t->t_start);
        break;
    case TASK_SCHEDULED: l->n_scheduled--; break;
    case TASK_RETRYING: l->n_retrying--; break;
    default:
        assert(t->state == TASK_PENDING);
        l->n_pending--;
        if (t->flags & TF_WAITING) {
            l->waiting--; /* its entry in waiting_q is skipped when popped */
            if (l->waiting == 0) {
                lane_discard_stale_locked(l);
            }
        }
        break;
    }
    t->state = (uint8_t)state;
    t->t_end = now;
    switch (state) {
    case TASK_SUCCEEDED: l->stats.succeeded++; break;
    case TASK_FAILED: l->stats.failed++; break;
    default:
        if (t->flags & TF_DROPPED) {
            l->stats.dropped++; /* a scheduled or retried task that found the lane full */
        }
        else {
            l->stats.cancelled++;
        }
        break;
    }
    task_object *next = lane_release_locked(l, t);
    lane_assert_accounted(l);
    return next;
}

int
lane_finish_task(lane *l, task_object *t, int state, lane_handoff *h)
{
    assert(PyGILState_Check());
    assert(state == TASK_SUCCEEDED || state == TASK_FAILED || state == TASK_CANCELLED);
    h->next = NULL;
    h->has_trash = 0;
    pthread_mutex_lock(&l->mu);
    if (task_is_done(t)) {
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    /* Wake blocked result() callers only for a task one of them waits on:
     * waking them on every completion would ping-pong the GIL. */
    int wake_sync = t->sync_waited;
    h->next = lane_finish_locked(l, t, (task_state)state);
    h->has_trash = ring_len(&l->trash) > 0;
    pthread_mutex_unlock(&l->mu);
    if (wake_sync) {
        pthread_cond_broadcast(&l->done_cv);
    }
    return 1;
}

void
lane_finish_dispatch(lane *l, lane_handoff *h)
{
    assert(PyGILState_Check());
    if (h->next != NULL) {
        lane_dispatch(l, h->next);
        Py_CLEAR(h->next);
    }
    if (h->has_trash) {
        lane_sweep_trash(l);
    }
}

void
lane_wait_done_unlocked(lane *l, task_object *t, double slice)
{
    pthread_mutex_lock(&l->mu);
    t->sync_waited = 1;
    if (!task_is_done(t)) {
        struct timespec ts = offload_deadline(slice);
        pthread_cond_timedwait(&l->done_cv, &l->mu, &ts);
    }
    pthread_mutex_unlock(&l->mu);
}

void
lane_sweep_trash(lane *l)
{
    for (;;) {
        pthread_mutex_lock(&l->mu);
        task_object *t = ring_pop(&l->trash);
        pthread_mutex_unlock(&l->mu);
        if (t == NULL) {
            return;
        }
        Py_DECREF(t);
    }
}

/* Hand a task holding a slot to whatever runs it. Never loses it: on any
 * failure the task is finished as failed with the reason. */
void
lane_dispatch(lane *l, task_object *t)
{
    assert(PyGILState_Check());
    if (task_is_done(t)) {
        /* Finished (cancelled) between getting its slot and being dispatched: a
         * finishing task runs Python code (its callbacks, its inputs' __del__)
         * before it dispatches the task that inherited its slot. That finish
         * already gave the slot on; its bridge is gone. Nothing to run. */
        return;
    }
    engine_object *e = l->engine;
    switch (l->kind) {
    case LANE_LOOP:
    case LANE_BACKGROUND: {
        if (l->kind == LANE_BACKGROUND && t->bridge == NULL) {
            bridge_object *b = engine_background_bridge(e);
            if (b == NULL) {
                task_finish_from_error(t);
                return;
            }
            t->bridge = Py_NewRef((PyObject *)b);
        }
        bridge_object *b = (bridge_object *)t->bridge;
        if (bridge_is_current(b)) {
            runner_start(t);
        }
        else if (bridge_push(b, BRIDGE_START, Py_NewRef((PyObject *)t)) < 0) {
            PyErr_Clear();
            PyErr_SetString(PyExc_RuntimeError, "the task's event loop is closed");
            task_finish_from_error(t);
        }
        return;
    }
    case LANE_THREADS:
        if (pool_submit(&e->pool, (task_object *)Py_NewRef((PyObject *)t)) < 0) {
            task_finish_from_error(t);
        }
        return;
    case LANE_PROCESSES: {
        PyObject *starter = e->starters[LANE_PROCESSES];
        if (starter == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "the processes lane has no executor");
            task_finish_from_error(t);
            return;
        }
        Py_INCREF(starter);
        PyObject *res = PyObject_CallOneArg(starter, (PyObject *)t);
        Py_DECREF(starter);
        if (res == NULL) {
            task_finish_from_error(t);
            return;
        }
        Py_DECREF(res);
        return;
    }
    default:
        return;
    }
}

/* Whether the calling thread runs an event loop (it must never block). */
static int
on_loop_thread(engine_object *e)
{
    if (engine_current_bridge(e) != NULL) {
        return 1;
    }
    PyErr_Clear();
    return 0;
}

typedef enum { ADMIT_DISPATCH, ADMIT_QUEUED, ADMIT_FULL, ADMIT_CLOSED, ADMIT_ERROR } admission;

/* Decide under `mu`; for on_full="block", wait for room with the GIL released. */
static admission
lane_admit(lane *l, task_object *t, int may_block)
{
    engine_object *e = l->engine;
    pthread_mutex_lock(&l->mu);
    /* `submitted` counts a spawn once it is decided (admitted, rejected or
     * dropped), not while a spawner blocks for room: the stats identity
     * submitted = pending + running + finished + rejected + dropped holds at
     * every moment. */
    for (;;) {
        if (e->closed) {
            l->stats.submitted++;
            l->stats.rejected++;
            pthread_mutex_unlock(&l->mu);
            return ADMIT_CLOSED;
        }
        if (l->active < l->max_running) {
            l->active++;
            t->flags |= TF_HAS_SLOT;
            break;
        }
        if (l->waiting < l->max_pending) {
            if (ring_push(&l->waiting_q, Py_NewRef((PyObject *)t)) < 0) {
                Py_DECREF(t); /* safe: the caller still holds a reference */
                l->stats.submitted++;
                l->stats.rejected++;
                pthread_mutex_unlock(&l->mu);
                PyErr_NoMemory();
                return ADMIT_ERROR;
            }
            l->waiting++;
            t->flags |= TF_WAITING;
            break;
        }
        if (l->on_full != ON_FULL_BLOCK || !may_block) {
            l->stats.submitted++;
            if (l->on_full == ON_FULL_DROP) {
                l->stats.dropped++;
            }
            else {
                l->stats.rejected++;
            }
            pthread_mutex_unlock(&l->mu);
            return ADMIT_FULL;
        }
        /* Block: wait for room without the GIL, then decide again. */
        pthread_mutex_unlock(&l->mu);
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&l->mu);
        if (!e->closed && l->active >= l->max_running && l->waiting >= l->max_pending) {
            struct timespec ts = offload_deadline(0.1);
            pthread_cond_timedwait(&l->room_cv, &l->mu, &ts);
        }
        pthread_mutex_unlock(&l->mu);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) {
            pthread_mutex_lock(&l->mu);
            l->stats.submitted++;
            l->stats.rejected++;
            pthread_mutex_unlock(&l->mu);
            return ADMIT_ERROR;
        }
        pthread_mutex_lock(&l->mu);
    }
    l->stats.submitted++;
    task_set_registered(t);
    registry_link(l, t);
    Py_INCREF(t); /* the registry's reference: the task can't be collected mid-flight */
    l->n_pending++;
    int dispatch = (t->flags & TF_HAS_SLOT) != 0;
    lane_assert_accounted(l);
    pthread_mutex_unlock(&l->mu);
    return dispatch ? ADMIT_DISPATCH : ADMIT_QUEUED;
}

static const char *
lane_label(lane *l)
{
    return lane_names[l->kind];
}

/* A loop lane at max_running may be full of tasks whose loop has closed (a
 * short-lived asyncio.run() ended with them): free their slots, naming
 * each, before deciding the new task must wait. Cheap when nothing closed:
 * one is_closed() per loop this runtime knows (closing the bridges of dead
 * loops bumps the generation), and the walk over every live task only when
 * a bridge closed since the last walk (it was O(N) per spawn: O(N^2)). */
static void
lane_reclaim_dead_loop_slots(lane *l)
{
    pthread_mutex_lock(&l->mu);
    int full = l->active >= l->max_running;
    pthread_mutex_unlock(&l->mu);
    if (!full) {
        return;
    }
    module_state *st = l->engine->st;
    if (engine_close_dead_bridges(l->engine) < 0) {
        PyErr_Clear();
    }
    if (l->reclaim_generation == st->bridge_close_generation) {
        return;
    }
    l->reclaim_generation = st->bridge_close_generation;
    PyObject *dead = engine_abandon_dead_loops(l->engine, l->kind, l->kind);
    if (dead == NULL) {
        PyErr_Clear();
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dead); i++) {
        offload_report(l->engine->st, (PyObject *)l->engine, l->engine->st->s_interrupted,
                       PyList_GET_ITEM(dead, i), NULL);
    }
    Py_DECREF(dead);
}

int
lane_submit(lane *l, task_object *t)
{
    assert(PyGILState_Check());
    int may_block = 1;
    if (l->kind == LANE_LOOP || l->kind == LANE_BACKGROUND) {
        lane_reclaim_dead_loop_slots(l);
    }
    if (l->on_full == ON_FULL_BLOCK) {
        may_block = !on_loop_thread(l->engine);
    }
    switch (lane_admit(l, t, may_block)) {
    case ADMIT_DISPATCH:
        lane_dispatch(l, t);
        return 0;
    case ADMIT_QUEUED:
        return 0;
    case ADMIT_CLOSED:
        PyErr_SetString(l->engine->st->Closed, ENGINE_CLOSED_MESSAGE);
        return -1;
    case ADMIT_FULL:
        if (l->on_full == ON_FULL_DROP) {
            t->flags |= TF_DROPPED;
            task_finish(t, TASK_CANCELLED, NULL);
            offload_report(l->engine->st, (PyObject *)l->engine, l->engine->st->s_dropped,
                           (PyObject *)t, Py_None);
            return 0;
        }
        if (l->on_full == ON_FULL_BLOCK) {
            PyErr_Format(l->engine->st->Full,
                         "offload lane '%s' is full (max_pending=%zd) and on_full='block' can't "
                         "wait on an event-loop thread; raise max_pending or spawn from a thread",
                         lane_label(l), l->max_pending);
        }
        else {
            PyErr_Format(l->engine->st->Full,
                         "offload lane '%s' is full (max_pending=%zd, max_running=%zd); retry "
                         "later, raise the limits, or use on_full='block' or 'drop'",
                         lane_label(l), l->max_pending, l->max_running);
        }
        return -1;
    default:
        return -1;
    }
}

/* 1 if the (open) home loop is not running, 0 if it runs, -1 unknown. */
static int
home_loop_stopped(engine_object *e, bridge_object *home)
{
    PyObject *res = PyObject_CallMethodNoArgs(home->loop, e->st->s_is_running);
    if (res == NULL) {
        PyErr_Clear();
        return -1;
    }
    int running = PyObject_IsTrue(res);
    Py_DECREF(res);
    return running == 0;
}

/* Loop lane: the caller's running loop, else the home loop, else background. */
static int
lane_pick_loop(engine_object *e, task_object *t)
{
    bridge_object *b = engine_current_bridge(e);
    if (b != NULL) {
        t->bridge = Py_NewRef((PyObject *)b);
        return 0;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    /* Held: is_closed()/is_running() are Python code (start() may swap it). */
    bridge_object *home = (bridge_object *)Py_XNewRef((PyObject *)e->home_bridge);
    if (home != NULL && bridge_loop_closed(home) == 0) {
        if (home_loop_stopped(e, home) == 1) {
            Py_DECREF(home);
            PyErr_SetString(PyExc_RuntimeError,
                            "offload: the home loop (the one Runtime.start() was called on) is "
                            "stopped but not closed, so a coroutine sent to it from this thread "
                            "would only wait, maybe forever (offload.call() without a timeout "
                            "would block); run that loop again, close it (then coroutines go to "
                            "offload.background), or spawn on offload.background explicitly");
            return -1;
        }
        t->bridge = (PyObject *)home; /* our reference moves to the task */
        return 0;
    }
    Py_XDECREF(home);
    t->lane = &e->lanes[LANE_BACKGROUND];
    return 0;
}

int
lane_prepare_new(task_object *t)
{
    if (t->lane->kind == LANE_LOOP && t->bridge == NULL) {
        return lane_pick_loop(t->engine, t);
    }
    return 0;
}

static int
lane_submit_new(task_object *t)
{
    if (lane_prepare_new(t) < 0) {
        return -1;
    }
    int rc = lane_submit(t->lane, t);
    lane_sweep_trash(t->lane);
    return rc;
}

int
lane_submit_deferred(task_object *t)
{
    if (engine_check_open(t->engine) < 0) {
        task_finish(t, TASK_CANCELLED, NULL);
        return -1;
    }
    t->flags &= (uint8_t)~TF_DEFERRED;
    t->t_submit = offload_now_ns();
    if ((t->ctl != NULL ? controls_submit(t) : lane_submit_new(t)) < 0) {
        task_finish(t, TASK_CANCELLED, NULL);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* controlled tasks: scheduled, retrying, waiting for their limit_key         */

int
lane_register_waiting(lane *l, task_object *t, int state)
{
    assert(PyGILState_Check());
    assert(state == TASK_SCHEDULED || state == TASK_PENDING);
    pthread_mutex_lock(&l->mu);
    l->stats.submitted++;
    if (l->engine->closed) {
        l->stats.rejected++;
        pthread_mutex_unlock(&l->mu);
        PyErr_SetString(l->engine->st->Closed, ENGINE_CLOSED_MESSAGE);
        return -1;
    }
    t->state = (uint8_t)state;
    task_set_registered(t);
    registry_link(l, t);
    Py_INCREF(t); /* the registry's reference */
    if (state == TASK_SCHEDULED) {
        l->n_scheduled++;
    }
    else {
        l->n_pending++;
    }
    lane_assert_accounted(l);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

typedef enum { READMIT_SLOT, READMIT_QUEUED, READMIT_FULL, READMIT_NOMEM, READMIT_GONE } readmission;

/* Under `mu`: a slot, a place in the queue, or none. Moves the task to PENDING
 * when it gets either. */
static readmission
lane_readmit_locked(lane *l, task_object *t)
{
    LANE_ASSERT_LOCKED(l);
    if (task_is_done(t) || t->state == TASK_RUNNING) {
        return READMIT_GONE;
    }
    readmission r;
    if (l->active < l->max_running) {
        l->active++;
        t->flags |= TF_HAS_SLOT;
        r = READMIT_SLOT;
    }
    else if (l->waiting < l->max_pending) {
        if (ring_push(&l->waiting_q, Py_NewRef((PyObject *)t)) < 0) {
            Py_DECREF(t); /* safe: the registry still holds it */
            return READMIT_NOMEM;
        }
        l->waiting++;
        t->flags |= TF_WAITING;
        r = READMIT_QUEUED;
    }
    else {
        return READMIT_FULL;
    }
    if (t->state == TASK_SCHEDULED) {
        l->n_scheduled--;
        l->n_pending++;
    }
    else if (t->state == TASK_RETRYING) {
        l->n_retrying--;
        l->n_pending++;
    }
    t->state = TASK_PENDING;
    t->t_submit = offload_now_ns(); /* queue_wait counts from admission, not from spawn */
    lane_assert_accounted(l);
    return r;
}

int
lane_readmit(lane *l, task_object *t)
{
    assert(PyGILState_Check());
    pthread_mutex_lock(&l->mu);
    readmission r = lane_readmit_locked(l, t);
    pthread_mutex_unlock(&l->mu);
    switch (r) {
    case READMIT_SLOT: lane_dispatch(l, t); return 0;
    case READMIT_QUEUED:
    case READMIT_GONE: return 0;
    case READMIT_NOMEM:
        PyErr_NoMemory();
        task_finish_from_error(t);
        return 0;
    case READMIT_FULL: break;
    }
    if (l->on_full == ON_FULL_BLOCK) {
        return 1; /* the timer thread can't block: it tries again shortly */
    }
    if (l->on_full == ON_FULL_DROP) {
        t->flags |= TF_DROPPED;
        if (task_finish(t, TASK_CANCELLED, NULL)) {
            offload_report(l->engine->st, (PyObject *)l->engine, l->engine->st->s_dropped,
                           (PyObject *)t, Py_None);
        }
        return 0;
    }
    PyErr_Format(l->engine->st->Full,
                 "offload lane '%s' was full (max_pending=%zd, max_running=%zd) when this "
                 "scheduled or retried task was due; raise the limits, or use on_full='block' "
                 "or 'drop'",
                 lane_names[l->kind], l->max_pending, l->max_running);
    task_finish_from_error(t);
    return 0;
}

void
lane_retry_task(lane *l, task_object *t, lane_handoff *out)
{
    assert(PyGILState_Check());
    pthread_mutex_lock(&l->mu);
    assert(t->state == TASK_RUNNING);
    l->n_running--;
    hist_record(&l->stats.run_time, offload_now_ns() - t->t_start);
    l->n_retrying++;
    l->stats.retried++;
    t->state = TASK_RETRYING;
    lane_handoff h = {NULL, 0};
    if (t->flags & TF_HAS_SLOT) {
        t->flags &= (uint8_t)~TF_HAS_SLOT;
        l->active--;
        h.next = l->waiting ? waiting_pop_locked(l) : NULL;
        if (h.next != NULL) {
            l->active++;
            h.next->flags |= TF_HAS_SLOT;
        }
    }
    if (l->on_full == ON_FULL_BLOCK) {
        pthread_cond_signal(&l->room_cv);
    }
    h.has_trash = ring_len(&l->trash) > 0;
    lane_assert_accounted(l);
    pthread_mutex_unlock(&l->mu);
    *out = h;
}

void
lane_mark_pending(lane *l, task_object *t)
{
    pthread_mutex_lock(&l->mu);
    if (t->state == TASK_SCHEDULED) {
        l->n_scheduled--;
        l->n_pending++;
        t->state = TASK_PENDING;
    }
    else if (t->state == TASK_RETRYING) {
        l->n_retrying--;
        l->n_pending++;
        t->state = TASK_PENDING;
    }
    lane_assert_accounted(l);
    pthread_mutex_unlock(&l->mu);
}

void
lane_count_timeout(lane *l, int overrun)
{
    pthread_mutex_lock(&l->mu);
    l->stats.timed_out++;
    l->n_overrun += overrun ? 1 : 0;
    pthread_mutex_unlock(&l->mu);
}

void
lane_count_overrun_end(lane *l)
{
    pthread_mutex_lock(&l->mu);
    l->n_overrun--;
    lane_assert_accounted(l);
    pthread_mutex_unlock(&l->mu);
}

/* ------------------------------------------------------------------------ */
/* target classification (all bad input is refused here, at the call site)   */

typedef enum { TARGET_CORO, TARGET_ASYNC_FN, TARGET_SYNC } target_kind;

static int is_async_function(module_state *st, PyObject *fn);

/* An instance whose class defines `async def __call__`: inspect says "not a
 * coroutine function", but calling it returns a coroutine. */
static int
has_async_call(module_state *st, PyObject *obj)
{
    if (PyType_Check(obj) || PyCFunction_Check(obj) || PyFunction_Check(obj) || PyMethod_Check(obj)) {
        return 0;
    }
    PyObject *call = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), "__call__");
    if (call == NULL) {
        PyErr_Clear();
        return 0;
    }
    int yes = PyFunction_Check(call) ? is_async_function(st, call) : 0;
    Py_DECREF(call);
    return yes;
}

static int
is_async_function(module_state *st, PyObject *fn)
{
    PyObject *f = fn;
    if (PyMethod_Check(f)) {
        f = PyMethod_GET_FUNCTION(f);
    }
    if (PyFunction_Check(f)) {
        PyCodeObject *code = (PyCodeObject *)PyFunction_GET_CODE(f);
        if (code->co_flags & CO_COROUTINE) {
            return 1;
        }
        if (code->co_flags & CO_ASYNC_GENERATOR) {
            PyObject *what = offload_safe_repr(fn);
            if (what != NULL) {
                PyErr_Format(PyExc_TypeError,
                             "%U is an async generator function, which offload can't run as a "
                             "task; pass an async function that iterates it instead "
                             "(async for item in gen(): ...)", what);
                Py_DECREF(what);
            }
            return -1;
        }
        /* Plain functions can still be marked (inspect.markcoroutinefunction
         * sets an attribute): look in the function's own dict, which costs
         * nothing when it is absent, instead of raising an AttributeError. */
        PyObject *attrs = ((PyFunctionObject *)f)->func_dict;
        if (attrs == NULL || PyDict_GetItemWithError(attrs, st->s_coroutine_marker) == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
    }
    PyObject *res = PyObject_CallOneArg(st->iscoroutinefunction, fn);
    if (res == NULL) {
        return -1;
    }
    int yes = PyObject_IsTrue(res);
    Py_DECREF(res);
    return yes != 0 ? yes : has_async_call(st, fn);
}

/* Refuse a coroutine that already started: resuming it from here would
 * steal it from whoever is awaiting it. */
static int
check_fresh_coroutine(module_state *st, PyObject *coro)
{
    if (!PyCoro_CheckExact(coro)) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
    /* 3.11/3.12 expose the frame state in the public coroutine struct;
     * -2 is FRAME_CREATED there. Saves three attribute lookups per spawn. */
    if (((PyCoroObject *)coro)->cr_frame_state == -2) {
        return 0;
    }
#endif
    PyObject *frame = PyObject_GetAttr(coro, st->s_cr_frame);
    if (frame == NULL) {
        return -1;
    }
    int closed = frame == Py_None;
    Py_DECREF(frame);
    PyObject *running = PyObject_GetAttr(coro, st->s_cr_running);
    if (running == NULL) {
        return -1;
    }
    int started = running == Py_True;
    Py_DECREF(running);
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *suspended = PyObject_GetAttr(coro, st->s_cr_suspended);
    if (suspended == NULL) {
        return -1;
    }
    started |= suspended == Py_True;
    Py_DECREF(suspended);
#else
    if (!closed) {
        PyObject *f = PyObject_GetAttr(coro, st->s_cr_frame);
        PyObject *lasti = f ? PyObject_GetAttrString(f, "f_lasti") : NULL;
        Py_XDECREF(f);
        if (lasti == NULL) {
            return -1;
        }
        started |= PyLong_AsLong(lasti) >= 0;
        Py_DECREF(lasti);
    }
#endif
    if (closed || started) {
        PyObject *what = offload_safe_repr(coro);
        if (what != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "coroutine %U has already %s; pass a new coroutine object "
                         "(call the async function again)",
                         what, closed ? "finished" : "started");
            Py_DECREF(what);
        }
        return -1;
    }
    return 0;
}

static int
classify_target(module_state *st, PyObject *target, Py_ssize_t n_extra, target_kind *kind)
{
    int is_coro = PyCoro_CheckExact(target);
    if (!is_coro && !PyCallable_Check(target)) {
        PyObject *res = PyObject_CallOneArg(st->iscoroutine, target);
        if (res == NULL) {
            return -1;
        }
        is_coro = PyObject_IsTrue(res);
        Py_DECREF(res);
        if (!is_coro) {
            PyErr_Format(PyExc_TypeError,
                         "offload needs a coroutine, an async function or a callable, "
                         "not %.100s", Py_TYPE(target)->tp_name);
            return -1;
        }
    }
    if (is_coro) {
        if (n_extra) {
            PyErr_SetString(PyExc_TypeError,
                            "a coroutine object takes no extra arguments; pass the async "
                            "function and its arguments instead: spawn(fn, *args)");
            return -1;
        }
        if (check_fresh_coroutine(st, target) < 0) {
            return -1;
        }
        int claimed = PySet_Contains(st->claimed_coros, target);
        if (claimed != 0) {
            PyObject *what = claimed > 0 ? offload_safe_repr(target) : NULL;
            if (what != NULL) {
                PyErr_Format(PyExc_ValueError,
                             "coroutine %U is already spawned as another task; pass a new "
                             "coroutine object (call the async function again)", what);
                Py_DECREF(what);
            }
            return -1;
        }
        *kind = TARGET_CORO;
        return 0;
    }
    int async_fn = is_async_function(st, target);
    if (async_fn < 0) {
        return -1;
    }
    *kind = async_fn ? TARGET_ASYNC_FN : TARGET_SYNC;
    return 0;
}

static int
resolve_lane(int kind, target_kind tk, PyObject *target)
{
    if (kind < 0) {
        return tk == TARGET_SYNC ? LANE_THREADS : LANE_LOOP;
    }
    int wrong_for_loop = (kind == LANE_LOOP || kind == LANE_BACKGROUND) && tk == TARGET_SYNC;
    int wrong_for_sync = (kind == LANE_THREADS || kind == LANE_PROCESSES) && tk != TARGET_SYNC;
    if (!wrong_for_loop && !wrong_for_sync) {
        return kind;
    }
    PyObject *what = offload_safe_repr(target); /* the user's __repr__ may raise */
    if (what == NULL) {
        return -1;
    }
    if (wrong_for_loop) {
        PyErr_Format(PyExc_TypeError,
                     "offload.%s runs coroutines, and %U is a sync callable; "
                     "send it to offload.threads (or offload.spawn, which picks the lane)",
                     kind == LANE_LOOP ? "loop" : "background", what);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "offload.%s runs sync callables, and %U is %s; "
                     "send it to offload.loop or offload.background",
                     kind == LANE_THREADS ? "threads" : "processes", what,
                     tk == TARGET_CORO ? "a coroutine" : "an async function");
    }
    Py_DECREF(what);
    return -1;
    return kind;
}

/* The processes lane pickles its inputs at the call site (through the
 * runtime's preparer), so what can't cross to a worker process is refused
 * here; the task then carries (payload,) as its only argument. */
static int
prepare_external(engine_object *e, int lane_kind, PyObject *target, PyObject **call_args,
                 PyObject **call_kwargs)
{
    PyObject *prepare = e->preparers[lane_kind];
    if (e->starters[lane_kind] == NULL || prepare == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the processes lane has no process pool on this engine; use an "
                        "offload.Runtime (or the module-level offload.processes)");
        return -1;
    }
    PyObject *payload = PyObject_CallFunctionObjArgs(
        prepare, target, *call_args ? *call_args : Py_None,
        *call_kwargs ? *call_kwargs : Py_None, NULL);
    if (payload == NULL) {
        return -1;
    }
    PyObject *packed = PyTuple_Pack(1, payload);
    Py_DECREF(payload);
    if (packed == NULL) {
        return -1;
    }
    Py_XSETREF(*call_args, packed);
    Py_CLEAR(*call_kwargs);
    return 0;
}

/* A sync call's arguments: a tuple (NULL when there are none) and a dict of the
 * keyword arguments (NULL when there are none), new references. */
static int
pack_call(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **call_args,
          PyObject **call_kwargs)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 0 && (*call_args = PyTuple_New(nargs)) == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(*call_args, i, Py_NewRef(args[i]));
    }
    if (nkw > 0 && (*call_kwargs = PyDict_New()) == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyDict_SetItem(*call_kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A task the lane refused (Full, Closed): it never runs. Its coroutine is closed
 * (no "never awaited" warning) and it ends cancelled, outside every lane. */
static void
spawn_refused(module_state *st, task_object *t, target_kind tk)
{
    if (tk != TARGET_SYNC) {
        task_close_coroutine(st, t->target);
    }
    t->flags &= (uint8_t)~TF_IS_CORO;
    task_unclaim_coroutine(t); /* before the target goes: it is the set's key */
    Py_CLEAR(t->target);
    t->state = TASK_CANCELLED;
    PyObject_GC_Track((PyObject *)t);
}

/* A spawn through a view with controls whose key is held by a live task:
 * that task (join), an error (reject), or NULL to go on (replace: the holder
 * was cancelled). A coroutine object passed in that won't run is closed. */
static int
spawn_join_duplicate(engine_object *e, PyObject *controls, PyObject *target, target_kind tk,
                     PyObject **joined)
{
    int err = 0;
    task_object *dup = controls_find_duplicate(e, (controls_object *)controls, &err);
    if (err) {
        return -1;
    }
    if (dup != NULL && tk == TARGET_CORO && dup->target != target) {
        task_close_coroutine(e->st, target); /* it will never run: no "never awaited" */
    }
    *joined = (PyObject *)dup;
    return 0;
}

PyObject *
lane_spawn(engine_object *e, int kind, PyObject *name, PyObject *controls, spawn_mode mode,
           PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int deferred = mode == SPAWN_DEFERRED;
    module_state *st = e->st;
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "spawn()/run() missing the target to run");
        return NULL;
    }
    PyObject *target = args[0];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    target_kind tk;
    if (classify_target(st, target, nargs - 1 + nkw, &tk) < 0) {
        return NULL;
    }
    int lane_kind = resolve_lane(kind, tk, target);
    if (lane_kind < 0) {
        return NULL;
    }
    if (controls != NULL &&
        controls_check_target((controls_object *)controls, tk == TARGET_CORO) < 0) {
        return NULL;
    }
    if (engine_check_open(e) < 0) {
        return NULL;
    }
    if (controls != NULL && ((controls_object *)controls)->key != NULL) {
        PyObject *joined = NULL;
        if (spawn_join_duplicate(e, controls, target, tk, &joined) < 0 || joined != NULL) {
            return joined;
        }
    }
    PyObject *call_args = NULL, *call_kwargs = NULL, *coro = NULL;
    task_object *t = NULL;
    if (controls != NULL && tk == TARGET_ASYNC_FN &&
        ((controls_object *)controls)->retries > 0) {
        /* Each attempt calls the function again: keep what to call it with. */
        if (pack_call(args + 1, nargs - 1, kwnames, &call_args, &call_kwargs) < 0) {
            goto error;
        }
    }
    if (tk == TARGET_ASYNC_FN) {
        /* Call now, so wrong arguments fail here and not later on a loop. */
        coro = PyObject_Vectorcall(target, args + 1, (size_t)(nargs - 1), kwnames);
        if (coro == NULL) {
            goto error;
        }
        target = coro;
    }
    else if (tk == TARGET_SYNC &&
             pack_call(args + 1, nargs - 1, kwnames, &call_args, &call_kwargs) < 0) {
        goto error;
    }
    if (lane_kind == LANE_PROCESSES &&
        prepare_external(e, lane_kind, target, &call_args, &call_kwargs) < 0) {
        goto error;
    }
    int flags = (tk == TARGET_SYNC ? 0 : TF_IS_CORO) |
                (deferred ? (TF_DEFERRED | TF_CANCEL_ON_AWAIT) : 0) |
                (mode == SPAWN_OBSERVED ? TF_OBSERVED : 0);
    PyObject *task_args = tk == TARGET_SYNC || lane_kind == LANE_PROCESSES ? call_args : NULL;
    PyObject *task_kwargs = tk == TARGET_SYNC || lane_kind == LANE_PROCESSES ? call_kwargs : NULL;
    t = task_new(e, &e->lanes[lane_kind], target, task_args, task_kwargs, name, flags);
    if (t != NULL && controls != NULL &&
        controls_attach(t, (controls_object *)controls, tk == TARGET_ASYNC_FN ? args[0] : NULL,
                        call_args, call_kwargs) < 0) {
        Py_CLEAR(t);
    }
    Py_CLEAR(call_args);
    Py_CLEAR(call_kwargs);
    if (t == NULL) {
        goto error;
    }
    e->started = 1;
    /* Only spawn() claims: a run() never awaited would keep a claimed
     * coroutine (and whatever it references) alive in the module's set. */
    if (tk == TARGET_CORO && !deferred && task_claim_coroutine(t) < 0) {
        goto error;
    }
    if (deferred) {
        PyObject_GC_Track((PyObject *)t); /* held by the caller, not the registry */
    }
    else if ((controls != NULL ? controls_submit(t) : lane_submit_new(t)) < 0) {
        spawn_refused(st, t, tk);
        goto error;
    }
    Py_XDECREF(coro);
    return (PyObject *)t;

error:
    Py_XDECREF(call_args);
    Py_XDECREF(call_kwargs);
    if (t == NULL && coro != NULL) {
        task_close_coroutine(st, coro); /* no task took it: it will never run */
    }
    Py_XDECREF(t);
    Py_XDECREF(coro);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* the Lane Python type                                                      */

PyObject *
lane_view_new(engine_object *engine, int kind, PyObject *name)
{
    lane_view *v = PyObject_GC_New(lane_view, engine->st->LaneType);
    if (v == NULL) {
        return NULL;
    }
    v->engine = (engine_object *)Py_NewRef((PyObject *)engine);
    v->st = engine->st;
    v->follows_default = 0;
    v->kind = kind;
    v->name = Py_XNewRef(name);
    v->controls = NULL;
    PyObject_GC_Track((PyObject *)v);
    return (PyObject *)v;
}

PyObject *
lane_view_new_following(module_state *st, int kind)
{
    lane_view *v = PyObject_GC_New(lane_view, st->LaneType);
    if (v == NULL) {
        return NULL;
    }
    v->engine = NULL;
    v->st = st;
    v->follows_default = 1;
    v->kind = kind;
    v->name = NULL;
    v->controls = NULL;
    PyObject_GC_Track((PyObject *)v);
    return (PyObject *)v;
}

/* The engine a view works on (new reference): its own, or the default runtime
 * now. Held across the call: spawning runs user code, which may replace the
 * default runtime and drop the last other reference to this one. */
static engine_object *
view_engine(lane_view *v)
{
    PyObject *e = v->follows_default ? v->st->default_engine : (PyObject *)v->engine;
    if (e == NULL) {
        PyErr_SetString(PyExc_RuntimeError, v->follows_default
                                                ? "offload has no default runtime (import offload)"
                                                : "this Lane view was cleared by the GC");
        return NULL;
    }
    return (engine_object *)Py_NewRef(e);
}

static PyObject *
view_spawn(lane_view *v, spawn_mode mode, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    engine_object *e = view_engine(v);
    if (e == NULL) {
        return NULL;
    }
    PyObject *task = lane_spawn(e, v->kind, v->name, v->controls, mode, args, nargs, kwnames);
    Py_DECREF(e);
    return task;
}

static PyObject *
Lane_spawn(lane_view *v, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return view_spawn(v, SPAWN_DETACHED, args, nargs, kwnames);
}

static PyObject *
Lane_run(lane_view *v, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return view_spawn(v, SPAWN_DEFERRED, args, nargs, kwnames);
}

static PyObject *
Lane_spawn_observed(lane_view *v, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return view_spawn(v, SPAWN_OBSERVED, args, nargs, kwnames);
}

int
lane_parse_name(PyObject *obj, int *kind)
{
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    if (PyUnicode_Check(obj)) {
        for (int i = 0; i < LANE_COUNT; i++) {
            if (PyUnicode_CompareWithASCIIString(obj, lane_names[i]) == 0) {
                *kind = i;
                return 0;
            }
        }
    }
    PyObject *what = offload_safe_repr(obj);
    if (what != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "lane must be 'loop', 'background', 'threads', 'processes' or None, not %U",
                     what);
        Py_DECREF(what);
    }
    return -1;
}

/* options()'s controls: everything but name= and lane=, validated and merged
 * over the view's own by the Python factory (offload/_controls.py). New
 * reference; NULL with an error; `base` (maybe NULL) when none were given. */
static PyObject *
options_controls(module_state *st, PyObject *base, PyObject *extra)
{
    if (extra == NULL || PyDict_GET_SIZE(extra) == 0) {
        return Py_XNewRef(base);
    }
    if (st->controls_factory == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "offload's controls factory is not installed");
        return NULL;
    }
    PyObject *res = PyObject_CallFunctionObjArgs(st->controls_factory, base ? base : Py_None,
                                                 extra, NULL);
    if (res == NULL || res == Py_None) {
        Py_XDECREF(res);
        return NULL;
    }
    if (!PyObject_TypeCheck(res, st->ControlsType)) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "the controls factory must return a Controls");
        return NULL;
    }
    return res;
}

PyObject *
lane_options(engine_object *e, int kind, PyObject *default_name, PyObject *default_controls,
             PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    if (nargs) {
        PyErr_SetString(PyExc_TypeError,
                        "options() takes keyword arguments only: name=, lane=, timeout=, "
                        "retries=, backoff=, retry_on=, delay=, at=, key=, on_duplicate=, "
                        "limit_key=, limit=");
        return NULL;
    }
    PyObject *name = default_name, *lane_obj = NULL, *extra = NULL, *view = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(key, "name") == 0) {
            name = args[i];
        }
        else if (PyUnicode_CompareWithASCIIString(key, "lane") == 0) {
            lane_obj = args[i];
        }
        else if ((extra == NULL && (extra = PyDict_New()) == NULL) ||
                 PyDict_SetItem(extra, key, args[i]) < 0) {
            goto done;
        }
    }
    if (name == Py_None) {
        name = NULL;
    }
    if (name != NULL && !PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str or None, not %.100s",
                     Py_TYPE(name)->tp_name);
        goto done;
    }
    if (lane_parse_name(lane_obj, &kind) < 0) {
        goto done;
    }
    PyObject *controls = options_controls(e->st, default_controls, extra);
    if (controls == NULL && PyErr_Occurred()) {
        goto done;
    }
    /* A str subclass's __repr__/__str__ are user code: keep an exact str, so
     * reporting the task never depends on them. */
    PyObject *exact = name ? offload_exact_str(name) : NULL;
    if (name != NULL && exact == NULL) {
        Py_XDECREF(controls);
        goto done;
    }
    view = lane_view_new(e, kind, exact);
    Py_XDECREF(exact);
    if (view != NULL) {
        ((lane_view *)view)->controls = controls; /* our reference moves to the view */
    }
    else {
        Py_XDECREF(controls);
    }
done:
    Py_XDECREF(extra);
    return view;
}

static PyObject *
Lane_options(lane_view *v, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    engine_object *e = view_engine(v);
    if (e == NULL) {
        return NULL;
    }
    lane_view *view =
        (lane_view *)lane_options(e, v->kind, v->name, v->controls, args, nargs, kwnames);
    Py_DECREF(e);
    if (view != NULL && v->follows_default) { /* options of a following view follow too */
        Py_CLEAR(view->engine);
        view->follows_default = 1;
    }
    return (PyObject *)view;
}

static PyObject *
Lane_stats(lane_view *v, PyObject *Py_UNUSED(ignored))
{
    engine_object *e = view_engine(v);
    if (e == NULL) {
        return NULL;
    }
    PyObject *stats = NULL;
    if (engine_check_ready(e) < 0) {
        goto done;
    }
    if (v->kind < 0) {
        PyErr_SetString(PyExc_TypeError, "stats() of automatic dispatch: use runtime.stats()");
        goto done;
    }
    stats = lane_stats_dict(&e->lanes[v->kind]);
done:
    Py_DECREF(e);
    return stats;
}

static PyObject *
Lane_get_name(lane_view *v, void *Py_UNUSED(c))
{
    if (v->kind < 0) {
        return PyUnicode_FromString("auto");
    }
    return Py_NewRef(v->st->lane_names[v->kind]);
}

static PyObject *
Lane_repr(lane_view *v)
{
    PyObject *name = Lane_get_name(v, NULL);
    if (name == NULL) {
        return NULL;
    }
    PyObject *r = v->name ? PyUnicode_FromFormat("<offload.Lane %U name=%R>", name, v->name)
                          : PyUnicode_FromFormat("<offload.Lane %U>", name);
    Py_DECREF(name);
    return r;
}

static int
Lane_traverse(lane_view *v, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(v));
    Py_VISIT(v->engine);
    Py_VISIT(v->name);
    Py_VISIT(v->controls);
    return 0;
}

static int
Lane_clear(lane_view *v)
{
    Py_CLEAR(v->engine);
    Py_CLEAR(v->name);
    Py_CLEAR(v->controls);
    return 0;
}

static void
Lane_dealloc(lane_view *v)
{
    PyTypeObject *tp = Py_TYPE(v);
    PyObject_GC_UnTrack(v);
    Lane_clear(v);
    tp->tp_free(v);
    Py_DECREF(tp);
}

static PyMethodDef Lane_methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))Lane_spawn, METH_FASTCALL | METH_KEYWORDS,
     "spawn($self, target, /, *args, **kwargs)\n--\n\n"
     "Start target(*args, **kwargs) in the background; return its Task."},
    {"run", (PyCFunction)(void (*)(void))Lane_run, METH_FASTCALL | METH_KEYWORDS,
     "run($self, target, /, *args, **kwargs)\n--\n\n"
     "A Task to await for target(*args, **kwargs)'s result."},
    {"options", (PyCFunction)(void (*)(void))Lane_options, METH_FASTCALL | METH_KEYWORDS,
     "options($self, /, *, name=None, lane=None, timeout=None, retries=None, "
     "backoff=None, retry_on=None, delay=None, at=None, key=None, on_duplicate=None, "
     "limit_key=None, limit=None)\n--\n\n"
     "A Lane with these per-call options (timeout, retries, backoff, retry_on, delay, at,\n"
     "key, on_duplicate, limit_key, limit)."},
    {"stats", (PyCFunction)Lane_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nThis lane's counters and percentiles."},
    {"_spawn_observed", (PyCFunction)(void (*)(void))Lane_spawn_observed,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {NULL},
};

static PyGetSetDef Lane_getset[] = {
    {"name", (getter)Lane_get_name, NULL, "The lane's name.", NULL},
    {NULL},
};

PyType_Slot Lane_slots[] = {
    {Py_tp_doc, "A lane of an offload runtime: where and how tasks run."},
    {Py_tp_dealloc, Lane_dealloc},
    {Py_tp_traverse, Lane_traverse},
    {Py_tp_clear, Lane_clear},
    {Py_tp_repr, Lane_repr},
    {Py_tp_methods, Lane_methods},
    {Py_tp_getset, Lane_getset},
    {0, NULL},
};

/* ------------------------------------------------------------------------ */
/* statistics snapshot                                                       */

static int
put_int(PyObject *d, const char *key, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

static PyObject *
percentiles(const histogram *h)
{
    return Py_BuildValue("{s:d,s:d,s:d,s:K}", "p50", hist_quantile(h, 0.50) / 1e9, "p90",
                         hist_quantile(h, 0.90) / 1e9, "p99", hist_quantile(h, 0.99) / 1e9,
                         "count", (unsigned long long)h->total);
}

PyObject *
lane_stats_dict(lane *l)
{
    lane_stats s;
    Py_ssize_t pending, running, active, waiting, scheduled, retrying, overrun;
    pthread_mutex_lock(&l->mu);
    s = l->stats;
    pending = l->n_pending;
    running = l->n_running;
    scheduled = l->n_scheduled;
    retrying = l->n_retrying;
    overrun = l->n_overrun;
    active = l->active;
    waiting = l->waiting;
    pthread_mutex_unlock(&l->mu);
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if (put_int(d, "submitted", (long long)s.submitted) < 0 ||
        put_int(d, "pending", pending) < 0 || put_int(d, "running", running) < 0 ||
        put_int(d, "succeeded", (long long)s.succeeded) < 0 ||
        put_int(d, "failed", (long long)s.failed) < 0 ||
        put_int(d, "cancelled", (long long)s.cancelled) < 0 ||
        put_int(d, "rejected", (long long)s.rejected) < 0 ||
        put_int(d, "dropped", (long long)s.dropped) < 0 || put_int(d, "active", active) < 0 ||
        put_int(d, "scheduled", scheduled) < 0 || put_int(d, "retrying", retrying) < 0 ||
        put_int(d, "overrun", overrun) < 0 || put_int(d, "retried", (long long)s.retried) < 0 ||
        put_int(d, "timed_out", (long long)s.timed_out) < 0 ||
        put_int(d, "waiting", waiting) < 0 ||
        put_int(d, "max_running", l->max_running == PY_SSIZE_T_MAX ? -1 : l->max_running) < 0 ||
        put_int(d, "max_pending", l->max_pending == PY_SSIZE_T_MAX ? -1 : l->max_pending) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    PyObject *qw = percentiles(&s.queue_wait), *rt = percentiles(&s.run_time);
    if (qw == NULL || rt == NULL || PyDict_SetItemString(d, "queue_wait", qw) < 0 ||
        PyDict_SetItemString(d, "run_time", rt) < 0) {
        Py_XDECREF(qw);
        Py_XDECREF(rt);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(qw);
    Py_DECREF(rt);
    return d;
}
