/* engine.c: offload._engine.Engine, the runtime core: options, lanes, the
 * home loop and loop bridges, background loop threads, close/stop/join, fork. */
#include "common.h" /* first: Python.h sets the feature macros */
#include <errno.h>
#include <stdlib.h>

#include <structmember.h>

#include "controls.h"
#include "engine.h"
#include "runner.h"
#include "task.h"


int
engine_check_ready(engine_object *e)
{
    if (!e->initialised) {
        PyErr_Format(PyExc_RuntimeError,
                     "this %.100s was never initialised: its __init__ must call "
                     "super().__init__(...) before the runtime is used",
                     Py_TYPE(e)->tp_name);
        return -1;
    }
    assert(e->n_bg > 0 && e->bg != NULL);
    return 0;
}

int
engine_check_open(engine_object *e)
{
    if (engine_check_ready(e) < 0) {
        return -1;
    }
    if (e->closed) {
        PyErr_SetString(e->st->Closed, ENGINE_CLOSED_MESSAGE);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* options                                                                   */

static int
opt_ssize(PyObject *d, const char *key, Py_ssize_t dflt, Py_ssize_t *out)
{
    PyObject *v = d ? PyDict_GetItemString(d, key) : NULL; /* borrowed */
    if (v == NULL || v == Py_None) {
        *out = dflt;
        return 0;
    }
    *out = PyLong_AsSsize_t(v);
    if (*out == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) { /* name the option */
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "%s is too large (at most %zd)", key,
                         PY_SSIZE_T_MAX);
        }
        return -1;
    }
    if (*out < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %zd", key, *out);
        return -1;
    }
    return 0;
}

