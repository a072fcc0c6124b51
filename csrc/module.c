/* module.c: the offload._engine extension module: multi-phase init, module
 * state (types, exceptions, cached asyncio callables, interned names). */
#include "awaiter.h"
#include "bridge.h"
#include "controls.h"
#include "engine.h"
#include "lane.h"
#include "module.h"
#include "runner.h"
#include "task.h"

PyObject *
offload_running_loop(module_state *st)
{
    return PyObject_CallNoArgs(st->get_running_loop);
}

void
offload_report(module_state *st, PyObject *reporter, PyObject *kind, PyObject *task,
               PyObject *exc)
{
    assert(PyGILState_Check());
    PyObject *saved = PyErr_GetRaisedException();
    PyObject *res = PyObject_CallMethodObjArgs(reporter, st->s_report, kind, task ? task : Py_None,
                                               exc ? exc : Py_None, NULL);
    if (res == NULL) {
        /* The reporter itself failed: the last resort is sys.unraisablehook. */
        PyErr_WriteUnraisable(reporter);
    }
    Py_XDECREF(res);
    PyErr_SetRaisedException(saved);
}

static Py_ssize_t
parameter_index(PyObject *key, const char *const *names, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int
offload_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                   const char *const *names, Py_ssize_t n, Py_ssize_t max_positional,
                   PyObject **out)
{
    assert(max_positional <= n);
    Py_ssize_t given = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    if (given > n) { /* counted as CPython's PyArg_ParseTupleAndKeywords counts */
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd argument%s (%zd given)", fname, n,
                     n == 1 ? "" : "s", given);
        return -1;
    }
    if (nargs > max_positional) {
        if (max_positional == 0) {
            PyErr_Format(PyExc_TypeError, "%s() takes no positional arguments", fname);
        }
        else {
            PyErr_Format(PyExc_TypeError, "%s() takes at most %zd argument%s (%zd given)", fname,
                         max_positional, max_positional == 1 ? "" : "s", nargs);
        }
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = parameter_index(key, names, n);
        if (i < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'", fname,
                         key);
            return -1;
        }
        if (i < nargs) {
            PyErr_Format(PyExc_TypeError,
                         "argument for %s() given by name ('%s') and position (%zd)", fname,
                         names[i], i + 1);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    return 0;
}

static int
import_attr(PyObject **out, const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) {
        return -1;
    }
    *out = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return *out ? 0 : -1;
}

static int
intern(PyObject **out, const char *s)
{
    *out = PyUnicode_InternFromString(s);
    return *out ? 0 : -1;
}

static int
init_names(module_state *st)
{
    static const char *const states[] = {"pending",   "running", "scheduled", "retrying",
                                         "succeeded", "failed",  "cancelled"};
    for (int i = 0; i < LANE_COUNT; i++) {
        if (intern(&st->lane_names[i], lane_names[i]) < 0) {
            return -1;
        }
    }
    for (int i = 0; i < 7; i++) {
        if (intern(&st->state_names[i], states[i]) < 0) {
            return -1;
        }
    }
    if (intern(&st->s_add_reader, "add_reader") < 0 ||
        intern(&st->s_remove_reader, "remove_reader") < 0 ||
        intern(&st->s_create_future, "create_future") < 0 ||
        intern(&st->s_set_result, "set_result") < 0 || intern(&st->s_done, "done") < 0 ||
        intern(&st->s_cancel, "cancel") < 0 || intern(&st->s_throw, "throw") < 0 ||
        intern(&st->s_close, "close") < 0 ||
        intern(&st->s_future_blocking, "_asyncio_future_blocking") < 0 ||
        intern(&st->s_report, "_report") < 0 || intern(&st->s_qualname, "__qualname__") < 0 ||
        intern(&st->s_is_closed, "is_closed") < 0 || intern(&st->s_stop, "stop") < 0 ||
        intern(&st->s_run_forever, "run_forever") < 0 ||
        intern(&st->s_run_until_complete, "run_until_complete") < 0 ||
        intern(&st->s_shutdown_asyncgens, "shutdown_asyncgens") < 0 ||
        intern(&st->s_get_task_factory, "get_task_factory") < 0 ||
        intern(&st->s_failed, "failed") < 0 || intern(&st->s_dropped, "dropped") < 0 ||
        intern(&st->s_callback, "callback") < 0 || intern(&st->s_cr_frame, "cr_frame") < 0 ||
        intern(&st->s_cr_running, "cr_running") < 0 ||
        intern(&st->s_cr_suspended, "cr_suspended") < 0 ||
        intern(&st->s_call_soon, "call_soon") < 0 || intern(&st->s_context, "context") < 0 ||
        intern(&st->s_is_running, "is_running") < 0 ||
        intern(&st->s_thread_id, "_thread_id") < 0 ||
        intern(&st->s_interrupted, "interrupted") < 0 ||
        intern(&st->s_coroutine_marker, "_is_coroutine_marker") < 0 ||
        intern(&st->s_retrying, "retrying") < 0 || intern(&st->s_timer, "timer") < 0) {
        return -1;
    }
    st->kwnames_loop_context = Py_BuildValue("(ss)", "loop", "context");
    return st->kwnames_loop_context ? 0 : -1;
}

