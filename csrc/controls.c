/* controls.c: task controls (see controls.h): the Controls type, the per-task
 * record, dedup keys, per-key limits, retries with backoff, delays and
 * timeouts, and what the timer thread does when one of them is due.
 *
 * Everything here runs with the GIL held; the dictionaries it keeps on the
 * engine (`keys`: key -> live task, `limiters`: limit_key -> capsule) are
 * GIL-protected. Lane fields change only through lane.c. */
#include "common.h" /* first: Python.h sets the feature macros */

#include "bridge.h"
#include "controls.h"
#include "engine.h"
#include "lane.h"
#include "module.h"
#include "ring.h"
#include "task.h"
#include "threadpool.h"

/* The shortest wait before a timer-fired admission tries a full lane again
 * (on_full="block": the timer thread never blocks). */
#define BLOCKED_RETRY_NS 5000000

/* ------------------------------------------------------------------------ */
/* the Controls type                                                         */

static int
read_double(PyObject *spec, const char *key, double none_value, double *out)
{
    PyObject *v = PyDict_GetItemString(spec, key); /* borrowed; exact str keys */
    if (v == NULL || v == Py_None) {
        *out = none_value;
        return 0;
    }
    *out = PyFloat_AsDouble(v);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static int
read_ssize(PyObject *spec, const char *key, Py_ssize_t none_value, Py_ssize_t *out)
{
    PyObject *v = PyDict_GetItemString(spec, key);
    if (v == NULL || v == Py_None) {
        *out = none_value;
        return 0;
    }
    *out = PyLong_AsSsize_t(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
read_str(PyObject *spec, const char *key)
{
    PyObject *v = PyDict_GetItemString(spec, key);
    return v != NULL && PyUnicode_CheckExact(v) ? Py_NewRef(v) : NULL;
}

/* Controls(spec): `spec` is the dict offload/_controls.py validated. */
static PyObject *
Controls_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *spec;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Controls() takes one dict");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!:Controls", &PyDict_Type, &spec)) {
        return NULL;
    }
    controls_object *c = (controls_object *)type->tp_alloc(type, 0);
    if (c == NULL) {
        return NULL;
    }
    c->spec = PyDict_Copy(spec);
    Py_ssize_t retries = 0;
    double jitter = 0;
    PyObject *on_dup = PyDict_GetItemString(spec, "on_duplicate");
    if (c->spec == NULL || read_double(spec, "timeout", -1.0, &c->timeout) < 0 ||
        read_ssize(spec, "retries", 0, &retries) < 0 ||
        read_double(spec, "backoff_initial", 0.1, &c->backoff_initial) < 0 ||
        read_double(spec, "backoff_factor", 2.0, &c->backoff_factor) < 0 ||
        read_double(spec, "backoff_max", 60.0, &c->backoff_max) < 0 ||
        read_double(spec, "backoff_jitter", 1.0, &jitter) < 0 ||
        read_double(spec, "delay", -1.0, &c->delay) < 0 ||
        read_double(spec, "at", Py_NAN, &c->at) < 0 ||
        read_ssize(spec, "limit", 1, &c->limit) < 0) {
        Py_DECREF(c);
        return NULL;
    }
    c->retries = retries > INT32_MAX ? INT32_MAX : (int32_t)(retries < 0 ? 0 : retries);
    c->backoff_jitter = jitter != 0.0;
    c->retry_on = PyDict_GetItemString(spec, "retry_on");
    c->retry_on = c->retry_on != NULL && PyTuple_Check(c->retry_on) ? Py_NewRef(c->retry_on)
                                                                   : NULL;
    c->key = read_str(spec, "key");
    c->limit_key = read_str(spec, "limit_key");
    c->on_duplicate = DUP_JOIN;
    if (on_dup != NULL && PyUnicode_Check(on_dup)) {
        if (PyUnicode_CompareWithASCIIString(on_dup, "reject") == 0) {
            c->on_duplicate = DUP_REJECT;
        }
        else if (PyUnicode_CompareWithASCIIString(on_dup, "replace") == 0) {
            c->on_duplicate = DUP_REPLACE;
        }
    }
    if (c->limit < 1) {
        c->limit = 1;
    }
    return (PyObject *)c;
}

static PyObject *
Controls_get_spec(controls_object *c, void *Py_UNUSED(closure))
{
    return PyDict_Copy(c->spec);
}

