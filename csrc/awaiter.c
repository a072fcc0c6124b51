/* awaiter.c: `await task` — the awaiting side of a task (see awaiter.h). */
#include "common.h" /* first: Python.h sets the feature macros */

#include "awaiter.h"
#include "bridge.h"
#include "engine.h"
#include "lane.h"
#include "task.h"

typedef enum { AW_IDLE, AW_WAITING, AW_WOKEN, AW_CANCELLED } awaiter_state;

typedef struct {
    PyObject_HEAD
    task_object *task;
    bridge_object *bridge; /* the awaiting loop's bridge, once waiting */
    PyObject *cb_fn;       /* the asyncio.Task wakeup ... */
    PyObject *cb_ctx;      /* ... and the context to run it in */
    PyObject *more_cbs;    /* list of (fn, ctx) beyond the first: rare */
    int8_t state;
    int8_t blocking;       /* _asyncio_future_blocking */
    int8_t quiet;          /* drain(): wait only; no outcome, no cancel, no submit */
} awaiter_object;

PyObject *
awaiter_new(PyObject *task)
{
    task_object *t = (task_object *)task;
    awaiter_object *a = PyObject_GC_New(awaiter_object, t->engine->st->AwaiterType);
    if (a == NULL) {
        return NULL;
    }
    a->task = (task_object *)Py_NewRef(task);
    a->bridge = NULL;
    a->cb_fn = a->cb_ctx = a->more_cbs = NULL;
    a->state = AW_IDLE;
    a->blocking = 0;
    a->quiet = 0;
    PyObject_GC_Track((PyObject *)a);
    return (PyObject *)a;
}

PyObject *
awaiter_new_quiet(PyObject *task)
{
    awaiter_object *a = (awaiter_object *)awaiter_new(task);
    if (a != NULL) {
        a->quiet = 1;
    }
    return (PyObject *)a;
}

/* ------------------------------------------------------------------------ */
/* the future side                                                           */

static void
call_one(module_state *st, awaiter_object *a, PyObject *fn, PyObject *ctx, int direct)
{
    PyObject *res;
    if (direct) {
        if (PyContext_Enter(ctx) < 0) {
            PyErr_WriteUnraisable(fn);
            return;
        }
        res = PyObject_CallOneArg(fn, (PyObject *)a);
        PyContext_Exit(ctx);
    }
    else {
        PyObject *kwnames = PyTuple_Pack(1, st->s_context);
        PyObject *stack[4] = {a->bridge->loop, fn, (PyObject *)a, ctx};
        res = kwnames ? PyObject_VectorcallMethod(st->s_call_soon, stack,
                                                  3 | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames)
                      : NULL;
        Py_XDECREF(kwnames);
    }
    if (res == NULL) {
        PyErr_WriteUnraisable(fn);
    }
    Py_XDECREF(res);
}

static void
fire_callbacks(module_state *st, awaiter_object *a, int direct)
{
    PyObject *fn = a->cb_fn, *ctx = a->cb_ctx, *more = a->more_cbs;
    a->cb_fn = a->cb_ctx = a->more_cbs = NULL;
    if (fn != NULL) {
        call_one(st, a, fn, ctx, direct);
        Py_DECREF(fn);
        Py_DECREF(ctx);
    }
    if (more != NULL) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(more); i++) {
            PyObject *pair = PyList_GET_ITEM(more, i);
            call_one(st, a, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), direct);
        }
        Py_DECREF(more);
    }
}

int
awaiter_wake(module_state *st, PyObject *obj, int direct)
{
    if (Py_TYPE(obj) != st->AwaiterType) {
        return 0;
    }
    awaiter_object *a = (awaiter_object *)obj;
    if (a->state == AW_WAITING) {
        a->state = AW_WOKEN;
        fire_callbacks(st, a, direct);
    }
    return 1;
}

/* A waiting awaiter whose task ended and whose wakeup never came is going
 * away (dropped with a closed loop's bridge, or collected): nobody got the
 * outcome, so a failure is reported now. task_outcome_abandoned() reports
 * once (the task's `delivered` flag). */
