/*
 * scmwatch.sigma._text: the prefilter's text, in C.
 *
 * Why: before the literal scan, the engine joins the values of the fields a bucket's
 * literals come from with NUL separators and lower-cases the result (index.py,
 * ``Engine.match_in``). In Python that join and ``lower()`` cost more than the scan itself
 * (about 2 us of a 6 us Sysmon process-creation match). This does the same: ASCII text is
 * lower-cased in one pass; with non-ASCII text present the pieces are joined and ``str.lower``
 * is called on the result, as Python would. Values that are not ``str`` become text as
 * ``index._as_text`` makes it (``str(v)``; a list's items joined with NUL, each ``str`` or
 * ``str(item)``): EVTX gives integers for many Sysmon fields, and handing every such event to
 * the Python code cost 12-20 us per Sysmon event. So the result is always exactly the Python
 * join; ``tests/test_sigma_text.py`` compares both. Beyond MAX_PIECES pieces it returns None
 * and the caller uses the Python code. The extension is optional: without a C compiler the
 * Python code is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_PIECES 256

static PyObject *NUL = NULL;
static PyObject *S_lower = NULL;

typedef struct {
    PyObject *items[MAX_PIECES]; /* new references */
    Py_ssize_t n, total;
    int ascii;
} Pieces;

static void pieces_clear(Pieces *p) {
    for (Py_ssize_t i = 0; i < p->n; i++) Py_DECREF(p->items[i]);
    p->n = 0;
}

/* Append one text piece (steals the reference). 0: ok, 1: full, -1: error. */
static int pieces_add(Pieces *p, PyObject *text) {
    if (text == NULL) return -1;
    if (p->n >= MAX_PIECES) {
        Py_DECREF(text);
        return 1;
    }
    p->ascii &= PyUnicode_IS_ASCII(text);
    p->total += PyUnicode_GET_LENGTH(text);
    p->items[p->n++] = text;
    return 0;
}

/* str as is, anything else as str(x) (a str subclass too: its plain str value). */
static PyObject *as_str(PyObject *x) {
    if (PyUnicode_CheckExact(x)) {
        Py_INCREF(x);
        return x;
    }
    return PyObject_Str(x);
}

/* One field value: None is skipped, a list gives one piece per item. */
static int pieces_value(Pieces *p, PyObject *value) {
    if (value == Py_None) return 0;
    if (PyList_CheckExact(value)) {
        Py_ssize_t count = PyList_GET_SIZE(value);
        if (count == 0) return pieces_add(p, PyUnicode_New(0, 127));
        for (Py_ssize_t i = 0; i < count; i++) {
            int rc = pieces_add(p, as_str(PyList_GET_ITEM(value, i)));
            if (rc) return rc;
        }
        return 0;
    }
    return pieces_add(p, as_str(value));
}

/* Non-ASCII text: ``"\x00".join(pieces).lower()`` exactly, through the str methods. */
static PyObject *join_then_lower(Pieces *p) {
    PyObject *items = PyTuple_New(p->n);
    if (items == NULL) return NULL;
    for (Py_ssize_t i = 0; i < p->n; i++) {
        Py_INCREF(p->items[i]);
        PyTuple_SET_ITEM(items, i, p->items[i]);
    }
    PyObject *joined = PyUnicode_Join(NUL, items);
    Py_DECREF(items);
    if (joined == NULL) return NULL;
    PyObject *lowered = PyObject_CallMethodNoArgs(joined, S_lower);
    Py_DECREF(joined);
    return lowered;
}

static PyObject *ascii_lower_join(Pieces *p) {
    Py_ssize_t total = p->total + (p->n > 1 ? p->n - 1 : 0);
    PyObject *out = PyUnicode_New(total, 127);
    if (out == NULL) return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < p->n; i++) {
        if (i) *o++ = 0;
        const Py_UCS1 *s = PyUnicode_1BYTE_DATA(p->items[i]);
        Py_ssize_t len = PyUnicode_GET_LENGTH(p->items[i]);
        for (Py_ssize_t k = 0; k < len; k++) {
            Py_UCS1 ch = s[k];
            o[k] = (ch >= 'A' && ch <= 'Z') ? (Py_UCS1)(ch + 32) : ch;
        }
        o += len;
    }
    return out;
}

/* lower_join(fields: dict, names: tuple[str, ...] | None) -> str | None */
static PyObject *lower_join(PyObject *self, PyObject *args) {
    PyObject *fields, *names;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &fields, &names)) return NULL;
    if (names != Py_None && !PyTuple_CheckExact(names)) {
        PyErr_SetString(PyExc_TypeError, "names must be a tuple or None");
        return NULL;
    }
    Pieces p;
    p.n = 0;
    p.total = 0;
    p.ascii = 1;
    int rc = 0;
    if (names == Py_None) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (!rc && PyDict_Next(fields, &pos, &key, &value)) {
            Py_INCREF(value); /* str(value) may run code that changes the dict */
            rc = pieces_value(&p, value);
            Py_DECREF(value);
        }
    } else {
        Py_ssize_t count = PyTuple_GET_SIZE(names);
        for (Py_ssize_t i = 0; !rc && i < count; i++) {
            PyObject *value = PyDict_GetItemWithError(fields, PyTuple_GET_ITEM(names, i));
            if (value == NULL) {
                if (PyErr_Occurred()) rc = -1;
                continue;
            }
            Py_INCREF(value);
            rc = pieces_value(&p, value);
            Py_DECREF(value);
        }
    }
    PyObject *out = NULL;
    if (rc == 1) {
        out = Py_None;
        Py_INCREF(out);
    } else if (rc == 0) {
        out = p.ascii ? ascii_lower_join(&p) : join_then_lower(&p);
    }
    pieces_clear(&p);
    return out;
}

static PyMethodDef methods[] = {
    {"lower_join", lower_join, METH_VARARGS,
     "lower_join(fields, names) -> '\\x00'.join(text of each value).lower(), or None for too many pieces."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_text", NULL, -1, methods};

PyMODINIT_FUNC PyInit__text(void) {
    NUL = PyUnicode_FromStringAndSize("\0", 1);
    S_lower = PyUnicode_InternFromString("lower");
    if (NUL == NULL || S_lower == NULL) return NULL;
    return PyModule_Create(&module);
}
