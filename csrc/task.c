/* task.c: offload.Task, the per-task C record, and its life cycle:
 * pending -> running -> succeeded | failed | cancelled, exactly once.
 * Also the Awaiter (what `await task` iterates) and result() for threads. */
#include "common.h" /* first: Python.h sets the feature macros */
#include <errno.h>

#include "awaiter.h"
#include "bridge.h"
#include "controls.h"
#include "engine.h"
#include "history.h"
#include "lane.h"
#include "module.h"
#include "task.h"

#define TF_REGISTERED 0x80 /* counted by its lane and linked in its registry */



/* ------------------------------------------------------------------------ */
/* creation                                                                  */

task_object *
task_new(engine_object *engine, lane *l, PyObject *target, PyObject *args, PyObject *kwargs,
         PyObject *name, int flags)
{
    module_state *st = engine->st;
    PyObject *context = PyContext_CopyCurrent();
    if (context == NULL) {
        return NULL;
    }
    task_object *t = PyObject_GC_New(task_object, st->TaskType);
    if (t == NULL) {
        Py_DECREF(context);
        return NULL;
    }
    t->engine = (engine_object *)Py_NewRef((PyObject *)engine);
    t->lane = l;
    t->live_prev = t->live_next = NULL;
    t->target = Py_NewRef(target);
    t->args = Py_XNewRef(args);
    t->kwargs = Py_XNewRef(kwargs);
    t->context = context;
    t->name = Py_XNewRef(name);
    t->outcome = NULL;
    t->bridge = NULL;
    t->runner = NULL;
    t->waiters = NULL;
    t->ctl = NULL;
    t->id = ++st->next_task_id;
    t->t_submit = offload_now_ns();
    t->t_start = t->t_end = 0;
    t->state = TASK_PENDING;
    t->flags = (uint8_t)flags;
    t->sync_waited = 0;
    t->cancel_requested = 0;
    t->claimed = 0;
    t->delivered = 0;
    /* Not tracked by the GC while it runs: the registry keeps it alive anyway,
     * and the collector then never traverses thousands of live tasks. An
     * untracked object only acts as a root, so nothing it references can be
     * collected early. task_finish() tracks it again, so cycles through a
     * finished task (e.g. an exception's traceback) are collected. */
    return t;
}

/* ------------------------------------------------------------------------ */
/* state transitions                                                         */

int
task_mark_running(task_object *t)
{
    return lane_start_task(t->lane, t);
}

/* The display name: the override, else the target's __qualname__. */
static PyObject *
task_derive_name(task_object *t)
{
    if (t->name != NULL) {
        return Py_NewRef(t->name);
    }
    if (t->target == NULL) {
        return PyUnicode_FromString("<task>");
    }
    PyObject *qn = PyObject_GetAttr(t->target, t->engine->st->s_qualname);
    if (qn != NULL && PyUnicode_Check(qn)) {
        Py_SETREF(qn, offload_exact_str(qn)); /* a str subclass's repr is user code */
        if (qn != NULL) {
            return qn;
        }
    }
    Py_XDECREF(qn);
    PyErr_Clear();
    return PyUnicode_FromString(Py_TYPE(t->target)->tp_name);
}

static PyObject *Task_get_name(task_object *t, void *c);

PyObject *
task_name(task_object *t)
{
    return Task_get_name(t, NULL);
}

/* Let the Python side attach a hint to a failure (errors here are ignored:
 * the original exception matters more). */
