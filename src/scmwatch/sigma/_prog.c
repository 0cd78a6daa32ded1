/*
 * scmwatch.sigma._prog: a rule's condition evaluated in C.
 *
 * Why: a candidate rule's predicate is a generated ``lambda f, low: ...`` (compile.py). Its plain
 * string tests are inlined, but each still runs as bytecode: a frame per rule, a global load and
 * a ``low[...]`` subscript per field, a method lookup and call per ``startswith``/``endswith``
 * tuple. On Sysmon process creation with all SigmaHQ that was ~7 us per event for ~10.6
 * candidates. A Prog runs the same tree as C: AND/OR/NOT nodes, and per OR-group of
 * case-insensitive strings on one field (``compile._ci_code``) the same CPython string
 * operations the lambda calls (set membership, ``PyUnicode_Tailmatch``, ``PyUnicode_Contains``)
 * on the same lower-cased value, read through the event's ``Low``; a regex's length and
 * substring prechecks before its test. Everything else (the regex itself, cidr, keywords,
 * ``|cased``, globs, non-str values) calls the Python closure the lambda calls, so the result
 * is the lambda's by construction;
 * tests/test_sigma_prog.py compares both over every SigmaHQ rule.
 *
 * Prog(text, ns, slow): callable as ``prog(f, low) -> bool``. ``text`` is the program
 * (compile.py writes it beside the lambda, into the lambda's namespace ``ns``): tokens apart by
 * spaces, in prefix order, numbers naming ``ns`` keys (7 is ``k7``, 0 none):
 *   &N / |N   AND / OR of the N nodes that follow;  !   NOT of the node that follows
 *   cF,E,S,N,C,T,X   an OR-group of case-insensitive strings on field ns[F]: its lower-cased value
 *       (``low[field]``), when a str and X is 1: is it ns[E] (a str or frozenset), does it start
 *       / end with one of the tuples ns[S] / ns[N], contain ns[C] (a str or tuple); when a str
 *       and X is 0, ``ns[T](value)``; when None, ``slow(f.get(field), ns[T])`` (False for a
 *       missing field)
 *   fA,B,K   ``ns[A]|fieldref: ns[B]``: both lower-cased values str: are they equal, else
 *       ``ns[K](f, low)`` (``compile._Compiler.same_fields``)
 *   nF,S,K   numbers on field ns[F]: an int value: is it in the frozenset ns[S]; a missing or None
 *       value: False; any other: ``ns[K](f, low)`` (``compile._numbers_pred``)
 *   zF       ``field: null``: the value of ns[F] is missing, None or ""
 *   eF,X     ``field|exists``: is ns[F] a key of the event (X 1) / not one (X 0)
 *   rF,N,T,K,L   ``field|re``: the value of ns[F] as written, when a str: False when shorter
 *       than L characters or lacking one of the substrings ns[N] (a tuple of str; 0: none), else
 *       ``ns[T](value)``; any other value: ``ns[K](f, low)``. N and L are the checks ns[T]
 *       itself makes first (``values._raw_matcher``), so the answer is ns[T]'s; made here they
 *       spare two Python calls for each value they turn away (``compile._Compiler.regex_code``)
 *   pK       ``ns[K](f, low)``
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <string.h>

static PyObject *EMPTY = NULL, *TRUE_TEXT = NULL, *FALSE_TEXT = NULL; /* "", "true", "false" */

enum { OP_AND, OP_OR, OP_NOT, OP_CI, OP_PY, OP_FEQ, OP_NULL, OP_EXISTS, OP_NUM, OP_RE };

typedef struct Node {
    int op;
    int native;           /* OP_CI: the needles are the whole test */
    int contains_wide;    /* OP_CI: some needle of contains is not ASCII */
    int want;             /* OP_EXISTS: the key's presence asked for */
    long min_len;         /* OP_RE: the fewest characters a value the regex matches has */
    Py_ssize_t n;         /* children */
    struct Node **kids;
    /* new references (NULL: none); OP_RE's substrings are ``contains`` */
    PyObject *field, *other, *eqs, *starts, *ends, *contains, *test, *pred;
} Node;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Node *root;
    PyObject *text, *slow;
} ProgObject;

