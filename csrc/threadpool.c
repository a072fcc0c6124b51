/* threadpool.c: pthread workers for the `threads` lane (see threadpool.h). */
#include "common.h" /* first: Python.h sets the feature macros */
#include <errno.h>

#include "engine.h"
#include "task.h"
#include "controls.h"
#include "threadpool.h"

/* Fresh locks, an empty queue, no worker counted: a new pool, and the child's
 * pool after fork (the parent's workers and queue are abandoned there). */
static void
pool_reset(thread_pool *p)
{
    pthread_mutex_init(&p->mu, NULL);
    offload_cond_init(&p->work_cv);
    offload_cond_init(&p->exit_cv);
    offload_cond_init(&p->monitor_cv);
    ring_init(&p->ready);
    p->threads = p->idle = p->wakeups = p->busy = p->starting = p->stopping = 0;
    p->monitor_alive = p->monitor_watching = 0;
}

void
pool_init(thread_pool *p, engine_object *engine)
{
    pool_reset(p);
    p->max_threads = 32;
    p->min_threads = 0;
    p->idle_timeout = 30.0;
    p->named = 0;
    p->engine = engine;
}

void
pool_reset_after_fork(thread_pool *p)
{
    pool_reset(p);
}

void
pool_destroy(thread_pool *p)
{
    ring_free(&p->ready);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->exit_cv);
    pthread_cond_destroy(&p->monitor_cv);
}

/* The task this pool thread is running user code for, or NULL (each thread its own).
 * initial-exec: one pointer in the static TLS block glibc keeps spare for dlopen()ed
 * modules, instead of a block the dynamic model allocates per thread and frees at its
 * exit, unordered (for TSan) with this module's last write to it: TSan reported that
 * free as a race under load. */
#if defined(__GNUC__)
static _Thread_local task_object *running_here __attribute__((tls_model("initial-exec")));
#else
static _Thread_local task_object *running_here;
#endif

task_object *
pool_task_running_here(void)
{
    return running_here;
}

/* Run one task on this worker (GIL held). The call holds its own references
 * to what it runs: a timeout may end the task (and release its inputs) while
 * the call still runs; its late outcome is then discarded. */
static void
run_task(task_object *t)
{
    if (!task_mark_running(t)) {
        return; /* cancelled while queued */
    }
    uint32_t attempt = t->ctl != NULL ? t->ctl->attempt : 0;
    module_state *st = t->engine->st;
    PyObject *context = Py_NewRef(t->context);
    PyObject *target = Py_NewRef(t->target);
    PyObject *args = t->args ? Py_NewRef(t->args) : NULL;
    PyObject *kwargs = t->kwargs ? Py_NewRef(t->kwargs) : NULL;
    PyObject *res = NULL;
    if (PyContext_Enter(context) < 0) {
        goto done;
    }
    running_here = t; /* borrowed: the worker holds `t` until run_task returns */
    if (args == NULL && kwargs == NULL) {
        res = PyObject_CallNoArgs(target);
    }
    else {
        PyObject *call_args = args ? Py_NewRef(args) : PyTuple_New(0);
        res = call_args ? PyObject_Call(target, call_args, kwargs) : NULL;
        Py_XDECREF(call_args);
    }
    running_here = NULL;
    if (PyContext_Exit(context) < 0) {
        Py_CLEAR(res);
    }
    if (res != NULL && PyCoro_CheckExact(res)) {
        /* An object with an async __call__ slipped past the check at spawn. */
        PyObject *closed = PyObject_CallMethodNoArgs(res, st->s_close);
        Py_XDECREF(closed);
        PyErr_Clear();
        Py_CLEAR(res);
        PyErr_SetString(PyExc_TypeError,
                        "the callable returned a coroutine: send coroutines to offload.loop "
                        "or offload.background, not offload.threads");
    }
done:
    if (t->ctl != NULL && controls_discard_late(t, attempt)) {
        PyErr_Clear(); /* this attempt timed out: its outcome was replaced by TimeoutError */
    }
    else if (res == NULL) {
        task_finish_from_error(t);
    }
    else {
        task_finish(t, TASK_SUCCEEDED, res);
    }
    Py_XDECREF(res);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_DECREF(target);
    Py_DECREF(context);
}