static void
task_annotate_error(module_state *st, PyObject *exc)
{
    if (st->annotate_error == NULL || exc == NULL) {
        return;
    }
    PyObject *res = PyObject_CallOneArg(st->annotate_error, exc);
    if (res == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(res);
}

int
task_claim_coroutine(task_object *t)
{
    if (PySet_Add(t->engine->st->claimed_coros, t->target) < 0) {
        return -1;
    }
    t->claimed = 1;
    return 0;
}

void
task_unclaim_coroutine(task_object *t)
{
    if (!t->claimed || t->target == NULL) {
        return;
    }
    t->claimed = 0;
    PyObject *saved = PyErr_GetRaisedException();
    if (PySet_Discard(t->engine->st->claimed_coros, t->target) < 0) {
        PyErr_WriteUnraisable(t->target);
    }
    PyErr_SetRaisedException(saved);
}

void
task_close_coroutine(module_state *st, PyObject *coro)
{
    /* Often called with an error set (a refused spawn): coroutine.close()
     * must neither clear nor replace it. */
    PyObject *saved = PyErr_GetRaisedException();
    PyObject *res = PyObject_CallMethodNoArgs(coro, st->s_close);
    if (res == NULL) {
        PyErr_WriteUnraisable(coro);
    }
    Py_XDECREF(res);
    PyErr_SetRaisedException(saved);
}

/* The task ended (or is being torn down) without its Runner finishing it:
 * give its asyncio.Task and coroutine back to the collector, before anything
 * may free them (CPython's deallocators expect tracked objects). */
static void
task_expose_runner(task_object *t)
{
    if (t->runner != NULL) {
        offload_gc_expose(t->runner);
        offload_gc_expose(t->target);
    }
}

/* Drop the inputs (they can be large) once the task can no longer run. */
static void
task_release_inputs(task_object *t, int never_started)
{
    if (t->name == NULL) {
        t->name = task_derive_name(t);
        if (t->name == NULL) {
            PyErr_Clear();
        }
    }
    if (never_started && (t->flags & TF_IS_CORO) && t->runner == NULL && t->target != NULL) {
        /* A coroutine that never ran: close it so Python doesn't warn that it
         * was never awaited; the task's state already says what happened. */
        task_close_coroutine(t->engine->st, t->target);
    }
    task_unclaim_coroutine(t);
    Py_CLEAR(t->target);
    Py_CLEAR(t->args);
    Py_CLEAR(t->kwargs);
    Py_CLEAR(t->context);
}

static int task_finish_now(task_object *t, task_state state, PyObject *outcome);

/* Report an event about `t` to its runtime (Runtime._report); never raises. */
static void
task_report(task_object *t, PyObject *kind, PyObject *exc)
{
    offload_report(t->engine->st, (PyObject *)t->engine, kind, (PyObject *)t, exc);
}

/* Resolve every awaiter future and call every done callback. */
static void
task_notify(task_object *t)
{
    PyObject *waiters = t->waiters;
    t->waiters = NULL;
    if (waiters == NULL) {
        return;
    }
    module_state *st = t->engine->st;
    Py_ssize_t n = PyList_GET_SIZE(waiters);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *w = PyList_GET_ITEM(waiters, i);
        if (PyTuple_CheckExact(w)) { /* (bridge, future) */
            bridge_object *b = (bridge_object *)PyTuple_GET_ITEM(w, 0);
            PyObject *fut = PyTuple_GET_ITEM(w, 1);
            if (bridge_is_current(b)) {
                /* Possibly inside another task's step: schedule, don't nest. */
                if (!awaiter_wake(st, fut, 0)) {
                    task_resolve_future(st, fut);
                }
            }
            else if (bridge_push(b, BRIDGE_WAKE, Py_NewRef(fut)) < 0) {
                /* Its loop is closed: the wakeup can't arrive (fut stays
                 * alive in `waiters` until the end of this loop). */
                PyErr_Clear();
                awaiter_undeliverable(st, fut);
            }
            continue;
        }
        PyObject *res = PyObject_CallOneArg(w, (PyObject *)t);
        if (res == NULL) {
            PyObject *exc = PyErr_GetRaisedException();
            task_report(t, st->s_callback, exc);
            Py_XDECREF(exc);
        }
        Py_XDECREF(res);
    }
    Py_DECREF(waiters);
}

int
task_finish(task_object *t, task_state state, PyObject *outcome)
{
    assert(PyGILState_Check());
    PyObject *owned = NULL; /* an outcome the controls replaced it with */
    if (t->ctl != NULL && !task_is_done(t)) {
        int st = (int)state;
        if (controls_before_finish(t, &st, &outcome, &owned)) {
            return 1; /* it goes on to another attempt */
        }
        state = (task_state)st;
    }
    int rc = task_finish_now(t, state, outcome);
    Py_XDECREF(owned);
    return rc;
}

static int
task_finish_now(task_object *t, task_state state, PyObject *outcome)
{
    lane *l = t->lane;
    int registered = (t->flags & TF_REGISTERED) != 0;
    int never_started = t->state != TASK_RUNNING;
    lane_handoff handoff = {NULL, 0};
    if (registered) {
        if (!lane_finish_task(l, t, state, &handoff)) {
            return 0;
        }
    }
    else {
        if (task_is_done(t)) {
            return 0;
        }
        t->state = (uint8_t)state;
        t->t_end = offload_now_ns();
    }
    Py_XSETREF(t->outcome, Py_XNewRef(outcome));
    if (!PyObject_GC_IsTracked((PyObject *)t)) {
        PyObject_GC_Track((PyObject *)t);
    }
    task_expose_runner(t);
    task_release_inputs(t, never_started);
    if (t->ctl != NULL) {
        controls_after_finish(t); /* its key is free before anyone is woken */
    }
    history_add(&t->engine->finished, t);
    if (t->runner != NULL) {
        /* The asyncio.Task may still be pending (cancelled before its first
         * step, or its loop is gone): don't let asyncio warn about it. */
        PyObject *no = Py_False;
        if (PyObject_SetAttrString(t->runner, "_log_destroy_pending", no) < 0) {
            PyErr_Clear();
        }
        Py_CLEAR(t->runner);
    }
    Py_CLEAR(t->bridge);
    /* Keep `t` alive through the notifications even if the registry held
     * the last reference. */
    Py_INCREF(t);
    if (registered) {
        t->flags &= (uint8_t)~TF_REGISTERED;
        Py_DECREF(t); /* the registry's reference (we still hold ours) */
    }
    task_notify(t);
    if (state == TASK_FAILED && !(t->flags & TF_OBSERVED) && outcome != NULL) {
        t->delivered = 1;
        task_report(t, t->engine->st->s_failed, outcome);
    }
    if (registered) {
        lane_finish_dispatch(l, &handoff);
    }
    Py_DECREF(t);
    return 1;
}

