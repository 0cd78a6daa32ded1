/* Making scmwatch.events.model.Event objects from C, shared by _flatten and _evtx.
 *
 * Event is a slots dataclass. Its instances are made by setting the slots at the offsets its
 * member descriptors give, which skips the dataclass __init__ call per event; when the offsets
 * cannot be read (another class was configured), the class is called instead. */
#ifndef SCMWATCH_EVENT_H
#define SCMWATCH_EVENT_H

#include <Python.h>
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

#endif