static void
awaiter_lost(awaiter_object *a)
{
    if (a->task != NULL && !a->quiet && a->state == AW_WAITING && task_is_done(a->task)) {
        task_outcome_abandoned(a->task);
    }
}

void
awaiter_undeliverable(module_state *st, PyObject *obj)
{
    if (Py_TYPE(obj) == st->AwaiterType) { /* a plain asyncio future carries no outcome */
        awaiter_lost((awaiter_object *)obj);
    }
}

/* tp_finalize: runs before the GC clears anything in a cycle (PEP 442), so
 * the task and its exception are intact when reported. */
static void
Awaiter_finalize(awaiter_object *a)
{
    PyObject *saved = PyErr_GetRaisedException();
    awaiter_lost(a);
    PyErr_SetRaisedException(saved);
}

static PyObject *
Awaiter_get_loop(awaiter_object *a, PyObject *Py_UNUSED(ignored))
{
    if (a->bridge == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this awaiter is not waiting on a loop");
        return NULL;
    }
    return Py_NewRef(a->bridge->loop);
}

static PyObject *
Awaiter_add_done_callback(awaiter_object *a, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 1 || nkw > 1 ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "context"))) {
        PyErr_SetString(PyExc_TypeError, "add_done_callback(fn, *, context=None)");
        return NULL;
    }
    PyObject *ctx = (nkw == 1 && args[1] != Py_None) ? Py_NewRef(args[1]) : PyContext_CopyCurrent();
    if (ctx == NULL) {
        return NULL;
    }
    if (a->cb_fn == NULL) {
        a->cb_fn = Py_NewRef(args[0]);
        a->cb_ctx = ctx;
    }
    else {
        PyObject *pair = PyTuple_Pack(2, args[0], ctx);
        Py_DECREF(ctx);
        if (pair == NULL) {
            return NULL;
        }
        if (a->more_cbs == NULL && (a->more_cbs = PyList_New(0)) == NULL) {
            Py_DECREF(pair);
            return NULL;
        }
        int rc = PyList_Append(a->more_cbs, pair);
        Py_DECREF(pair);
        if (rc < 0) {
            return NULL;
        }
    }
    if (a->state == AW_WOKEN || a->state == AW_CANCELLED) {
        fire_callbacks(state_of_type(Py_TYPE(a)), a, 0);
    }
    Py_RETURN_NONE;
}

/* Identity matches only (asyncio's own contract for its wakeup), so no user
 * __eq__ runs; but dropping a callback's context may run a __del__, so what
 * is removed is released only after the last touch of the lists. */
static PyObject *
Awaiter_remove_done_callback(awaiter_object *a, PyObject *fn)
{
    Py_ssize_t removed = 0;
    PyObject *dropped = PyList_New(0); /* before any change: it may run the GC */
    if (dropped == NULL) {
        return NULL;
    }
    PyObject *first_fn = NULL, *first_ctx = NULL;
    if (a->cb_fn == fn) {
        first_fn = a->cb_fn;
        first_ctx = a->cb_ctx;
        a->cb_fn = a->cb_ctx = NULL;
        removed++;
    }
    PyObject *more = a->more_cbs;
    for (Py_ssize_t i = more ? PyList_GET_SIZE(more) - 1 : -1; i >= 0; i--) {
        PyObject *pair = PyList_GET_ITEM(more, i);
        if (PyTuple_GET_ITEM(pair, 0) == fn) {
            /* `dropped` keeps the pair: the deletion runs no Python code */
            if (PyList_Append(dropped, pair) < 0 || PyList_SetSlice(more, i, i + 1, NULL) < 0) {
                removed = -1;
                break;
            }
            removed++;
        }
    }
    Py_XDECREF(first_fn);
    Py_XDECREF(first_ctx);
    Py_DECREF(dropped);
    return removed < 0 ? NULL : PyLong_FromSsize_t(removed);
}

/* asyncio.Task.cancel() on the awaiting task cancels what it waits for. */
static PyObject *
Awaiter_cancel(awaiter_object *a, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    if (a->state != AW_WAITING) {
        Py_RETURN_FALSE;
    }
    a->state = AW_CANCELLED;
    fire_callbacks(state_of_type(Py_TYPE(a)), a, 0);
    Py_RETURN_TRUE;
}