static void node_free(Node *n) {
    if (n == NULL) return;
    for (Py_ssize_t k = 0; k < n->n; k++) node_free(n->kids[k]);
    PyMem_Free(n->kids);
    Py_XDECREF(n->field);
    Py_XDECREF(n->other);
    Py_XDECREF(n->eqs);
    Py_XDECREF(n->starts);
    Py_XDECREF(n->ends);
    Py_XDECREF(n->contains);
    Py_XDECREF(n->test);
    Py_XDECREF(n->pred);
    PyMem_Free(n);
}

typedef struct {
    const char *s;
    PyObject *ns;
} Parser;

static int bad(const char *why) {
    PyErr_SetString(PyExc_ValueError, why);
    return -1;
}

/* A number at the parser's position, then its separator: -1 (error set) when there is none. */
static long read_num(Parser *p, char sep) {
    long v = 0;
    int digits = 0;
    while (*p->s >= '0' && *p->s <= '9' && digits < 9) {
        v = v * 10 + (*p->s++ - '0');
        digits++;
    }
    if (!digits || (*p->s >= '0' && *p->s <= '9')) return bad("a Prog text needs a number here");
    if (sep) {
        if (*p->s != sep) return bad("a Prog text's numbers are apart by commas");
        p->s++;
    }
    return v;
}

/* ns[k<num>] as a new reference, NULL for 0 (none) or on error (set). */
static PyObject *ns_item(Parser *p, char sep, int required) {
    long k = read_num(p, sep);
    if (k < 0) return NULL;
    if (k == 0) {
        if (required) bad("a Prog text names no namespace key where one is needed");
        return NULL;
    }
    char key[24];
    snprintf(key, sizeof key, "k%ld", k);
    PyObject *v = PyDict_GetItemString(p->ns, key);
    if (v == NULL) {
        PyErr_Format(PyExc_ValueError, "a Prog text names %s, which its namespace lacks", key);
        return NULL;
    }
    return Py_NewRef(v);
}

/* A field name from the namespace: the interned str, the object the readers key every event
 * with (they intern field names), so each lookup of it in an event finds the key by identity
 * instead of comparing equal strings (a rich compare in the readers' presized dicts). */
static PyObject *field_item(Parser *p, char sep) {
    PyObject *v = ns_item(p, sep, 1);
    if (v != NULL && PyUnicode_CheckExact(v)) PyUnicode_InternInPlace(&v);
    return v;
}

static int all_str(PyObject *tup) {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tup); k++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(tup, k))) return 0;
    return 1;
}

static int ascii_only(PyObject *x) {
    if (PyUnicode_Check(x)) return PyUnicode_IS_ASCII(x);
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(x); k++)
        if (!PyUnicode_IS_ASCII(PyTuple_GET_ITEM(x, k))) return 0;
    return 1;
}

static int ci_parse(Parser *p, Node *n) {
    n->op = OP_CI;
    if ((n->field = field_item(p, ',')) == NULL) return -1;
    PyObject **slots[4] = {&n->eqs, &n->starts, &n->ends, &n->contains};
    for (int k = 0; k < 4; k++)
        if ((*slots[k] = ns_item(p, ',', 0)) == NULL && PyErr_Occurred()) return -1;
    if ((n->test = ns_item(p, ',', 1)) == NULL) return -1;
    long native = read_num(p, 0);
    if (native < 0) return -1;
    n->native = native != 0;
    if (!PyUnicode_CheckExact(n->field) || !PyCallable_Check(n->test)
        || (n->eqs && !PyUnicode_CheckExact(n->eqs) && !PyFrozenSet_CheckExact(n->eqs))
        || (n->starts && !(PyTuple_CheckExact(n->starts) && all_str(n->starts)))
        || (n->ends && !(PyTuple_CheckExact(n->ends) && all_str(n->ends)))
        || (n->contains && !PyUnicode_CheckExact(n->contains)
            && !(PyTuple_CheckExact(n->contains) && all_str(n->contains))))
        return bad("a Prog string group holds a field name, str / frozenset / tuples of str and a test");
    n->contains_wide = n->contains != NULL && !ascii_only(n->contains);
    return 0;
}

