/* bridge.c: per-event-loop inbox + wakeup fd; the only way other threads
 * hand work (task starts, awaiter wakeups, cancellations) to a loop. */
#include "common.h" /* first: Python.h sets the feature macros */
#include <stdlib.h>

#include "awaiter.h"
#include "bridge.h"
#include "controls.h"
#include <structmember.h>
#include "module.h"
#include "runner.h"
#include "task.h"

bridge_object *
bridge_new(PyObject *owner_module)
{
    module_state *st = state_of_module(owner_module);
    bridge_object *b = PyObject_GC_New(bridge_object, st->BridgeType);
    if (b == NULL) {
        return NULL;
    }
    b->loop = NULL;
    b->thread_id = 0;
    b->direct_task = 0;
    b->has_thread_id_attr = 0;
    b->items = NULL;
    b->len = b->cap = 0;
    b->signalled = 0;
    b->closed = 0;
    b->detached = 0;
    b->weakreflist = NULL;
    pthread_mutex_init(&b->mu, NULL);
    if (wakeup_open(&b->wake) < 0) {
        b->wake.read_fd = b->wake.write_fd = -1;
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(b);
        return NULL;
    }
    PyObject_GC_Track((PyObject *)b);
    return b;
}

int
bridge_attach(bridge_object *b, PyObject *loop)
{
    module_state *st = state_of_type(Py_TYPE(b));
    PyObject *drain = PyObject_GetAttrString((PyObject *)b, "_drain");
    if (drain == NULL) {
        return -1;
    }
    PyObject *fd = PyLong_FromLong(b->wake.read_fd);
    PyObject *res = fd ? PyObject_CallMethodObjArgs(loop, st->s_add_reader, fd, drain, NULL) : NULL;
    Py_XDECREF(fd);
    Py_DECREF(drain);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    /* Without a custom task factory, asyncio.Task(...) is what create_task does. */
    PyObject *factory = PyObject_CallMethodNoArgs(loop, st->s_get_task_factory);
    if (factory == NULL) {
        PyErr_Clear();
    }
    b->direct_task = factory == Py_None;
    Py_XDECREF(factory);
    b->loop = Py_NewRef(loop);
    b->thread_id = PyThread_get_thread_ident();
    PyObject *tid = PyObject_GetAttr(loop, st->s_thread_id);
    b->has_thread_id_attr = tid != NULL && PyLong_Check(tid) &&
                            PyLong_AsUnsignedLong(tid) == b->thread_id;
    Py_XDECREF(tid);
    PyErr_Clear();
    /* Items pushed before attaching already signalled the fd: nothing to do. */
    return 0;
}

int
bridge_loop_running_here(bridge_object *b)
{
    module_state *st = state_of_type(Py_TYPE(b));
    PyObject *res;
    if (b->has_thread_id_attr) {
        res = PyObject_GetAttr(b->loop, st->s_thread_id);
        if (res == NULL) {
            PyErr_Clear();
            return 0;
        }
        int here = res != Py_None && PyLong_AsUnsignedLong(res) == b->thread_id;
        Py_DECREF(res);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return here;
    }
    res = PyObject_CallMethodNoArgs(b->loop, st->s_is_running);
    if (res == NULL) {
        PyErr_Clear();
        return 0;
    }
    int yes = res == Py_True;
    Py_DECREF(res);
    return yes;
}

