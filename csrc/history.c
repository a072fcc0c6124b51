/* history.c: the records of finished tasks kept for lookup (see history.h). */
#include "common.h" /* first: Python.h sets the feature macros */

#include "controls.h"
#include "engine.h"
#include "history.h"
#include "module.h"
#include "task.h"

void
history_init(history *h)
{
    h->slots = NULL;
    h->cap = h->head = h->len = 0;
    h->ttl_ns = 0;
}

static void
record_clear(finished_record *r)
{
    Py_CLEAR(r->name);
    Py_CLEAR(r->key);
    Py_CLEAR(r->error);
    Py_CLEAR(r->error_type);
}

void
history_clear(history *h)
{
    for (Py_ssize_t i = 0; i < h->len; i++) {
        record_clear(&h->slots[(h->head + i) % h->cap]);
    }
    PyMem_Free(h->slots);
    history_init(h);
}

int
history_configure(history *h, Py_ssize_t keep, double ttl_seconds)
{
    history_clear(h);
    if (keep > 0) {
        h->slots = PyMem_Calloc((size_t)keep, sizeof(finished_record));
        if (h->slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    h->cap = keep;
    h->ttl_ns = ttl_seconds > 0 ? offload_seconds_to_ns(ttl_seconds) : 0;
    return 0;
}

/* "TypeName: message" of a failure; the message is the user's __str__, which
 * may raise: then the type name alone. */
void
history_summarize_error(PyObject *exc, PyObject **summary, PyObject **type_name)
{
    *type_name = PyUnicode_FromString(Py_TYPE(exc)->tp_name);
    PyObject *msg = PyObject_Str(exc);
    if (msg == NULL || !PyUnicode_Check(msg)) {
        PyErr_Clear();
        Py_XDECREF(msg);
        *summary = Py_XNewRef(*type_name);
        return;
    }
    *summary = PyUnicode_GET_LENGTH(msg) ? PyUnicode_FromFormat("%U: %U", *type_name, msg)
                                         : Py_XNewRef(*type_name);
    Py_DECREF(msg);
    if (*summary == NULL) {
        PyErr_Clear();
    }
}

void
history_add(history *h, task_object *t)
{
    assert(PyGILState_Check());
    if (h->cap == 0) {
        return;
    }
    /* The summary first: it runs the user's __str__, which may finish other
     * tasks (and add their records); from taking a slot to filling it no
     * Python code runs. */
    PyObject *error = NULL, *error_type = NULL;
    if (t->state == TASK_FAILED && t->outcome != NULL) {
        history_summarize_error(t->outcome, &error, &error_type);
    }
    if (h->cap == 0) { /* reconfigured meanwhile */
        Py_XDECREF(error);
        Py_XDECREF(error_type);
        return;
    }
    finished_record *r;
    PyObject *old_name = NULL, *old_key = NULL, *old_error = NULL, *old_type = NULL;
    if (h->len == h->cap) { /* full: the oldest goes (released after, outside the slot) */
        r = &h->slots[h->head];
        old_name = r->name, old_key = r->key, old_error = r->error, old_type = r->error_type;
        h->head = (h->head + 1) % h->cap;
    }
    else {
        r = &h->slots[(h->head + h->len) % h->cap];
        h->len++;
    }
    r->id = t->id;
    r->name = Py_XNewRef(t->name);
    r->key = t->ctl != NULL ? Py_XNewRef(t->ctl->controls->key) : NULL;
    r->error = error;
    r->error_type = error_type;
    r->t_submit = t->t_submit;
    r->t_start = t->t_start;
    r->t_end = t->t_end;
    r->attempt = t->ctl != NULL ? t->ctl->attempt : (t->t_start != 0);
    r->lane = (uint8_t)t->lane->kind;
    r->state = t->state;
    /* str objects: releasing them runs no Python code, but keep it last anyway. */
    Py_XDECREF(old_name);
    Py_XDECREF(old_key);
    Py_XDECREF(old_error);
    Py_XDECREF(old_type);
}

static PyObject *
wall_or_none(int64_t mono_ns, int64_t wall_minus_mono)
{
    if (mono_ns == 0) {
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble((double)(mono_ns + wall_minus_mono) / 1e9);
}

PyObject *
history_info_dict(module_state *st, const info_fields *f, int64_t wall_minus_mono)
{
    PyObject *submitted = wall_or_none(f->t_submit, wall_minus_mono);
    PyObject *started = wall_or_none(f->t_start, wall_minus_mono);
    PyObject *finished = wall_or_none(f->t_end, wall_minus_mono);
    PyObject *scheduled = wall_or_none(f->scheduled_mono, wall_minus_mono);
    PyObject *d = NULL;
    if (submitted && started && finished && scheduled) {
        d = Py_BuildValue("{s:K,s:O,s:O,s:O,s:I,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "id",
                          (unsigned long long)f->id, "name", f->name ? f->name : Py_None,
                          "lane", st->lane_names[f->lane], "state", st->state_names[f->state],
                          "attempt", (unsigned int)f->attempt, "key", f->key ? f->key : Py_None,
                          "submitted_at", submitted, "started_at", started, "finished_at",
                          finished, "scheduled_for", scheduled, "error",
                          f->error ? f->error : Py_None, "error_type",
                          f->error_type ? f->error_type : Py_None, "task",
                          f->task ? f->task : Py_None);
    }
    Py_XDECREF(submitted);
    Py_XDECREF(started);
    Py_XDECREF(finished);
    Py_XDECREF(scheduled);
    return d;
}

static PyObject *
record_dict(module_state *st, const finished_record *r, int64_t wall_minus_mono)
{
    info_fields f = {
        .id = r->id, .name = r->name, .key = r->key, .error = r->error,
        .error_type = r->error_type, .task = NULL, .t_submit = r->t_submit,
        .t_start = r->t_start, .t_end = r->t_end, .scheduled_mono = 0,
        .attempt = r->attempt, .lane = r->lane, .state = r->state,
    };
    return history_info_dict(st, &f, wall_minus_mono);
}

static int
record_expired(const history *h, const finished_record *r, int64_t now)
{
    return h->ttl_ns > 0 && now - r->t_end > h->ttl_ns;
}

static int
same_str(PyObject *a, PyObject *b)
{
    return a != NULL && b != NULL && (a == b || PyUnicode_Compare(a, b) == 0);
}

int
history_filter_matches(const info_filter *f, PyObject *name, PyObject *key, int state, int lane)
{
    return (f->state < 0 || f->state == state) && (f->lane < 0 || f->lane == lane) &&
           (f->key == NULL || same_str(f->key, key)) &&
           (f->name == NULL || same_str(f->name, name));
}

int
history_list(history *h, module_state *st, int64_t wall_minus_mono, const info_filter *f,
             PyObject *out)
{
    int64_t now = offload_now_ns();
    for (Py_ssize_t i = h->len - 1; i >= 0; i--) {
        if (f->limit >= 0 && PyList_GET_SIZE(out) >= f->limit) {
            break;
        }
        const finished_record *r = &h->slots[(h->head + i) % h->cap];
        if (record_expired(h, r, now) ||
            !history_filter_matches(f, r->name, r->key, r->state, r->lane)) {
            continue;
        }
        PyObject *d = record_dict(st, r, wall_minus_mono);
        if (d == NULL || PyList_Append(out, d) < 0) {
            Py_XDECREF(d);
            return -1;
        }
        Py_DECREF(d);
    }
    return 0;
}

PyObject *
history_find(history *h, module_state *st, uint64_t id, int64_t wall_minus_mono)
{
    int64_t now = offload_now_ns();
    for (Py_ssize_t i = h->len - 1; i >= 0; i--) {
        const finished_record *r = &h->slots[(h->head + i) % h->cap];
        if (r->id == id) {
            if (record_expired(h, r, now)) {
                break;
            }
            return record_dict(st, r, wall_minus_mono);
        }
    }
    Py_RETURN_NONE;
}