static PyObject *
Awaiter_done(awaiter_object *a, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(a->state == AW_WOKEN || a->state == AW_CANCELLED);
}

static PyObject *
Awaiter_cancelled(awaiter_object *a, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(a->state == AW_CANCELLED);
}

static PyObject *
Awaiter_result(awaiter_object *a, PyObject *Py_UNUSED(ignored))
{
    module_state *st = a->task->engine->st;
    if (a->state == AW_CANCELLED) {
        PyErr_SetNone(st->CancelledError);
        return NULL;
    }
    if (a->state != AW_WOKEN) {
        PyErr_SetString(st->InvalidStateError, "Result is not ready.");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Awaiter_exception(awaiter_object *a, PyObject *Py_UNUSED(ignored))
{
    if (a->state == AW_CANCELLED) {
        return Awaiter_result(a, NULL);
    }
    Py_RETURN_NONE;
}

static PyObject *
Awaiter_get_blocking(awaiter_object *a, void *Py_UNUSED(c))
{
    return PyBool_FromLong(a->blocking);
}

static int
Awaiter_set_blocking(awaiter_object *a, PyObject *v, void *Py_UNUSED(c))
{
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0) {
        return -1;
    }
    a->blocking = (int8_t)b;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the iterator side                                                         */

static PySendResult
awaiter_send(awaiter_object *a, PyObject *Py_UNUSED(arg), PyObject **presult)
{
    task_object *t = a->task;
    *presult = NULL;
    if (a->state == AW_CANCELLED) {
        PyErr_SetNone(t->engine->st->CancelledError);
        return PYGEN_ERROR;
    }
    if (a->quiet) {
        if (task_is_done(t) || (t->flags & TF_DEFERRED)) {
            *presult = Py_NewRef(Py_None);
            return PYGEN_RETURN;
        }
    }
    else {
        if (a->state == AW_IDLE && (t->flags & TF_DEFERRED) && lane_submit_deferred(t) < 0) {
            return PYGEN_ERROR;
        }
        t->flags |= TF_OBSERVED;
        if (task_is_done(t)) {
            *presult = task_outcome_value(t);
            return *presult ? PYGEN_RETURN : PYGEN_ERROR;
        }
    }
    if (a->state != AW_WAITING) {
        bridge_object *b = engine_current_bridge(t->engine);
        if (b == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError,
                                "awaiting an offload.Task needs a running event loop "
                                "(from sync code use task.result(timeout))");
            }
            return PYGEN_ERROR;
        }
        /* Finding the bridge may have run Python code (first use of this
         * loop) and the task may have ended meanwhile: then no wakeup will
         * come, answer now. */
        int rc = task_add_waiter(t, b, (PyObject *)a);
        if (rc < 0) {
            return PYGEN_ERROR;
        }
        if (rc == 1) {
            if (a->quiet) {
                *presult = Py_NewRef(Py_None);
                return PYGEN_RETURN;
            }
            *presult = task_outcome_value(t);
            return *presult ? PYGEN_RETURN : PYGEN_ERROR;
        }
        Py_XSETREF(a->bridge, (bridge_object *)Py_NewRef((PyObject *)b));
        a->state = AW_WAITING;
    }
    a->blocking = 1;
    *presult = Py_NewRef((PyObject *)a);
    return PYGEN_NEXT;
}

static PyObject *
awaiter_iternext(awaiter_object *a)
{
    PyObject *res;
    PySendResult r = awaiter_send(a, Py_None, &res);
    if (r == PYGEN_NEXT) {
        return res;
    }
    if (r == PYGEN_RETURN) {
        if (res == Py_None) {
            PyErr_SetNone(PyExc_StopIteration);
        }
        else {
            PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, res);
            if (e != NULL) {
                PyErr_SetObject(PyExc_StopIteration, e);
                Py_DECREF(e);
            }
        }
        Py_DECREF(res);
    }
    return NULL;
}

static PyObject *
Awaiter_send(awaiter_object *a, PyObject *Py_UNUSED(arg))
{
    return awaiter_iternext(a);
}