void
task_finish_from_error(task_object *t)
{
    PyObject *value = PyErr_GetRaisedException();
    if (value == NULL) {
        task_finish(t, TASK_FAILED, NULL);
        return;
    }
    module_state *st = t->engine->st;
    if (value != NULL && PyObject_TypeCheck(value, (PyTypeObject *)st->CancelledError)) {
        /* Cancelled from outside offload (asyncio.run() cancelling every task
         * at exit, a second Ctrl-C, code cancelling all_tasks()) with nobody
         * awaiting it: name it, or the work would vanish without a trace. */
        /* (A timeout's cancellation is offload's own: it becomes TimeoutError.) */
        int unseen = !t->cancel_requested && !(t->flags & TF_OBSERVED) &&
                     !(t->ctl != NULL && controls_attempt_timed_out(t));
        if (task_finish(t, TASK_CANCELLED, NULL) && unseen) {
            task_report(t, st->s_interrupted, value);
        }
    }
    else {
        task_annotate_error(st, value);
        task_finish(t, TASK_FAILED, value);
    }
    Py_DECREF(value);
}

void
task_forget_registration(task_object *t)
{
    t->flags &= (uint8_t)~(TF_REGISTERED | TF_HAS_SLOT | TF_WAITING);
}

/* Mark a task registered with its lane (called by lane_submit under mu). */
void
task_set_registered(task_object *t)
{
    t->flags |= TF_REGISTERED;
}