/* A detached bridge's wakeup: loop.call_soon_threadsafe(b._drain). */
static int
bridge_schedule_drain(bridge_object *b)
{
    PyObject *drain = PyObject_GetAttrString((PyObject *)b, "_drain");
    PyObject *res = drain ? PyObject_CallMethod(b->loop, "call_soon_threadsafe", "O", drain) : NULL;
    Py_XDECREF(drain);
    if (res == NULL) {
        PyErr_Clear(); /* RuntimeError: the loop is closed */
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* Under mu: append an item (the reference moves in). 1 if the inbox went
 * from empty to non-empty (signal it), 0, or -1 when memory runs out. */
static int
bridge_append_locked(bridge_object *b, bridge_kind kind, PyObject *obj)
{
    if (b->len == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        bridge_item *items = realloc(b->items, cap * sizeof(bridge_item));
        if (items == NULL) {
            return -1;
        }
        b->items = items;
        b->cap = cap;
    }
    b->items[b->len].kind = kind;
    b->items[b->len].obj = obj;
    b->len++;
    int must_signal = !b->signalled;
    b->signalled = 1;
    return must_signal;
}

int
bridge_push(bridge_object *b, bridge_kind kind, PyObject *obj)
{
    pthread_mutex_lock(&b->mu);
    int must_signal = b->closed ? -1 : bridge_append_locked(b, kind, obj);
    if (must_signal < 0) {
        int closed = b->closed;
        pthread_mutex_unlock(&b->mu);
        Py_DECREF(obj);
        if (!closed) {
            PyErr_NoMemory();
        }
        return -1;
    }
    int detached = b->detached;
    pthread_mutex_unlock(&b->mu);
    if (must_signal && !detached) {
        wakeup_signal(&b->wake); /* once per batch */
    }
    else if (must_signal && bridge_schedule_drain(b) < 0) {
        bridge_close(b); /* the loop is closed: nobody will drain; report what's lost */
        return -1;
    }
    return 0;
}

int
bridge_push_nogil(bridge_object *b, bridge_kind kind, PyObject *obj)
{
    pthread_mutex_lock(&b->mu);
    int must_signal = b->closed || b->detached ? -1 : bridge_append_locked(b, kind, obj);
    pthread_mutex_unlock(&b->mu);
    if (must_signal < 0) {
        return -1;
    }
    if (must_signal) {
        wakeup_signal(&b->wake);
    }
    return 0;
}

static void
bridge_remove_reader(bridge_object *b, module_state *st)
{
    PyObject *fd = PyLong_FromLong(b->wake.read_fd);
    PyObject *res = fd ? PyObject_CallMethodOneArg(b->loop, st->s_remove_reader, fd) : NULL;
    Py_XDECREF(fd);
    if (res == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(res);
}

/* On the loop's thread: remove the reader, close the fd, switch to
 * call_soon_threadsafe wakeups. Items already queued stay for this drain. */
static void
bridge_detach_here(bridge_object *b)
{
    module_state *st = state_of_type(Py_TYPE(b));
    assert(bridge_is_current(b));
    if (st == NULL || b->detached || b->closed) {
        PyErr_Clear();
        return;
    }
    if (bridge_loop_closed(b) == 0) {
        bridge_remove_reader(b, st);
    }
    pthread_mutex_lock(&b->mu);
    b->detached = 1;
    int pending = b->len > 0;
    b->signalled = pending; /* a drain is scheduled below if items wait */
    pthread_mutex_unlock(&b->mu);
    wakeup_close(&b->wake); /* GIL held: no pusher is inside wakeup_signal() */
    if (pending && bridge_schedule_drain(b) < 0) {
        bridge_close(b);
    }
}

void
bridge_release(bridge_object *b)
{
    if (b->loop == NULL || b->closed || b->detached) {
        return;
    }
    if (bridge_loop_closed(b) == 1) {
        bridge_close(b);
    }
    else if (bridge_is_current(b)) {
        bridge_detach_here(b);
    }
    else if (bridge_push(b, BRIDGE_DETACH, Py_NewRef(Py_None)) < 0) {
        PyErr_Clear();
    }
}

static void
bridge_process(bridge_object *b, module_state *st, bridge_item *it)
{
    switch (it->kind) {
    case BRIDGE_START: {
        task_object *t = (task_object *)it->obj;
        if (!task_is_done(t)) {
            runner_start(t);
        }
        break;
    }
    case BRIDGE_WAKE:
        task_resolve_future(st, it->obj);
        break;
    case BRIDGE_FIRE:
        controls_fire_start((task_object *)it->obj);
        break;
    case BRIDGE_CANCEL: {
        task_object *t = (task_object *)it->obj;
        if (t->runner != NULL && controls_cancel_applies(t)) { /* not a later attempt */
            PyObject *res = PyObject_CallMethodNoArgs(t->runner, st->s_cancel);
            if (res == NULL) {
                PyErr_WriteUnraisable(t->runner);
            }
            Py_XDECREF(res);
        }
        break;
    }
    case BRIDGE_STOP: {
        PyObject *res = PyObject_CallMethodNoArgs(b->loop, st->s_stop);
        if (res == NULL) {
            PyErr_WriteUnraisable(b->loop);
        }
        Py_XDECREF(res);
        break;
    }
    case BRIDGE_DETACH:
        bridge_detach_here(b);
        break;
    }
}

void
bridge_drain(bridge_object *b)
{
    module_state *st = state_of_type(Py_TYPE(b));
    if (st == NULL) {
        PyErr_Clear();
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (!b->detached) {
        wakeup_clear(&b->wake); /* under mu: a detach can't close the fd meanwhile */
    }
    bridge_item *items = b->items;
    size_t len = b->len;
    b->items = NULL;
    b->len = b->cap = 0;
    b->signalled = 0;
    pthread_mutex_unlock(&b->mu);
    for (size_t i = 0; i < len; i++) {
        bridge_process(b, st, &items[i]);
        Py_DECREF(items[i].obj);
    }
    free(items);
}

int
bridge_loop_closed(bridge_object *b)
{
    if (b->loop == NULL) {
        return 0;
    }
    module_state *st = state_of_type(Py_TYPE(b));
    PyObject *res = st ? PyObject_CallMethodNoArgs(b->loop, st->s_is_closed) : NULL;
    if (res == NULL) {
        PyErr_Clear();
        return -1;
    }
    int closed = PyObject_IsTrue(res);
    Py_DECREF(res);
    return closed;
}

/* Take the queued items out (under the mutex) and mark the bridge closed. */
static bridge_item *
bridge_take_all(bridge_object *b, size_t *len)
{
    pthread_mutex_lock(&b->mu);
    bridge_item *items = b->items;
    *len = b->len;
    b->items = NULL;
    b->len = b->cap = 0;
    b->closed = 1;
    pthread_mutex_unlock(&b->mu);
    return items;
}

/* Fail a task that will never start on this bridge, chaining `cause`. */
static void
bridge_fail_unstarted(task_object *t, PyObject *cause)
{
    const char *msg = cause ? "the background event loop for this task could not start"
                            : "the event loop this task was sent to stopped before it started";
    PyObject *exc = PyObject_CallFunction(PyExc_RuntimeError, "s", msg);
    if (exc == NULL) {
        task_finish_from_error(t);
        return;
    }
    if (cause != NULL) {
        PyException_SetCause(exc, Py_NewRef(cause));
    }
    PyErr_SetObject(PyExc_RuntimeError, exc);
    Py_DECREF(exc);
    task_finish_from_error(t);
}

/* Items that will never be processed (the bridge closed or is freed): an
 * unstarted task fails with the reason, an awaiter's wakeup that can't
 * arrive reports the failure it carried (nobody else will get it). */
static void
bridge_drop_items(module_state *st, bridge_item *items, size_t len, PyObject *cause)
{
    PyObject *saved = PyErr_GetRaisedException(); /* reports run Python code; keep the caller's error */
    for (size_t i = 0; i < len; i++) {
        if (items[i].kind == BRIDGE_START || items[i].kind == BRIDGE_FIRE) {
            task_object *t = (task_object *)items[i].obj;
            if (!task_is_done(t)) {
                bridge_fail_unstarted(t, cause);
            }
        }
        else if (items[i].kind == BRIDGE_WAKE) {
            awaiter_undeliverable(st, items[i].obj);
        }
        Py_DECREF(items[i].obj);
    }
    free(items);
    PyErr_SetRaisedException(saved);
}

void
bridge_close(bridge_object *b)
{
    bridge_close_with_cause(b, NULL);
}

void
bridge_close_with_cause(bridge_object *b, PyObject *cause)
{
    module_state *st = state_of_type(Py_TYPE(b));
    if (st == NULL) {
        PyErr_Clear();
        return;
    }
    if (b->loop != NULL && !b->detached && bridge_is_current(b) && bridge_loop_closed(b) == 0) {
        bridge_remove_reader(b, st);
    }
    int was_closed = b->closed;
    size_t len;
    bridge_item *items = bridge_take_all(b, &len);
    if (!was_closed) {
        st->bridge_close_generation++;
    }
    bridge_drop_items(st, items, len, cause);
}

/* ------------------------------------------------------------------------ */
/* Python type                                                               */

static PyObject *
Bridge_drain(bridge_object *b, PyObject *Py_UNUSED(ignored))
{
    bridge_drain(b);
    Py_RETURN_NONE;
}

static int
Bridge_traverse(bridge_object *b, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(b));
    Py_VISIT(b->loop);
    /* Queued items are owned references too; visiting them is safe because
     * the GC only runs with the GIL held, and pushers hold the GIL. */
    for (size_t i = 0; i < b->len; i++) {
        Py_VISIT(b->items[i].obj);
    }
    return 0;
}

static int
Bridge_clear(bridge_object *b)
{
    Py_CLEAR(b->loop);
    return 0;
}

static void
Bridge_dealloc(bridge_object *b)
{
    PyTypeObject *tp = Py_TYPE(b);
    PyObject_GC_UnTrack(b);
    if (b->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)b);
    }
    bridge_item *items = b->items;
    size_t len = b->len;
    b->items = NULL;
    b->len = b->cap = 0;
    module_state *st = state_of_type(tp);
    if (st == NULL) {
        PyErr_Clear();
    }
    if (st != NULL) {
        bridge_drop_items(st, items, len, NULL);
    }
    else {
        for (size_t i = 0; i < len; i++) {
            Py_DECREF(items[i].obj);
        }
        free(items);
    }
    wakeup_close(&b->wake);
    pthread_mutex_destroy(&b->mu);
    Bridge_clear(b);
    tp->tp_free(b);
    Py_DECREF(tp);
}

static PyMemberDef Bridge_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(bridge_object, weakreflist), READONLY},
    {NULL},
};

static PyMethodDef Bridge_methods[] = {
    {"_drain", (PyCFunction)Bridge_drain, METH_NOARGS, "Process queued items (loop reader)."},
    {NULL},
};

PyType_Slot Bridge_slots[] = {
    {Py_tp_dealloc, Bridge_dealloc},
    {Py_tp_traverse, Bridge_traverse},
    {Py_tp_clear, Bridge_clear},
    {Py_tp_methods, Bridge_methods},
    {Py_tp_members, Bridge_members},
    {0, NULL},
};
