/* timer.c: the engine's timer heap and the one thread that fires it (see
 * timer.h), and TimerHandle, the private callback timer behind periodic
 * schedules (Engine._call_later). */
#include "common.h" /* first: Python.h sets the feature macros */

#include "engine.h"
#include "module.h"
#include "timer.h"

#include <errno.h>
#include <stdlib.h>

/* Seconds the thread waits with nothing armed before it exits. */
#define TIMER_IDLE_EXIT_S 10.0

/* ------------------------------------------------------------------------ */
/* the heap (mu held)                                                        */

static int
node_before(const timer_node *a, const timer_node *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void
heap_place(timer_service *ts, Py_ssize_t i, timer_node *n)
{
    ts->heap[i] = n;
    n->index = i;
}

static void
heap_sift_up(timer_service *ts, Py_ssize_t i)
{
    timer_node *n = ts->heap[i];
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!node_before(n, ts->heap[parent])) {
            break;
        }
        heap_place(ts, i, ts->heap[parent]);
        i = parent;
    }
    heap_place(ts, i, n);
}

static void
heap_sift_down(timer_service *ts, Py_ssize_t i)
{
    timer_node *n = ts->heap[i];
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= ts->len) {
            break;
        }
        if (child + 1 < ts->len && node_before(ts->heap[child + 1], ts->heap[child])) {
            child++;
        }
        if (!node_before(ts->heap[child], n)) {
            break;
        }
        heap_place(ts, i, ts->heap[child]);
        i = child;
    }
    heap_place(ts, i, n);
}

/* Whether `n` is in this heap (a node of a parent process's heap after fork
 * still carries an index: it must not be trusted). */
static int
heap_holds(timer_service *ts, timer_node *n)
{
    return n->index >= 0 && n->index < ts->len && ts->heap[n->index] == n;
}

static void
heap_remove(timer_service *ts, timer_node *n)
{
    assert(heap_holds(ts, n));
    Py_ssize_t i = n->index;
    timer_node *last = ts->heap[--ts->len];
    ts->heap[ts->len] = NULL;
    n->index = -1;
    if (last == n) {
        return;
    }
    heap_place(ts, i, last);
    heap_sift_up(ts, i);
    heap_sift_down(ts, last->index);
}

/* The heap array comes from the C allocator, not PyMem: the timer thread
 * shrinks it while it hands due tasks over without the GIL, and CPython's
 * allocator needs the thread's interpreter state (3.12+ crashes without it;
 * the 3.12 and 3.13 legs of the matrix caught it). */
static int
heap_reserve(timer_service *ts)
{
    if (ts->len < ts->cap) {
        return 0;
    }
    Py_ssize_t cap = ts->cap ? ts->cap * 2 : 64;
    timer_node **grown = realloc(ts->heap, (size_t)cap * sizeof(timer_node *));
    if (grown == NULL) {
        return -1;
    }
    ts->heap = grown;
    ts->cap = cap;
    return 0;
}

/* Give memory back once the heap is mostly empty (10,000 delayed tasks
 * cancelled leave no big array behind). Best effort: a failed realloc keeps
 * the larger array. */
static void
heap_shrink(timer_service *ts)
{
    if (ts->cap <= 64 || ts->len > ts->cap / 4) {
        return;
    }
    Py_ssize_t cap = ts->cap / 2;
    timer_node **smaller = realloc(ts->heap, (size_t)cap * sizeof(timer_node *));
    if (smaller != NULL) {
        ts->heap = smaller;
        ts->cap = cap;
    }
}

/* ------------------------------------------------------------------------ */
/* the service                                                               */

void
timer_init(timer_service *ts, engine_object *engine)
{
    pthread_mutex_init(&ts->mu, NULL);
    offload_cond_init(&ts->wake_cv);
    offload_cond_init(&ts->exit_cv);
    ts->heap = NULL;
    ts->len = ts->cap = 0;
    ts->next_seq = 0;
    ts->skew_ns = 0;
    ts->thread_alive = 0;
    ts->stopping = 0;
    ts->fired = 0;
    ts->engine = engine;
}

