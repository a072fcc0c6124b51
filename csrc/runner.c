/* runner.c: the C coroutine that drives a task's coroutine inside a real
 * asyncio.Task and records the outcome in the offload task (see runner.h). */
#include "bridge.h"
#include "engine.h"
#include "module.h"
#include "runner.h"

typedef struct {
    PyObject_HEAD
    task_object *task; /* strong */
    PyObject *coro;    /* strong */
    int started;
} runner_object;

/* Not tracked by the GC on purpose (one object less per task for the
 * collector to visit): its only cycle, task -> asyncio.Task -> runner ->
 * task, is broken explicitly when the task finishes. */
static PyObject *
runner_new(task_object *t)
{
    runner_object *r = PyObject_New(runner_object, t->engine->st->RunnerType);
    if (r == NULL) {
        return NULL;
    }
    r->task = (task_object *)Py_NewRef((PyObject *)t);
    r->coro = Py_NewRef(t->target);
    r->started = 0;
    return (PyObject *)r;
}

void
runner_start(task_object *t)
{
    bridge_object *b = (bridge_object *)t->bridge;
    PyObject *runner = runner_new(t);
    if (runner == NULL) {
        task_finish_from_error(t);
        return;
    }
    PyObject *aio;
#if PY_VERSION_HEX >= 0x030B0000
    module_state *st = t->engine->st;
    if (b->direct_task) {
        PyObject *args[3] = {runner, b->loop, t->context};
        aio = PyObject_Vectorcall(st->AsyncioTask, args, 1, st->kwnames_loop_context);
    }
    else {
        PyObject *args[3] = {b->loop, runner, t->context};
        PyObject *kwnames = PyTuple_Pack(1, PyTuple_GET_ITEM(st->kwnames_loop_context, 1));
        PyObject *name = PyUnicode_FromString("create_task");
        aio = (kwnames && name)
                  ? PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                              kwnames)
                  : NULL;
        Py_XDECREF(kwnames);
        Py_XDECREF(name);
    }
#else
    /* 3.10: no context= argument; the Task copies the current context. Held:
     * a task factory is Python code and may finish the task (which releases
     * t->context) before we exit it. */
    PyObject *context = Py_NewRef(t->context);
    if (PyContext_Enter(context) < 0) {
        Py_DECREF(context);
        Py_DECREF(runner);
        task_finish_from_error(t);
        return;
    }
    aio = PyObject_CallMethod(b->loop, "create_task", "O", runner);
    PyContext_Exit(context);
    Py_DECREF(context);
#endif
    Py_DECREF(runner);
    if (aio == NULL) {
        task_finish_from_error(t);
        return;
    }
    if (task_is_done(t)) {
        /* Finished while being created (e.g. the factory ran it eagerly). */
        Py_DECREF(aio);
        return;
    }
    Py_XSETREF(t->runner, aio);
    /* Hidden from the collector while the task lives (see common.h); the
     * coroutine stays in t->target until the task finishes. */
    offload_gc_hide(aio);
    offload_gc_hide(t->target);
}

/* Finishing from inside our own step: asyncio completes its Task right after
 * we return, so drop our link to it first (task_finish would otherwise mark
 * it as abandoned). */
static void
runner_detach(runner_object *r)
{
    offload_gc_expose(r->task->runner);
    offload_gc_expose(r->coro);
    Py_CLEAR(r->task->runner);
}

