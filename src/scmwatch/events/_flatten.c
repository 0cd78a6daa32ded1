/*
 * scmwatch.events._flatten: the EVTX record flattener of normalize.py, in C.
 *
 * Why: flattening a parsed evtx record (System attributes to top-level names, EventData and
 * UserData to top level) runs once per event and cost as much as half of the raw parse in
 * Python. This module implements exactly the semantics of
 * ``normalize.from_evtx_dict_py``; the field-name tables stay in normalize.py and are
 * handed over once by ``configure``. ``tests/test_events_corpus.py`` checks that both give
 * identical results on every real record, and ``tests/test_events_readers.py`` on odd layouts.
 * The extension is optional: without a C compiler scmwatch uses the Python version.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *SYSTEM_ATTRS = NULL; /* dict: element -> {attribute: name} */
static PyObject *CORE = NULL;         /* set of System names EventData may not overwrite */
static PyObject *TO_INT = NULL;       /* callable: text EventID -> int */
static PyObject *S_Event, *S_System, *S_EventData, *S_UserData, *S_attributes, *S_text, *S_EventID,
    *S_Data, *S_space, *S_empty, *S_prefix, *S_underscore;

/* out[key] = value for one <System> child that evtx rendered as an object. */
static int system_object(PyObject *key, PyObject *value, PyObject *out) {
    PyObject *attrs = PyDict_GetItemWithError(value, S_attributes);
    if (attrs == NULL && PyErr_Occurred()) return -1;
    PyObject *text = PyDict_GetItemWithError(value, S_text);
    if (text == NULL && PyErr_Occurred()) return -1;
    int has_attrs = attrs != NULL && PyObject_IsTrue(attrs) == 1;
    if (text != NULL) {
        if (PyDict_SetItem(out, key, text) < 0) return -1;
    } else if (has_attrs) {
        if (PyDict_DelItem(out, key) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) return -1;
            PyErr_Clear();
        }
    } else {
        return PyDict_SetItem(out, key, Py_None);
    }
    if (!has_attrs || !PyDict_Check(attrs)) return 0;
    PyObject *names = PyDict_GetItemWithError(SYSTEM_ATTRS, key);
    if (names == NULL && PyErr_Occurred()) return -1;
    Py_ssize_t pos = 0;
    PyObject *attr, *attr_value;
    while (PyDict_Next(attrs, &pos, &attr, &attr_value)) {
        PyObject *name = NULL;
        if (names != NULL && PyDict_Check(names)) {
            name = PyDict_GetItemWithError(names, attr);
            if (name == NULL && PyErr_Occurred()) return -1;
        }
        if (name != NULL) {
            if (PyDict_SetItem(out, name, attr_value) < 0) return -1;
        } else {
            PyObject *joined = PyUnicode_FromFormat("%U_%U", key, attr);
            if (joined == NULL) return -1;
            int rc = PyDict_SetItem(out, joined, attr_value);
            Py_DECREF(joined);
            if (rc < 0) return -1;
        }
    }
    return 0;
}

static int flatten_system(PyObject *system, PyObject *out) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    /* Plain values first, then the objects, as the Python version does (update, then fix). */
    while (PyDict_Next(system, &pos, &key, &value)) {
        if (PyDict_SetItem(out, key, value) < 0) return -1;
    }
    pos = 0;
    while (PyDict_Next(system, &pos, &key, &value)) {
        if (PyDict_CheckExact(value) && system_object(key, value, out) < 0) return -1;
    }
    return 0;
}

static int flatten_data(PyObject *data, PyObject *out) {
    if (!PyDict_CheckExact(data)) {
        if (data != Py_None) return PyDict_SetItem(out, S_Data, data);
        return 0;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(data, &pos, &key, &value)) {
        if (!PyUnicode_Check(key)) {
            if (PyDict_SetItem(out, key, value) < 0) return -1;
            continue;
        }
        if (PyUnicode_Compare(key, S_attributes) == 0) continue;
        if (PyDict_CheckExact(value)) {
            PyObject *text = PyDict_GetItemWithError(value, S_text);
            if (text == NULL && PyErr_Occurred()) return -1;
            if (text != NULL) {
                value = text;
            } else {
                Py_ssize_t n = PyDict_Size(value);
                int has_attrs = PyDict_Contains(value, S_attributes);
                if (has_attrs < 0) return -1;
                if (n <= 1 && (n == 0 || has_attrs)) value = Py_None;
            }
        }
        Py_INCREF(key);
        if (PyUnicode_FindChar(key, ' ', 0, PyUnicode_GET_LENGTH(key), 1) >= 0) {
            PyObject *stripped = PyUnicode_Replace(key, S_space, S_empty, -1);
            Py_DECREF(key);
            if (stripped == NULL) return -1;
            key = stripped;
        }
        int in_out = PyDict_Contains(out, key);
        if (in_out < 0) { Py_DECREF(key); return -1; }
        if (in_out) {
            int core = PySet_Contains(CORE, key);
            if (core < 0) { Py_DECREF(key); return -1; }
            if (core) {
                PyObject *renamed = PyUnicode_Concat(S_prefix, key);
                Py_DECREF(key);
                if (renamed == NULL) return -1;
                key = renamed;
            }
        }
        int rc = PyDict_SetItem(out, key, value);
        Py_DECREF(key);
        if (rc < 0) return -1;
    }
    return 0;
}

