/* bridge.h: the loop bridge, how other threads hand work to an event loop.
 *
 * Each loop that offload touches gets one Bridge: an inbox (a vector of
 * items, swapped out whole when drained) plus a wakeup fd registered with
 * loop.add_reader. Producers push without the GIL-held loop's involvement and
 * signal the fd only when the inbox goes from quiet to non-empty, so a burst
 * of N items costs one write() and one loop wakeup instead of N
 * (call_soon_threadsafe writes the self-pipe on every call). */
#ifndef OFFLOAD_BRIDGE_H
#define OFFLOAD_BRIDGE_H

#include "common.h"
#include "wakeup.h"

typedef enum {
    BRIDGE_START,  /* obj: task to start on this loop */
    BRIDGE_WAKE,   /* obj: awaiter future to resolve */
    BRIDGE_CANCEL, /* obj: task whose runner must be cancelled */
    BRIDGE_FIRE,   /* obj: a scheduled or retrying task that is due (the timer's) */
    BRIDGE_STOP,   /* obj: None; stop the loop (background loops) */
    BRIDGE_DETACH, /* obj: None; the runtime closed: give back the reader and fd */
} bridge_kind;

typedef struct {
    bridge_kind kind;
    PyObject *obj; /* strong */
} bridge_item;

typedef struct bridge_object {
    PyObject_HEAD
    PyObject *loop;            /* NULL until attached */
    unsigned long thread_id;   /* thread running the loop, once attached */
    int direct_task;           /* loop has no task factory: call asyncio.Task directly */
    int has_thread_id_attr;    /* asyncio loops: read loop._thread_id, no method call */
    wakeup wake;
    pthread_mutex_t mu;        /* guards the fields below */
    bridge_item *items;
    size_t len, cap;
    int signalled;             /* the fd is readable or about to be drained */
    int closed;
    /* The runtime closed: reader removed and fd released (a long-lived loop
     * must not keep one per runtime). Later items, rare (a thread stuck at
     * shutdown finishing an awaited task), wake the loop through
     * call_soon_threadsafe. Set on the loop thread with the GIL; pushers hold
     * the GIL too, so no wakeup_signal() runs on a closed fd. */
    int detached;
    PyObject *weakreflist;     /* engines hold bridges weakly (see engine.h) */
} bridge_object;

/* The type's slots; module.c's exec slot creates it (its table of types). */
extern PyType_Slot Bridge_slots[];

/* A detached bridge (inbox + fd); attach it from the loop's own thread. */
bridge_object *bridge_new(PyObject *module_or_type_owner);
/* Register the wakeup fd with `loop` (the running loop of this thread). */
int bridge_attach(bridge_object *b, PyObject *loop);
/* Queue an item (steals a reference to obj). GIL held, no engine mutex held:
 * on a detached bridge the wakeup is loop.call_soon_threadsafe (Python code).
 * -1 on MemoryError or if the bridge is closed, or its loop turned out closed
 * (then it is closed here, its items dropped and reported); obj is released. */
/* bridge_push for the timer thread, which doesn't hold the GIL: hands
 * `obj`'s reference to the inbox and touches no refcount. -1 (nothing done,
 * the reference stays the caller's) when the bridge is closed or detached or
 * memory runs out: the caller takes the GIL path instead. */
int bridge_push_nogil(bridge_object *b, bridge_kind kind, PyObject *obj);

int bridge_push(bridge_object *b, bridge_kind kind, PyObject *obj);
/* True when the caller is on the bridge's loop thread. */
static inline int
bridge_is_current(const bridge_object *b)
{
    return b->loop != NULL && b->thread_id == PyThread_get_thread_ident();
}
/* Whether the attached loop is running on the calling thread. One loop runs
 * per thread at a time, so then it is the running loop; cheaper than
 * asyncio._get_running_loop() (which makes a getpid() syscall on 3.11). */
int bridge_loop_running_here(bridge_object *b);
/* Process everything queued now (on the loop thread). */
void bridge_drain(bridge_object *b);
/* Unregister and drop queued items; the loop may already be closed. */
void bridge_close(bridge_object *b);
/* Close it because its loop could not run: the queued tasks fail with a
 * RuntimeError whose __cause__ is `cause` (borrowed). */
void bridge_close_with_cause(bridge_object *b, PyObject *cause);
/* Whether the attached loop is closed (1), open (0), or unknown (-1, error cleared). */
int bridge_loop_closed(bridge_object *b);
/* The runtime that made this bridge closed: release its reader and fd. On
 * the loop's thread at once; from another thread through the inbox (a
 * stopped loop gives them back when it runs again, or closes); a closed
 * loop's bridge is closed, its undelivered items reported. GIL held. */
void bridge_release(bridge_object *b);

#endif