void
task_resolve_future(module_state *st, PyObject *fut)
{
    if (awaiter_wake(st, fut, 1)) {
        return;
    }
    /* Resolved with None: the awaiter reads the outcome from the task. The
     * future may already be cancelled (its awaiter went away). */
    PyObject *res = PyObject_CallMethodOneArg(fut, st->s_set_result, Py_None);
    if (res == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(res);
}

int
task_cancel(task_object *t)
{
    if (task_is_done(t)) {
        return 0;
    }
    t->cancel_requested = 1;
    if (t->flags & TF_DEFERRED) {
        return task_finish(t, TASK_CANCELLED, NULL);
    }
    if (t->state == TASK_PENDING || t->state == TASK_SCHEDULED || t->state == TASK_RETRYING) {
        /* Atomic with respect to a worker or loop starting it: task_finish
         * re-checks the state under the lane mutex. */
        if (task_finish(t, TASK_CANCELLED, NULL)) {
            return 1;
        }
        if (task_is_done(t)) {
            return 0;
        }
    }
    /* Running. Only coroutines can be interrupted, on their own loop. */
    if (t->runner == NULL || t->bridge == NULL) {
        return 0;
    }
    bridge_object *b = (bridge_object *)t->bridge;
    if (bridge_is_current(b)) {
        PyObject *res = PyObject_CallMethodNoArgs(t->runner, t->engine->st->s_cancel);
        if (res == NULL) {
            return -1;
        }
        int ok = PyObject_IsTrue(res);
        Py_DECREF(res);
        return ok;
    }
    if (bridge_push(b, BRIDGE_CANCEL, Py_NewRef((PyObject *)t)) < 0) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}


/* ------------------------------------------------------------------------ */
/* waiting                                                                   */

int
task_add_waiter(task_object *t, bridge_object *b, PyObject *obj)
{
    /* Allocate first: a GC pass triggered by an allocation can run Python
     * code and let the task finish. The done check and the append then run
     * back to back under the GIL, so task_notify can't slip in between. */
    PyObject *pair = PyTuple_Pack(2, (PyObject *)b, obj);
    if (pair == NULL) {
        return -1;
    }
    if (t->waiters == NULL && (t->waiters = PyList_New(0)) == NULL) {
        Py_DECREF(pair);
        return -1;
    }
    if (task_is_done(t)) {
        Py_DECREF(pair);
        return 1;
    }
    int rc = PyList_Append(t->waiters, pair);
    Py_DECREF(pair);
    return rc;
}

/* An asyncio future of `loop` resolved (with None) when the task ends. */
static PyObject *
task_new_future(task_object *t, PyObject *loop)
{
    module_state *st = t->engine->st;
    bridge_object *b = engine_bridge_for_running_loop(t->engine, loop);
    if (b == NULL) {
        return NULL;
    }
    PyObject *fut = PyObject_CallMethodNoArgs(loop, st->s_create_future);
    if (fut == NULL) {
        return NULL;
    }
    int rc = task_add_waiter(t, b, fut);
    if (rc < 0) {
        Py_DECREF(fut);
        return NULL;
    }
    if (rc == 1) {
        task_resolve_future(st, fut);
    }
    return fut;
}

/* Block the calling (non-loop) thread until done or timeout; GIL released
 * while waiting, signals checked every 100 ms. 1 done, 0 timeout, -1 error. */
static int
task_wait_blocking(task_object *t, double timeout)
{
    lane *l = t->lane;
    int64_t deadline =
        timeout < 0 ? INT64_MAX : offload_ns_add(offload_now_ns(), offload_seconds_to_ns(timeout));
    while (!task_is_done(t)) {
        int64_t left = deadline - offload_now_ns();
        if (left <= 0) {
            return 0;
        }
        double slice = left > 100000000 ? 0.1 : (double)left / 1e9;
        Py_BEGIN_ALLOW_THREADS
        lane_wait_done_unlocked(l, t, slice);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    return 1;
}

static int
parse_timeout(PyObject *obj, double *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = -1.0;
        return 0;
    }
    if (PyBool_Check(obj) || !(PyFloat_Check(obj) || PyLong_Check(obj))) {
        PyErr_Format(PyExc_TypeError, "timeout must be a number of seconds or None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (v != v) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a number of seconds, not nan");
        return -1;
    }
    if (v < 0) {
        PyObject *what = offload_safe_repr(obj); /* a float/int subclass's __repr__ */
        if (what != NULL) {
            PyErr_Format(PyExc_ValueError, "timeout must be >= 0, got %U", what);
            Py_DECREF(what);
        }
        return -1;
    }
    *out = v;
    return 0;
}

/* Wait for a result from a plain thread; refuses to block an event loop. */
static int
task_wait_for_caller(task_object *t, PyObject *timeout_obj, const char *what)
{
    double timeout;
    if (parse_timeout(timeout_obj, &timeout) < 0) {
        return -1;
    }
    if (t->flags & TF_DEFERRED) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s(): this task was created by run() and starts only when awaited", what);
        return -1;
    }
    if (task_is_done(t)) {
        return 0;
    }
    PyObject *loop = offload_running_loop(t->engine->st);
    if (loop == NULL) {
        return -1;
    }
    int on_loop = loop != Py_None;
    Py_DECREF(loop);
    if (on_loop) {
        PyErr_Format(PyExc_RuntimeError,
                     "Task.%s() would block the running event loop until the task ends; "
                     "use 'await task' instead", what);
        return -1;
    }
    int rc = task_wait_blocking(t, timeout);
    if (rc < 0) {
        return -1;
    }
    if (rc == 0) {
        PyObject *name = Task_get_name(t, NULL);
        char seconds[32];
        PyOS_snprintf(seconds, sizeof(seconds), "%.3g", timeout);
        if (name != NULL) {
            PyErr_Format(PyExc_TimeoutError,
                         "task %R did not finish within %s s (id=%llu); it keeps running: "
                         "call result() again to keep waiting, or cancel() it",
                         name, seconds, (unsigned long long)t->id);
            Py_DECREF(name);
        }
        return -1;
    }
    return 0;
}

/* Set the exception for a finished task's outcome; returns NULL. */
PyObject *
task_raise_outcome(task_object *t)
{
    module_state *st = t->engine->st;
    if (t->state == TASK_CANCELLED) {
        PyErr_SetString(st->CancelledError, "the offload task was cancelled");
        return NULL;
    }
    if (t->outcome == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the offload task failed without an exception");
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(t->outcome), t->outcome);
    return NULL;
}

PyObject *
task_outcome_value(task_object *t)
{
    if (t->state == TASK_SUCCEEDED) {
        return Py_NewRef(t->outcome ? t->outcome : Py_None);
    }
    t->flags |= TF_OBSERVED;
    t->delivered = 1;
    return task_raise_outcome(t);
}

void
task_outcome_abandoned(task_object *t)
{
    if (t->state != TASK_FAILED || t->delivered || t->outcome == NULL) {
        return;
    }
    t->delivered = 1;
    task_report(t, t->engine->st->s_failed, t->outcome);
}

/* ------------------------------------------------------------------------ */
/* Python methods                                                            */

static PyObject *
Task_done(task_object *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(task_is_done(t));
}

static PyObject *
Task_cancelled(task_object *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->state == TASK_CANCELLED);
}