static int flatten_user_data(PyObject *user, PyObject *out) {
    if (!PyDict_CheckExact(user)) return 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(user, &pos, &key, &value)) {
        if (PyUnicode_Check(key) && PyUnicode_Compare(key, S_attributes) == 0) continue;
        if (PyDict_CheckExact(value)) {
            if (flatten_data(value, out) < 0) return -1;
        } else if (PyDict_SetItem(out, key, value) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *from_evtx_dict(PyObject *self, PyObject *record) {
    if (SYSTEM_ATTRS == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_flatten.configure() was not called");
        return NULL;
    }
    if (!PyDict_Check(record)) Py_RETURN_NONE;
    PyObject *event = PyDict_GetItemWithError(record, S_Event);
    if (event == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (!PyDict_CheckExact(event)) Py_RETURN_NONE;
    PyObject *part = PyDict_GetItemWithError(event, S_System);
    PyObject *data = PyDict_GetItemWithError(event, S_EventData);
    /* Sized once for System + EventData: growing from empty would rehash three times. */
    Py_ssize_t expect = 8 + (part && PyDict_CheckExact(part) ? PyDict_GET_SIZE(part) : 0) +
                        (data && PyDict_CheckExact(data) ? PyDict_GET_SIZE(data) : 0);
    PyObject *out = _PyDict_NewPresized(expect);
    if (out == NULL) return NULL;
    if (part != NULL && PyDict_CheckExact(part) && flatten_system(part, out) < 0) goto fail;
    if (data != NULL && data != Py_None && flatten_data(data, out) < 0) goto fail;
    part = PyDict_GetItemWithError(event, S_UserData);
    if (part != NULL && part != Py_None && flatten_user_data(part, out) < 0) goto fail;
    if (PyErr_Occurred()) goto fail;
    PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
    if (eid == NULL && PyErr_Occurred()) goto fail;
    if (eid != NULL && eid != Py_None && !PyLong_CheckExact(eid)) {
        PyObject *fixed = PyObject_CallOneArg(TO_INT, eid);
        if (fixed == NULL) goto fail;
        int rc = PyDict_SetItem(out, S_EventID, fixed);
        Py_DECREF(fixed);
        if (rc < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *attrs, *core, *to_int;
    if (!PyArg_ParseTuple(args, "O!OO", &PyDict_Type, &attrs, &core, &to_int)) return NULL;
    PyObject *core_set = PyFrozenSet_New(core);
    if (core_set == NULL) return NULL;
    Py_XSETREF(CORE, core_set);
    Py_INCREF(attrs);
    Py_XSETREF(SYSTEM_ATTRS, attrs);
    Py_INCREF(to_int);
    Py_XSETREF(TO_INT, to_int);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"from_evtx_dict", from_evtx_dict, METH_O,
     "evtx JSON record (parsed) -> flat fields dict, or None when it has no Event object."},
    {"configure", configure, METH_VARARGS,
     "configure(system_attrs, core_names, to_int): the tables of normalize.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_flatten", NULL, -1, methods};

PyMODINIT_FUNC PyInit__flatten(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(S_Event, "Event");
    INTERN(S_System, "System");
    INTERN(S_EventData, "EventData");
    INTERN(S_UserData, "UserData");
    INTERN(S_attributes, "#attributes");
    INTERN(S_text, "#text");
    INTERN(S_EventID, "EventID");
    INTERN(S_Data, "Data");
    INTERN(S_space, " ");
    INTERN(S_empty, "");
    INTERN(S_prefix, "EventData_");
    INTERN(S_underscore, "_");
#undef INTERN
    return PyModule_Create(&module);
}