/* First step: the task may have been cancelled while queued. */
static int
runner_begin(runner_object *r)
{
    if (r->started) {
        return 1;
    }
    r->started = 1;
    if (task_mark_running(r->task)) {
        return 1;
    }
    PyObject *res = PyObject_CallMethodNoArgs(r->coro, r->task->engine->st->s_close);
    if (res == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(res);
    return 0;
}

static PySendResult
runner_send(runner_object *r, PyObject *arg, PyObject **presult)
{
    if (!runner_begin(r)) {
        *presult = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    PySendResult status = PyIter_Send(r->coro, arg, presult);
    if (status == PYGEN_NEXT) {
        return PYGEN_NEXT;
    }
    runner_detach(r);
    if (status == PYGEN_RETURN) {
        task_finish(r->task, TASK_SUCCEEDED, *presult);
        Py_DECREF(*presult);
    }
    else {
        task_finish_from_error(r->task);
    }
    /* Always a normal return to asyncio: the outcome lives in the offload task. */
    *presult = Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

static PyObject *
runner_iternext(runner_object *r)
{
    PyObject *res;
    if (runner_send(r, Py_None, &res) == PYGEN_NEXT) {
        return res;
    }
    Py_DECREF(res);
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

static PyObject *
runner_send_method(runner_object *r, PyObject *arg)
{
    PyObject *res;
    if (runner_send(r, arg, &res) == PYGEN_NEXT) {
        return res;
    }
    Py_DECREF(res);
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

/* asyncio throws CancelledError in here to cancel the task. */
static PyObject *
runner_throw(runner_object *r, PyObject *const *args, Py_ssize_t nargs)
{
    module_state *st = r->task->engine->st;
    if (!runner_begin(r)) {
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    PyObject *meth = PyObject_GetAttr(r->coro, st->s_throw);
    PyObject *res = meth ? PyObject_Vectorcall(meth, args, (size_t)nargs, NULL) : NULL;
    Py_XDECREF(meth);
    if (res != NULL) {
        return res; /* the coroutine caught it and awaits something else */
    }
    runner_detach(r);
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyObject *stop = PyErr_GetRaisedException();
        PyObject *result = stop ? PyObject_GetAttrString(stop, "value") : NULL;
        if (result == NULL) {
            PyErr_Clear();
        }
        task_finish(r->task, TASK_SUCCEEDED, result ? result : Py_None);
        Py_XDECREF(result);
        Py_XDECREF(stop);
    }
    else {
        task_finish_from_error(r->task);
    }
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

static PyObject *
runner_close(runner_object *r, PyObject *Py_UNUSED(ignored))
{
    PyObject *res = PyObject_CallMethodNoArgs(r->coro, r->task->engine->st->s_close);
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    if (!task_is_done(r->task)) {
        task_finish(r->task, TASK_CANCELLED, NULL);
    }
    Py_RETURN_NONE;
}

/* Unknown attributes (cr_frame, cr_code, __qualname__, ...) come from the
 * wrapped coroutine, so asyncio's reprs and anyio's introspection work. */
static PyObject *
runner_getattro(runner_object *r, PyObject *name)
{
    PyObject *res = PyObject_GenericGetAttr((PyObject *)r, name);
    if (res != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return res;
    }
    PyErr_Clear();
    return PyObject_GetAttr(r->coro, name);
}

static PyObject *
runner_repr(runner_object *r)
{
    PyObject *what = offload_safe_repr(r->coro);
    if (what == NULL) {
        return NULL;
    }
    PyObject *s = PyUnicode_FromFormat("<offload runner of %U>", what);
    Py_DECREF(what);
    return s;
}

static void
runner_dealloc(runner_object *r)
{
    PyTypeObject *tp = Py_TYPE(r);
    Py_CLEAR(r->task);
    Py_CLEAR(r->coro);
    PyObject_Free(r);
    Py_DECREF(tp);
}



static PyObject *
runner_await(runner_object *r)
{
    return Py_NewRef((PyObject *)r);
}

static PyMethodDef runner_methods[] = {
    {"send", (PyCFunction)runner_send_method, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))runner_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)runner_close, METH_NOARGS, NULL},
    {NULL},
};

const int runner_basicsize = sizeof(runner_object);

PyType_Slot runner_slots[] = {
    {Py_tp_dealloc, runner_dealloc},
    {Py_tp_repr, runner_repr},
    {Py_tp_getattro, runner_getattro},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, runner_iternext},
    {Py_tp_methods, runner_methods},
    {Py_am_await, runner_await},
    {Py_am_send, runner_send},
    {0, NULL},
};
