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

/* An absolute CLOCK_REALTIME deadline `seconds` from now, for pthread_cond_timedwait. */
static inline struct timespec
offload_deadline(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t whole = (int64_t)seconds;
    ts.tv_sec += whole;
    ts.tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
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