/* The awaiting coroutine is being cancelled (or had another exception thrown
 * in): a run() task is cancelled with it; either way nobody observes the
 * outcome any more, so a later failure gets reported. */
static PyObject *
Awaiter_throw(awaiter_object *a, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    task_object *t = a->task;
    if (!task_is_done(t) && !a->quiet) {
        t->flags &= (uint8_t)~TF_OBSERVED;
        if ((t->flags & TF_CANCEL_ON_AWAIT) && task_cancel(t) < 0) {
            PyErr_Clear();
        }
    }
    else if (!a->quiet && a->state != AW_IDLE) {
        /* It ended, but its wakeup hadn't reached us: nobody got a failure. */
        task_outcome_abandoned(t);
    }
    PyObject *typ = args[0];
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, nargs > 1 ? args[1] : NULL);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "throw() needs an exception");
    }
    return NULL;
}

static PyObject *
Awaiter_await(awaiter_object *a)
{
    return Py_NewRef((PyObject *)a);
}

static PyObject *
Awaiter_close(awaiter_object *a, PyObject *Py_UNUSED(ignored))
{
    if (!task_is_done(a->task) && !a->quiet) {
        a->task->flags &= (uint8_t)~TF_OBSERVED;
    }
    else if (!a->quiet && a->state != AW_IDLE) {
        task_outcome_abandoned(a->task);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */
/* type                                                                      */

static int
Awaiter_traverse(awaiter_object *a, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(a));
    Py_VISIT(a->task);
    Py_VISIT(a->bridge);
    Py_VISIT(a->cb_fn);
    Py_VISIT(a->cb_ctx);
    Py_VISIT(a->more_cbs);
    return 0;
}

static int
Awaiter_clear(awaiter_object *a)
{
    Py_CLEAR(a->task);
    Py_CLEAR(a->bridge);
    Py_CLEAR(a->cb_fn);
    Py_CLEAR(a->cb_ctx);
    Py_CLEAR(a->more_cbs);
    return 0;
}

static void
Awaiter_dealloc(awaiter_object *a)
{
    PyTypeObject *tp = Py_TYPE(a);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)a) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(a);
    Awaiter_clear(a);
    tp->tp_free(a);
    Py_DECREF(tp);
}

static PyMethodDef Awaiter_methods[] = {
    {"send", (PyCFunction)Awaiter_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))Awaiter_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)Awaiter_close, METH_NOARGS, NULL},
    {"get_loop", (PyCFunction)Awaiter_get_loop, METH_NOARGS, NULL},
    {"add_done_callback", (PyCFunction)(void (*)(void))Awaiter_add_done_callback,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"remove_done_callback", (PyCFunction)Awaiter_remove_done_callback, METH_O, NULL},
    {"cancel", (PyCFunction)(void (*)(void))Awaiter_cancel, METH_VARARGS | METH_KEYWORDS, NULL},
    {"done", (PyCFunction)Awaiter_done, METH_NOARGS, NULL},
    {"cancelled", (PyCFunction)Awaiter_cancelled, METH_NOARGS, NULL},
    {"result", (PyCFunction)Awaiter_result, METH_NOARGS, NULL},
    {"exception", (PyCFunction)Awaiter_exception, METH_NOARGS, NULL},
    {NULL},
};

static PyGetSetDef Awaiter_getset[] = {
    {"_asyncio_future_blocking", (getter)Awaiter_get_blocking, (setter)Awaiter_set_blocking, NULL,
     NULL},
    {NULL},
};

const int awaiter_basicsize = sizeof(awaiter_object);

PyType_Slot Awaiter_slots[] = {
    {Py_tp_finalize, Awaiter_finalize},
    {Py_tp_dealloc, Awaiter_dealloc},
    {Py_tp_traverse, Awaiter_traverse},
    {Py_tp_clear, Awaiter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, awaiter_iternext},
    {Py_tp_methods, Awaiter_methods},
    {Py_tp_getset, Awaiter_getset},
    {Py_am_send, awaiter_send},
    {Py_am_await, Awaiter_await},
    {0, NULL},
};