static int
opt_double(PyObject *d, const char *key, double dflt, double *out)
{
    PyObject *v = PyDict_GetItemString(d, key);
    if (v == NULL || v == Py_None) {
        *out = dflt;
        return 0;
    }
    *out = PyFloat_AsDouble(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int
parse_on_full(PyObject *v, on_full_policy *out)
{
    if (v == NULL || v == Py_None || PyUnicode_CompareWithASCIIString(v, "reject") == 0) {
        *out = ON_FULL_REJECT;
    }
    else if (PyUnicode_CompareWithASCIIString(v, "drop") == 0) {
        *out = ON_FULL_DROP;
    }
    else if (PyUnicode_CompareWithASCIIString(v, "block") == 0) {
        *out = ON_FULL_BLOCK;
    }
    else {
        PyObject *what = offload_safe_repr(v);
        if (what != NULL) {
            PyErr_Format(PyExc_ValueError, "on_full must be 'reject', 'drop' or 'block', not %U",
                         what);
            Py_DECREF(what);
        }
        return -1;
    }
    return 0;
}

/* Limits of one lane from options["lanes"][name] (already validated in Python). */
static int
configure_lane(lane *l, PyObject *lane_opts, Py_ssize_t default_running)
{
    Py_ssize_t running, pending;
    if (opt_ssize(lane_opts, "max_running", default_running, &running) < 0 ||
        opt_ssize(lane_opts, "max_pending", PY_SSIZE_T_MAX, &pending) < 0) {
        return -1;
    }
    PyObject *on_full = lane_opts ? PyDict_GetItemString(lane_opts, "on_full") : NULL;
    on_full_policy policy;
    if (parse_on_full(on_full, &policy) < 0) {
        return -1;
    }
    if (running == 0) {
        PyErr_SetString(PyExc_ValueError, "max_running must be > 0");
        return -1;
    }
    pthread_mutex_lock(&l->mu);
    l->max_running = running;
    l->max_pending = pending;
    l->on_full = policy;
    pthread_mutex_unlock(&l->mu);
    return 0;
}

static int
engine_apply_options(engine_object *e, PyObject *opts)
{
    if (!PyDict_Check(opts)) {
        PyErr_SetString(PyExc_TypeError, "Engine options must be a dict");
        return -1;
    }
    Py_ssize_t threads, min_threads, loops;
    double idle;
    if (opt_ssize(opts, "threads", 32, &threads) < 0 ||
        opt_ssize(opts, "min_threads", 0, &min_threads) < 0 ||
        opt_ssize(opts, "background_loops", 1, &loops) < 0 ||
        opt_double(opts, "idle_timeout", 30.0, &idle) < 0) {
        return -1;
    }
    if (threads < 1 || threads > 4096 || loops < 1 || loops > 256) {
        PyErr_SetString(PyExc_ValueError,
                        "threads must be in 1..4096 and background_loops in 1..256");
        return -1;
    }
    PyObject *lanes = PyDict_GetItemString(opts, "lanes");
    if (lanes != NULL && lanes != Py_None && !PyDict_Check(lanes)) {
        PyErr_SetString(PyExc_TypeError, "lanes must be a dict");
        return -1;
    }
    for (int k = 0; k < LANE_COUNT; k++) {
        PyObject *lo = (lanes && lanes != Py_None) ? PyDict_GetItemString(lanes, lane_names[k]) : NULL;
        Py_ssize_t dflt = k == LANE_THREADS ? threads : PY_SSIZE_T_MAX;
        if (configure_lane(&e->lanes[k], lo, dflt) < 0) {
            return -1;
        }
    }
    /* The pool never needs more threads than the lane may run at once. */
    Py_ssize_t cap = e->lanes[LANE_THREADS].max_running;
    e->pool.max_threads = (int)(cap < threads ? cap : threads);
    e->pool.min_threads = (int)(min_threads < e->pool.max_threads ? min_threads : e->pool.max_threads);
    e->pool.idle_timeout = offload_idle_seconds(idle);
    PyObject *factory = PyDict_GetItemString(opts, "loop_factory");
    Py_XSETREF(e->loop_factory, (factory && factory != Py_None) ? Py_NewRef(factory) : NULL);
    free(e->bg);
    e->n_bg = 0;
    e->initialised = 0;
    e->bg = calloc((size_t)loops, sizeof(background_loop));
    if (e->bg == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->n_bg = (int)loops;
    for (int i = 0; i < e->n_bg; i++) {
        e->bg[i].engine = e;
        e->bg[i].index = i;
    }
    e->initialised = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* loops and bridges                                                         */

/* The bridge behind a weakref, or NULL if it is gone (borrowed: while its loop
 * is open, the loop's reader callback owns the bridge; see engine_new_bridge). */
static bridge_object *
bridge_of_ref(PyObject *ref)
{
    if (ref == NULL) {
        return NULL;
    }
    assert(PyWeakref_Check(ref));
    PyObject *b;
    if (PyWeakref_GetRef(ref, &b) <= 0) {
        return NULL;
    }
    /* Alive and owned elsewhere, so dropping our reference never frees it. */
    assert(Py_REFCNT(b) > 1);
    Py_DECREF(b);
    return (bridge_object *)b;
}

/* Forget bridges whose loop is gone (their weakrefs are dead). */
static int
engine_sweep_bridges(engine_object *e)
{
    PyObject *dead = PyList_New(0);
    if (dead == NULL) {
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *ref;
    while (PyDict_Next(e->bridges, &pos, &key, &ref)) {
        if (bridge_of_ref(ref) == NULL && PyList_Append(dead, key) < 0) {
            Py_DECREF(dead);
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dead); i++) {
        if (PyDict_DelItem(e->bridges, PyList_GET_ITEM(dead, i)) < 0) {
            Py_DECREF(dead);
            return -1;
        }
    }
    Py_DECREF(dead);
    return 0;
}

/* A bridge for a loop met for the first time; returns a new reference to the
 * weakref the registry keeps for it. */
static PyObject *
engine_new_bridge(engine_object *e, PyObject *loop, PyObject *key)
{
    if (engine_sweep_bridges(e) < 0) {
        return NULL;
    }
    PyObject *module = PyType_GetModule(Py_TYPE(e->views[0]));
    bridge_object *nb = module ? bridge_new(module) : NULL;
    if (nb == NULL) {
        return NULL;
    }
    PyObject *ref = NULL;
    if (bridge_attach(nb, loop) < 0 || (ref = PyWeakref_NewRef((PyObject *)nb, NULL)) == NULL ||
        PyDict_SetItem(e->bridges, key, ref) < 0) {
        Py_XDECREF(ref);
        bridge_close(nb);
        Py_DECREF(nb);
        return NULL;
    }
    /* From here the loop owns the bridge (its reader callback holds it). */
    Py_DECREF(nb);
    return ref;
}

bridge_object *
engine_bridge_for_running_loop(engine_object *e, PyObject *loop)
{
    bridge_object *cached = bridge_of_ref(e->last_bridge_ref);
    if (cached != NULL && cached->loop == loop) {
        return cached;
    }
    PyObject *key = PyLong_FromVoidPtr(loop);
    if (key == NULL) {
        return NULL;
    }
    PyObject *ref = Py_XNewRef(PyDict_GetItemWithError(e->bridges, key));
    bridge_object *b = bridge_of_ref(ref);
    if (b == NULL || b->loop != loop) { /* new loop, or a dead one's address reused */
        Py_XDECREF(ref);
        ref = PyErr_Occurred() ? NULL : engine_new_bridge(e, loop, key);
        b = bridge_of_ref(ref);
    }
    Py_DECREF(key);
    if (b == NULL) {
        Py_XDECREF(ref);
        return NULL;
    }
    Py_XSETREF(e->last_bridge_ref, ref); /* the registry's weakref doubles as the cache */
    return b;
}

bridge_object *
engine_current_bridge(engine_object *e)
{
    bridge_object *b = bridge_of_ref(e->last_bridge_ref);
    if (b != NULL && b->thread_id == PyThread_get_thread_ident() && bridge_loop_running_here(b)) {
        return b;
    }
    PyObject *loop = offload_running_loop(e->st);
    if (loop == NULL) {
        return NULL;
    }
    if (loop == Py_None) {
        Py_DECREF(loop);
        return NULL;
    }
    b = engine_bridge_for_running_loop(e, loop);
    Py_DECREF(loop);
    return b;
}

static PyObject *
call0(PyObject *obj, PyObject *name)
{
    return PyObject_CallMethodNoArgs(obj, name);
}

/* The body of a background loop thread, with the GIL held. */
static void
background_loop_run(background_loop *bg)
{
    engine_object *e = bg->engine;
    module_state *st = e->st;
    PyObject *loop = e->loop_factory ? PyObject_CallNoArgs(e->loop_factory)
                                     : PyObject_CallNoArgs(st->new_event_loop);
    if (loop == NULL) {
        /* No loop, no lane: the waiting tasks fail carrying the reason (each
         * reported once like any failure), later ones at the call site. */
        PyObject *cause = PyErr_GetRaisedException();
        bridge_close_with_cause(bg->bridge, cause);
        Py_XDECREF(cause);
        return;
    }
    PyObject *res = PyObject_CallOneArg(st->set_event_loop, loop);
    Py_XDECREF(res);
    if (res == NULL || bridge_attach(bg->bridge, loop) < 0) {
        PyErr_WriteUnraisable((PyObject *)e);
        bridge_close(bg->bridge);
        Py_DECREF(loop);
        return;
    }
    bg->loop = Py_NewRef(loop);
    res = call0(loop, st->s_run_forever);
    if (res == NULL) {
        PyErr_WriteUnraisable(loop);
    }
    Py_XDECREF(res);
    /* Stopped: cancel what is left (shutdown already drained our tasks), run
     * the cancellations, close async generators, close the loop. */
    PyObject *tasks = PyObject_CallOneArg(st->all_tasks, loop);
    if (tasks != NULL && PySet_GET_SIZE(tasks) > 0) {
        PyObject *list = PySequence_List(tasks);
        Py_ssize_t n = list ? PyList_GET_SIZE(list) : 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_XDECREF(call0(PyList_GET_ITEM(list, i), st->s_cancel));
        }
        PyObject *tuple = list ? PyList_AsTuple(list) : NULL;
        PyObject *kw = Py_BuildValue("{s:O}", "return_exceptions", Py_True);
        PyObject *g = (tuple && kw) ? PyObject_Call(st->gather, tuple, kw) : NULL;
        if (g != NULL) {
            Py_XDECREF(PyObject_CallMethodOneArg(loop, st->s_run_until_complete, g));
        }
        Py_XDECREF(g);
        Py_XDECREF(kw);
        Py_XDECREF(tuple);
        Py_XDECREF(list);
    }
    Py_XDECREF(tasks);
    PyObject *agens = call0(loop, st->s_shutdown_asyncgens);
    if (agens != NULL) {
        Py_XDECREF(PyObject_CallMethodOneArg(loop, st->s_run_until_complete, agens));
        Py_DECREF(agens);
    }
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(loop);
    }
    bridge_close(bg->bridge);
    Py_XDECREF(call0(loop, st->s_close));
    Py_XDECREF(PyObject_CallOneArg(st->set_event_loop, Py_None));
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(loop);
    }
    Py_DECREF(loop);
}

static void *
background_thread_main(void *arg)
{
    background_loop *bg = arg;
    engine_object *e = bg->engine;
    char name[16];
    snprintf(name, sizeof(name), "offload-bg-%d", bg->index);
    offload_name_thread(name);
    PyGILState_STATE gil = PyGILState_Ensure();
    offload_name_python_thread("offload-background", bg->index);
    background_loop_run(bg);
    PyThreadState *ts = PyEval_SaveThread();
    pthread_mutex_lock(&e->bg_mu);
    bg->state = 2;
    e->bg_alive--;
    pthread_cond_broadcast(&e->bg_cv);
    pthread_mutex_unlock(&e->bg_mu);
    PyEval_RestoreThread(ts);
    if (e->stop_requested) {
        /* A loop that stopped after _join() gave up on it gives its wakeup fd back
         * here (a joiner that saw it stop does the same; the GIL orders the two). */
        Py_CLEAR(bg->bridge);
    }
    offload_forget_python_thread();
    Py_DECREF(e); /* taken when the thread started */
    PyGILState_Release(gil);
    return NULL;
}

static int
background_start(engine_object *e, background_loop *bg)
{
    PyObject *module = PyType_GetModule(Py_TYPE(e->views[0]));
    bg->bridge = module ? bridge_new(module) : NULL;
    if (bg->bridge == NULL) {
        return -1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    Py_INCREF(e);
    pthread_mutex_lock(&e->bg_mu);
    bg->state = 1;
    e->bg_alive++;
    pthread_mutex_unlock(&e->bg_mu);
    int rc = pthread_create(&tid, &attr, background_thread_main, bg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&e->bg_mu);
        bg->state = 0;
        e->bg_alive--;
        pthread_mutex_unlock(&e->bg_mu);
        Py_DECREF(e);
        Py_CLEAR(bg->bridge);
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

bridge_object *
engine_background_bridge(engine_object *e)
{
    background_loop *bg = &e->bg[e->bg_next++ % (unsigned)e->n_bg];
    if (bg->bridge == NULL) {
        if (e->stop_requested) {
            PyErr_SetString(e->st->Closed, "the offload runtime is stopping");
            return NULL;
        }
        if (background_start(e, bg) < 0) {
            return NULL;
        }
    }
    return bg->bridge;
}

/* ------------------------------------------------------------------------ */
/* Python type: construction                                                 */

static PyObject *
Engine_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    module_state *st = state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    engine_object *e = (engine_object *)type->tp_alloc(type, 0);
    if (e == NULL) {
        return NULL;
    }
    e->st = st;
    for (int k = 0; k < LANE_COUNT; k++) {
        lane_init(&e->lanes[k], (lane_kind)k, e);
    }
    pool_init(&e->pool, e);
    timer_init(&e->timer, e);
    history_init(&e->finished);
    e->rng = (uint64_t)offload_now_ns() | 1;
    pthread_mutex_init(&e->bg_mu, NULL);
    offload_cond_init(&e->bg_cv);
    e->bridges = PyDict_New();
    e->keys = PyDict_New();
    e->limiters = PyDict_New();
    e->attempts = PyDict_New();
    if (e->bridges == NULL || e->keys == NULL || e->limiters == NULL || e->attempts == NULL ||
        history_configure(&e->finished, 1000, 0) < 0) {
        Py_DECREF(e);
        return NULL;
    }
    for (int k = 0; k < LANE_COUNT; k++) {
        if ((e->views[k] = lane_view_new(e, k, NULL)) == NULL) {
            Py_DECREF(e);
            return NULL;
        }
    }
    if ((e->auto_view = lane_view_new(e, -1, NULL)) == NULL) {
        Py_DECREF(e);
        return NULL;
    }
    return (PyObject *)e;
}

static int
Engine_init(engine_object *e, PyObject *args, PyObject *kwds)
{
    PyObject *opts;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Engine(options) takes one positional dict");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!:Engine", &PyDict_Type, &opts)) {
        return -1;
    }
    if (e->started) {
        PyErr_SetString(PyExc_RuntimeError, "the engine is already in use");
        return -1;
    }
    return engine_apply_options(e, opts);
}

/* Every object reference the engine holds: the one list its traverse and clear
 * walk (a field added here is visited and cleared, never only one of them). */
#define ENGINE_FOR_EACH_OBJECT(e, DO)                                                          \
    do {                                                                                       \
        for (int k_ = 0; k_ < LANE_COUNT; k_++) {                                              \
            DO((e)->views[k_]);                                                                \
            DO((e)->starters[k_]);                                                             \
            DO((e)->preparers[k_]);                                                            \
            DO((e)->killers[k_]);                                                              \
        }                                                                                      \
        DO((e)->auto_view);                                                                    \
        DO((e)->home_loop);                                                                    \
        DO((e)->home_bridge);                                                                  \
        DO((e)->bridges);                                                                      \
        DO((e)->last_bridge_ref);                                                              \
        DO((e)->loop_factory);                                                                 \
        DO((e)->keys);                                                                         \
        DO((e)->limiters);                                                                     \
        DO((e)->attempts);                                                                     \
        for (int i_ = 0; i_ < (e)->n_bg; i_++) {                                               \
            DO((e)->bg[i_].bridge);                                                            \
            DO((e)->bg[i_].loop);                                                              \
        }                                                                                      \
    } while (0)

static int
Engine_traverse(engine_object *e, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(e));
    ENGINE_FOR_EACH_OBJECT(e, Py_VISIT);
    /* A subclass's __dict__ is visited by the subclass's own traverse. */
    return 0;
}