static int
init_asyncio(module_state *st)
{
    if (import_attr(&st->get_running_loop, "asyncio.events", "_get_running_loop") < 0 ||
        import_attr(&st->CancelledError, "asyncio", "CancelledError") < 0 ||
        import_attr(&st->InvalidStateError, "asyncio", "InvalidStateError") < 0 ||
        import_attr(&st->AsyncioTask, "asyncio", "Task") < 0 ||
        import_attr(&st->iscoroutine, "asyncio", "iscoroutine") < 0 ||
        import_attr(&st->iscoroutinefunction, "inspect", "iscoroutinefunction") < 0 ||
        import_attr(&st->new_event_loop, "asyncio", "new_event_loop") < 0 ||
        import_attr(&st->set_event_loop, "asyncio", "set_event_loop") < 0 ||
        import_attr(&st->all_tasks, "asyncio", "all_tasks") < 0 ||
        import_attr(&st->gather, "asyncio", "gather") < 0) {
        return -1;
    }
    return 0;
}

/* Every engine type: its name, size, flags (besides Py_TPFLAGS_DEFAULT and
 * Py_TPFLAGS_IMMUTABLETYPE, which all have), slots, the module state field that
 * keeps it, and whether it is public (added to the module: offload re-exports it).
 * None has a C base. */
typedef struct {
    const char *name; /* a literal: the type keeps pointing at it */
    int basicsize;
    unsigned int flags;
    PyType_Slot *slots;
    size_t state_field;
    int public;
} engine_type;

#define NOT_INSTANTIABLE (Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION)

static int
init_types(PyObject *module, module_state *st)
{
    const engine_type types[] = {
        {"offload.Task", sizeof(task_object), NOT_INSTANTIABLE, Task_slots,
         offsetof(module_state, TaskType), 1},
        {"offload._engine.TaskAwaiter", awaiter_basicsize, NOT_INSTANTIABLE, Awaiter_slots,
         offsetof(module_state, AwaiterType), 0},
        {"offload._engine.Runner", runner_basicsize, Py_TPFLAGS_DISALLOW_INSTANTIATION,
         runner_slots, offsetof(module_state, RunnerType), 0},
        {"offload._engine.LoopBridge", sizeof(bridge_object), NOT_INSTANTIABLE, Bridge_slots,
         offsetof(module_state, BridgeType), 0},
        {"offload.Lane", sizeof(lane_view), NOT_INSTANTIABLE, Lane_slots,
         offsetof(module_state, LaneType), 1},
        {"offload._engine.Engine", sizeof(engine_object),
         Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, Engine_slots,
         offsetof(module_state, EngineType), 1},
        {"offload._engine.Controls", sizeof(controls_object), Py_TPFLAGS_HAVE_GC,
         Controls_slots, offsetof(module_state, ControlsType), 1},
        {"offload._engine.TimerHandle", sizeof(timer_handle), NOT_INSTANTIABLE,
         TimerHandle_slots, offsetof(module_state, TimerHandleType), 1},
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        PyType_Spec spec = {
            .name = types[i].name,
            .basicsize = types[i].basicsize,
            .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | types[i].flags,
            .slots = types[i].slots,
        };
        PyTypeObject **field = (PyTypeObject **)((char *)st + types[i].state_field);
        assert(*field == NULL);
        *field = (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL);
        if (*field == NULL || (types[i].public && PyModule_AddType(module, *field) < 0)) {
            return -1;
        }
    }
    return 0;
}

