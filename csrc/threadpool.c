/* threadpool.c: pthread workers for the `threads` lane (see threadpool.h). */
#include "common.h" /* first: Python.h sets the feature macros */
#include <errno.h>

#include "engine.h"
#include "task.h"
#include "threadpool.h"

static void
pool_init_sync(thread_pool *p)
{
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->exit_cv, NULL);
}

void
pool_init(thread_pool *p, engine_object *engine)
{
    pool_init_sync(p);
    ring_init(&p->ready);
    p->max_threads = 32;
    p->min_threads = 0;
    p->idle_timeout = 30.0;
    p->threads = p->idle = p->wakeups = p->busy = p->starting = p->stopping = 0;
    p->engine = engine;
}

void
pool_reset_after_fork(thread_pool *p)
{
    pool_init_sync(p);
    ring_init(&p->ready); /* the parent's queue is abandoned */
    p->threads = p->idle = p->wakeups = p->busy = p->starting = p->stopping = 0;
}

void
pool_destroy(thread_pool *p)
{
    ring_free(&p->ready);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->exit_cv);
}

/* Run one task on this worker (GIL held). */
static void
run_task(task_object *t)
{
    if (!task_mark_running(t)) {
        return; /* cancelled while queued */
    }
    module_state *st = t->engine->st;
    if (PyContext_Enter(t->context) < 0) {
        task_finish_from_error(t);
        return;
    }
    PyObject *res;
    if (t->args == NULL && t->kwargs == NULL) {
        res = PyObject_CallNoArgs(t->target);
    }
    else {
        PyObject *args = t->args ? Py_NewRef(t->args) : PyTuple_New(0);
        res = args ? PyObject_Call(t->target, args, t->kwargs) : NULL;
        Py_XDECREF(args);
    }
    if (PyContext_Exit(t->context) < 0) {
        Py_XDECREF(res);
        task_finish_from_error(t);
        return;
    }
    if (res == NULL) {
        task_finish_from_error(t);
        return;
    }
    if (PyCoro_CheckExact(res)) {
        /* An object with an async __call__ slipped past the check at spawn. */
        PyObject *closed = PyObject_CallMethodNoArgs(res, st->s_close);
        Py_XDECREF(closed);
        PyErr_Clear();
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError,
                        "the callable returned a coroutine: send coroutines to offload.loop "
                        "or offload.background, not offload.threads");
        task_finish_from_error(t);
        return;
    }
    task_finish(t, TASK_SUCCEEDED, res);
    Py_DECREF(res);
}

static int pool_should_grow_locked(thread_pool *p, int64_t now);
static void pool_grow(thread_pool *p);

/* Run tasks back to back while the queue has some: one GIL hand-off per burst. */
static void
run_burst(thread_pool *p, task_object *t)
{
    while (t != NULL) {
        run_task(t);
        int64_t now = t->t_end ? t->t_end : offload_now_ns();
        Py_DECREF(t);
        if (PyErr_Occurred()) {
            PyErr_WriteUnraisable(NULL);
        }
        pthread_mutex_lock(&p->mu);
        int grow = pool_should_grow_locked(p, now);
        t = ring_pop(&p->ready);
        pthread_mutex_unlock(&p->mu);
        if (grow) {
            pool_grow(p);
        }
    }
}

static int pool_spawn_thread(thread_pool *p);

/* Called by a worker starting a burst: if work is still queued and nobody is
 * free to take it, add one thread. Growth is one thread at a time, so
 * GIL-bound bursts don't start threads that would only fight for the GIL,
 * while blocking tasks (which release the GIL) ramp the pool up quickly. */
/* A queued task that waited this long while every worker was busy means the
 * workers are blocked (I/O, sleep, C code without the GIL): add a thread. */
#define GROW_AFTER_NS 1000000

static int
oldest_waited_long_locked(thread_pool *p, int64_t now)
{
    task_object *head = ring_len(&p->ready) ? (task_object *)p->ready.slots[p->ready.head] : NULL;
    return head != NULL && now - head->t_submit > GROW_AFTER_NS;
}

static int
pool_should_grow_locked(thread_pool *p, int64_t now)
{
    if (p->idle <= p->wakeups && p->starting == 0 && p->threads < p->max_threads &&
        !p->stopping && oldest_waited_long_locked(p, now)) {
        p->threads++;
        p->starting++;
        return 1;
    }
    return 0;
}

static void
pool_grow(thread_pool *p)
{
    if (pool_spawn_thread(p) < 0) {
        pthread_mutex_lock(&p->mu);
        p->threads--;
        p->starting--;
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
    PyThreadState *ts = PyEval_SaveThread();
    pthread_mutex_lock(&p->mu);
    p->starting--;
    for (;;) {
        task_object *t = ring_pop(&p->ready);
        if (t != NULL) {
            p->busy++;
            int grow = pool_should_grow_locked(p, offload_now_ns());
            pthread_mutex_unlock(&p->mu);
            PyEval_RestoreThread(ts);
            if (grow) {
                pool_grow(p);
            }
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
    int spawn = 0;
    if (p->idle > p->wakeups) {
        /* Wake one sleeper, unless enough wakeups are already on their way. */
        p->wakeups++;
        pthread_cond_signal(&p->work_cv);
    }
    else if (p->starting == 0 && p->threads < p->max_threads &&
             (p->threads == 0 || oldest_waited_long_locked(p, t->t_submit))) {
        p->threads++;
        p->starting++;
        spawn = 1;
    }
    pthread_mutex_unlock(&p->mu);
    if (spawn && pool_spawn_thread(p) < 0) {
        pthread_mutex_lock(&p->mu);
        p->threads--;
        p->starting--;
        int none = p->threads == 0;
        pthread_mutex_unlock(&p->mu);
        if (none) {
            pool_fail_queued(p);
        }
    }
    return 0;
}

void
pool_request_stop(thread_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

int
pool_join(thread_pool *p, double timeout)
{
    int done;
    Py_BEGIN_ALLOW_THREADS
    struct timespec deadline = offload_deadline(timeout);
    pthread_mutex_lock(&p->mu);
    while (p->threads > 0) {
        if (pthread_cond_timedwait(&p->exit_cv, &p->mu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    done = p->threads == 0;
    pthread_mutex_unlock(&p->mu);
    Py_END_ALLOW_THREADS
    return done;
}
