/* compat.h: the few shims that let the engine use current CPython APIs on every
 * supported version (3.10-3.13), and nothing else. Each shim is the documented
 * behaviour of the API it stands in for; on versions that have the API it
 * compiles away, so code written against 3.13 is ready for 3.14's removals. */
#ifndef OFFLOAD_COMPAT_H
#define OFFLOAD_COMPAT_H

#ifndef Py_PYTHON_H
#error "include Python.h (through common.h) before compat.h"
#endif

/* PyType_GetModuleByDef: new in 3.11. The first type in tp's MRO that is a heap
 * type created from a module with this def gives the module (borrowed). */
#if PY_VERSION_HEX < 0x030B0000
static inline PyObject *
PyType_GetModuleByDef(PyTypeObject *tp, PyModuleDef *def)
{
    PyObject *mro = tp->tp_mro;
    assert(mro != NULL && PyTuple_Check(mro));
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
            continue;
        }
        PyObject *mod = ((PyHeapTypeObject *)t)->ht_module;
        if (mod != NULL && PyModule_GetDef(mod) == def) {
            return mod;
        }
    }
    PyErr_Format(PyExc_TypeError, "PyType_GetModuleByDef: no superclass of '%s' has the given module",
                 tp->tp_name);
    return NULL;
}
#endif

/* PyWeakref_GetRef: new in 3.13, where PyWeakref_GET_OBJECT is deprecated (removed
 * in 3.15). Sets *pobj to a new reference and returns 1, or NULL and 0 if the
 * referent is gone; -1 with TypeError if ref is not a weak reference. */
#if PY_VERSION_HEX < 0x030D0000
static inline int
PyWeakref_GetRef(PyObject *ref, PyObject **pobj)
{
    if (ref == NULL || !PyWeakref_Check(ref)) {
        *pobj = NULL;
        PyErr_SetString(PyExc_TypeError, "expected a weakref");
        return -1;
    }
    PyObject *obj = PyWeakref_GET_OBJECT(ref);
    if (obj == Py_None) {
        *pobj = NULL;
        return 0;
    }
    *pobj = Py_NewRef(obj);
    return 1;
}
#endif

/* PyErr_GetRaisedException / PyErr_SetRaisedException: new in 3.12, where
 * PyErr_Fetch/PyErr_Restore are deprecated. Get: the raised exception, normalized
 * and carrying its traceback (a new reference), and clears the indicator; NULL if
 * none. Set: raises exc (stolen; NULL clears the indicator). */
#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *
PyErr_GetRaisedException(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
}

static inline void
PyErr_SetRaisedException(PyObject *exc)
{
    if (exc == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, tb);
}
#endif

#endif
