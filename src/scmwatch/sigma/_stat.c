/*
 * scmwatch.sigma._stat: ``signatures(paths)``, each path's ``stat`` signature as the rule cache
 * compares it (``cache._signature``: size, mtime and ctime in ns, inode, device), None for a
 * path that cannot be stat'ed.
 *
 * Why: a warm start with all SigmaHQ stats its 3,141 rule files to know that the cached rule set
 * still holds (``cache.file_digests``); a stat costs ~5 us on this kind of VM, 12-20 ms in all,
 * and Python's ``os.stat`` loop holds the GIL between calls. This loop releases the GIL for all
 * of them, so the rule cache stats the files in a thread while the main thread unpickles the
 * entry the files are expected to select (``cache.open_entry``): the two overlap on two cores.
 * The Python twin (``cache._signatures``) gives the same tuples.
 *
 * ``packed(paths)``: the same signatures as one bytes object, five native 64-bit integers per
 * path (size, mtime, ctime signed; inode, device unsigned), all bits set for a path that cannot
 * be stat'ed: the form the rule cache's stamp keeps them in, so that a warm start compares the
 * 3,285 signatures of all SigmaHQ as one ``memcmp`` instead of building and comparing as many
 * tuples (the stamp's pickle of them took ~0.9 ms to read). The Python twin is ``cache._py_packed``.
 *
 * ``modes(paths)``: each path's ``(st_mode, st_size)``, None where it cannot be stat'ed, for the
 * same reason: a hunt's walk of 1,390 log files stats them in a thread while the rules load
 * (``events.read.Prewalk``); the Python twin is ``events.read._py_modes``.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/stat.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { AS_SIGNATURES, AS_MODES, AS_PACKED };

typedef struct {
    int ok;
    unsigned int mode;
    long long size, mtime_ns, ctime_ns;
    unsigned long long ino, dev;
} sig_t;

static PyObject *stat_paths(PyObject *arg, int form) {
    PyObject *seq = PySequence_Fast(arg, "takes a sequence of paths");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject **encoded = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    sig_t *sigs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(sig_t));
    const char **names = PyMem_Calloc((size_t)(n ? n : 1), sizeof(char *));
    PyObject *out = NULL;
    if (encoded == NULL || sigs == NULL || names == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyUnicode_FSConverter(items[i], &encoded[i]))
            goto done;
        names[i] = PyBytes_AS_STRING(encoded[i]);
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(names[i], &st) != 0)
            continue;
        sigs[i].ok = 1;
        sigs[i].mode = (unsigned int)st.st_mode;
        sigs[i].size = (long long)st.st_size;
        sigs[i].mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        sigs[i].ctime_ns = (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
        sigs[i].ino = (unsigned long long)st.st_ino;
        sigs[i].dev = (unsigned long long)st.st_dev;
    }
    Py_END_ALLOW_THREADS
    if (form == AS_PACKED) {
        out = PyBytes_FromStringAndSize(NULL, n * 40);
        if (out == NULL)
            goto done;
        char *at = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++, at += 40) {
            if (!sigs[i].ok) {
                memset(at, 0xff, 40);
                continue;
            }
            int64_t head[3] = {sigs[i].size, sigs[i].mtime_ns, sigs[i].ctime_ns};
            uint64_t tail[2] = {sigs[i].ino, sigs[i].dev};
            memcpy(at, head, 24);
            memcpy(at + 24, tail, 16);
        }
        goto done;
    }
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t;
        if (!sigs[i].ok) {
            t = Py_NewRef(Py_None);
        } else if (form == AS_MODES) {
            t = Py_BuildValue("(IL)", sigs[i].mode, sigs[i].size);
        } else {
            t = Py_BuildValue("(LLLKK)", sigs[i].size, sigs[i].mtime_ns, sigs[i].ctime_ns, sigs[i].ino,
                              sigs[i].dev);
            if (t == NULL) {
                Py_CLEAR(out);
                goto done;
            }
        }
        PyList_SET_ITEM(out, i, t);
    }
done:
    if (encoded != NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(encoded[i]);
    }
    PyMem_Free(encoded);
    PyMem_Free(sigs);
    PyMem_Free(names);
    Py_DECREF(seq);
    return out;
}

static PyObject *signatures(PyObject *self, PyObject *arg) { return stat_paths(arg, AS_SIGNATURES); }

static PyObject *modes(PyObject *self, PyObject *arg) { return stat_paths(arg, AS_MODES); }

static PyObject *packed(PyObject *self, PyObject *arg) { return stat_paths(arg, AS_PACKED); }

static PyMethodDef methods[] = {
    {"signatures", signatures, METH_O,
     "signatures(paths) -> [(size, mtime_ns, ctime_ns, ino, dev) or None per path], GIL released"},
    {"modes", modes, METH_O, "modes(paths) -> [(st_mode, st_size) or None per path], GIL released"},
    {"packed", packed, METH_O,
     "packed(paths) -> bytes: signatures() as 5 native int64 per path, all bits set for None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_stat", NULL, -1, methods};

PyMODINIT_FUNC PyInit__stat(void) { return PyModule_Create(&module); }