static PyObject *
Task_cancel(task_object *t, PyObject *Py_UNUSED(ignored))
{
    int rc = task_cancel(t);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

static const char *const timeout_param[] = {"timeout"};

static PyObject *
Task_result(task_object *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout = Py_None;
    if (offload_parse_args("result", args, nargs, kwnames, timeout_param, 1, 1, &timeout) < 0) {
        return NULL;
    }
    if (task_wait_for_caller(t, timeout, "result") < 0) {
        return NULL;
    }
    return task_outcome_value(t);
}

static PyObject *
Task_exception(task_object *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout = Py_None;
    if (offload_parse_args("exception", args, nargs, kwnames, timeout_param, 1, 1, &timeout) < 0) {
        return NULL;
    }
    if (task_wait_for_caller(t, timeout, "exception") < 0) {
        return NULL;
    }
    if (t->state == TASK_CANCELLED) {
        return task_raise_outcome(t);
    }
    if (t->state == TASK_FAILED && t->outcome != NULL) {
        t->flags |= TF_OBSERVED;
        t->delivered = 1;
        return Py_NewRef(t->outcome);
    }
    Py_RETURN_NONE;
}

static void
task_call_done_callback_now(task_object *t, PyObject *fn)
{
    PyObject *res = PyObject_CallOneArg(fn, (PyObject *)t);
    if (res == NULL) {
        PyObject *exc = PyErr_GetRaisedException();
        task_report(t, t->engine->st->s_callback, exc);
        Py_XDECREF(exc);
    }
    Py_XDECREF(res);
}

static PyObject *
Task_add_done_callback(task_object *t, PyObject *fn)
{
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "add_done_callback() needs a callable, not %.100s",
                     Py_TYPE(fn)->tp_name);
        return NULL;
    }
    /* Allocate first (a GC pass may run finalizers that finish the task),
     * then check and append back to back, as task_add_waiter does: a callback
     * added to the list after task_notify took it would never be called. */
    if (t->waiters == NULL && !task_is_done(t)) {
        PyObject *fresh = PyList_New(0);
        if (fresh == NULL) {
            return NULL;
        }
        if (t->waiters == NULL) {
            t->waiters = fresh;
        }
        else {
            Py_DECREF(fresh);
        }
    }
    if (task_is_done(t)) {
        task_call_done_callback_now(t, fn);
        Py_RETURN_NONE;
    }
    if (PyList_Append(t->waiters, fn) < 0) { /* a realloc: runs no Python code */
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Python code runs inside the comparisons (a user __eq__), and it may finish
 * the task (task_notify takes the list away and releases it) or add and
 * remove callbacks. So: compare against a snapshot that owns its items, then
 * delete the matches from the list as it is now, by identity, in one pass
 * that runs no Python code (the snapshot still owns every deleted item, so
 * no refcount reaches zero until the snapshot goes, after the last touch). */
static PyObject *
Task_remove_done_callback(task_object *t, PyObject *fn)
{
    if (t->waiters == NULL) {
        return PyLong_FromSsize_t(0);
    }
    /* Held: the allocation below may run the GC, whose finalizers may finish the task. */
    PyObject *current = Py_NewRef(t->waiters);
    PyObject *snapshot = PyList_GetSlice(current, 0, PY_SSIZE_T_MAX); /* owns its items */
    Py_DECREF(current); /* not the last reference unless the task finished: no code runs */
    PyObject *matches = NULL, *result = NULL;
    if (snapshot == NULL || (matches = PyList_New(0)) == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(snapshot); i++) {
        PyObject *w = PyList_GET_ITEM(snapshot, i); /* the snapshot never changes */
        if (PyTuple_CheckExact(w)) {
            continue; /* an awaiter's (bridge, future): not a callback */
        }
        int eq = PyObject_RichCompareBool(w, fn, Py_EQ);
        if (eq < 0 || (eq && PyList_Append(matches, w) < 0)) {
            goto done;
        }
    }
    Py_ssize_t removed = 0;
    PyObject *waiters = t->waiters; /* NULL if the task finished meanwhile */
    for (Py_ssize_t i = waiters ? PyList_GET_SIZE(waiters) - 1 : -1; i >= 0; i--) {
        PyObject *w = PyList_GET_ITEM(waiters, i);
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(matches); j++) {
            if (PyList_GET_ITEM(matches, j) == w) {
                assert(Py_REFCNT(w) > 1); /* matches owns it: deleting runs no __del__ */
                if (PyList_SetSlice(waiters, i, i + 1, NULL) < 0) {
                    goto done;
                }
                removed++;
                break;
            }
        }
    }
    result = PyLong_FromSsize_t(removed);
done:
    Py_XDECREF(matches); /* may run finalizers: the list is no longer touched */
    Py_XDECREF(snapshot);
    return result;
}

static PyObject *
Task_done_future(task_object *t, PyObject *Py_UNUSED(ignored))
{
    PyObject *loop = offload_running_loop(t->engine->st);
    if (loop == NULL) {
        return NULL;
    }
    if (loop == Py_None) {
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError, "_done_future() needs a running event loop");
        return NULL;
    }
    PyObject *fut = task_new_future(t, loop);
    Py_DECREF(loop);
    return fut;
}