static PyObject *
Controls_repr(controls_object *c)
{
    return PyUnicode_FromFormat("<offload controls %R>", c->spec);
}

static int
Controls_traverse(controls_object *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->retry_on);
    Py_VISIT(c->spec);
    return 0;
}

static int
Controls_clear(controls_object *c)
{
    Py_CLEAR(c->retry_on);
    Py_CLEAR(c->key);
    Py_CLEAR(c->limit_key);
    Py_CLEAR(c->spec);
    return 0;
}

static void
Controls_dealloc(controls_object *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    Controls_clear(c);
    tp->tp_free(c);
    Py_DECREF(tp);
}

static PyGetSetDef Controls_getset[] = {
    {"spec", (getter)Controls_get_spec, NULL, "The validated options, as a dict.", NULL},
    {NULL},
};

PyType_Slot Controls_slots[] = {
    {Py_tp_doc, "Validated task controls (made by offload's options(); private)."},
    {Py_tp_new, Controls_new},
    {Py_tp_dealloc, Controls_dealloc},
    {Py_tp_traverse, Controls_traverse},
    {Py_tp_clear, Controls_clear},
    {Py_tp_repr, Controls_repr},
    {Py_tp_getset, Controls_getset},
    {0, NULL},
};

/* ------------------------------------------------------------------------ */
/* the per-task record                                                       */

int
controls_check_target(controls_object *c, int is_coroutine_object)
{
    if (is_coroutine_object && c->retries > 0) {
        PyErr_Format(PyExc_ValueError,
                     "retries=%d needs a function to call again for each attempt, not a "
                     "coroutine object (which runs once): pass spawn(fn, *args) instead of "
                     "spawn(fn(*args))",
                     (int)c->retries);
        return -1;
    }
    return 0;
}