static int
Engine_clear(engine_object *e)
{
    ENGINE_FOR_EACH_OBJECT(e, Py_CLEAR);
    return 0;
}

static void
Engine_dealloc(engine_object *e)
{
    PyTypeObject *tp = Py_TYPE(e);
    PyObject_GC_UnTrack(e);
    if (e->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)e);
    }
    Engine_clear(e);
    /* Threads hold references to the engine, so none is alive here. */
    for (int k = 0; k < LANE_COUNT; k++) {
        lane_destroy(&e->lanes[k]);
    }
    pool_destroy(&e->pool);
    timer_destroy(&e->timer);
    history_clear(&e->finished);
    pthread_mutex_destroy(&e->bg_mu);
    pthread_cond_destroy(&e->bg_cv);
    free(e->bg);
    tp->tp_free(e);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------------ */
/* Python type: methods                                                      */

static PyObject *
Engine_spawn(engine_object *e, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    return lane_spawn(e, -1, NULL, NULL, SPAWN_DETACHED, args, nargs, kwnames);
}

static PyObject *
Engine_run(engine_object *e, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    return lane_spawn(e, -1, NULL, NULL, SPAWN_DEFERRED, args, nargs, kwnames);
}

static PyObject *
Engine_options(engine_object *e, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    return lane_options(e, -1, NULL, NULL, args, nargs, kwnames);
}