static PyObject *
Task_quiet_wait(task_object *t, PyObject *Py_UNUSED(ignored))
{
    return awaiter_new_quiet((PyObject *)t);
}

/* offload.call() gave up on the task (timeout, Ctrl-C): nobody will receive its
 * outcome, so its failure, already there or still to come, is reported. */
static PyObject *
Task_unobserve(task_object *t, PyObject *Py_UNUSED(ignored))
{
    if (!task_is_done(t)) {
        t->flags &= (uint8_t)~TF_OBSERVED;
    }
    else {
        task_outcome_abandoned(t);
    }
    Py_RETURN_NONE;
}

static PyObject *
Task_wait(task_object *t, PyObject *timeout_obj)
{
    double timeout;
    if (parse_timeout(timeout_obj, &timeout) < 0) {
        return NULL;
    }
    if (t->flags & TF_DEFERRED) {
        Py_RETURN_FALSE;
    }
    int rc = task_wait_blocking(t, timeout);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static int
task_check_external(task_object *t, const char *what)
{
    if (t->lane->kind != LANE_PROCESSES) {
        PyErr_Format(PyExc_RuntimeError, "%s() is only for tasks of an external lane", what);
        return -1;
    }
    return 0;
}

static PyObject *
Task_set_running(task_object *t, PyObject *Py_UNUSED(ignored))
{
    if (task_check_external(t, "_set_running") < 0) {
        return NULL;
    }
    return PyBool_FromLong(task_mark_running(t));
}

/* An external executor's outcome for attempt `attempt` (optional second
 * argument): one that arrives after that attempt ended (its timeout fired and
 * another attempt began) is not this attempt's any more. 1: still current. */
static int
external_attempt_current(task_object *t, PyObject *const *args, Py_ssize_t nargs,
                         const char *what)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "%s(value, attempt=None, /)", what);
        return -1;
    }
    if (nargs < 2 || args[1] == Py_None || t->ctl == NULL) {
        return 1;
    }
    unsigned long attempt = PyLong_AsUnsignedLong(args[1]);
    if (attempt == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    return attempt == t->ctl->attempt && t->state == TASK_RUNNING;
}

static PyObject *
Task_set_result(task_object *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (task_check_external(t, "_set_result") < 0) {
        return NULL;
    }
    int current = external_attempt_current(t, args, nargs, "_set_result");
    if (current <= 0) {
        return current < 0 ? NULL : Py_NewRef(Py_False);
    }
    return PyBool_FromLong(task_finish(t, TASK_SUCCEEDED, args[0]));
}

static PyObject *
Task_set_exception(task_object *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (task_check_external(t, "_set_exception") < 0) {
        return NULL;
    }
    int current = external_attempt_current(t, args, nargs, "_set_exception");
    if (current <= 0) {
        return current < 0 ? NULL : Py_NewRef(Py_False);
    }
    PyObject *exc = args[0];
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_TypeError, "_set_exception() needs an exception instance, not %.100s",
                     Py_TYPE(exc)->tp_name);
        return NULL;
    }
    module_state *st = t->engine->st;
    if (PyObject_TypeCheck(exc, (PyTypeObject *)st->CancelledError)) {
        return PyBool_FromLong(task_finish(t, TASK_CANCELLED, NULL));
    }
    return PyBool_FromLong(task_finish(t, TASK_FAILED, exc));
}

/* ------------------------------------------------------------------------ */
/* getters, repr, GC                                                         */

static PyObject *
Task_get_id(task_object *t, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(t->id);
}

static PyObject *
Task_get_name(task_object *t, void *Py_UNUSED(c))
{
    if (t->name == NULL) {
        t->name = task_derive_name(t);
    }
    return Py_XNewRef(t->name);
}

static PyObject *
Task_get_lane(task_object *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->engine->st->lane_names[t->lane->kind]);
}

static PyObject *
Task_get_state(task_object *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->engine->st->state_names[t->state]);
}

