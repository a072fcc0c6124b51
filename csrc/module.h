/* module.h: the extension's module state (types, exceptions, cached asyncio
 * objects, interned names, the process-wide task id counter). Every engine
 * object reaches it through its Engine, so no file keeps mutable globals. */
#ifndef OFFLOAD_MODULE_H
#define OFFLOAD_MODULE_H

#include "common.h"

typedef struct module_state {
    /* heap types */
    PyTypeObject *TaskType;
    PyTypeObject *AwaiterType;
    PyTypeObject *RunnerType;
    PyTypeObject *BridgeType;
    PyTypeObject *LaneType;
    PyTypeObject *EngineType;
    PyTypeObject *ControlsType;
    PyTypeObject *TimerHandleType;
    /* exceptions */
    PyObject *Full;
    PyObject *Closed;
    /* Python-defined, installed by offload/_controls.py (may be NULL before) */
    PyObject *Duplicate;         /* offload.Duplicate(message, task) */
    PyObject *RetryError;        /* offload.Retry */
    PyObject *controls_factory;  /* (base Controls | None, dict) -> Controls */
    /* asyncio, cached at import */
    PyObject *get_running_loop; /* asyncio.events._get_running_loop */
    PyObject *CancelledError;   /* asyncio.CancelledError */
    PyObject *InvalidStateError;
    PyObject *AsyncioTask;      /* asyncio.Task */
    PyObject *iscoroutine;      /* asyncio.iscoroutine */
    PyObject *iscoroutinefunction; /* inspect.iscoroutinefunction */
    PyObject *new_event_loop;   /* asyncio.new_event_loop */
    PyObject *set_event_loop;   /* asyncio.set_event_loop */
    PyObject *all_tasks;        /* asyncio.all_tasks */
    PyObject *gather;           /* asyncio.gather */
    PyObject *kwnames_loop_context; /* ("loop", "context") */
    /* Coroutine objects handed to spawn()/run() whose task hasn't finished:
     * a second spawn of the same object is refused at the call site. */
    PyObject *claimed_coros;
    /* Python hook called with each task failure before it is reported or
     * raised (adds hints such as "use offload.loop_local"); may be NULL. */
    PyObject *annotate_error;
    /* The process-wide default runtime (an Engine) behind `offload.spawn`,
     * `offload.threads`...: views that follow it read it at each call, so a
     * renewed default runtime is used by everyone who holds them. May be NULL. */
    PyObject *default_engine;
    /* interned method/attribute names */
    PyObject *s_add_reader, *s_remove_reader, *s_create_future, *s_set_result, *s_done,
        *s_cancel, *s_throw, *s_close, *s_future_blocking, *s_report, *s_qualname,
        *s_is_closed, *s_stop, *s_run_forever, *s_run_until_complete, *s_shutdown_asyncgens,
        *s_get_task_factory, *s_failed, *s_dropped, *s_callback, *s_cr_frame, *s_cr_running,
        *s_cr_suspended, *s_call_soon, *s_context, *s_is_running, *s_thread_id, *s_interrupted, *s_coroutine_marker,
        *s_retrying, *s_timer;
    /* lane names, indexed by lane_kind */
    PyObject *lane_names[4];
    /* state names, indexed by task_state */
    PyObject *state_names[7];
    /* process-wide task ids (incremented with the GIL held) */
    uint64_t next_task_id;
    /* Bumped whenever a bridge closes (its loop will never run its items):
     * a full loop lane rescans its tasks for dead-loop slots only when it
     * moved. GIL held. */
    uint64_t bridge_close_generation;
} module_state;

extern struct PyModuleDef offload_module_def;

static inline module_state *
state_of_module(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* For methods of heap types defined by this module. */
static inline module_state *
state_of_type(PyTypeObject *tp)
{
    PyObject *mod = PyType_GetModuleByDef(tp, &offload_module_def);
    return mod ? state_of_module(mod) : NULL;
}

/* asyncio's running loop of the calling thread (new reference), or None. */
PyObject *offload_running_loop(module_state *st);

/* Report an event to Python: reporter._report(kind, task, exc) (the reporter is
 * the engine, a Runtime). GIL held; never raises, keeps the caller's error. */
void offload_report(module_state *st, PyObject *reporter, PyObject *kind, PyObject *task,
                    PyObject *exc);

/* Hand parsing of a METH_FASTCALL | METH_KEYWORDS call whose parameters are
 * `names[0..n)`, the first `max_positional` of which may be passed by position
 * (the rest keyword-only). out[i] (borrowed) is set for each parameter given and
 * left alone otherwise (the caller puts the defaults there). Returns 0, or -1 with
 * TypeError worded as CPython words it for a function called `fname`. */
int offload_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames, const char *const *names, Py_ssize_t n,
                       Py_ssize_t max_positional, PyObject **out);

#endif