static PyObject *
Engine_stats(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    for (int k = 0; k < LANE_COUNT; k++) {
        PyObject *ls = lane_stats_dict(&e->lanes[k]);
        if (ls == NULL || PyDict_SetItemString(d, lane_names[k], ls) < 0) {
            Py_XDECREF(ls);
            Py_DECREF(d);
            return NULL;
        }
        if (k == LANE_THREADS) {
            pthread_mutex_lock(&e->pool.mu);
            int threads = e->pool.threads, idle = e->pool.idle, maxt = e->pool.max_threads;
            pthread_mutex_unlock(&e->pool.mu);
            PyObject *v = Py_BuildValue("{s:i,s:i,s:i}", "alive", threads, "idle", idle, "max", maxt);
            if (v == NULL || PyDict_SetItemString(ls, "threads", v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(ls);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(v);
        }
        if (k == LANE_BACKGROUND) {
            pthread_mutex_lock(&e->bg_mu);
            int alive = e->bg_alive;
            pthread_mutex_unlock(&e->bg_mu);
            PyObject *v = Py_BuildValue("{s:i,s:i}", "alive", alive, "max", e->n_bg);
            if (v == NULL || PyDict_SetItemString(ls, "loops", v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(ls);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(v);
        }
        Py_DECREF(ls);
    }
    return d;
}

static PyObject *
Engine_start(engine_object *e, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const params[] = {"loop"};
    PyObject *given = Py_None;
    if (offload_parse_args("start", args, nargs, kwnames, params, 1, 1, &given) < 0) {
        return NULL;
    }
    if (engine_check_open(e) < 0) {
        return NULL;
    }
    PyObject *loop = offload_running_loop(e->st);
    if (loop == NULL) {
        return NULL;
    }
    if (loop == Py_None || (given != Py_None && given != loop)) {
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError,
                        "start() must be called on the thread running the event loop that "
                        "becomes the home loop (e.g. in the app's lifespan)");
        return NULL;
    }
    bridge_object *b = engine_bridge_for_running_loop(e, loop);
    if (b == NULL) {
        Py_DECREF(loop);
        return NULL;
    }
    Py_XSETREF(e->home_loop, loop);
    Py_XSETREF(e->home_bridge, (bridge_object *)Py_NewRef((PyObject *)b));
    e->started = 1;
    Py_RETURN_NONE;
}

static PyObject *
Engine_background_loops(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < e->n_bg; i++) {
        if (e->bg[i].loop != NULL && PyList_Append(list, e->bg[i].loop) < 0) {
            Py_CLEAR(list);
        }
    }
    return list;
}

static PyObject *
Engine_configure(engine_object *e, PyObject *opts)
{
    if (e->started) {
        PyErr_SetString(PyExc_RuntimeError, "the runtime is already in use; options are fixed");
        return NULL;
    }
    if (engine_apply_options(e, opts) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _set_lane_starter(lane, starter, prepare): an external executor for the
 * processes lane. prepare(target, args|None, kwargs|None) runs at the call
 * site and returns the task's payload; starter(task) runs when the task gets
 * a slot and must not block. */
static PyObject *
Engine_set_lane_starter(engine_object *e, PyObject *args)
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    PyObject *name, *fn, *prepare = Py_None;
    int kind = -1;
    if (!PyArg_ParseTuple(args, "OO|O:_set_lane_starter", &name, &fn, &prepare)) {
        return NULL;
    }
    if (lane_parse_name(name, &kind) < 0) {
        return NULL;
    }
    if (kind != LANE_PROCESSES) {
        PyErr_SetString(PyExc_ValueError, "only the 'processes' lane takes an external starter");
        return NULL;
    }
    if ((fn != Py_None && !PyCallable_Check(fn)) ||
        (prepare != Py_None && !PyCallable_Check(prepare))) {
        PyErr_SetString(PyExc_TypeError, "the starter and preparer must be callables or None");
        return NULL;
    }
    Py_XSETREF(e->starters[kind], fn == Py_None ? NULL : Py_NewRef(fn));
    Py_XSETREF(e->preparers[kind], prepare == Py_None ? NULL : Py_NewRef(prepare));
    Py_RETURN_NONE;
}

/* _set_lane_killer(lane, killer): killer(task) stops the worker running
 * `task` (its timeout fired); the processes lane's pool replaces the worker. */
static PyObject *
Engine_set_lane_killer(engine_object *e, PyObject *args)
{
    PyObject *name, *fn;
    int kind = -1;
    if (engine_check_ready(e) < 0 || !PyArg_ParseTuple(args, "OO:_set_lane_killer", &name, &fn) ||
        lane_parse_name(name, &kind) < 0) {
        return NULL;
    }
    if (kind != LANE_PROCESSES || (fn != Py_None && !PyCallable_Check(fn))) {
        PyErr_SetString(PyExc_ValueError, "only the 'processes' lane takes a killer (a callable)");
        return NULL;
    }
    Py_XSETREF(e->killers[kind], fn == Py_None ? NULL : Py_NewRef(fn));
    Py_RETURN_NONE;
}

int64_t
engine_wall_ns(engine_object *e)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + e->timer.skew_ns;
}

/* Wall clock minus monotonic clock (ns): turns a monotonic instant into an
 * epoch time for lookups. */
static int64_t
engine_wall_minus_mono(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec - offload_now_ns();
}

static int
seconds_arg(PyObject *arg, double *out)
{
    *out = PyFloat_AsDouble(arg);
    if (*out == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (!(*out >= 0) || *out == Py_HUGE_VAL) {
        PyErr_SetString(PyExc_ValueError, "seconds must be a finite number >= 0");
        return -1;
    }
    return 0;
}

/* _call_later(seconds, callback) -> TimerHandle: callback() on the timer thread. */
static PyObject *
Engine_call_later(engine_object *e, PyObject *const *args, Py_ssize_t nargs)
{
    double seconds;
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_call_later(seconds, callback)");
        return NULL;
    }
    if (seconds_arg(args[0], &seconds) < 0) {
        return NULL;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_call_later() needs a callable");
        return NULL;
    }
    if (e->closed || e->stop_requested) {
        PyErr_SetString(e->st->Closed, ENGINE_CLOSED_MESSAGE);
        return NULL;
    }
    e->started = 1;
    return timer_handle_new(e, seconds, args[1]);
}

static PyObject *
Engine_clock(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble((double)timer_now(&e->timer) / 1e9);
}

static PyObject *
Engine_wall_time(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble((double)engine_wall_ns(e) / 1e9);
}

/* Tests only: move the engine clock forward (every timer comes due sooner). */
static PyObject *
Engine_advance_clock(engine_object *e, PyObject *arg)
{
    double seconds;
    if (seconds_arg(arg, &seconds) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&e->timer.mu);
    e->timer.skew_ns = offload_ns_add(e->timer.skew_ns, offload_seconds_to_ns(seconds));
    pthread_cond_signal(&e->timer.wake_cv);
    pthread_mutex_unlock(&e->timer.mu);
    Py_RETURN_NONE;
}

static PyObject *
Engine_timers_armed(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(timer_armed_count(&e->timer));
}

/* {name: {"attempts": n, "retries": m}} of the tasks that had controls. */
static PyObject *
Engine_attempts(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyDict_New();
    PyObject *name, *pair;
    Py_ssize_t pos = 0;
    while (out != NULL && PyDict_Next(e->attempts, &pos, &name, &pair)) {
        PyObject *d = Py_BuildValue("{s:O,s:O}", "attempts", PyList_GET_ITEM(pair, 0),
                                    "retries", PyList_GET_ITEM(pair, 1));
        if (d == NULL || PyDict_SetItem(out, name, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(d);
    }
    return out;
}

/* _keep_finished(count, ttl_seconds): how many finished tasks lookups keep. */
static PyObject *
Engine_keep_finished(engine_object *e, PyObject *args)
{
    Py_ssize_t keep;
    double ttl;
    if (!PyArg_ParseTuple(args, "nd:_keep_finished", &keep, &ttl)) {
        return NULL;
    }
    if (keep < 0) {
        PyErr_SetString(PyExc_ValueError, "keep_finished must be >= 0");
        return NULL;
    }
    if (history_configure(&e->finished, keep, ttl) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *live_tasks_of(engine_object *e, int first, int last);

/* Whether live task `t` passes `f` (its name is computed only when asked for). */
static int
task_matches(task_object *t, const info_filter *f)
{
    PyObject *key = t->ctl != NULL ? t->ctl->controls->key : NULL;
    info_filter others = *f;
    others.name = NULL;
    if (!history_filter_matches(&others, NULL, key, t->state, t->lane->kind)) {
        return 0;
    }
    if (f->name == NULL) {
        return 1;
    }
    PyObject *name = task_name(t);
    if (name == NULL) {
        PyErr_Clear();
        return 0;
    }
    int same = PyUnicode_Compare(name, f->name) == 0;
    Py_DECREF(name);
    return same;
}

static int
optional_exact_str(PyObject *obj, PyObject **out)
{
    *out = NULL;
    if (obj == Py_None) {
        return 0;
    }
    if (!PyUnicode_CheckExact(obj)) {
        PyErr_SetString(PyExc_TypeError, "_task_infos: name and key must be str or None");
        return -1;
    }
    *out = obj;
    return 0;
}

/* _task_infos(name, state, key, lane, limit) -> list of dicts: the live tasks,
 * then the kept finished ones (newest first), filtered here so a lookup in a
 * backlog of 100,000 tasks builds only the dicts it returns. state and lane
 * are indexes (-1: any), limit -1: all. */
static PyObject *
Engine_task_infos(engine_object *e, PyObject *args)
{
    PyObject *name_obj, *key_obj;
    info_filter f;
    if (!PyArg_ParseTuple(args, "OiOin:_task_infos", &name_obj, &f.state, &key_obj, &f.lane,
                          &f.limit) ||
        optional_exact_str(name_obj, &f.name) < 0 || optional_exact_str(key_obj, &f.key) < 0) {
        return NULL;
    }
    int64_t shift = engine_wall_minus_mono();
    PyObject *live = live_tasks_of(e, f.lane >= 0 ? f.lane : 0, f.lane >= 0 ? f.lane : LANE_COUNT - 1);
    if (live == NULL) {
        return NULL;
    }
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < PyList_GET_SIZE(live); i++) {
        if (f.limit >= 0 && PyList_GET_SIZE(out) >= f.limit) {
            break;
        }
        task_object *t = (task_object *)PyList_GET_ITEM(live, i);
        if (!task_matches(t, &f)) {
            continue;
        }
        PyObject *d = task_info_dict(t, shift);
        if (d == NULL || PyList_Append(out, d) < 0) {
            Py_CLEAR(out);
        }
        Py_XDECREF(d);
    }
    Py_DECREF(live);
    if (out != NULL && history_list(&e->finished, e->st, shift, &f, out) < 0) {
        Py_CLEAR(out);
    }
    return out;
}

/* _task_info(id) -> dict or None: a live task, else a kept finished one. */
static PyObject *
Engine_task_info(engine_object *e, PyObject *arg)
{
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (id == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    int64_t shift = engine_wall_minus_mono();
    task_object *found = NULL;
    for (int k = 0; k < LANE_COUNT && found == NULL; k++) {
        lane *l = &e->lanes[k];
        pthread_mutex_lock(&l->mu);
        for (task_object *t = l->live_head; t != NULL; t = t->live_next) {
            if (t->id == id) {
                found = (task_object *)Py_NewRef((PyObject *)t);
                break;
            }
        }
        pthread_mutex_unlock(&l->mu);
    }
    if (found != NULL) {
        PyObject *d = task_info_dict(found, shift);
        Py_DECREF(found);
        return d;
    }
    return history_find(&e->finished, e->st, (uint64_t)id, shift);
}

/* Append the live tasks of lanes [first, last] to a new list. */
static PyObject *
live_tasks_of(engine_object *e, int first, int last)
{
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (int k = first; k <= last; k++) {
        lane *l = &e->lanes[k];
        pthread_mutex_lock(&l->mu);
        for (task_object *t = l->live_head; t != NULL; t = t->live_next) {
            /* PyList_Append may allocate but never runs Python code or the GC. */
            if (PyList_Append(list, (PyObject *)t) < 0) {
                pthread_mutex_unlock(&l->mu);
                Py_DECREF(list);
                return NULL;
            }
        }
        pthread_mutex_unlock(&l->mu);
    }
    return list;
}

static PyObject *
Engine_live_tasks(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    return live_tasks_of(e, 0, LANE_COUNT - 1);
}

/* Whether a task's loop is gone for good. The bridge is held across the
 * check: is_closed() is Python code, which may finish the task and drop
 * t->bridge. */
static int
task_loop_is_dead(task_object *t)
{
    if (t->bridge == NULL || task_is_done(t)) {
        return 0;
    }
    bridge_object *b = (bridge_object *)Py_NewRef(t->bridge);
    int dead = b->closed || bridge_loop_closed(b) == 1;
    Py_DECREF(b);
    return dead && !task_is_done(t);
}

PyObject *
engine_abandon_dead_loops(engine_object *e, int first, int last)
{
    PyObject *live = live_tasks_of(e, first, last); /* owns the tasks */
    PyObject *out = live ? PyList_New(0) : NULL;
    if (out == NULL) {
        Py_XDECREF(live);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(live); i++) {
        task_object *t = (task_object *)PyList_GET_ITEM(live, i);
        if (task_loop_is_dead(t)) {
            /* Its coroutine will never be resumed: close it, or its frame (the
             * future it awaits -> the asyncio.Task -> the Runner, which the GC
             * can't see -> the coroutine) would keep the whole cycle, task and
             * runtime included, alive for good. */
            PyObject *coro = (t->flags & TF_IS_CORO) ? Py_XNewRef(t->target) : NULL;
            task_finish(t, TASK_CANCELLED, NULL);
            if (coro != NULL) {
                task_close_coroutine(e->st, coro);
                Py_DECREF(coro);
            }
            if (PyList_Append(out, (PyObject *)t) < 0) {
                Py_DECREF(live);
                Py_DECREF(out);
                return NULL;
            }
        }
    }
    Py_DECREF(live);
    return out;
}

/* The bridges of every loop this engine touched, as a list that owns them:
 * checking or releasing one runs Python code, which may add bridges to (or
 * sweep) the registry, so it is never iterated across such calls. */
static PyObject *
engine_bridges_snapshot(engine_object *e)
{
    PyObject *list = PyList_New(0);
    Py_ssize_t pos = 0;
    PyObject *key, *ref;
    while (list != NULL && PyDict_Next(e->bridges, &pos, &key, &ref)) {
        bridge_object *b = bridge_of_ref(ref);
        if (b != NULL && PyList_Append(list, (PyObject *)b) < 0) { /* a realloc: no GC */
            Py_CLEAR(list);
        }
    }
    for (int i = 0; list != NULL && i < e->n_bg; i++) {
        if (e->bg[i].bridge != NULL && PyList_Append(list, (PyObject *)e->bg[i].bridge) < 0) {
            Py_CLEAR(list);
        }
    }
    return list;
}

int
engine_close_dead_bridges(engine_object *e)
{
    PyObject *bridges = engine_bridges_snapshot(e);
    if (bridges == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(bridges); i++) {
        bridge_object *b = (bridge_object *)PyList_GET_ITEM(bridges, i);
        if (!b->closed && bridge_loop_closed(b) == 1) {
            bridge_close(b);
        }
    }
    Py_DECREF(bridges);
    return 0;
}

/* The runtime is stopping: give back the reader and fd it added to each
 * loop it touched (a long-lived loop would keep one per Runtime); the
 * background loops close their own. */
static void
engine_release_bridges(engine_object *e)
{
    PyObject *bridges = engine_bridges_snapshot(e);
    if (bridges == NULL) {
        PyErr_Clear();
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(bridges); i++) {
        bridge_object *b = (bridge_object *)PyList_GET_ITEM(bridges, i);
        int is_background = 0;
        for (int k = 0; k < e->n_bg; k++) {
            is_background |= b == e->bg[k].bridge;
        }
        if (!is_background) {
            bridge_release(b);
        }
    }
    Py_DECREF(bridges);
}

static void
engine_wake_blocked_spawners(engine_object *e)
{
    for (int k = 0; k < LANE_COUNT; k++) {
        pthread_mutex_lock(&e->lanes[k].mu);
        pthread_cond_broadcast(&e->lanes[k].room_cv);
        pthread_mutex_unlock(&e->lanes[k].mu);
    }
}

static PyObject *
Engine_close(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    for (int k = 0; k < LANE_COUNT; k++) {
        pthread_mutex_lock(&e->lanes[k].mu);
    }
    e->closed = 1;
    for (int k = LANE_COUNT - 1; k >= 0; k--) {
        pthread_mutex_unlock(&e->lanes[k].mu);
    }
    engine_wake_blocked_spawners(e);
    Py_RETURN_NONE;
}

static PyObject *
Engine_request_stop(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    e->stop_requested = 1;
    pool_request_stop(&e->pool);
    timer_request_stop(&e->timer, controls_timer_leftover);
    for (int i = 0; i < e->n_bg; i++) {
        if (e->bg[i].bridge != NULL) {
            if (bridge_push(e->bg[i].bridge, BRIDGE_STOP, Py_NewRef(Py_None)) < 0) {
                PyErr_Clear(); /* already stopped */
            }
        }
    }
    engine_release_bridges(e);
    /* No spawn reaches the home loop from here on (the runtime is closed), so the
     * engine lets go of its bridge now: once the loop let go of it too (detached,
     * or the loop closed), its wakeup fd is given back, whether or not _join()
     * later sees every thread stop in time. */
    if (e->closed) {
        Py_CLEAR(e->home_bridge);
    }
    Py_RETURN_NONE;
}

static PyObject *
Engine_join(engine_object *e, PyObject *arg)
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    timeout = offload_wait_seconds(timeout); /* nan, negative: 0; inf: saturates */
    /* One deadline for all three joins: each gets what the ones before left. */
    int64_t deadline_ns = offload_ns_add(offload_now_ns(), offload_seconds_to_ns(timeout));
    int pool_done = pool_join(&e->pool, timeout);
    int timer_done;
    Py_BEGIN_ALLOW_THREADS
    timer_done = timer_join(&e->timer, (double)(deadline_ns - offload_now_ns()) / 1e9);
    Py_END_ALLOW_THREADS
    int bg_done;
    Py_BEGIN_ALLOW_THREADS
    struct timespec deadline = offload_deadline_at_ns(deadline_ns);
    pthread_mutex_lock(&e->bg_mu);
    while (e->bg_alive > 0) {
        if (pthread_cond_timedwait(&e->bg_cv, &e->bg_mu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    bg_done = e->bg_alive == 0;
    pthread_mutex_unlock(&e->bg_mu);
    Py_END_ALLOW_THREADS
    if (bg_done) {
        /* The loops are closed and their threads gone: give the bridges' wakeup
         * fds back now rather than when the runtime object is collected (a
         * pusher still holding one keeps it until it lets go; none can start
         * a loop again: stop_requested refuses it). */
        for (int i = 0; i < e->n_bg; i++) {
            Py_CLEAR(e->bg[i].bridge);
        }
    }
    return PyBool_FromLong(pool_done && bg_done && timer_done);
}

static PyObject *
Engine_stuck_threads(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    lane *l = &e->lanes[LANE_THREADS];
    PyObject *running = PyList_New(0);
    if (running == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    pthread_mutex_lock(&l->mu);
    for (task_object *t = l->live_head; t != NULL; t = t->live_next) {
        if (t->state == TASK_RUNNING) {
            PyList_Append(running, (PyObject *)t);
        }
    }
    pthread_mutex_unlock(&l->mu);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(running); i++) {
        PyObject *what = offload_safe_repr(PyList_GET_ITEM(running, i));
        PyObject *s = what ? PyUnicode_FromFormat(
                                 "a pool thread is still running task %U at shutdown; it was "
                                 "not waited for (a sync callable can't be interrupted)", what)
                           : NULL;
        Py_XDECREF(what);
        if (s == NULL || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(running);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
    }
    Py_DECREF(running);
    pthread_mutex_lock(&e->bg_mu);
    int alive = e->bg_alive;
    pthread_mutex_unlock(&e->bg_mu);
    if (alive > 0) {
        PyObject *s = PyUnicode_FromFormat(
            "%d background loop thread(s) did not stop in time (a coroutine blocks its loop?)",
            alive);
        if (s == NULL || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
    }
    return list;
}

/* Loop-lane tasks whose loop was closed under them can never finish: end
 * them as cancelled so drain() and shutdown() don't wait in vain. */
static PyObject *
Engine_abandon_dead_loops(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    return engine_abandon_dead_loops(e, LANE_LOOP, LANE_BACKGROUND);
}

static PyObject *
Engine_reset_after_fork(engine_object *e, PyObject *Py_UNUSED(ignored))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    /* In the child only the forking thread exists. Drop every link to the
     * parent's threads and loops (leaking them: their locks may be held) and
     * start fresh; the options stay. */
    for (int k = 0; k < LANE_COUNT; k++) {
        lane_reset_after_fork(&e->lanes[k]);
    }
    pool_reset_after_fork(&e->pool);
    timer_reset_after_fork(&e->timer);
    /* The parent's keys and limits named its tasks: the child starts empty
     * (the old dicts are leaked with those tasks). */
    e->keys = PyDict_New();
    e->limiters = PyDict_New();
    if (e->keys == NULL || e->limiters == NULL) {
        return NULL;
    }
    pthread_mutex_init(&e->bg_mu, NULL);
    offload_cond_init(&e->bg_cv);
    e->bg_alive = 0;
    for (int i = 0; i < e->n_bg; i++) {
        e->bg[i].bridge = NULL; /* leaked on purpose */
        e->bg[i].loop = NULL;
        e->bg[i].state = 0;
    }
    e->home_loop = NULL;
    e->home_bridge = NULL;
    e->last_bridge_ref = NULL; /* leaked with the parent's bridges */
    PyObject *fresh = PyDict_New();
    if (fresh == NULL) {
        return NULL;
    }
    e->bridges = fresh; /* the parent's dict is leaked with its bridges */
    e->started = 0;
    /* e->closed stays: a runtime shut down in the parent stays shut down. */
    e->stop_requested = 0;
    Py_RETURN_NONE;
}

static PyObject *
Engine_get_views(engine_object *e, void *closure)
{
    return Py_NewRef(e->views[(intptr_t)closure]);
}

static PyObject *
Engine_get_started(engine_object *e, void *Py_UNUSED(c))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    return PyBool_FromLong(e->started);
}

static PyObject *
Engine_get_closed(engine_object *e, void *Py_UNUSED(c))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    return PyBool_FromLong(e->closed);
}

static PyObject *
Engine_get_home_loop(engine_object *e, void *Py_UNUSED(c))
{
    if (engine_check_ready(e) < 0) {
        return NULL;
    }
    if (e->home_loop == NULL || (e->home_bridge && bridge_loop_closed(e->home_bridge) == 1)) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(e->home_loop);
}

static PyMethodDef Engine_methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))Engine_spawn, METH_FASTCALL | METH_KEYWORDS,
     "spawn($self, target, /, *args, **kwargs)\n--\n\n"
     "Fire and forget, returning the Task: coroutines and async functions go to the loop "
     "lane, sync callables to the thread pool."},
    {"run", (PyCFunction)(void (*)(void))Engine_run, METH_FASTCALL | METH_KEYWORDS,
     "run($self, target, /, *args, **kwargs)\n--\n\n"
     "Like spawn, but await the Task for the result; cancelling the await cancels the task."},
    {"options", (PyCFunction)(void (*)(void))Engine_options, METH_FASTCALL | METH_KEYWORDS,
     "options($self, /, *, name=None, lane=None, timeout=None, retries=None, "
     "backoff=None, retry_on=None, delay=None, at=None, key=None, on_duplicate=None, "
     "limit_key=None, limit=None)\n--\n\n"
     "A Lane with these per-call options (see Lane.options)."},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nPer-lane counters and percentiles."},
    {"start", (PyCFunction)(void (*)(void))Engine_start, METH_FASTCALL | METH_KEYWORDS,
     "start($self, /, loop=None)\n--\n\nMake the running loop the home loop."},
    {"background_loops", (PyCFunction)Engine_background_loops, METH_NOARGS,
     "background_loops($self, /)\n--\n\nThe background event loops started so far."},
    {"_configure", (PyCFunction)Engine_configure, METH_O, NULL},
    {"_set_lane_starter", (PyCFunction)Engine_set_lane_starter, METH_VARARGS, NULL},
    {"_set_lane_killer", (PyCFunction)Engine_set_lane_killer, METH_VARARGS, NULL},
    {"_call_later", (PyCFunction)(void (*)(void))Engine_call_later, METH_FASTCALL,
     "_call_later($self, seconds, callback, /)\n--\n\n"
     "Call callback() on the runtime's timer thread in `seconds` (private)."},
    {"_clock", (PyCFunction)Engine_clock, METH_NOARGS, NULL},
    {"_wall_time", (PyCFunction)Engine_wall_time, METH_NOARGS, NULL},
    {"_advance_clock", (PyCFunction)Engine_advance_clock, METH_O, NULL},
    {"_timers_armed", (PyCFunction)Engine_timers_armed, METH_NOARGS, NULL},
    {"_attempts", (PyCFunction)Engine_attempts, METH_NOARGS, NULL},
    {"_keep_finished", (PyCFunction)Engine_keep_finished, METH_VARARGS, NULL},
    {"_task_infos", (PyCFunction)Engine_task_infos, METH_VARARGS, NULL},
    {"_task_info", (PyCFunction)Engine_task_info, METH_O, NULL},
    {"_live_tasks", (PyCFunction)Engine_live_tasks, METH_NOARGS, NULL},
    {"_close", (PyCFunction)Engine_close, METH_NOARGS, NULL},
    {"_request_stop", (PyCFunction)Engine_request_stop, METH_NOARGS, NULL},
    {"_join", (PyCFunction)Engine_join, METH_O, NULL},
    {"_stuck_threads", (PyCFunction)Engine_stuck_threads, METH_NOARGS, NULL},
    {"_abandon_dead_loops", (PyCFunction)Engine_abandon_dead_loops, METH_NOARGS, NULL},
    {"_reset_after_fork", (PyCFunction)Engine_reset_after_fork, METH_NOARGS, NULL},
    {NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"loop", (getter)Engine_get_views, NULL, "The caller's loop (else the home loop).",
     (void *)(intptr_t)LANE_LOOP},
    {"background", (getter)Engine_get_views, NULL, "Dedicated background event loops.",
     (void *)(intptr_t)LANE_BACKGROUND},
    {"threads", (getter)Engine_get_views, NULL, "The C thread pool.",
     (void *)(intptr_t)LANE_THREADS},
    {"processes", (getter)Engine_get_views, NULL, "The process pool.",
     (void *)(intptr_t)LANE_PROCESSES},
    {"started", (getter)Engine_get_started, NULL, "Whether the runtime has been used.", NULL},
    {"closed", (getter)Engine_get_closed, NULL, "Whether it refuses new work.", NULL},
    {"home_loop", (getter)Engine_get_home_loop, NULL, "The loop start() was called on.", NULL},
    {NULL},
};

static PyMemberDef Engine_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(engine_object, weakreflist), READONLY},
    {NULL},
};

PyType_Slot Engine_slots[] = {
    {Py_tp_doc, "The C core of an offload runtime (subclassed by offload.Runtime)."},
    {Py_tp_new, Engine_new},
    {Py_tp_init, Engine_init},
    {Py_tp_dealloc, Engine_dealloc},
    {Py_tp_traverse, Engine_traverse},
    {Py_tp_clear, Engine_clear},
    {Py_tp_methods, Engine_methods},
    {Py_tp_getset, Engine_getset},
    {Py_tp_members, Engine_members},
    {0, NULL},
};