static PyObject *
seconds_or_none(int64_t from, int64_t to)
{
    if (from == 0 || to == 0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble((double)(to - from) / 1e9);
}

static PyObject *
Task_get_queue_wait(task_object *t, void *Py_UNUSED(c))
{
    return seconds_or_none(t->t_submit, t->t_start);
}

static PyObject *
Task_get_run_time(task_object *t, void *Py_UNUSED(c))
{
    return seconds_or_none(t->t_start, t->t_end);
}

static PyObject *
Task_get_age(task_object *t, void *Py_UNUSED(c))
{
    int64_t end = task_is_done(t) ? t->t_end : offload_now_ns();
    return PyFloat_FromDouble((double)(end - t->t_submit) / 1e9);
}

static PyObject *
Task_get_attempt(task_object *t, void *Py_UNUSED(c))
{
    if (t->ctl != NULL) {
        return PyLong_FromUnsignedLong(t->ctl->attempt);
    }
    return PyLong_FromLong(t->t_start != 0);
}

static PyObject *
Task_get_timeout(task_object *t, void *Py_UNUSED(c))
{
    if (t->ctl == NULL || t->ctl->controls->timeout < 0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(t->ctl->controls->timeout);
}

static PyObject *
Task_get_key(task_object *t, void *Py_UNUSED(c))
{
    PyObject *key = t->ctl != NULL ? t->ctl->controls->key : NULL;
    return Py_NewRef(key ? key : Py_None);
}

/* Engine-clock ns of the timer a scheduled or retrying task waits for, or 0. */
static int64_t
task_due(task_object *t)
{
    if (t->ctl == NULL || (t->state != TASK_SCHEDULED && t->state != TASK_RETRYING)) {
        return 0;
    }
    return t->ctl->due;
}

static PyObject *
Task_get_scheduled_for(task_object *t, void *Py_UNUSED(c))
{
    int64_t due = task_due(t);
    if (due == 0) {
        Py_RETURN_NONE;
    }
    int64_t wall_due = engine_wall_ns(t->engine) + (due - timer_now(&t->engine->timer));
    return PyFloat_FromDouble((double)wall_due / 1e9);
}

PyObject *
task_info_dict(task_object *t, int64_t wall_minus_mono)
{
    PyObject *name = task_name(t);
    if (name == NULL) {
        return NULL;
    }
    PyObject *error = NULL, *error_type = NULL;
    if (t->state == TASK_FAILED && t->outcome != NULL) {
        history_summarize_error(t->outcome, &error, &error_type); /* as its record will say */
    }
    int64_t due = task_due(t);
    info_fields f = {
        .id = t->id,
        .name = name,
        .key = t->ctl != NULL ? t->ctl->controls->key : NULL,
        .error = error,
        .error_type = error_type,
        .task = (PyObject *)t,
        .t_submit = t->t_submit,
        .t_start = t->t_start,
        .t_end = t->t_end,
        .scheduled_mono = due ? due - t->engine->timer.skew_ns : 0,
        .attempt = t->ctl != NULL ? t->ctl->attempt : (t->t_start != 0),
        .lane = (uint8_t)t->lane->kind,
        .state = t->state,
    };
    PyObject *d = history_info_dict(t->engine->st, &f, wall_minus_mono);
    Py_DECREF(name);
    Py_XDECREF(error);
    Py_XDECREF(error_type);
    return d;
}

static PyObject *
Task_get_target(task_object *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->target ? t->target : Py_None);
}

static PyObject *
Task_get_args(task_object *t, void *Py_UNUSED(c))
{
    return t->args ? Py_NewRef(t->args) : PyTuple_New(0);
}

static PyObject *
Task_get_kwargs(task_object *t, void *Py_UNUSED(c))
{
    return t->kwargs ? PyDict_Copy(t->kwargs) : PyDict_New();
}

static PyObject *
Task_repr(task_object *t)
{
    PyObject *name = Task_get_name(t, NULL);
    if (name == NULL) {
        return NULL;
    }
    module_state *st = t->engine->st;
    PyObject *r = PyUnicode_FromFormat("<offload.Task %llu %R lane=%U state=%U>",
                                       (unsigned long long)t->id, name,
                                       st->lane_names[t->lane->kind], st->state_names[t->state]);
    Py_DECREF(name);
    return r;
}

static int
Task_traverse(task_object *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->engine);
    Py_VISIT(t->target);
    Py_VISIT(t->args);
    Py_VISIT(t->kwargs);
    Py_VISIT(t->context);
    Py_VISIT(t->name);
    Py_VISIT(t->outcome);
    Py_VISIT(t->bridge);
    Py_VISIT(t->runner);
    Py_VISIT(t->waiters);
    return controls_traverse(t, visit, arg);
}

/* Break reference cycles; the engine link stays (t->lane points into it). */
static int
Task_clear(task_object *t)
{
    task_expose_runner(t);
    Py_CLEAR(t->target);
    Py_CLEAR(t->args);
    Py_CLEAR(t->kwargs);
    Py_CLEAR(t->context);
    Py_CLEAR(t->outcome);
    Py_CLEAR(t->bridge);
    Py_CLEAR(t->runner);
    Py_CLEAR(t->waiters);
    return 0;
}

