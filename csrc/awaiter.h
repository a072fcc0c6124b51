/* awaiter.h: what `await task` runs. One small C object is both the
 * iterator the awaiting coroutine delegates to and the future-like object it
 * yields to asyncio.Task (asyncio accepts any object with
 * _asyncio_future_blocking, get_loop() and add_done_callback()).
 *
 * Owning the future lets a loop bridge wake the awaiting task by calling its
 * wakeup directly while it drains a batch of completions, instead of one
 * loop.call_soon() Handle per completed task. */
#ifndef OFFLOAD_AWAITER_H
#define OFFLOAD_AWAITER_H

#include "common.h"
#include "module.h"

/* The type's slots; module.c's exec slot creates it (its table of types). */
extern PyType_Slot Awaiter_slots[];
extern const int awaiter_basicsize;
/* Task.__await__ (the am_await slot). */
PyObject *awaiter_new(PyObject *task);
/* An awaitable that completes (with None, never raising) when the task ends;
 * for drain(): it neither observes the outcome nor cancels the task. */
PyObject *awaiter_new_quiet(PyObject *task);
/* If `obj` is an awaiter, wake its task and return 1; else return 0.
 * direct=1 calls the wakeup now (only from a bridge drain, outside any task
 * step); direct=0 schedules it with loop.call_soon. */
int awaiter_wake(module_state *st, PyObject *obj, int direct);
/* The wakeup for `obj` (an awaiter, or an asyncio future) will never be
 * delivered: its loop is closed or its bridge went away. A failure the
 * awaiter was to receive is reported instead (once). GIL held. */
void awaiter_undeliverable(module_state *st, PyObject *obj);

#endif
