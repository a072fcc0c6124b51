/* runner.h: how a task's coroutine runs on an event loop.
 *
 * The coroutine is wrapped in a small C coroutine (Runner) and handed to a
 * real asyncio.Task, so asyncio.current_task(), timeouts and cancel scopes
 * work as usual. The Runner records the outcome straight into the offload
 * task and always returns normally to asyncio: no "exception was never
 * retrieved", no done-callback round trip through call_soon. */
#ifndef OFFLOAD_RUNNER_H
#define OFFLOAD_RUNNER_H

#include "common.h"
#include "task.h"

/* The type's slots; module.c's exec slot creates it (its table of types). */
extern PyType_Slot runner_slots[];
extern const int runner_basicsize;
/* Start `t` on the current thread's loop (the one `bridge` is attached to). */
void runner_start(task_object *t);

#endif
