/* common.h: includes and small helpers shared by every engine file
 * (Python.h and the version shims of compat.h first, monotonic clock). */
#ifndef OFFLOAD_COMMON_H
#define OFFLOAD_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "compat.h"
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "deadline.h" /* every wait built from a double of seconds */

#if PY_VERSION_HEX < 0x030A0000
#error "offload needs CPython 3.10 or newer"
#endif

/* Name the calling OS thread (shown by ps, top, gdb, perf). Best effort. */
static inline void
offload_name_thread(const char *name)
{
#if defined(__linux__)
    pthread_setname_np(pthread_self(), name);
#elif defined(__APPLE__)
    pthread_setname_np(name);
#else
    (void)name;
#endif
}

/* The calling thread's name as Python sees it (threading.current_thread().name,
 * %(threadName)s in logs): "<prefix>-<n>" instead of Dummy-N. GIL held; best
 * effort (a name is a nicety, never a reason to fail a thread). */
static inline void
offload_name_python_thread(const char *prefix, long n)
{
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *current = threading ? PyObject_CallMethod(threading, "current_thread", NULL) : NULL;
    PyObject *name = PyUnicode_FromFormat("%s-%ld", prefix, n);
    if (current == NULL || name == NULL || PyObject_SetAttrString(current, "name", name) < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(name);
    Py_XDECREF(current);
    Py_XDECREF(threading);
}

/* Undo the above as an engine thread exits: threading keeps the _DummyThread of a
 * foreign thread in threading._active until a new thread reuses its ident
 * (3.10/3.11; 3.12+ drop it with the thread state, which this anticipates), so
 * threading.enumerate() would list exited threads as alive. GIL held. */
static inline void
offload_forget_python_thread(void)
{
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *active = threading ? PyObject_GetAttrString(threading, "_active") : NULL;
    PyObject *ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (active == NULL || ident == NULL || !PyDict_Check(active) ||
        PyDict_DelItem(active, ident) < 0) {
        PyErr_Clear(); /* a private detail of threading: never fail a thread over it */
    }
    Py_XDECREF(ident);
    Py_XDECREF(active);
    Py_XDECREF(threading);
}

/* Monotonic time in nanoseconds; vDSO-backed on Linux, so cheap on the hot path. */
static inline int64_t
offload_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* repr(obj) for a message or a report, never failing on the user's account:
 * a __repr__ that raises (or returns a non-str) gives "<TypeName object at
 * 0x...>" and its error is dropped (a report must not depend on user code).
 * New reference; NULL only if even that can't be built (MemoryError). */
static inline PyObject *
offload_safe_repr(PyObject *obj)
{
    PyObject *r = PyObject_Repr(obj);
    if (r != NULL) {
        return r;
    }
    PyErr_Clear();
    return PyUnicode_FromFormat("<%.100s object at %p>", Py_TYPE(obj)->tp_name, (void *)obj);
}

/* A str subclass (whose __repr__/__str__ are user code) as an exact str. */
static inline PyObject *
offload_exact_str(PyObject *s)
{
    return PyUnicode_CheckExact(s) ? Py_NewRef(s) : PyUnicode_FromObject(s);
}

/* A live task's asyncio.Task and coroutine are hidden from the collector:
 * the registry keeps them alive until the task ends, so a collection could
 * never free them, and with thousands in flight every full collection would
 * walk them all (the main per-task cost of create_task). An untracked object
 * only counts as an outside reference to what it holds, so nothing is freed
 * early. They must be handed back before they can be freed: CPython's own
 * deallocators untrack unconditionally. */
static inline void
offload_gc_hide(PyObject *op)
{
    if (op != NULL && PyObject_IS_GC(op) && PyObject_GC_IsTracked(op)) {
        PyObject_GC_UnTrack(op);
    }
}

static inline void
offload_gc_expose(PyObject *op)
{
    if (op != NULL && PyObject_IS_GC(op) && !PyObject_GC_IsTracked(op)) {
        PyObject_GC_Track(op);
    }
}

#endif
