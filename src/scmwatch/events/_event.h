/* Making scmwatch.events.model.Event objects from C, shared by _flatten, _evtx and _xml, and
 * the end callback of their reading loops.
 *
 * Event is a slots dataclass. Its instances are made by setting the slots at the offsets its
 * member descriptors give, which skips the dataclass __init__ call per event; when the offsets
 * cannot be read (another class was configured), the class is called instead. */
#ifndef SCMWATCH_EVENT_H
#define SCMWATCH_EVENT_H

#include <Python.h>
#include <stdarg.h>
#include <structmember.h>

typedef struct {
    PyObject *cls; /* the Event class, NULL until configured */
    Py_ssize_t fields, source, record, fmt, epoch; /* slot offsets; fields < 0: call the class */
} EventClass;

/* The byte offset of a __slots__ member of ``type``, or -1. */
static Py_ssize_t slot_offset(PyTypeObject *type, const char *name) {
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !PyObject_TypeCheck(descr, &PyMemberDescr_Type)) return -1;
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) return -1;
    return m->offset;
}

static void event_class_set(EventClass *ec, PyObject *cls) {
    Py_XSETREF(ec->cls, Py_NewRef(cls));
    ec->fields = -1;
    if (!PyType_Check(cls)) return;
    PyTypeObject *t = (PyTypeObject *)cls;
    ec->fields = slot_offset(t, "fields");
    ec->source = slot_offset(t, "source");
    ec->record = slot_offset(t, "record_id");
    ec->fmt = slot_offset(t, "fmt");
    ec->epoch = slot_offset(t, "_epoch");
    if (ec->source < 0 || ec->record < 0 || ec->fmt < 0 || ec->epoch < 0) ec->fields = -1;
}

static void set_slot(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    PyObject **slot = (PyObject **)((char *)obj + offset);
    Py_XSETREF(*slot, Py_NewRef(value));
}

static PyObject *event_new(EventClass *ec, PyObject *fields, PyObject *source, PyObject *rid, PyObject *fmt) {
    if (ec->fields < 0) {
        PyObject *args[4] = {fields, source, rid, fmt};
        return PyObject_Vectorcall(ec->cls, args, 4, NULL);
    }
    PyTypeObject *t = (PyTypeObject *)ec->cls;
    PyObject *ev = t->tp_alloc(t, 0);
    if (ev == NULL) return NULL;
    set_slot(ev, ec->fields, fields);
    set_slot(ev, ec->source, source);
    set_slot(ev, ec->record, rid);
    set_slot(ev, ec->fmt, fmt);
    set_slot(ev, ec->epoch, Py_None);
    return ev;
}

/* A reading loop's ``on_end`` callback, called once with the values of ``fmt`` (a tuple: "(...)")
 * when the loop stops, fails, is closed or is freed: it stands in for the ``finally`` of a
 * generator around the loop that added the loop's counts to the reader's stats, so the loop
 * itself can be the reader's iterator (two generator frames less per event). ``*on_end`` is
 * NULL once called (or when there is none). 0, or -1 with the callback's exception. */
static inline int loop_end_va(PyObject **on_end, const char *fmt, va_list va) {
    PyObject *fn = *on_end;
    if (fn == NULL) return 0;
    *on_end = NULL;
    PyObject *args = Py_VaBuildValue(fmt, va);
    PyObject *res = args != NULL ? PyObject_CallObject(fn, args) : NULL;
    Py_XDECREF(args);
    Py_DECREF(fn);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

static inline int loop_end(PyObject **on_end, const char *fmt, ...) {
    va_list va;
    va_start(va, fmt);
    int rc = loop_end_va(on_end, fmt, va);
    va_end(va);
    return rc;
}

/* loop_end when the loop has stopped, on an error or not: an error of the callback's own is
 * chained to the loop's (and raised alone when the loop just ran out). */
static inline void loop_end_stopped(PyObject **on_end, const char *fmt, ...) {
    if (*on_end == NULL) return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    va_list va;
    va_start(va, fmt);
    int rc = loop_end_va(on_end, fmt, va);
    va_end(va);
    if (type == NULL) return;
    if (rc < 0) _PyErr_ChainExceptions(type, value, tb);
    else PyErr_Restore(type, value, tb);
}

/* loop_end from a deallocator, the loop dropped before its end (its counts still go in): an
 * error of the callback is unraisable, any exception in flight is kept. */
static inline void loop_end_freed(PyObject **on_end, const char *fmt, ...) {
    if (*on_end == NULL) return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    va_list va;
    va_start(va, fmt);
    if (loop_end_va(on_end, fmt, va) < 0) PyErr_WriteUnraisable(NULL);
    va_end(va);
    PyErr_Restore(type, value, tb);
}

#endif