static Node *parse(Parser *p, int depth) {
    if (depth > 1000) {
        PyErr_SetString(PyExc_RecursionError, "Prog text nested too deeply");
        return NULL;
    }
    while (*p->s == ' ') p->s++;
    char c = *p->s;
    if (c == 0) {
        bad("a Prog text ends where a node is needed");
        return NULL;
    }
    p->s++;
    Node *n = PyMem_Calloc(1, sizeof(Node));
    if (n == NULL) return (Node *)PyErr_NoMemory();
    switch (c) {
    case '&':
    case '|':
    case '!': {
        long count = 1;
        if (c != '!' && (count = read_num(p, 0)) < 0) goto fail;
        n->op = c == '&' ? OP_AND : c == '|' ? OP_OR : OP_NOT;
        if ((n->kids = PyMem_Calloc((size_t)count + 1, sizeof(Node *))) == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (long k = 0; k < count; k++) {
            if ((n->kids[k] = parse(p, depth + 1)) == NULL) goto fail;
            n->n = k + 1;
        }
        break;
    }
    case 'p':
        n->op = OP_PY;
        if ((n->pred = ns_item(p, 0, 1)) == NULL) goto fail;
        if (!PyCallable_Check(n->pred)) {
            bad("a Prog call names something not callable");
            goto fail;
        }
        break;
    case 'f':
        n->op = OP_FEQ;
        if ((n->field = field_item(p, ',')) == NULL || (n->other = field_item(p, ',')) == NULL
            || (n->pred = ns_item(p, 0, 1)) == NULL)
            goto fail;
        if (!PyUnicode_CheckExact(n->field) || !PyUnicode_CheckExact(n->other) || !PyCallable_Check(n->pred)) {
            bad("a Prog fieldref holds two field names and a callable");
            goto fail;
        }
        break;
    case 'c':
        if (ci_parse(p, n) < 0) goto fail;
        break;
    case 'r':
        n->op = OP_RE;
        if ((n->field = field_item(p, ',')) == NULL) goto fail;
        if ((n->contains = ns_item(p, ',', 0)) == NULL && PyErr_Occurred()) goto fail;
        if ((n->test = ns_item(p, ',', 1)) == NULL || (n->pred = ns_item(p, ',', 1)) == NULL
            || (n->min_len = read_num(p, 0)) < 0)
            goto fail;
        if (!PyUnicode_CheckExact(n->field) || !PyCallable_Check(n->test) || !PyCallable_Check(n->pred)
            || (n->contains && !(PyTuple_CheckExact(n->contains) && all_str(n->contains)))) {
            bad("a Prog regex test holds a field name, a tuple of str, a test and a callable");
            goto fail;
        }
        break;
    case 'n':
        n->op = OP_NUM;
        if ((n->field = field_item(p, ',')) == NULL || (n->eqs = ns_item(p, ',', 1)) == NULL
            || (n->pred = ns_item(p, 0, 1)) == NULL)
            goto fail;
        if (!PyUnicode_CheckExact(n->field) || !PyFrozenSet_CheckExact(n->eqs) || !PyCallable_Check(n->pred)) {
            bad("a Prog number set holds a field name, a frozenset and a callable");
            goto fail;
        }
        break;
    case 'z':
    case 'e': {
        n->op = c == 'z' ? OP_NULL : OP_EXISTS;
        if ((n->field = field_item(p, c == 'e' ? ',' : 0)) == NULL) goto fail;
        if (!PyUnicode_CheckExact(n->field)) {
            bad("a Prog null / exists test names a field");
            goto fail;
        }
        if (c == 'e') {
            long want = read_num(p, 0);
            if (want < 0) goto fail;
            n->want = want != 0;
        }
        break;
    }
    default:
        PyErr_Format(PyExc_ValueError, "unknown Prog text node %c", c);
        goto fail;
    }
    if (*p->s != ' ' && *p->s != 0) {
        bad("a Prog text's nodes are apart by spaces");
        goto fail;
    }
    return n;
fail:
    node_free(n);
    return NULL;
}

/* ``v.startswith(t)`` (end 0) / ``v.endswith(t)`` (end 1): PyUnicode_Tailmatch's answer, with its
 * general path (index adjustment, kinds) taken only when the kinds differ. A needle of a wider
 * kind holds a character the value cannot hold. Sysmon process creation: ~5.7 per candidate. */
static int tail(PyObject *v, PyObject *t, int end) {
    if (!PyUnicode_IS_READY(v) || !PyUnicode_IS_READY(t))
        return (int)PyUnicode_Tailmatch(v, t, 0, PY_SSIZE_T_MAX, end ? 1 : -1);
    int kv = PyUnicode_KIND(v), kt = PyUnicode_KIND(t);
    if (kt > kv) return 0;
    if (kv != PyUnicode_1BYTE_KIND || kt != PyUnicode_1BYTE_KIND)
        return (int)PyUnicode_Tailmatch(v, t, 0, PY_SSIZE_T_MAX, end ? 1 : -1);
    Py_ssize_t lv = PyUnicode_GET_LENGTH(v), lt = PyUnicode_GET_LENGTH(t);
    if (lt > lv) return 0;
    const Py_UCS1 *a = PyUnicode_1BYTE_DATA(v) + (end ? lv - lt : 0), *b = PyUnicode_1BYTE_DATA(t);
    return lt == 0 || (a[0] == b[0] && a[lt - 1] == b[lt - 1] && memcmp(a, b, (size_t)lt) == 0);
}

/* The native part of a ci node on a lower-cased str value: 1, 0 or -1 (error). */
static int ci_native(Node *n, PyObject *v) {
    if (n->eqs != NULL) {
        if (PyUnicode_CheckExact(n->eqs)) {
            if (PyUnicode_GET_LENGTH(n->eqs) == PyUnicode_GET_LENGTH(v) && PyUnicode_Compare(v, n->eqs) == 0)
                return 1;
        } else {
            int r = PySet_Contains(n->eqs, v);
            if (r) return r;
        }
    }
    if (n->starts != NULL)
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(n->starts); k++) {
            if (tail(v, PyTuple_GET_ITEM(n->starts, k), 0)) return 1;
        }
    if (n->ends != NULL)
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(n->ends); k++) {
            if (tail(v, PyTuple_GET_ITEM(n->ends, k), 1)) return 1;
        }
    if (n->contains == NULL) return 0;
    if (PyUnicode_CheckExact(n->contains)) return PyUnicode_Contains(v, n->contains);
    /* a needle that is not ASCII cannot occur in an ASCII value (what _contains_any skips) */
    int skip_wide = n->contains_wide && PyUnicode_IS_ASCII(v);
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(n->contains); k++) {
        PyObject *c = PyTuple_GET_ITEM(n->contains, k);
        if (skip_wide && !PyUnicode_IS_ASCII(c)) continue;
        int r = PyUnicode_Contains(v, c);
        if (r) return r;
    }
    return 0;
}