int
controls_attach(task_object *t, controls_object *c, PyObject *fn, PyObject *args,
                PyObject *kwargs)
{
    task_ctl *ctl = PyMem_Calloc(1, sizeof(task_ctl));
    if (ctl == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    ctl->controls = (controls_object *)Py_NewRef((PyObject *)c);
    timer_node_init(&ctl->node);
    if (fn != NULL && c->retries > 0) {
        ctl->fn = Py_NewRef(fn);
        ctl->fn_args = Py_XNewRef(args);
        ctl->fn_kwargs = Py_XNewRef(kwargs);
    }
    ctl->retry_delay = -1.0;
    t->ctl = ctl;
    return 0;
}

/* The inputs kept for further attempts (they can be large). */
static void
controls_release_inputs(task_ctl *ctl)
{
    Py_CLEAR(ctl->fn);
    Py_CLEAR(ctl->fn_args);
    Py_CLEAR(ctl->fn_kwargs);
}

void
controls_free(task_object *t)
{
    task_ctl *ctl = t->ctl;
    if (ctl == NULL) {
        return;
    }
    t->ctl = NULL;
    assert(!timer_node_armed(&ctl->node) || ctl->node.owner == NULL);
    controls_release_inputs(ctl);
    Py_CLEAR(ctl->key);
    Py_CLEAR(ctl->limiter);
    Py_CLEAR(ctl->controls);
    PyMem_Free(ctl);
}

int
controls_traverse(task_object *t, visitproc visit, void *arg)
{
    task_ctl *ctl = t->ctl;
    if (ctl != NULL) {
        Py_VISIT(ctl->controls);
        Py_VISIT(ctl->fn);
        Py_VISIT(ctl->fn_args);
        Py_VISIT(ctl->fn_kwargs);
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* dedup keys: engine->keys maps a key to the live task holding it           */

task_object *
controls_find_duplicate(engine_object *e, controls_object *c, int *err)
{
    PyObject *found = PyDict_GetItemWithError(e->keys, c->key); /* borrowed */
    if (found == NULL) {
        *err = PyErr_Occurred() != NULL;
        return NULL;
    }
    task_object *holder = (task_object *)Py_NewRef(found);
    if (task_is_done(holder)) {
        Py_DECREF(holder);
        return NULL;
    }
    if (c->on_duplicate == DUP_JOIN) {
        return holder;
    }
    if (c->on_duplicate == DUP_REJECT) {
        PyObject *msg = PyUnicode_FromFormat(
            "a task with key %R is already %U (id=%llu); wait for it, or spawn with "
            "on_duplicate='join' or 'replace'",
            c->key, e->st->state_names[holder->state], (unsigned long long)holder->id);
        PyObject *exc = msg ? PyObject_CallFunctionObjArgs(e->st->Duplicate, msg,
                                                          (PyObject *)holder, NULL)
                            : NULL;
        Py_XDECREF(msg);
        if (exc != NULL) {
            PyErr_SetObject(e->st->Duplicate, exc);
            Py_DECREF(exc);
        }
        Py_DECREF(holder);
        *err = 1;
        return NULL;
    }
    /* replace: cancel the holder; one that can't stop (a running sync call)
     * keeps running but no longer holds the key. */
    if (task_cancel(holder) < 0) {
        PyErr_Clear();
    }
    if (holder->ctl != NULL && holder->ctl->key != NULL) {
        if (PyDict_GetItemWithError(e->keys, c->key) == (PyObject *)holder &&
            PyDict_DelItem(e->keys, c->key) < 0) {
            PyErr_Clear();
        }
        Py_CLEAR(holder->ctl->key);
    }
    PyErr_Clear();
    Py_DECREF(holder);
    return NULL;
}

static int
key_register(task_object *t)
{
    controls_object *c = t->ctl->controls;
    if (c->key == NULL) {
        return 0;
    }
    if (PyDict_SetItem(t->engine->keys, c->key, (PyObject *)t) < 0) {
        return -1;
    }
    t->ctl->key = Py_NewRef(c->key);
    return 0;
}

static void
key_unregister(task_object *t)
{
    PyObject *key = t->ctl->key;
    if (key == NULL) {
        return;
    }
    t->ctl->key = NULL;
    PyObject *saved = PyErr_GetRaisedException();
    PyObject *holder = PyDict_GetItemWithError(t->engine->keys, key);
    if (holder == (PyObject *)t && PyDict_DelItem(t->engine->keys, key) < 0) {
        PyErr_WriteUnraisable(key);
    }
    PyErr_Clear();
    PyErr_SetRaisedException(saved);
    Py_DECREF(key);
}

/* ------------------------------------------------------------------------ */
/* per-key limits: engine->limiters maps a limit_key to a capsule            */

typedef struct {
    Py_ssize_t limit;
    Py_ssize_t active; /* tasks holding one of its slots */
    ring waiting;      /* tasks waiting for a slot, FIFO (strong refs) */
} limiter;

#define LIMITER_NAME "offload.limiter"

static void
limiter_destroy(PyObject *capsule)
{
    limiter *lim = PyCapsule_GetPointer(capsule, LIMITER_NAME);
    if (lim == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *t;
    while ((t = ring_pop(&lim->waiting)) != NULL) {
        Py_DECREF(t);
    }
    ring_free(&lim->waiting);
    PyMem_Free(lim);
}

static limiter *
limiter_of(PyObject *capsule)
{
    return (limiter *)PyCapsule_GetPointer(capsule, LIMITER_NAME);
}

/* The capsule of `key` (new reference), created on first use. */
static PyObject *
limiter_get(engine_object *e, PyObject *key, Py_ssize_t limit)
{
    PyObject *cap = PyDict_GetItemWithError(e->limiters, key);
    if (cap != NULL) {
        limiter_of(cap)->limit = limit; /* the latest spawn's limit applies */
        return Py_NewRef(cap);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    limiter *lim = PyMem_Calloc(1, sizeof(limiter));
    if (lim == NULL) {
        return PyErr_NoMemory();
    }
    lim->limit = limit;
    ring_init(&lim->waiting);
    cap = PyCapsule_New(lim, LIMITER_NAME, limiter_destroy);
    if (cap == NULL) {
        PyMem_Free(lim);
        return NULL;
    }
    if (PyDict_SetItem(e->limiters, key, cap) < 0) {
        Py_DECREF(cap);
        return NULL;
    }
    return cap;
}

/* Forget an idle limiter, so a stream of distinct keys doesn't accumulate. */
static void
limiter_forget_if_idle(engine_object *e, PyObject *key, limiter *lim)
{
    if (lim->active == 0 && ring_len(&lim->waiting) == 0 && PyDict_DelItem(e->limiters, key) < 0) {
        PyErr_Clear();
    }
}

static void controls_rearm_start(task_object *t, int64_t delay_ns);

/* `t` leaves its key slot (finished or retrying): the next waiter of that key
 * gets it and is admitted to its lane. */
static void
limit_release(task_object *t)
{
    task_ctl *ctl = t->ctl;
    if (ctl->limiter == NULL) {
        return;
    }
    PyObject *cap = ctl->limiter; /* our reference */
    ctl->limiter = NULL;
    int was_holding = ctl->limit_state == LIMIT_HOLDING;
    ctl->limit_state = LIMIT_NONE;
    limiter *lim = limiter_of(cap);
    if (was_holding && lim != NULL) {
        lim->active--;
        task_object *next;
        while (lim->active < lim->limit && (next = ring_pop(&lim->waiting)) != NULL) {
            if (task_is_done(next) || next->ctl == NULL) {
                Py_DECREF(next); /* cancelled while it waited */
                continue;
            }
            lim->active++;
            next->ctl->limit_state = LIMIT_HOLDING;
            if (lane_readmit(next->lane, next) == 1) {
                controls_rearm_start(next, BLOCKED_RETRY_NS);
            }
            Py_DECREF(next);
        }
    }
    if (lim != NULL) {
        limiter_forget_if_idle(t->engine, t->ctl->controls->limit_key, lim);
    }
    Py_DECREF(cap);
}

/* ------------------------------------------------------------------------ */
/* entering a lane                                                           */

/* The task is due to compete for a slot: through its key's limit first.
 * `is_new`: not registered with its lane yet (a spawn without delay). */
static int
controls_enter(task_object *t, int is_new)
{
    task_ctl *ctl = t->ctl;
    controls_object *c = ctl->controls;
    if (c->limit_key != NULL && ctl->limit_state != LIMIT_HOLDING) {
        PyObject *cap = limiter_get(t->engine, c->limit_key, c->limit);
        if (cap == NULL) {
            return -1;
        }
        limiter *lim = limiter_of(cap);
        if (lim->active >= lim->limit) {
            if (is_new && lane_register_waiting(t->lane, t, TASK_PENDING) < 0) {
                limiter_forget_if_idle(t->engine, c->limit_key, lim);
                Py_DECREF(cap);
                return -1;
            }
            if (!is_new) {
                lane_mark_pending(t->lane, t); /* due: now it only waits for its key */
            }
            if (ring_push(&lim->waiting, Py_NewRef((PyObject *)t)) < 0) {
                Py_DECREF(t);
                Py_DECREF(cap);
                PyErr_NoMemory();
                return -1;
            }
            ctl->limit_state = LIMIT_WAITING;
            Py_XSETREF(ctl->limiter, cap);
            return 0;
        }
        lim->active++;
        ctl->limit_state = LIMIT_HOLDING;
        Py_XSETREF(ctl->limiter, cap);
    }
    if (is_new) {
        int rc = lane_submit(t->lane, t);
        lane_sweep_trash(t->lane);
        if (rc < 0) {
            limit_release(t);
        }
        return rc;
    }
    if (lane_readmit(t->lane, t) == 1) {
        controls_rearm_start(t, BLOCKED_RETRY_NS);
    }
    return 0;
}

/* Seconds until the first run (delay= or at=), or < 0 for "now". */
static double
controls_initial_delay(engine_object *e, controls_object *c)
{
    if (c->delay >= 0) {
        return c->delay;
    }
    if (c->at == c->at) { /* not nan */
        double wall = (double)engine_wall_ns(e) / 1e9;
        return c->at > wall ? c->at - wall : 0.0;
    }
    return -1.0;
}

/* A run() task whose key is held by a live task when it is first awaited:
 * it ends as that task ends, with the same outcome (singleflight for run()). */
static PyObject *
mirror_outcome(PyObject *follower, PyObject *holder_obj)
{
    task_object *t = (task_object *)follower, *holder = (task_object *)holder_obj;
    if (task_is_done(t)) {
        Py_RETURN_NONE;
    }
    t->flags |= TF_OBSERVED; /* the holder reports its own failure, once */
    if (holder->state == TASK_CANCELLED) {
        task_finish(t, TASK_CANCELLED, NULL);
    }
    else {
        task_finish(t, (task_state)holder->state, holder->outcome);
    }
    Py_RETURN_NONE;
}

static PyMethodDef mirror_def = {"_mirror_outcome", mirror_outcome, METH_O, NULL};

static int
controls_follow(task_object *t, task_object *holder)
{
    if (t->flags & TF_IS_CORO) {
        task_close_coroutine(t->engine->st, t->target); /* it won't run */
    }
    PyObject *fn = PyCFunction_New(&mirror_def, (PyObject *)t);
    if (fn == NULL) {
        return -1;
    }
    PyObject *res = PyObject_CallMethod((PyObject *)holder, "add_done_callback", "O", fn);
    Py_DECREF(fn);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

int
controls_submit(task_object *t)
{
    engine_object *e = t->engine;
    task_ctl *ctl = t->ctl;
    if (ctl->controls->key != NULL) {
        /* spawn() looked before making the task; a run() is submitted when first
         * awaited, and a holder may have appeared since. */
        int err = 0;
        task_object *holder = controls_find_duplicate(e, ctl->controls, &err);
        if (err) {
            return -1;
        }
        if (holder != NULL) {
            int rc = holder == t ? 0 : controls_follow(t, holder);
            Py_DECREF(holder);
            return rc;
        }
    }
    if (lane_prepare_new(t) < 0) {
        return -1;
    }
    double delay = controls_initial_delay(e, ctl->controls);
    if (delay < 0) {
        if (key_register(t) < 0) {
            return -1;
        }
        if (controls_enter(t, 1) < 0) {
            key_unregister(t);
            return -1;
        }
        return 0;
    }
    if (t->lane->kind == LANE_BACKGROUND && t->bridge == NULL) {
        /* Its loop now, so the timer can hand it over without the GIL. */
        bridge_object *b = engine_background_bridge(e);
        if (b == NULL) {
            return -1;
        }
        t->bridge = Py_NewRef((PyObject *)b);
    }
    if (lane_register_waiting(t->lane, t, TASK_SCHEDULED) < 0) {
        return -1;
    }
    /* Accepted: from here a failure ends the task (and is reported). */
    ctl->due = offload_ns_add(timer_now(&e->timer), offload_seconds_to_ns(delay));
    if (key_register(t) < 0 ||
        timer_arm(&e->timer, &ctl->node, (PyObject *)t, ctl->due, TIMER_TASK_START) < 0) {
        task_finish_from_error(t);
    }
    return 0;
}

/* Try admitting again in `delay_ns` (a full lane with on_full="block"). */
static void
controls_rearm_start(task_object *t, int64_t delay_ns)
{
    task_ctl *ctl = t->ctl;
    Py_XDECREF(timer_disarm(&t->engine->timer, &ctl->node));
    ctl->due = offload_ns_add(timer_now(&t->engine->timer), delay_ns);
    if (timer_arm(&t->engine->timer, &ctl->node, (PyObject *)t, ctl->due, TIMER_TASK_READMIT) <
        0) {
        task_finish_from_error(t);
    }
}

/* ------------------------------------------------------------------------ */
/* attempts, timeouts and retries                                            */

/* The per-name counters runtime.attempts() reports: {name: [attempts, retries]}. */
static void
count_attempt(task_object *t, int is_retry)
{
    PyObject *name = task_name(t);
    if (name == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *pair = PyDict_GetItemWithError(t->engine->attempts, name);
    if (pair == NULL && !PyErr_Occurred()) {
        pair = Py_BuildValue("[ii]", 0, 0);
        if (pair != NULL && PyDict_SetItem(t->engine->attempts, name, pair) < 0) {
            Py_CLEAR(pair);
        }
        Py_XDECREF(pair); /* the dict holds it */
    }
    for (int i = 0; pair != NULL && i < 1 + is_retry; i++) {
        PyObject *old = PyList_GET_ITEM(pair, i);
        PyObject *new = PyLong_FromSsize_t(PyLong_AsSsize_t(old) + 1);
        if (new == NULL) {
            break;
        }
        PyList_SetItem(pair, i, new); /* steals `new`, releases `old` */
    }
    PyErr_Clear();
    Py_DECREF(name);
}

void
controls_attempt_started(task_object *t)
{
    task_ctl *ctl = t->ctl;
    ctl->attempt++;
    ctl->due = 0;
    count_attempt(t, ctl->attempt > 1);
    if (ctl->controls->timeout < 0) {
        return;
    }
    timer_service *ts = &t->engine->timer;
    Py_XDECREF(timer_disarm(ts, &ctl->node));
    int64_t due = offload_ns_add(timer_now(ts), offload_seconds_to_ns(ctl->controls->timeout));
    ctl->node.attempt = ctl->attempt;
    if (timer_arm(ts, &ctl->node, (PyObject *)t, due, TIMER_TASK_TIMEOUT) < 0) {
        PyErr_WriteUnraisable((PyObject *)t); /* the attempt runs without its timeout */
    }
}

static PyObject *
timeout_error(task_object *t)
{
    PyObject *name = task_name(t);
    char seconds[32];
    PyOS_snprintf(seconds, sizeof(seconds), "%g", t->ctl->controls->timeout);
    PyObject *msg = PyUnicode_FromFormat(
        "offload task %R (id=%llu) timed out after %s s (attempt %u)", name ? name : Py_None,
        (unsigned long long)t->id, seconds, (unsigned)t->ctl->attempt);
    Py_XDECREF(name);
    if (msg == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_CallOneArg(PyExc_TimeoutError, msg);
    Py_DECREF(msg);
    return exc;
}

static int
is_instance_quiet(PyObject *obj, PyObject *cls)
{
    int r = PyObject_IsInstance(obj, cls);
    if (r < 0) {
        PyErr_Clear(); /* a user __instancecheck__ raised: not a match */
        return 0;
    }
    return r;
}

/* Whether the failed attempt gets another: attempts left, a matching
 * exception (never a cancellation or an exit), or an explicit offload.Retry. */
static int
should_retry(task_object *t, PyObject *exc)
{
    task_ctl *ctl = t->ctl;
    module_state *st = t->engine->st;
    if (exc == NULL || t->cancel_requested || t->engine->stop_requested ||
        ctl->attempt > (uint32_t)ctl->controls->retries) {
        return 0;
    }
    if (is_instance_quiet(exc, st->CancelledError) ||
        is_instance_quiet(exc, PyExc_KeyboardInterrupt) ||
        is_instance_quiet(exc, PyExc_SystemExit)) {
        return 0;
    }
    ctl->retry_delay = -1.0;
    if (st->RetryError != NULL && is_instance_quiet(exc, st->RetryError)) {
        PyObject *d = PyObject_GetAttrString(exc, "delay");
        if (d != NULL && d != Py_None) {
            double v = PyFloat_AsDouble(d);
            ctl->retry_delay = v >= 0 ? v : 0.0; /* offload.Retry validated it */
        }
        Py_XDECREF(d);
        PyErr_Clear();
        return 1;
    }
    PyObject *on = ctl->controls->retry_on;
    return on != NULL ? is_instance_quiet(exc, on) : is_instance_quiet(exc, PyExc_Exception);
}

/* A uniform double in [0, 1) from the engine's xorshift state (GIL held). */
static double
engine_random(engine_object *e)
{
    uint64_t x = e->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    e->rng = x;
    return (double)(x >> 11) / 9007199254740992.0;
}

/* The wait before attempt `attempt + 1`: initial * factor^(attempt-1), capped
 * at max; with jitter, uniform in [wait/2, wait] (retries of many tasks that
 * failed together spread out, and none comes sooner than half the wait). */
static double
backoff_seconds(task_object *t)
{
    task_ctl *ctl = t->ctl;
    controls_object *c = ctl->controls;
    if (ctl->retry_delay >= 0) {
        return ctl->retry_delay;
    }
    double wait = c->backoff_initial;
    for (uint32_t i = 1; i < ctl->attempt && wait < c->backoff_max; i++) {
        wait *= c->backoff_factor;
    }
    if (wait > c->backoff_max) {
        wait = c->backoff_max;
    }
    if (c->backoff_jitter) {
        wait = wait / 2 + engine_random(t->engine) * wait / 2;
    }
    return wait;
}

/* The attempt that just ended failed and gets another. */
static void
controls_begin_retry(task_object *t, PyObject *exc)
{
    task_ctl *ctl = t->ctl;
    engine_object *e = t->engine;
    double wait = backoff_seconds(t);
    Py_XDECREF(timer_disarm(&e->timer, &ctl->node)); /* the attempt's timeout */
    if (t->runner != NULL) {
        offload_gc_expose(t->runner);
        Py_CLEAR(t->runner);
    }
    if (ctl->fn != NULL && (t->flags & TF_IS_CORO)) {
        offload_gc_expose(t->target); /* the finished coroutine; a new one per attempt */
        Py_CLEAR(t->target);
    }
    if (t->lane->kind == LANE_THREADS && ctl->timed_out == ctl->attempt) {
        /* Its thread still runs inside the task's context: the next attempt
         * enters a copy (a context can't be entered twice at once). */
        PyObject *copy = PyContext_Copy(t->context);
        if (copy != NULL) {
            Py_SETREF(t->context, copy);
        }
        PyErr_Clear();
    }
    lane_handoff handoff;
    lane_retry_task(t->lane, t, &handoff); /* RETRYING; no Python code runs here */
    ctl->due = offload_ns_add(timer_now(&e->timer), offload_seconds_to_ns(wait));
    int armed = timer_arm(&e->timer, &ctl->node, (PyObject *)t, ctl->due, TIMER_TASK_START);
    /* From here Python code runs (the next task's dispatch, the next key
     * holder's, the log), which may cancel this task: it is consistent by now. */
    Py_INCREF(t);
    lane_finish_dispatch(t->lane, &handoff);
    if (armed < 0) {
        PyErr_Clear();
        limit_release(t);
        task_finish(t, TASK_FAILED, exc); /* retrying: no further retry is tried */
        Py_DECREF(t);
        return;
    }
    limit_release(t);
    if (!task_is_done(t)) { /* not cancelled by the code above */
        offload_report(e->st, (PyObject *)e, e->st->s_retrying, (PyObject *)t, exc);
    }
    Py_DECREF(t);
}

int
controls_before_finish(task_object *t, int *state, PyObject **outcome, PyObject **owned)
{
    task_ctl *ctl = t->ctl;
    *owned = NULL;
    if (t->state != TASK_RUNNING) {
        return 0;
    }
    if (ctl->timed_out != 0 && ctl->timed_out == ctl->attempt && !t->cancel_requested &&
        !(*state == TASK_FAILED && *outcome != NULL &&
          PyObject_TypeCheck(*outcome, (PyTypeObject *)PyExc_TimeoutError))) {
        /* Whatever the attempt did after its timeout (a coroutine that caught
         * the cancellation), it timed out. */
        *owned = timeout_error(t);
        if (*owned == NULL) {
            PyErr_Clear();
        }
        *state = TASK_FAILED;
        *outcome = *owned;
    }
    if (*state == TASK_FAILED && should_retry(t, *outcome)) {
        controls_begin_retry(t, *outcome);
        Py_CLEAR(*owned);
        return 1;
    }
    return 0;
}

void
controls_after_finish(task_object *t)
{
    task_ctl *ctl = t->ctl;
    Py_XDECREF(timer_disarm(&t->engine->timer, &ctl->node)); /* not the last reference */
    ctl->due = 0;
    key_unregister(t);
    limit_release(t);
    controls_release_inputs(ctl);
}

void
controls_on_cancel(task_object *t)
{
    Py_XDECREF(timer_disarm(&t->engine->timer, &t->ctl->node));
}

int
controls_discard_late(task_object *t, uint32_t attempt)
{
    task_ctl *ctl = t->ctl;
    if (attempt == ctl->attempt && ctl->timed_out != attempt && !task_is_done(t)) {
        return 0;
    }
    if (attempt != ctl->attempt || ctl->timed_out == attempt) {
        lane_count_overrun_end(t->lane); /* only a timeout ends a running call's attempt */
    }
    return 1;
}

int
controls_attempt_timed_out(task_object *t)
{
    task_ctl *ctl = t->ctl;
    return ctl->timed_out != 0 && ctl->timed_out == ctl->attempt && t->state == TASK_RUNNING;
}

int
controls_cancel_applies(task_object *t)
{
    return t->ctl == NULL || t->cancel_requested || controls_attempt_timed_out(t);
}

/* ------------------------------------------------------------------------ */
/* the timer thread's side                                                   */

/* A scheduled or retrying task is due (or a blocked admission tries again). */
void
controls_fire_start(task_object *t)
{
    task_ctl *ctl = t->ctl;
    if (ctl == NULL || task_is_done(t) || t->state == TASK_RUNNING) {
        return;
    }
    ctl->due = 0;
    if (t->state == TASK_RETRYING && ctl->fn != NULL && t->target == NULL) {
        PyObject *args = ctl->fn_args ? Py_NewRef(ctl->fn_args) : PyTuple_New(0);
        PyObject *coro = args ? PyObject_Call(ctl->fn, args, ctl->fn_kwargs) : NULL;
        Py_XDECREF(args);
        if (coro == NULL) {
            task_finish_from_error(t);
            return;
        }
        t->target = coro;
    }
    if (controls_enter(t, 0) < 0) {
        task_finish_from_error(t);
    }
}

/* The running attempt `attempt` reached its timeout. */
static void
fire_timeout(task_object *t, uint32_t attempt)
{
    task_ctl *ctl = t->ctl;
    if (ctl == NULL || t->state != TASK_RUNNING || ctl->attempt != attempt) {
        return;
    }
    ctl->timed_out = attempt;
    lane *l = t->lane;
    lane_count_timeout(l, l->kind == LANE_THREADS);
    if (l->kind == LANE_LOOP || l->kind == LANE_BACKGROUND) {
        /* The coroutine is cancelled on its loop; its runner's finish turns
         * the outcome into TimeoutError (controls_before_finish). */
        if (t->bridge != NULL &&
            bridge_push((bridge_object *)t->bridge, BRIDGE_CANCEL, Py_NewRef((PyObject *)t)) == 0) {
            return;
        }
        PyErr_Clear();
    }
    if (l->kind == LANE_PROCESSES && t->engine->killers[LANE_PROCESSES] != NULL) {
        PyObject *res = PyObject_CallOneArg(t->engine->killers[LANE_PROCESSES], (PyObject *)t);
        if (res == NULL) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(res);
    }
    PyObject *exc = timeout_error(t);
    if (exc == NULL) {
        PyErr_Clear();
    }
    task_finish(t, TASK_FAILED, exc);
    Py_XDECREF(exc);
}

void
timer_fire(engine_object *e, timer_kind kind, PyObject *owner, uint32_t attempt, int64_t due)
{
    (void)e;
    (void)due;
    switch (kind) {
    case TIMER_TASK_START:
    case TIMER_TASK_READMIT: controls_fire_start((task_object *)owner); break;
    case TIMER_TASK_TIMEOUT: fire_timeout((task_object *)owner, attempt); break;
    case TIMER_CALLBACK: timer_handle_fire((timer_handle *)owner); return; /* consumed */
    }
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(owner);
    }
    Py_DECREF(owner);
}

int
controls_fire_nogil(PyObject *owner)
{
    /* No GIL: only fields fixed before the node was armed (its lane, its loop's
     * bridge, its controls), and no refcount changes. The task can't finish
     * meanwhile: its finish disarms the node first, which waits on the timer's
     * mutex, held by the caller. */
    task_object *t = (task_object *)owner;
    if (t->ctl == NULL || t->ctl->controls->limit_key != NULL) {
        return 0; /* its key's limiter is a dict: the GIL path */
    }
    switch (t->lane->kind) {
    case LANE_LOOP:
    case LANE_BACKGROUND:
        return t->bridge != NULL &&
               bridge_push_nogil((bridge_object *)t->bridge, BRIDGE_FIRE, owner) == 0;
    case LANE_THREADS: return pool_push_due_nogil(&t->engine->pool, t) == 0;
    default: return 0;
    }
}

void
controls_timer_leftover(timer_node *n, PyObject *owner)
{
    if (n->kind == TIMER_TASK_START || n->kind == TIMER_TASK_READMIT) {
        /* It can no longer start: the runtime is stopping. */
        task_object *t = (task_object *)owner;
        if (!task_is_done(t) && task_finish(t, TASK_CANCELLED, NULL)) {
            offload_report(t->engine->st, (PyObject *)t->engine, t->engine->st->s_interrupted,
                           owner, NULL);
        }
    }
    else if (n->kind == TIMER_CALLBACK) {
        timer_handle *h = (timer_handle *)owner;
        h->cancelled = 1;
        Py_CLEAR(h->callback);
    }
    Py_DECREF(owner);
}
