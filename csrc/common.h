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