static int truth_of_call(PyObject *fn, PyObject *a, PyObject *b) {
    PyObject *argv[2] = {a, b};
    PyObject *r = PyObject_Vectorcall(fn, argv, 2, NULL);
    if (r == NULL) return -1;
    int t = r == Py_True ? 1 : r == Py_False ? 0 : PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

/* low[field] (a new reference: the lower-cased str, or None), NULL on error. */
static PyObject *lowered(PyObject *low, PyObject *field) {
    if (PyDict_Check(low)) {
        PyObject *v = PyDict_GetItemWithError(low, field);
        if (v != NULL) return Py_NewRef(v);
        if (PyErr_Occurred()) return NULL;
    }
    PyObject *v = PyObject_GetItem(low, field);
    if (v != NULL && v != Py_None && !PyUnicode_CheckExact(v)) {
        Py_DECREF(v);
        PyErr_SetString(PyExc_TypeError, "a lower-cased value is a str or None");
        return NULL;
    }
    return v;
}

static int eval(ProgObject *p, Node *n, PyObject *f, PyObject *low) {
    switch (n->op) {
    case OP_AND:
        for (Py_ssize_t k = 0; k < n->n; k++) {
            int r = eval(p, n->kids[k], f, low);
            if (r <= 0) return r;
        }
        return 1;
    case OP_OR:
        for (Py_ssize_t k = 0; k < n->n; k++) {
            int r = eval(p, n->kids[k], f, low);
            if (r != 0) return r;
        }
        return 0;
    case OP_NOT: {
        int r = eval(p, n->kids[0], f, low);
        return r < 0 ? r : !r;
    }
    case OP_PY:
        return truth_of_call(n->pred, f, low);
    case OP_NUM: {
        PyObject *v = PyDict_GetItemWithError(f, n->field);
        if (v == NULL) return PyErr_Occurred() ? -1 : 0;
        if (PyLong_CheckExact(v)) return PySet_Contains(n->eqs, v);
        if (v == Py_None) return 0;
        return truth_of_call(n->pred, f, low);
    }
    case OP_NULL: {
        PyObject *v = PyDict_GetItemWithError(f, n->field);
        if (v == NULL) return PyErr_Occurred() ? -1 : 1;
        if (v == Py_None) return 1;
        if (PyUnicode_CheckExact(v)) return PyUnicode_GET_LENGTH(v) == 0;
        Py_INCREF(v);
        int r = PyObject_RichCompareBool(v, EMPTY, Py_EQ);
        Py_DECREF(v);
        return r;
    }
    case OP_RE: {
        PyObject *v = PyDict_GetItemWithError(f, n->field);
        if (v == NULL) return PyErr_Occurred() ? -1 : 0;
        if (!PyUnicode_CheckExact(v)) return truth_of_call(n->pred, f, low);
        if (PyUnicode_GET_LENGTH(v) < n->min_len) return 0;
        if (n->contains != NULL)
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(n->contains); k++) {
                int r = PyUnicode_Contains(v, PyTuple_GET_ITEM(n->contains, k));
                if (r <= 0) return r;
            }
        Py_INCREF(v);
        PyObject *t = PyObject_CallOneArg(n->test, v);
        Py_DECREF(v);
        int r = t == NULL ? -1 : t == Py_True ? 1 : t == Py_False ? 0 : PyObject_IsTrue(t);
        Py_XDECREF(t);
        return r;
    }
    case OP_EXISTS: {
        int r = PyDict_Contains(f, n->field);
        return r < 0 ? r : r == n->want;
    }
    case OP_FEQ: {
        PyObject *a = lowered(low, n->field);
        if (a == NULL) return -1;
        PyObject *b = a == Py_None ? NULL : lowered(low, n->other);
        if (b == NULL && a != Py_None) {
            Py_DECREF(a);
            return -1;
        }
        int r = (a == Py_None || b == Py_None) ? truth_of_call(n->pred, f, low)
                                               : PyUnicode_Compare(a, b) == 0;
        Py_DECREF(a);
        Py_XDECREF(b);
        return r;
    }
    default: { /* OP_CI */
        PyObject *v = lowered(low, n->field);
        if (v == NULL) return -1;
        int r;
        if (v == Py_None) {
            Py_DECREF(v);
            PyObject *raw = PyDict_GetItemWithError(f, n->field);
            if (raw == NULL) return PyErr_Occurred() ? -1 : 0;
            /* a bool is the text ``values.as_text`` makes of it (Sysmon network events' three
             * flags: 2,415 calls of ``slow`` on the attack corpus x5) */
            if (raw == Py_True || raw == Py_False) {
                v = Py_NewRef(raw == Py_True ? TRUE_TEXT : FALSE_TEXT);
            } else {
                Py_INCREF(raw);
                r = truth_of_call(p->slow, raw, n->test);
                Py_DECREF(raw);
                return r;
            }
        }
        if (n->native) {
            r = ci_native(n, v);
        } else {
            PyObject *t = PyObject_CallOneArg(n->test, v);
            r = t == NULL ? -1 : PyObject_IsTrue(t);
            Py_XDECREF(t);
        }
        Py_DECREF(v);
        return r;
    }
    }
}