/* A task the timer thread queued when it came due (pool_push_due_nogil): it
 * holds no slot yet; admit it (GIL held), which queues it again if it gets one. */
static int
is_due_not_admitted(task_object *t)
{
    return t->ctl != NULL && (t->state == TASK_SCHEDULED || t->state == TASK_RETRYING);
}

/* Run tasks back to back while the queue has some: one GIL hand-off per burst. */
static void
run_burst(thread_pool *p, task_object *t)
{
    while (t != NULL) {
        if (is_due_not_admitted(t)) {
            controls_fire_start(t);
        }
        else {
            run_task(t);
        }
        Py_DECREF(t);
        if (PyErr_Occurred()) {
            PyErr_WriteUnraisable(NULL);
        }
        pthread_mutex_lock(&p->mu);
        t = ring_pop(&p->ready);
        pthread_mutex_unlock(&p->mu);
    }
}

static void *
worker_main(void *arg)
{
    thread_pool *p = arg;
    engine_object *engine = p->engine;
    offload_name_thread("offload-worker");
    PyGILState_STATE gil = PyGILState_Ensure();
    offload_name_python_thread("offload-threads", (long)++p->named); /* GIL-protected */
    PyThreadState *ts = PyEval_SaveThread();
    pthread_mutex_lock(&p->mu);
    p->starting--;
    for (;;) {
        task_object *t = ring_pop(&p->ready);
        if (t != NULL) {
            p->busy++;
            pthread_mutex_unlock(&p->mu);
            PyEval_RestoreThread(ts);
            run_burst(p, t);
            ts = PyEval_SaveThread();
            pthread_mutex_lock(&p->mu);
            p->busy--;
            continue;
        }
        if (p->stopping) {
            break;
        }
        p->idle++;
        struct timespec deadline = offload_deadline(p->idle_timeout);
        int rc = pthread_cond_timedwait(&p->work_cv, &p->mu, &deadline);
        p->idle--;
        if (p->wakeups > 0) {
            p->wakeups--;
        }
        if (rc == ETIMEDOUT && ring_len(&p->ready) == 0 && p->threads > p->min_threads) {
            break;
        }
    }
    /* Last touch of the pool: after this a joiner may return and free it. */
    p->threads--;
    pthread_cond_broadcast(&p->exit_cv);
    pthread_mutex_unlock(&p->mu);
    PyEval_RestoreThread(ts);
    offload_forget_python_thread();
    Py_DECREF(engine); /* the reference taken when this thread was started */
    PyGILState_Release(gil);
    return NULL;
}

/* Start one worker (GIL held, p->mu not held). */
static int
pool_spawn_thread(thread_pool *p)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    Py_INCREF(p->engine);
    int rc = pthread_create(&tid, &attr, worker_main, p);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        Py_DECREF(p->engine);
        return -1;
    }
    return 0;
}

/* No worker could be started and none is alive: fail what is queued. */
static void
pool_fail_queued(thread_pool *p)
{
    for (;;) {
        pthread_mutex_lock(&p->mu);
        task_object *t = ring_pop(&p->ready);
        pthread_mutex_unlock(&p->mu);
        if (t == NULL) {
            return;
        }
        PyErr_SetString(PyExc_RuntimeError, "offload could not start a worker thread");
        task_finish_from_error(t);
        Py_DECREF(t);
    }
}

#define GROW_AFTER_NS 1000000

/* Add one worker; rolls the counters back if the thread can't start. */
static void
pool_add_worker(thread_pool *p)
{
    if (pool_spawn_thread(p) < 0) {
        pthread_mutex_lock(&p->mu);
        p->threads--;
        p->starting--;
        int none = p->threads == 0;
        pthread_mutex_unlock(&p->mu);
        if (none) {
            pool_fail_queued(p);
        }
    }
}

/* How long (ns) the oldest queued task has waited while no worker was free
 * to take it, or -1 when the pool doesn't need to grow. */
static int64_t
pool_starved_for_locked(thread_pool *p)
{
    if (ring_len(&p->ready) == 0 || p->idle > p->wakeups || p->starting > 0 ||
        p->threads >= p->max_threads || p->stopping) {
        return -1;
    }
    task_object *head = p->ready.slots[p->ready.head];
    return offload_now_ns() - head->t_submit;
}

