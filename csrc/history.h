/* history.h: the finished tasks a runtime keeps for lookup (`runtime.get(id)`,
 * `runtime.tasks()`, the status router): the `keep_finished` most recent, as
 * small C records (id, name, lane, state, attempts, timings, key, an error
 * summary), never the Task objects, so a result or a traceback is not kept
 * alive by the lookup. Optionally only those that ended within `ttl` seconds.
 *
 * GIL-protected: records are added by task_finish and read by lookups, both
 * with the GIL held. */
#ifndef OFFLOAD_HISTORY_H
#define OFFLOAD_HISTORY_H

#include "common.h"

struct task_object;
struct module_state;

typedef struct {
    uint64_t id;
    PyObject *name;  /* str */
    PyObject *key;   /* str or NULL */
    PyObject *error; /* "TypeName: message" of a failure, or NULL */
    PyObject *error_type; /* the failure's type name, or NULL */
    int64_t t_submit, t_start, t_end; /* monotonic ns; t_start 0 if it never ran */
    uint32_t attempt;
    uint8_t lane, state;
} finished_record;

typedef struct {
    finished_record *slots;
    Py_ssize_t cap;  /* keep_finished; 0 keeps none */
    Py_ssize_t head; /* the oldest record */
    Py_ssize_t len;
    int64_t ttl_ns;  /* 0: no age limit */
} history;

void history_init(history *h);
/* Change the capacity (drops every record). -1 with MemoryError. */
int history_configure(history *h, Py_ssize_t keep, double ttl_seconds);
void history_clear(history *h);
/* Keep a record of `t`, which just finished (GIL held). Never fails: a
 * record that can't be made is skipped. */
void history_add(history *h, struct task_object *t);
/* What a lookup keeps (runtime.tasks(...)): NULL / -1 fields match anything.
 * `name` and `key` are exact str (compared without user code). */
typedef struct {
    PyObject *name;
    PyObject *key;
    int state;        /* task_state or -1 */
    int lane;         /* lane_kind or -1 */
    Py_ssize_t limit; /* at most this many dicts, -1: all */
} info_filter;

/* Append to `out` dicts of the records still within ttl that match `f`, newest
 * first, while `out` is shorter than f->limit. -1 on error. */
int history_list(history *h, struct module_state *st, int64_t wall_minus_mono,
                 const info_filter *f, PyObject *out);
/* The record of task `id` as a dict, or None (new reference). */
PyObject *history_find(history *h, struct module_state *st, uint64_t id, int64_t wall_minus_mono);



/* The dict every lookup returns (the fields of offload.TaskInfo), from a live
 * task (task.c) or a record: times in wall-clock epoch seconds, None when
 * unset. `task` is the live Task or NULL. */
typedef struct {
    uint64_t id;
    PyObject *name, *key, *error, *error_type, *task;
    int64_t t_submit, t_start, t_end, scheduled_mono; /* 0: unset */
    uint32_t attempt;
    uint8_t lane, state;
} info_fields;
PyObject *history_info_dict(struct module_state *st, const info_fields *f,
                            int64_t wall_minus_mono);

/* "TypeName: message" of a failure and its type name (new references, NULL on
 * error). The message is the user's __str__; if it raises, the type name alone. */
void history_summarize_error(PyObject *exc, PyObject **summary, PyObject **type_name);

/* Whether a task or record with these fields passes `f` (name: its name). */
int history_filter_matches(const info_filter *f, PyObject *name, PyObject *key, int state,
                           int lane);
#endif