#undef NOT_INSTANTIABLE

static int
init_exceptions(PyObject *module, module_state *st)
{
    st->Full = PyErr_NewExceptionWithDoc(
        "offload.Full",
        "The lane is at max_pending: on_full='reject', or 'block' on an event-loop thread.",
        NULL, NULL);
    if (st->Full == NULL || PyModule_AddObjectRef(module, "Full", st->Full) < 0) {
        return -1;
    }
    st->Closed = PyErr_NewExceptionWithDoc(
        "offload.Closed", "The runtime is shut down (or shutting down) and accepts no new work.",
        PyExc_RuntimeError, NULL);
    if (st->Closed == NULL || PyModule_AddObjectRef(module, "Closed", st->Closed) < 0) {
        return -1;
    }
    return 0;
}

/* Sub-interpreters are refused: the pool and background threads enter the
 * main interpreter (PyGILState_Ensure), so a task spawned in another one would
 * run there with that interpreter's objects (and keep running after it is
 * destroyed). 3.12+ also declares it with Py_mod_multiple_interpreters. */
static int
refuse_subinterpreter(void)
{
    if (PyInterpreterState_Get() == PyInterpreterState_Main()) {
        return 0;
    }
    PyErr_SetString(PyExc_ImportError,
                    "offload can't be imported in a sub-interpreter: its thread pool and "
                    "background loops run in the main interpreter; use it from the main "
                    "interpreter (or run the work in a subprocess)");
    return -1;
}

static int
offload_exec(PyObject *module)
{
    if (refuse_subinterpreter() < 0) {
        return -1;
    }
    module_state *st = state_of_module(module);
    st->next_task_id = 0;
    st->claimed_coros = PySet_New(NULL);
    if (st->claimed_coros == NULL || init_names(st) < 0 || init_asyncio(st) < 0 || init_exceptions(module, st) < 0) {
        return -1;
    }
    return init_types(module, st);
}

#define STATE_OBJECTS(X)                                                                       \
    X(TaskType) X(AwaiterType) X(RunnerType) X(BridgeType) X(LaneType) X(EngineType) X(Full)   \
    X(Closed) X(get_running_loop) X(CancelledError) X(InvalidStateError) X(AsyncioTask)        \
    X(iscoroutine) X(iscoroutinefunction) X(new_event_loop) X(set_event_loop) X(all_tasks)     \
    X(gather) X(kwnames_loop_context) X(claimed_coros) X(annotate_error) X(default_engine)     \
    X(ControlsType) X(TimerHandleType) X(Duplicate) X(RetryError) X(controls_factory)

static int
offload_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = state_of_module(module);
#define VISIT(name) Py_VISIT(st->name);
    STATE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
offload_clear(PyObject *module)
{
    module_state *st = state_of_module(module);
#define CLEAR(name) Py_CLEAR(st->name);
    STATE_OBJECTS(CLEAR)
#undef CLEAR
    /* interned strings */
    PyObject **names[] = {
        &st->s_add_reader, &st->s_remove_reader, &st->s_create_future, &st->s_set_result,
        &st->s_done, &st->s_cancel, &st->s_throw, &st->s_close, &st->s_future_blocking,
        &st->s_report, &st->s_qualname, &st->s_is_closed, &st->s_stop, &st->s_run_forever,
        &st->s_run_until_complete, &st->s_shutdown_asyncgens, &st->s_get_task_factory,
        &st->s_failed, &st->s_dropped, &st->s_callback, &st->s_cr_frame, &st->s_cr_running,
        &st->s_cr_suspended, &st->s_call_soon, &st->s_context, &st->s_is_running, &st->s_thread_id,
        &st->s_interrupted, &st->s_coroutine_marker, &st->s_retrying, &st->s_timer,
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        Py_CLEAR(*names[i]);
    }
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(st->lane_names[i]);
    }
    for (int i = 0; i < 7; i++) {
        Py_CLEAR(st->state_names[i]);
    }
    return 0;
}