void
timer_reset_after_fork(timer_service *ts)
{
    /* The parent's thread doesn't exist here; its armed owners leak (as the
     * lanes' old records do): nothing may touch them without the parent. */
    pthread_mutex_init(&ts->mu, NULL);
    offload_cond_init(&ts->wake_cv);
    offload_cond_init(&ts->exit_cv);
    ts->len = 0;
    ts->thread_alive = 0;
    ts->stopping = 0;
}

void
timer_destroy(timer_service *ts)
{
    assert(ts->len == 0);
    free(ts->heap);
    ts->heap = NULL;
    ts->cap = 0;
    pthread_mutex_destroy(&ts->mu);
    pthread_cond_destroy(&ts->wake_cv);
    pthread_cond_destroy(&ts->exit_cv);
}

int64_t
timer_now(timer_service *ts)
{
    return offload_now_ns() + ts->skew_ns;
}

/* Fire what is due, with the GIL held; at most a batch, so a flood of due
 * timers lets other threads take the GIL between batches. */
static void
timer_fire_due(timer_service *ts)
{
    for (int fired = 0; fired < 512; fired++) {
        pthread_mutex_lock(&ts->mu);
        if (ts->len == 0 || ts->heap[0]->due > offload_now_ns() + ts->skew_ns) {
            pthread_mutex_unlock(&ts->mu);
            return;
        }
        timer_node *n = ts->heap[0];
        heap_remove(ts, n);
        heap_shrink(ts);
        PyObject *owner = n->owner; /* the heap's reference moves to timer_fire */
        n->owner = NULL;
        timer_kind kind = (timer_kind)n->kind;
        uint32_t attempt = n->attempt;
        int64_t due = n->due;
        ts->fired++;
        pthread_mutex_unlock(&ts->mu);
        timer_fire(ts->engine, kind, owner, attempt, due);
        if (PyErr_Occurred()) {
            PyErr_WriteUnraisable(NULL);
        }
    }
}

static void *
timer_main(void *arg)
{
    timer_service *ts = arg;
    engine_object *engine = ts->engine;
    offload_name_thread("offload-timer");
    PyGILState_STATE gil = PyGILState_Ensure();
    offload_name_python_thread("offload-timer", (long)(engine->st->next_task_id & 0xffff));
    PyThreadState *tstate = PyEval_SaveThread();
    pthread_mutex_lock(&ts->mu);
    while (!ts->stopping) {
        if (ts->len == 0) {
            /* Nothing armed: sleep until something is, and exit after an idle
             * while, so the thread (and its reference to the engine) doesn't
             * outlive a runtime dropped without shutdown. The next arm starts
             * a new one. */
            struct timespec idle = offload_deadline(TIMER_IDLE_EXIT_S);
            if (pthread_cond_timedwait(&ts->wake_cv, &ts->mu, &idle) == ETIMEDOUT &&
                ts->len == 0) {
                break;
            }
            continue;
        }
        timer_node *top = ts->heap[0];
        if (top->due > offload_now_ns() + ts->skew_ns) {
            struct timespec at = offload_deadline_at_ns(top->due - ts->skew_ns);
            pthread_cond_timedwait(&ts->wake_cv, &ts->mu, &at);
            continue;
        }
        if (top->kind == TIMER_TASK_START && controls_fire_nogil(top->owner)) {
            heap_remove(ts, top); /* its owner's reference went with it */
            heap_shrink(ts);
            top->owner = NULL;
            ts->fired++;
            continue;
        }
        pthread_mutex_unlock(&ts->mu);
        PyEval_RestoreThread(tstate);
        timer_fire_due(ts);
        tstate = PyEval_SaveThread();
        pthread_mutex_lock(&ts->mu);
    }
    /* Last touch of the service: after this a joiner may return. */
    ts->thread_alive = 0;
    pthread_cond_broadcast(&ts->exit_cv);
    pthread_mutex_unlock(&ts->mu);
    PyEval_RestoreThread(tstate);
    offload_forget_python_thread();
    Py_DECREF(engine); /* the reference taken when the thread started */
    PyGILState_Release(gil);
    return NULL;
}