static PyObject *Prog_vectorcall(ProgObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a Prog takes (fields, low)");
        return NULL;
    }
    if (!PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "a Prog's fields are a dict");
        return NULL;
    }
    int r = eval(self, self->root, args[0], args[1]);
    if (r < 0) return NULL;
    return Py_NewRef(r ? Py_True : Py_False);
}

static PyObject *Prog_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *text, *ns, *slow;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Prog() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "UO!O", &text, &PyDict_Type, &ns, &slow)) return NULL;
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "slow must be callable");
        return NULL;
    }
    Parser p = {PyUnicode_AsUTF8(text), ns};
    if (p.s == NULL) return NULL;
    Node *root = parse(&p, 0);
    if (root == NULL) return NULL;
    if (*p.s != 0) {
        node_free(root);
        PyErr_SetString(PyExc_ValueError, "a Prog text holds more than one tree");
        return NULL;
    }
    ProgObject *self = (ProgObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        node_free(root);
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)Prog_vectorcall;
    self->root = root;
    self->text = Py_NewRef(text);
    self->slow = Py_NewRef(slow);
    return (PyObject *)self;
}

static int node_traverse(Node *n, visitproc visit, void *arg) {
    if (n == NULL) return 0;
    for (Py_ssize_t k = 0; k < n->n; k++) {
        int r = node_traverse(n->kids[k], visit, arg);
        if (r) return r;
    }
    Py_VISIT(n->eqs);
    Py_VISIT(n->starts);
    Py_VISIT(n->ends);
    Py_VISIT(n->contains);
    Py_VISIT(n->test);
    Py_VISIT(n->pred);
    return 0;
}