static void
Task_dealloc(task_object *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    if ((t->flags & TF_DEFERRED) && !task_is_done(t) && t->target != NULL) {
        /* run() was called but never awaited: nothing ran, say so. */
        PyObject *what = offload_safe_repr(t->name ? t->name : t->target);
        if (what == NULL ||
            PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                             "offload run() of %U was never awaited; nothing ran", what) < 0) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(what);
        if (t->flags & TF_IS_CORO) {
            PyObject *res = PyObject_CallMethod(t->target, "close", NULL);
            if (res == NULL) {
                PyErr_Clear();
            }
            Py_XDECREF(res);
        }
    }
    task_unclaim_coroutine(t);
    Task_clear(t);
    controls_free(t);
    Py_CLEAR(t->name);
    Py_CLEAR(t->engine);
    tp->tp_free(t);
    Py_DECREF(tp);
}

static PyMethodDef Task_methods[] = {
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "offload.Task[T] in annotations (PEP 585)."},
    {"done", (PyCFunction)Task_done, METH_NOARGS,
     "done($self, /)\n--\n\nWhether the task has finished."},
    {"cancelled", (PyCFunction)Task_cancelled, METH_NOARGS,
     "cancelled($self, /)\n--\n\nWhether it ended cancelled."},
    {"cancel", (PyCFunction)Task_cancel, METH_NOARGS,
     "cancel($self, /)\n--\n\n"
     "Cancel: a pending task never starts; a running coroutine gets CancelledError.\n"
     "A running sync callable can't be interrupted (returns False)."},
    {"result", (PyCFunction)(void (*)(void))Task_result, METH_FASTCALL | METH_KEYWORDS,
     "result($self, /, timeout=None)\n--\n\n"
     "Block this (non-loop) thread until done; return the result or raise."},
    {"exception", (PyCFunction)(void (*)(void))Task_exception, METH_FASTCALL | METH_KEYWORDS,
     "exception($self, /, timeout=None)\n--\n\n"
     "Block this (non-loop) thread until done; return the exception or None."},
    {"add_done_callback", (PyCFunction)Task_add_done_callback, METH_O,
     "add_done_callback($self, fn, /)\n--\n\n"
     "Call fn(task) when it finishes, in the thread where it finishes."},
    {"remove_done_callback", (PyCFunction)Task_remove_done_callback, METH_O,
     "remove_done_callback($self, fn, /)\n--\n\n"
     "Remove fn from the done callbacks; return how many were removed."},
    {"_done_future", (PyCFunction)Task_done_future, METH_NOARGS, NULL},
    {"_quiet_wait", (PyCFunction)Task_quiet_wait, METH_NOARGS, NULL},
    {"_wait", (PyCFunction)Task_wait, METH_O, NULL},
    {"_unobserve", (PyCFunction)Task_unobserve, METH_NOARGS, NULL},
    {"_set_running", (PyCFunction)Task_set_running, METH_NOARGS, NULL},
    {"_set_result", (PyCFunction)(void (*)(void))Task_set_result, METH_FASTCALL, NULL},
    {"_set_exception", (PyCFunction)(void (*)(void))Task_set_exception, METH_FASTCALL, NULL},
    {NULL},
};

static PyGetSetDef Task_getset[] = {
    {"id", (getter)Task_get_id, NULL, "Unique id in this process.", NULL},
    {"name", (getter)Task_get_name, NULL, "Name (default: the target's qualified name).", NULL},
    {"lane", (getter)Task_get_lane, NULL, "Lane the task runs on.", NULL},
    {"state", (getter)Task_get_state, NULL,
     "scheduled, pending, running, retrying, succeeded, failed or cancelled.", NULL},
    {"attempt", (getter)Task_get_attempt, NULL, "Attempts started so far (retries count).",
     NULL},
    {"key", (getter)Task_get_key, NULL, "The dedup key it was spawned with, or None.", NULL},
    {"timeout", (getter)Task_get_timeout, NULL, "Seconds each attempt may run, or None.", NULL},
    {"scheduled_for", (getter)Task_get_scheduled_for, NULL,
     "Wall-clock time (epoch s) a scheduled or retrying task waits for, else None.", NULL},
    {"queue_wait", (getter)Task_get_queue_wait, NULL, "Seconds from spawn to start.", NULL},
    {"run_time", (getter)Task_get_run_time, NULL, "Seconds from start to end.", NULL},
    {"age", (getter)Task_get_age, NULL, "Seconds since spawn (until end).", NULL},
    {"_target", (getter)Task_get_target, NULL, NULL, NULL},
    {"_args", (getter)Task_get_args, NULL, NULL, NULL},
    {"_kwargs", (getter)Task_get_kwargs, NULL, NULL, NULL},
    {NULL},
};

PyType_Slot Task_slots[] = {
    {Py_tp_doc, "A unit of background work (created by spawn/run; not instantiable)."},
    {Py_tp_dealloc, Task_dealloc},
    {Py_tp_traverse, Task_traverse},
    {Py_tp_clear, Task_clear},
    {Py_tp_repr, Task_repr},
    {Py_tp_methods, Task_methods},
    {Py_tp_getset, Task_getset},
    {Py_am_await, awaiter_new},
    {0, NULL},
};