/* Start the thread (GIL held, mu not held). */
static int
timer_start_thread(timer_service *ts)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    Py_INCREF(ts->engine);
    int rc = pthread_create(&tid, &attr, timer_main, ts);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        Py_DECREF(ts->engine);
        return -1;
    }
    return 0;
}

int
timer_arm(timer_service *ts, timer_node *n, PyObject *owner, int64_t due, timer_kind kind)
{
    assert(PyGILState_Check());
    pthread_mutex_lock(&ts->mu);
    assert(!timer_node_armed(n));
    if (ts->stopping) {
        pthread_mutex_unlock(&ts->mu);
        PyErr_SetString(ts->engine->st->Closed, ENGINE_CLOSED_MESSAGE);
        return -1;
    }
    if (heap_reserve(ts) < 0) {
        pthread_mutex_unlock(&ts->mu);
        PyErr_NoMemory();
        return -1;
    }
    n->due = due;
    n->seq = ts->next_seq++;
    n->kind = (uint8_t)kind;
    n->owner = Py_NewRef(owner);
    heap_place(ts, ts->len++, n);
    heap_sift_up(ts, n->index);
    if (n->index == 0) {
        pthread_cond_signal(&ts->wake_cv); /* the earliest deadline moved up */
    }
    int start = !ts->thread_alive;
    ts->thread_alive = 1;
    pthread_mutex_unlock(&ts->mu);
    if (start && timer_start_thread(ts) < 0) {
        pthread_mutex_lock(&ts->mu);
        ts->thread_alive = 0;
        pthread_mutex_unlock(&ts->mu);
        Py_XDECREF(timer_disarm(ts, n));
        PyErr_SetString(PyExc_RuntimeError, "offload could not start its timer thread");
        return -1;
    }
    return 0;
}

PyObject *
timer_disarm(timer_service *ts, timer_node *n)
{
    assert(PyGILState_Check());
    pthread_mutex_lock(&ts->mu);
    if (!heap_holds(ts, n)) {
        pthread_mutex_unlock(&ts->mu);
        n->index = -1;
        return NULL;
    }
    heap_remove(ts, n);
    heap_shrink(ts);
    PyObject *owner = n->owner;
    n->owner = NULL;
    pthread_mutex_unlock(&ts->mu);
    return owner;
}

void
timer_request_stop(timer_service *ts, void (*leftover)(timer_node *n, PyObject *owner))
{
    assert(PyGILState_Check());
    pthread_mutex_lock(&ts->mu);
    ts->stopping = 1;
    pthread_cond_broadcast(&ts->wake_cv);
    pthread_mutex_unlock(&ts->mu);
    for (;;) {
        pthread_mutex_lock(&ts->mu);
        if (ts->len == 0) {
            pthread_mutex_unlock(&ts->mu);
            return;
        }
        timer_node *n = ts->heap[ts->len - 1];
        heap_remove(ts, n);
        PyObject *owner = n->owner;
        n->owner = NULL;
        pthread_mutex_unlock(&ts->mu);
        leftover(n, owner);
    }
}

int
timer_join(timer_service *ts, double timeout)
{
    struct timespec deadline = offload_deadline(offload_wait_seconds(timeout));
    pthread_mutex_lock(&ts->mu);
    while (ts->thread_alive) {
        if (pthread_cond_timedwait(&ts->exit_cv, &ts->mu, &deadline) != 0) {
            break;
        }
    }
    int done = !ts->thread_alive;
    pthread_mutex_unlock(&ts->mu);
    return done;
}

Py_ssize_t
timer_armed_count(timer_service *ts)
{
    pthread_mutex_lock(&ts->mu);
    Py_ssize_t n = ts->len;
    pthread_mutex_unlock(&ts->mu);
    return n;
}