static void
offload_free(void *module)
{
    offload_clear((PyObject *)module);
}

static PyObject *
set_error_annotator(PyObject *module, PyObject *fn)
{
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "the annotator must be callable or None");
        return NULL;
    }
    module_state *st = state_of_module(module);
    Py_XSETREF(st->annotate_error, fn == Py_None ? NULL : Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyObject *
set_default_runtime(PyObject *module, PyObject *rt)
{
    module_state *st = state_of_module(module);
    int ok = PyObject_TypeCheck(rt, st->EngineType);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "the default runtime must be an offload.Runtime, not %.100s",
                     Py_TYPE(rt)->tp_name);
        return NULL;
    }
    Py_XSETREF(st->default_engine, Py_NewRef(rt));
    Py_RETURN_NONE;
}

/* _install_controls(factory, retry_type, duplicate_type): the Python halves
 * of task controls (validation, offload.Retry, offload.Duplicate). */
static PyObject *
install_controls(PyObject *module, PyObject *args)
{
    PyObject *factory, *retry, *duplicate;
    if (!PyArg_ParseTuple(args, "OOO:_install_controls", &factory, &retry, &duplicate)) {
        return NULL;
    }
    if (!PyCallable_Check(factory) || !PyExceptionClass_Check(retry) ||
        !PyExceptionClass_Check(duplicate)) {
        PyErr_SetString(PyExc_TypeError, "_install_controls(callable, exc type, exc type)");
        return NULL;
    }
    module_state *st = state_of_module(module);
    Py_XSETREF(st->controls_factory, Py_NewRef(factory));
    Py_XSETREF(st->RetryError, Py_NewRef(retry));
    Py_XSETREF(st->Duplicate, Py_NewRef(duplicate));
    Py_RETURN_NONE;
}

static PyObject *
current_thread_task(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    task_object *t = pool_task_running_here();
    return Py_NewRef(t != NULL ? (PyObject *)t : Py_None);
}

static PyObject *
default_lane(PyObject *module, PyObject *lane)
{
    int kind = -1;
    if (lane_parse_name(lane, &kind) < 0) {
        return NULL;
    }
    return lane_view_new_following(state_of_module(module), kind);
}

static PyMethodDef offload_methods[] = {
    {"_install_controls", install_controls, METH_VARARGS,
     "_install_controls($module, factory, retry_type, duplicate_type, /)\n--\n\n"
     "Install the Python halves of task controls."},
    {"_set_error_annotator", set_error_annotator, METH_O,
     "_set_error_annotator($module, fn, /)\n--\n\n"
     "Install fn(exc), called on every task failure before it is reported."},
    {"_set_default_runtime", set_default_runtime, METH_O,
     "_set_default_runtime($module, runtime, /)\n--\n\n"
     "Make `runtime` the one that views made by _default_lane() use."},
    {"_current_thread_task", current_thread_task, METH_NOARGS,
     "_current_thread_task($module, /)\n--\n\n"
     "The threads-lane task this pool thread is running, or None."},
    {"_default_lane", default_lane, METH_O,
     "_default_lane($module, lane, /)\n--\n\n"
     "A Lane view (lane name, or None for automatic dispatch) of whichever runtime\n"
     "is the default at each call."},
    {NULL},
};

static PyModuleDef_Slot offload_slots[] = {
    {Py_mod_exec, offload_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

struct PyModuleDef offload_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "offload._engine",
    .m_doc = "The C engine of offload: tasks, lanes, thread pool, loop bridges.",
    .m_size = sizeof(module_state),
    .m_methods = offload_methods,
    .m_slots = offload_slots,
    .m_traverse = offload_traverse,
    .m_clear = offload_clear,
    .m_free = offload_free,
};

#ifdef OFFLOAD_TEST_WARNING
/* tests/packaging: a deprecation warning injected on purpose, to prove that a
 * user's build shows it and still installs, and that our build (-Werror) fails. */
__attribute__((deprecated("offload test warning: injected by OFFLOAD_TEST_WARNING")))
static inline int offload_test_deprecated(void) { return 0; }
static inline int offload_test_warning(void) { return offload_test_deprecated(); }
#endif

PyMODINIT_FUNC
PyInit__engine(void)
{
    return PyModuleDef_Init(&offload_module_def);
}