static void *
monitor_main(void *arg)
{
    thread_pool *p = arg;
    engine_object *engine = p->engine;
    offload_name_thread("offload-monitor");
    PyGILState_STATE gil = PyGILState_Ensure();
    PyThreadState *ts = PyEval_SaveThread();
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        int64_t starved = pool_starved_for_locked(p);
        if (starved >= GROW_AFTER_NS) {
            p->threads++;
            p->starting++;
            pthread_mutex_unlock(&p->mu);
            PyEval_RestoreThread(ts); /* pool_spawn_thread takes a reference */
            pool_add_worker(p);
            ts = PyEval_SaveThread();
            pthread_mutex_lock(&p->mu);
            continue;
        }
        /* While work is queued, look again within GROW_AFTER; otherwise sleep
         * until a submit finds every worker busy (or the idle period ends). */
        double wait = starved >= 0            ? (double)(GROW_AFTER_NS - starved) / 1e9
                      : ring_len(&p->ready) ? (double)GROW_AFTER_NS / 1e9
                                            : p->idle_timeout;
        struct timespec deadline = offload_deadline(wait);
        p->monitor_watching = starved >= 0 || ring_len(&p->ready) > 0;
        int rc = pthread_cond_timedwait(&p->monitor_cv, &p->mu, &deadline);
        if (rc == ETIMEDOUT && starved < 0 && ring_len(&p->ready) == 0) {
            break; /* nothing to watch for a whole idle period */
        }
    }
    p->monitor_alive = p->monitor_watching = 0;
    p->monitor_watching = 0;
    pthread_cond_broadcast(&p->exit_cv);
    pthread_mutex_unlock(&p->mu);
    PyEval_RestoreThread(ts);
    Py_DECREF(engine); /* taken when the monitor was started */
    PyGILState_Release(gil);
    return NULL;
}

static void
pool_start_monitor(thread_pool *p)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    Py_INCREF(p->engine);
    int rc = pthread_create(&tid, &attr, monitor_main, p);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        Py_DECREF(p->engine);
        pthread_mutex_lock(&p->mu);
        p->monitor_alive = 0;
        pthread_mutex_unlock(&p->mu);
    }
}

int
pool_submit(thread_pool *p, task_object *t)
{
    pthread_mutex_lock(&p->mu);
    if (ring_push(&p->ready, t) < 0) {
        pthread_mutex_unlock(&p->mu);
        Py_DECREF(t);
        PyErr_NoMemory();
        return -1;
    }
    int first = 0, monitor = 0;
    if (p->idle > p->wakeups) {
        /* Wake one sleeper, unless enough wakeups are already on their way. */
        p->wakeups++;
        pthread_cond_signal(&p->work_cv);
    }
    else if (p->threads == 0) {
        p->threads++;
        p->starting++;
        first = 1;
    }
    else if (p->threads < p->max_threads) {
        /* Everyone is busy: let the monitor decide whether to add a worker. */
        if (!p->monitor_alive) {
            p->monitor_alive = 1;
            monitor = 1;
        }
        else if (!p->monitor_watching) {
            /* Only a monitor in its long idle sleep needs waking: one already
             * watching queued work looks again within GROW_AFTER anyway. */
            p->monitor_watching = 1;
            pthread_cond_signal(&p->monitor_cv);
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (first) {
        pool_add_worker(p);
    }
    if (monitor) {
        pool_start_monitor(p);
    }
    return 0;
}

int
pool_push_due_nogil(thread_pool *p, task_object *t)
{
    pthread_mutex_lock(&p->mu);
    if (p->stopping || p->idle <= p->wakeups || ring_push(&p->ready, t) < 0) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    p->wakeups++;
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void
pool_request_stop(thread_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_cond_broadcast(&p->monitor_cv);
    pthread_mutex_unlock(&p->mu);
}

int
pool_join(thread_pool *p, double timeout)
{
    int done;
    Py_BEGIN_ALLOW_THREADS
    struct timespec deadline = offload_deadline(timeout);
    pthread_mutex_lock(&p->mu);
    while (p->threads > 0 || p->monitor_alive) {
        if (pthread_cond_timedwait(&p->exit_cv, &p->mu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    done = p->threads == 0 && !p->monitor_alive;
    pthread_mutex_unlock(&p->mu);
    Py_END_ALLOW_THREADS
    return done;
}