static int Prog_traverse(ProgObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->text);
    Py_VISIT(self->slow);
    return node_traverse(self->root, visit, arg);
}

static int Prog_clear(ProgObject *self) {
    node_free(self->root);
    self->root = NULL;
    Py_CLEAR(self->text);
    Py_CLEAR(self->slow);
    return 0;
}

static void Prog_dealloc(ProgObject *self) {
    PyObject_GC_UnTrack(self);
    Prog_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Prog_get_text(ProgObject *self, void *closure) {
    return Py_NewRef(self->text ? self->text : Py_None);
}

static PyGetSetDef Prog_getset[] = {
    {"text", (getter)Prog_get_text, NULL, "the program text this was built from", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ProgType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scmwatch.sigma._prog.Prog",
    .tp_doc = "Prog(text, ns, slow): a rule's condition in C, called as prog(fields, low) -> bool.",
    .tp_basicsize = sizeof(ProgObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(ProgObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = Prog_new,
    .tp_traverse = (traverseproc)Prog_traverse,
    .tp_clear = (inquiry)Prog_clear,
    .tp_dealloc = (destructor)Prog_dealloc,
    .tp_getset = Prog_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_prog", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__prog(void) {
    if (EMPTY == NULL && (EMPTY = PyUnicode_FromStringAndSize("", 0)) == NULL) return NULL;
    if (TRUE_TEXT == NULL && (TRUE_TEXT = PyUnicode_InternFromString("true")) == NULL) return NULL;
    if (FALSE_TEXT == NULL && (FALSE_TEXT = PyUnicode_InternFromString("false")) == NULL) return NULL;
    if (PyType_Ready(&ProgType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ProgType);
    if (PyModule_AddObject(m, "Prog", (PyObject *)&ProgType) < 0) {
        Py_DECREF(&ProgType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