/* ------------------------------------------------------------------------ */
/* TimerHandle                                                               */

PyObject *
timer_handle_new(engine_object *e, double seconds, PyObject *callback)
{
    timer_handle *h = PyObject_GC_New(timer_handle, e->st->TimerHandleType);
    if (h == NULL) {
        return NULL;
    }
    timer_node_init(&h->node);
    h->engine = (engine_object *)Py_NewRef((PyObject *)e);
    h->callback = Py_NewRef(callback);
    h->cancelled = 0;
    PyObject_GC_Track((PyObject *)h);
    int64_t due = offload_ns_add(timer_now(&e->timer), offload_seconds_to_ns(seconds));
    if (timer_arm(&e->timer, &h->node, (PyObject *)h, due, TIMER_CALLBACK) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

void
timer_handle_fire(timer_handle *h)
{
    PyObject *callback = h->callback;
    h->callback = NULL;
    if (callback != NULL && !h->cancelled) {
        PyObject *res = PyObject_CallNoArgs(callback);
        if (res == NULL) {
            PyObject *exc = PyErr_GetRaisedException();
            offload_report(h->engine->st, (PyObject *)h->engine, h->engine->st->s_timer, Py_None,
                           exc);
            Py_XDECREF(exc);
        }
        Py_XDECREF(res);
    }
    Py_XDECREF(callback);
    Py_DECREF(h); /* the heap's reference */
}

static PyObject *
TimerHandle_cancel(timer_handle *h, PyObject *Py_UNUSED(ignored))
{
    if (h->cancelled || h->callback == NULL) {
        Py_RETURN_FALSE;
    }
    h->cancelled = 1;
    PyObject *owner = timer_disarm(&h->engine->timer, &h->node);
    Py_CLEAR(h->callback);
    Py_XDECREF(owner);
    Py_RETURN_TRUE;
}

static PyObject *
TimerHandle_get_when(timer_handle *h, void *Py_UNUSED(c))
{
    return PyFloat_FromDouble((double)h->node.due / 1e9);
}

static PyObject *
TimerHandle_get_cancelled(timer_handle *h, void *Py_UNUSED(c))
{
    return PyBool_FromLong(h->cancelled);
}

static int
TimerHandle_traverse(timer_handle *h, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(h));
    Py_VISIT(h->engine);
    Py_VISIT(h->callback);
    return 0;
}

static int
TimerHandle_clear(timer_handle *h)
{
    Py_CLEAR(h->callback);
    return 0;
}

static void
TimerHandle_dealloc(timer_handle *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    PyObject_GC_UnTrack(h);
    assert(!timer_node_armed(&h->node) || h->engine == NULL);
    Py_CLEAR(h->callback);
    Py_CLEAR(h->engine);
    tp->tp_free(h);
    Py_DECREF(tp);
}

static PyMethodDef TimerHandle_methods[] = {
    {"cancel", (PyCFunction)TimerHandle_cancel, METH_NOARGS,
     "cancel($self, /)\n--\n\nDisarm; True if it had not fired or been cancelled."},
    {NULL},
};

static PyGetSetDef TimerHandle_getset[] = {
    {"when", (getter)TimerHandle_get_when, NULL, "When it fires, on the engine clock (s).", NULL},
    {"cancelled", (getter)TimerHandle_get_cancelled, NULL, "Whether cancel() was called.", NULL},
    {NULL},
};

PyType_Slot TimerHandle_slots[] = {
    {Py_tp_doc, "A callback armed on the engine's timer (private: periodic schedules)."},
    {Py_tp_dealloc, TimerHandle_dealloc},
    {Py_tp_traverse, TimerHandle_traverse},
    {Py_tp_clear, TimerHandle_clear},
    {Py_tp_methods, TimerHandle_methods},
    {Py_tp_getset, TimerHandle_getset},
    {0, NULL},
};
