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
 *
 * tagged_join: the same for the atom prefilter's field-tagged text (sigma/tagged.py); Gather:
 * the atom scan's match handler (below).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define MAX_PIECES 256

/* dst[k] = src[k] with 'A'-'Z' lowered, every other byte as it is (ASCII lower-casing; a byte
 * from 0x80 stays). 16 bytes a step, here and in the frame-byte test of ``reserved_char``: on
 * x5 (callgrind, --jobs 1) those byte loops over the field texts (the tagged text, Low,
 * lower_join) took ~150M instructions, now ~45M. */
static void lower_ascii(Py_UCS1 *dst, const Py_UCS1 *src, Py_ssize_t n) {
    Py_ssize_t k = 0;
#if defined(__SSE2__)
    /* c + 0x3F puts 'A'-'Z' at -128..-103 as signed bytes, and no other byte there */
    const __m128i shift = _mm_set1_epi8(0x3F), bound = _mm_set1_epi8((char)(-128 + 26)),
                  case_bit = _mm_set1_epi8(0x20);
    for (; k + 16 <= n; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(src + k));
        __m128i upper = _mm_cmplt_epi8(_mm_add_epi8(v, shift), bound);
        _mm_storeu_si128((__m128i *)(dst + k), _mm_add_epi8(v, _mm_and_si128(upper, case_bit)));
    }
#endif
    for (; k < n; k++) {
        Py_UCS1 ch = src[k];
        dst[k] = (ch >= 'A' && ch <= 'Z') ? (Py_UCS1)(ch + 32) : ch;
    }
}

/* Whether any of n bytes is an upper-case ASCII letter. */
static int has_upper_ascii(const Py_UCS1 *s, Py_ssize_t n) {
    Py_ssize_t k = 0;
#if defined(__SSE2__)
    const __m128i shift = _mm_set1_epi8(0x3F), bound = _mm_set1_epi8((char)(-128 + 26));
    for (; k + 16 <= n; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(s + k));
        if (_mm_movemask_epi8(_mm_cmplt_epi8(_mm_add_epi8(v, shift), bound))) return 1;
    }
#endif
    for (; k < n; k++)
        if (s[k] >= 'A' && s[k] <= 'Z') return 1;
    return 0;
}

static PyObject *NUL = NULL;
static PyObject *S_lower = NULL;
static PyObject *str_lower(PyObject *s);

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
    PyObject *lowered = str_lower(joined);
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
        Py_ssize_t len = PyUnicode_GET_LENGTH(p->items[i]);
        lower_ascii(o, PyUnicode_1BYTE_DATA(p->items[i]), len);
        o += len;
    }
    return out;
}

/* 1: key is in skip (a set or frozenset; NULL/None: nothing is skipped), 0: not, -1: error. */
static int skipped(PyObject *skip, PyObject *key) {
    if (skip == NULL || skip == Py_None) return 0;
    return PySet_Contains(skip, key);
}

/* The field number of each key of the last event a Matcher framed (with ``rest`` >= 0), in that
 * event's order (a LiteralMatcher: 0 for a key it joins, -1 for one ``skip`` leaves out): a bucket's events come with the same keys in the same order (the readers intern
 * them), so a key that is the very object found at its position last time takes the number
 * found then, without the index lookup and the skip test. -1: a key that is left out. The keys
 * are held (new references), so a position's object cannot be another key's. */
typedef struct {
    PyObject **keys;
    Py_ssize_t *num;
    Py_ssize_t n, cap;
} KeyOrder;

static void keyorder_clear(KeyOrder *k) {
    for (Py_ssize_t i = 0; i < k->n; i++) Py_DECREF(k->keys[i]);
    PyMem_Free(k->keys);
    PyMem_Free(k->num);
    k->keys = NULL;
    k->num = NULL;
    k->n = k->cap = 0;
}

/* Remember ``key`` (number ``num``) at position ``i`` (at most one past the last): 0, or -1 with
 * MemoryError set. */
static int keyorder_set(KeyOrder *k, Py_ssize_t i, PyObject *key, Py_ssize_t num) {
    if (i == k->cap) {
        Py_ssize_t cap = k->cap ? k->cap * 2 : 64;
        PyObject **keys = PyMem_Realloc(k->keys, cap * sizeof(PyObject *));
        if (keys == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        k->keys = keys;
        Py_ssize_t *nums = PyMem_Realloc(k->num, cap * sizeof(Py_ssize_t));
        if (nums == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        k->num = nums;
        k->cap = cap;
    }
    Py_INCREF(key);
    if (i < k->n) Py_DECREF(k->keys[i]);
    else k->n = i + 1;
    k->keys[i] = key;
    k->num[i] = num;
    return 0;
}

/* The values lower_join joins, each given to visit(ctx, value) in join order: the values of the
 * fields ``names`` (a tuple) present in ``fields``, or with names None every value whose key
 * ``skip`` does not hold. Stops at visit's first non-zero answer and returns it; -1 also on a
 * lookup error (exception set). lower_join and has_anchor walk the same values this way. */
typedef int (*value_visit)(void *ctx, PyObject *value);

static int each_joined_value(PyObject *fields, PyObject *names, PyObject *skip, value_visit visit,
                             void *ctx, KeyOrder *order) {
    int rc = 0;
    if (names == Py_None) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        for (Py_ssize_t i = 0; !rc && PyDict_Next(fields, &pos, &key, &value); i++) {
            int out;
            if (order != NULL && i < order->n && order->keys[i] == key) {
                out = order->num[i] < 0;
            } else {
                out = skipped(skip, key);
                if (out >= 0 && order != NULL && keyorder_set(order, i, key, -out) < 0) out = -1;
            }
            if (out) {
                if (out < 0) rc = -1;
                continue;
            }
            Py_INCREF(value); /* str(value) may run code that changes the dict */
            rc = visit(ctx, value);
            Py_DECREF(value);
        }
        return rc;
    }
    for (Py_ssize_t i = 0; !rc && i < PyTuple_GET_SIZE(names); i++) {
        PyObject *value = PyDict_GetItemWithError(fields, PyTuple_GET_ITEM(names, i));
        if (value == NULL) {
            if (PyErr_Occurred()) rc = -1;
            continue;
        }
        Py_INCREF(value);
        rc = visit(ctx, value);
        Py_DECREF(value);
    }
    return rc;
}

/* Field names as the readers key events: interned (``_evtx`` and ``_flatten`` intern every
 * field name), so a lookup of one in an event, or of an event's key in these, meets the same
 * object and stops at the identity test instead of comparing equal strings (in the readers'
 * presized dicts a rich compare). With _prog's field names interned too: x5 --jobs 1, all
 * SigmaHQ, 4,854.9M -> 4,821.5M instructions (callgrind). A new reference to ``k``, interned
 * when it is a str. */
static PyObject *interned_str(PyObject *k) {
    Py_INCREF(k);
    if (PyUnicode_CheckExact(k)) PyUnicode_InternInPlace(&k);
    return k;
}

/* A new reference to ``x`` with its str items (a dict's keys) interned: a tuple, a frozenset or
 * a dict of the same items; anything else as it is. */
static PyObject *interned_names(PyObject *x) {
    if (PyDict_CheckExact(x)) {
        PyObject *out = PyDict_New(), *k, *v;
        Py_ssize_t pos = 0;
        while (out != NULL && PyDict_Next(x, &pos, &k, &v)) {
            PyObject *name = interned_str(k);
            if (PyDict_SetItem(out, name, v) < 0) Py_CLEAR(out);
            Py_DECREF(name);
        }
        return out;
    }
    if (PyTuple_CheckExact(x)) {
        Py_ssize_t n = PyTuple_GET_SIZE(x);
        PyObject *out = PyTuple_New(n);
        for (Py_ssize_t i = 0; out != NULL && i < n; i++)
            PyTuple_SET_ITEM(out, i, interned_str(PyTuple_GET_ITEM(x, i)));
        return out;
    }
    if (PyFrozenSet_CheckExact(x)) {
        PyObject *items = PySequence_Tuple(x);
        if (items == NULL) return NULL;
        PyObject *names = interned_names(items);
        Py_DECREF(items);
        if (names == NULL) return NULL;
        PyObject *out = PyFrozenSet_New(names);
        Py_DECREF(names);
        return out;
    }
    return Py_NewRef(x);
}

/* lower_join's, has_anchor's and LiteralMatcher's check of ``names`` and ``skip``: 0, or -1 with TypeError set. */
static int names_skip_ok(PyObject *names, PyObject *skip) {
    if (names != Py_None && !PyTuple_CheckExact(names)) {
        PyErr_SetString(PyExc_TypeError, "names must be a tuple or None");
        return -1;
    }
    if (skip != Py_None && !PyAnySet_Check(skip)) {
        PyErr_SetString(PyExc_TypeError, "skip must be a set, a frozenset or None");
        return -1;
    }
    return 0;
}

static PyObject *lower_join_impl(PyObject *fields, PyObject *names, PyObject *skip, KeyOrder *order);

/* lower_join(fields: dict, names: tuple[str, ...] | None, skip: frozenset | None = None) -> str | None
 * (``skip``: with names None, the fields left out) */
static PyObject *lower_join(PyObject *self, PyObject *args) {
    PyObject *fields, *names, *skip = Py_None;
    if (!PyArg_ParseTuple(args, "O!O|O", &PyDict_Type, &fields, &names, &skip)) return NULL;
    if (names_skip_ok(names, skip) < 0) return NULL;
    return lower_join_impl(fields, names, skip, NULL);
}

static int visit_pieces(void *p, PyObject *value) { return pieces_value((Pieces *)p, value); }

static PyObject *lower_join_impl(PyObject *fields, PyObject *names, PyObject *skip, KeyOrder *order) {
    Pieces p;
    p.n = 0;
    p.total = 0;
    p.ascii = 1;
    int rc = each_joined_value(fields, names, skip, visit_pieces, &p, order);
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

/*
 * has_anchor(fields, names, skip, anchors) -> bool: does a value lower_join would join (the same
 * fields, the same text of each) hold one of ``anchors`` (a tuple of non-empty lower-case ASCII
 * str), ASCII case ignored? A non-ASCII value answers True (str.lower of such text is not
 * computed here). The literal prefilter of a bucket whose literals
 * each hold an anchor asks this first (index.keyword_anchors): no anchor, no literal, no scan.
 */
static int anchors_ok(PyObject *anchors) {
    if (!PyTuple_CheckExact(anchors)) return 0;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(anchors); k++) {
        PyObject *a = PyTuple_GET_ITEM(anchors, k);
        if (!PyUnicode_CheckExact(a) || !PyUnicode_IS_ASCII(a) || PyUnicode_GET_LENGTH(a) == 0) return 0;
        const Py_UCS1 *p = PyUnicode_1BYTE_DATA(a);
        for (Py_ssize_t j = 0; j < PyUnicode_GET_LENGTH(a); j++)
            if (p[j] >= 'A' && p[j] <= 'Z') return 0;
    }
    return 1;
}

static Py_UCS1 LOWER[256]; /* ASCII lower-casing, byte for byte (filled at import) */
/* Latin-1 lower-casing, code point for code point (filled at import): ``str.lower`` of a
 * character below U+0100 is one character below U+0100 (tests/test_text_ext.py checks all 256). */
static Py_UCS1 LATIN1_LOWER[256];

/* CPython's per-character full lower-casing: public (``cpython/unicodeobject.h``) up to 3.12. */
#if PY_VERSION_HEX < 0x030D0000
#define LOWER_FULL 1
static int lower_full(Py_UCS4 c, Py_UCS4 *res) { return _PyUnicode_ToLowerFull(c, res); }
#else
#define LOWER_FULL 0
static int lower_full(Py_UCS4 c, Py_UCS4 *res) {
    res[0] = c;
    return 1;
}
#endif

/* ``s.lower()``, computed as ``str.lower`` does: each character's full lower-case mapping
 * (``_PyUnicode_ToLowerFull``, ASCII by table), in a str of the narrowest kind that holds the
 * result. A capital sigma (its lower case depends on its neighbours) or a str subclass goes to
 * the method itself. Why: the method spent ~25 instructions a character on texts that are mostly
 * ASCII with a few other characters (x5: 2,735 joined prefilter texts of PowerShell and
 * registry events, ~80M instructions); x5 --jobs 1, all SigmaHQ: 4,821.5M -> 4,760.1M. */
static PyObject *str_lower(PyObject *s) {
    if (!PyUnicode_CheckExact(s)) return PyObject_CallMethodNoArgs(s, S_lower);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), len = 0;
    if (kind == PyUnicode_1BYTE_KIND && !PyUnicode_IS_ASCII(s)) {
        /* Latin-1 with a character past ASCII: that one lower-cases past ASCII too (the table) */
        PyObject *out = PyUnicode_New(n, 255);
        if (out == NULL) return NULL;
        Py_UCS1 *o = PyUnicode_1BYTE_DATA(out);
        const Py_UCS1 *src = data;
        for (Py_ssize_t i = 0; i < n; i++) o[i] = LATIN1_LOWER[src[i]];
        return out;
    }
    Py_UCS4 maxchar = 127, mapped[3];
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 128) {
            len++;
            continue;
        }
        if (c == 0x3a3 || !LOWER_FULL) return PyObject_CallMethodNoArgs(s, S_lower);
        int k = lower_full(c, mapped);
        for (int j = 0; j < k; j++)
            if (mapped[j] > maxchar) maxchar = mapped[j];
        len += k;
    }
    PyObject *out = PyUnicode_New(len, maxchar);
    if (out == NULL) return NULL;
    int okind = PyUnicode_KIND(out);
    void *odata = PyUnicode_DATA(out);
    Py_ssize_t o = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 128) {
            PyUnicode_WRITE(okind, odata, o++, LOWER[c]);
            continue;
        }
        int k = lower_full(c, mapped);
        for (int j = 0; j < k; j++) PyUnicode_WRITE(okind, odata, o++, mapped[j]);
    }
    return out;
}

/* What has_anchor looks for: per byte (either case) whether an anchor starts with it, and
 * whether an int's text (digits and '-') could hold an anchor at all. */
typedef struct {
    unsigned char start[256];
    int digits;
    PyObject *anchors;
} AnchorScan;

static void anchor_scan_init(AnchorScan *a, PyObject *anchors) {
    memset(a->start, 0, sizeof a->start);
    a->digits = 0;
    a->anchors = anchors;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(anchors); k++) {
        PyObject *x = PyTuple_GET_ITEM(anchors, k);
        const Py_UCS1 *q = PyUnicode_1BYTE_DATA(x);
        a->start[q[0]] = 1;
        if (q[0] >= 'a' && q[0] <= 'z') a->start[q[0] - 32] = 1;
        Py_ssize_t j = 0, m = PyUnicode_GET_LENGTH(x);
        while (j < m && ((q[j] >= '0' && q[j] <= '9') || q[j] == '-')) j++;
        if (j == m) a->digits = 1;
    }
}

/* 1 when the str holds an anchor (ASCII case ignored) or is not ASCII, else 0. */
static int text_anchor(AnchorScan *a, PyObject *text) {
    if (!PyUnicode_IS_ASCII(text)) return 1;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), na = PyTuple_GET_SIZE(a->anchors);
    for (Py_ssize_t at = 0; at < n; at++) {
        if (!a->start[s[at]]) continue;
        Py_UCS1 c = LOWER[s[at]];
        for (Py_ssize_t k = 0; k < na; k++) {
            PyObject *x = PyTuple_GET_ITEM(a->anchors, k);
            const Py_UCS1 *q = PyUnicode_1BYTE_DATA(x);
            Py_ssize_t m = PyUnicode_GET_LENGTH(x), j = 1;
            if (q[0] != c || at + m > n) continue;
            while (j < m && LOWER[s[at + j]] == q[j]) j++;
            if (j == m) return 1;
        }
    }
    return 0;
}

/* One item as lower_join makes its text (as_str): 1, 0, or -1 with an exception set. An int's
 * text (digits, '-') holds no anchor unless one is made of those only. */
static int item_anchor(AnchorScan *a, PyObject *x) {
    if (PyUnicode_CheckExact(x)) return text_anchor(a, x);
    if (PyLong_CheckExact(x) && !a->digits) return 0;
    PyObject *t = PyObject_Str(x);
    if (t == NULL) return -1;
    int rc = text_anchor(a, t);
    Py_DECREF(t);
    return rc;
}

/* One field value as lower_join joins it: None skipped, a list item by item. */
static int value_anchor(AnchorScan *a, PyObject *v) {
    if (v == Py_None) return 0;
    if (!PyList_CheckExact(v)) return item_anchor(a, v);
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(v); k++) {
        PyObject *x = PyList_GET_ITEM(v, k);
        Py_INCREF(x); /* str(x) may run code that changes the list */
        int rc = item_anchor(a, x);
        Py_DECREF(x);
        if (rc) return rc;
        if (k + 1 > PyList_GET_SIZE(v)) break;
    }
    return 0;
}

/* has_anchor without argument checks: 1, 0, or -1 with an exception set. */
static int visit_anchor(void *a, PyObject *value) { return value_anchor((AnchorScan *)a, value); }

static int has_anchor_impl(PyObject *fields, PyObject *names, PyObject *skip, PyObject *anchors,
                           KeyOrder *order) {
    AnchorScan a;
    anchor_scan_init(&a, anchors);
    return each_joined_value(fields, names, skip, visit_anchor, &a, order);
}

static PyObject *has_anchor(PyObject *self, PyObject *args) {
    PyObject *fields, *names, *skip, *anchors;
    if (!PyArg_ParseTuple(args, "O!OOO", &PyDict_Type, &fields, &names, &skip, &anchors)) return NULL;
    if (names_skip_ok(names, skip) < 0) return NULL;
    if (!anchors_ok(anchors)) {
        PyErr_SetString(PyExc_ValueError, "anchors must be a tuple of non-empty lower-case ASCII str");
        return NULL;
    }
    int rc = has_anchor_impl(fields, names, skip, anchors, NULL);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

/*
 * tagged_join(fields, index, rest) -> str | None: the field-tagged text of the requirement scan
 * (tagged.tagged_text is the Python twin; tests/test_sigma_atoms.py compares them). A value of
 * a field numbered i (``index[name]``; other fields get ``rest``, or are left out when it is -1)
 * becomes "\x1e" + num(i) + value + "\x1d" + num(i), one segment per list item, num(i) being two
 * characters 0x10 + i / 12, 0x10 + i % 12; lower-cased as ``str.lower`` does. None ("not
 * clean": the caller takes the per-rule path) when a value is anything but str, int, bool or a
 * list of them, or when a str holds a character in 0x10-0x1f, so no value can forge a segment.
 * With ``rest`` -1 only the indexed names are looked up, in ``index`` order; with ``rest`` >= 0 the
 * fields in ``skip`` (a set, optional) that are not indexed are left out.
 */
typedef struct {
    PyObject **items; /* new references: values as str */
    Py_ssize_t *field; /* field number per item */
    Py_ssize_t n, cap, total;
    int ascii;
} Segs;

static void segs_clear(Segs *s) {
    for (Py_ssize_t i = 0; i < s->n; i++) Py_DECREF(s->items[i]);
    PyMem_Free(s->items);
    PyMem_Free(s->field);
}

static int reserved_char(PyObject *u) {
    Py_ssize_t len = PyUnicode_GET_LENGTH(u);
    int kind = PyUnicode_KIND(u);
    if (kind == PyUnicode_1BYTE_KIND) { /* almost every value: no per-character kind switch */
        const Py_UCS1 *s = PyUnicode_1BYTE_DATA(u);
        Py_ssize_t k = 0;
#if defined(__SSE2__)
        const __m128i high = _mm_set1_epi8((char)0xf0), frame = _mm_set1_epi8(0x10);
        for (; k + 16 <= len; k += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + k));
            if (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_and_si128(v, high), frame))) return 1;
        }
#endif
        for (; k < len; k++)
            if ((s[k] & 0xf0) == 0x10) return 1;
        return 0;
    }
    const void *data = PyUnicode_DATA(u);
    for (Py_ssize_t k = 0; k < len; k++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, k);
        if (ch >= 0x10 && ch <= 0x1f) return 1;
    }
    return 0;
}

/* 0: added, 1: not clean, -1: error. */
static int segs_add(Segs *s, PyObject *x, Py_ssize_t field) {
    PyObject *text;
    if (PyUnicode_CheckExact(x)) {
        if (reserved_char(x)) return 1;
        Py_INCREF(x);
        text = x;
    } else if (PyLong_CheckExact(x) || PyBool_Check(x)) { /* True -> "true" once lower-cased */
        text = PyObject_Str(x);
        if (text == NULL) return -1;
    } else {
        return 1;
    }
    if (s->n == s->cap) {
        Py_ssize_t cap = s->cap ? s->cap * 2 : 64;
        PyObject **items = PyMem_Realloc(s->items, cap * sizeof(PyObject *));
        if (items != NULL) s->items = items;
        Py_ssize_t *fields = items ? PyMem_Realloc(s->field, cap * sizeof(Py_ssize_t)) : NULL;
        if (fields == NULL) {
            Py_DECREF(text);
            PyErr_NoMemory();
            return -1;
        }
        s->field = fields;
        s->cap = cap;
    }
    s->ascii &= PyUnicode_IS_ASCII(text);
    s->total += PyUnicode_GET_LENGTH(text);
    s->items[s->n] = text;
    s->field[s->n] = field;
    s->n++;
    return 0;
}

static int segs_value(Segs *s, PyObject *value, Py_ssize_t field) {
    if (value == Py_None) return 0;
    int rc = 0;
    Py_INCREF(value); /* str(x) may run code that changes the dict */
    if (PyList_CheckExact(value)) {
        for (Py_ssize_t k = 0; !rc && k < PyList_GET_SIZE(value); k++) {
            PyObject *item = PyList_GET_ITEM(value, k);
            Py_INCREF(item);
            rc = segs_add(s, item, field);
            Py_DECREF(item);
        }
    } else {
        rc = segs_add(s, value, field);
    }
    Py_DECREF(value);
    return rc;
}

/* Lower-case each piece on its own (ASCII in place, others with ``str.lower``), then frame them
 * into one string of the widest kind. Per piece equals ``lower`` of the joined text: the frame
 * characters are neither cased nor case-ignorable, so no case mapping looks across them. */
static PyObject *tagged_build(Segs *s) {
    Py_UCS4 maxchar = 127;
    Py_ssize_t total = 6 * s->n;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        PyObject *piece = s->items[i];
        if (!PyUnicode_IS_ASCII(piece)) {
            PyObject *lowered = str_lower(piece);
            if (lowered == NULL) return NULL;
            Py_DECREF(piece);
            s->items[i] = piece = lowered;
            Py_UCS4 m = PyUnicode_MAX_CHAR_VALUE(piece);
            if (m > maxchar) maxchar = m;
        }
        total += PyUnicode_GET_LENGTH(piece);
    }
    PyObject *out = PyUnicode_New(total, maxchar);
    if (out == NULL) return NULL;
    int kind = PyUnicode_KIND(out);
    void *data = PyUnicode_DATA(out);
    Py_ssize_t o = 0;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        Py_UCS4 hi = (Py_UCS4)(0x10 + s->field[i] / 12), lo = (Py_UCS4)(0x10 + s->field[i] % 12);
        PyUnicode_WRITE(kind, data, o, 0x1e);
        PyUnicode_WRITE(kind, data, o + 1, hi);
        PyUnicode_WRITE(kind, data, o + 2, lo);
        o += 3;
        PyObject *piece = s->items[i];
        Py_ssize_t len = PyUnicode_GET_LENGTH(piece);
        if (PyUnicode_IS_ASCII(piece)) {
            const Py_UCS1 *src = PyUnicode_1BYTE_DATA(piece);
            if (kind == PyUnicode_1BYTE_KIND) {
                lower_ascii((Py_UCS1 *)data + o, src, len);
            } else {
                for (Py_ssize_t k = 0; k < len; k++) {
                    Py_UCS1 ch = src[k];
                    PyUnicode_WRITE(kind, data, o + k, (ch >= 'A' && ch <= 'Z') ? ch + 32 : ch);
                }
            }
        } else if (PyUnicode_CopyCharacters(out, o, piece, 0, len) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        o += len;
        PyUnicode_WRITE(kind, data, o, 0x1d);
        PyUnicode_WRITE(kind, data, o + 1, hi);
        PyUnicode_WRITE(kind, data, o + 2, lo);
        o += 3;
    }
    return out;
}

/* The tagged text's UTF-8 bytes built directly (what the scan reads): ASCII pieces lowered
 * through LOWER into the bytes, other Latin-1 pieces through LATIN1_LOWER into their two-byte
 * UTF-8, the rest lowered with str.lower and copied as UTF-8, so neither the joined str nor
 * its encoding is made (Sysmon's Product "Microsoft® ..." made every process creation take the
 * whole-text encoding). Sysmon's Product is Latin-1 in 1,323 of the attack corpus' 1,491
 * process creations and 538 of its 654 image loads: its str.lower and UTF-8 copy cost ~1 us
 * of the 2.7 us a process creation's tagged bytes took (all fields, minimum of 15 passes).
 * NULL without an exception: a piece has no strict UTF-8 (a lone surrogate), the caller takes
 * the str path. */
static PyObject *tagged_build_bytes(Segs *s) {
    PyObject **low = PyMem_Calloc(s->n ? s->n : 1, sizeof(PyObject *));
    if (low == NULL) return PyErr_NoMemory();
    PyObject *out = NULL;
    Py_ssize_t total = 6 * s->n;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        PyObject *piece = s->items[i];
        if (PyUnicode_IS_ASCII(piece)) {
            total += PyUnicode_GET_LENGTH(piece);
            continue;
        }
        if (PyUnicode_KIND(piece) == PyUnicode_1BYTE_KIND) { /* Latin-1: one or two bytes each */
            const Py_UCS1 *src = PyUnicode_1BYTE_DATA(piece);
            Py_ssize_t len = PyUnicode_GET_LENGTH(piece);
            total += len;
            for (Py_ssize_t k = 0; k < len; k++) total += src[k] >> 7;
            continue;
        }
        low[i] = str_lower(piece);
        if (low[i] == NULL) goto done;
        Py_ssize_t size;
        if (PyUnicode_AsUTF8AndSize(low[i], &size) == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) PyErr_Clear();
            goto done;
        }
        total += size;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) goto done;
    char *o = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < s->n; i++) {
        char hi = (char)(0x10 + s->field[i] / 12), lo = (char)(0x10 + s->field[i] % 12);
        *o++ = 0x1e;
        *o++ = hi;
        *o++ = lo;
        if (low[i] == NULL && PyUnicode_IS_ASCII(s->items[i])) {
            const Py_UCS1 *src = PyUnicode_1BYTE_DATA(s->items[i]);
            Py_ssize_t len = PyUnicode_GET_LENGTH(s->items[i]);
            lower_ascii((Py_UCS1 *)o, src, len);
            o += len;
        } else if (low[i] == NULL) { /* Latin-1 */
            const Py_UCS1 *src = PyUnicode_1BYTE_DATA(s->items[i]);
            Py_ssize_t len = PyUnicode_GET_LENGTH(s->items[i]);
            for (Py_ssize_t k = 0; k < len; k++) {
                Py_UCS1 c = LATIN1_LOWER[src[k]];
                if (c < 0x80) {
                    *o++ = (char)c;
                } else {
                    *o++ = (char)(0xc0 | (c >> 6));
                    *o++ = (char)(0x80 | (c & 0x3f));
                }
            }
        } else {
            Py_ssize_t size;
            const char *utf8 = PyUnicode_AsUTF8AndSize(low[i], &size); /* cached above */
            memcpy(o, utf8, (size_t)size);
            o += size;
        }
        *o++ = 0x1d;
        *o++ = hi;
        *o++ = lo;
    }
done:
    for (Py_ssize_t i = 0; i < s->n; i++) Py_XDECREF(low[i]);
    PyMem_Free(low);
    return out;
}

/* The arguments tagged_join checks, checked (0), or an exception set (-1). */
static int tagged_args_ok(PyObject *index, Py_ssize_t rest, PyObject *skip) {
    if (skip != Py_None && !PyAnySet_Check(skip)) {
        PyErr_SetString(PyExc_TypeError, "skip must be a set, a frozenset or None");
        return -1;
    }
    if (rest >= 144 || PyDict_GET_SIZE(index) > 144) {
        PyErr_SetString(PyExc_ValueError, "at most 144 field numbers");
        return -1;
    }
    return 0;
}

static PyObject *tagged_join_impl(PyObject *fields, PyObject *index, Py_ssize_t rest, int as_bytes,
                                  PyObject *skip, KeyOrder *order);

static PyObject *tagged_join(PyObject *self, PyObject *args) {
    PyObject *fields, *index, *skip = Py_None;
    Py_ssize_t rest;
    int as_bytes = 0;
    if (!PyArg_ParseTuple(args, "O!O!n|pO", &PyDict_Type, &fields, &PyDict_Type, &index, &rest, &as_bytes,
                          &skip))
        return NULL;
    if (tagged_args_ok(index, rest, skip) < 0) return NULL;
    return tagged_join_impl(fields, index, rest, as_bytes, skip, NULL);
}

/* The field number of ``key`` with ``rest`` >= 0: its index number, ``rest``, or -1 when ``skip``
 * leaves it out; -2 with an exception set. */
static Py_ssize_t field_number(PyObject *index, Py_ssize_t rest, PyObject *skip, PyObject *key) {
    PyObject *n = PyDict_GetItemWithError(index, key);
    if (n != NULL) {
        Py_ssize_t num = PyLong_AsSsize_t(n);
        if (num < 0 || num >= 144) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "field number out of range");
            return -2;
        }
        return num;
    }
    if (PyErr_Occurred()) return -2;
    int out = skipped(skip, key);
    return out < 0 ? -2 : out ? -1 : rest;
}

/* ``order``: the caller's KeyOrder (a Matcher's), or NULL. */
static PyObject *tagged_join_impl(PyObject *fields, PyObject *index, Py_ssize_t rest, int as_bytes,
                                  PyObject *skip, KeyOrder *order) {
    Segs s = {NULL, NULL, 0, 0, 0, 1};
    int rc = 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    if (rest < 0) {
        while (!rc && PyDict_Next(index, &pos, &key, &value)) {
            Py_ssize_t num = PyLong_AsSsize_t(value);
            if (num < 0 || num >= 144) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "field number out of range");
                rc = -1;
                break;
            }
            PyObject *v = PyDict_GetItemWithError(fields, key);
            if (v == NULL) {
                if (PyErr_Occurred()) rc = -1;
                continue;
            }
            rc = segs_value(&s, v, num);
        }
    } else {
        for (Py_ssize_t i = 0; !rc && PyDict_Next(fields, &pos, &key, &value); i++) {
            Py_ssize_t num;
            if (order != NULL && i < order->n && order->keys[i] == key) {
                num = order->num[i];
            } else {
                num = field_number(index, rest, skip, key);
                if (num == -2 || (order != NULL && keyorder_set(order, i, key, num) < 0)) {
                    rc = -1;
                    break;
                }
            }
            if (num >= 0) rc = segs_value(&s, value, num);
        }
    }
    PyObject *out = NULL;
    if (rc == 1) {
        out = Py_None;
        Py_INCREF(out);
    } else if (rc == 0) {
        out = as_bytes ? tagged_build_bytes(&s) : NULL;
        if (out == NULL && !PyErr_Occurred()) out = tagged_build(&s);
        if (out != NULL && as_bytes && !PyBytes_CheckExact(out)) {
            /* what the scan reads: the UTF-8 bytes (ASCII text: the same bytes, one copy) */
            PyObject *b = PyUnicode_IS_ASCII(out)
                ? PyBytes_FromStringAndSize((const char *)PyUnicode_1BYTE_DATA(out), PyUnicode_GET_LENGTH(out))
                : PyUnicode_AsEncodedString(out, "utf-8", "surrogatepass");
            Py_DECREF(out);
            out = b;
        }
    }
    segs_clear(&s);
    return out;
}

/*
 * Low: compile.Low in C (a dict subclass: field name -> lower-cased str value, None for any
 * other value, filled on first lookup). Every predicate reads fields through it; a missed key
 * costs a C call here instead of a Python ``__missing__`` frame (~0.3 us each, ~8 fields per
 * Sysmon process-creation event), and ``low[key]`` goes straight to its own subscript (no
 * ``__missing__`` lookup, ASCII lowered in one pass): 16 first reads of a Sysmon process creation
 * took 3.3-3.5 us, now 2.4-2.8.
 */
typedef struct {
    PyDictObject dict;
    PyObject *fields;
} LowObject;

static int Low_init(LowObject *self, PyObject *args, PyObject *kwds) {
    PyObject *fields;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Low() takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &fields)) return -1;
    Py_INCREF(fields);
    Py_XSETREF(self->fields, fields);
    return 0;
}

static int Low_traverse(LowObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->fields);
    return PyDict_Type.tp_traverse((PyObject *)self, visit, arg);
}

static int Low_clear(LowObject *self) {
    Py_CLEAR(self->fields);
    return PyDict_Type.tp_clear((PyObject *)self);
}

static void Low_dealloc(LowObject *self) {
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->fields);
    PyDict_Type.tp_dealloc((PyObject *)self);
}

/* str.lower() of an ASCII str: the str itself when it has no upper-case letter (equal, and
 * nobody mutates a str), else one pass. */
static PyObject *ascii_lower(PyObject *v) {
    Py_ssize_t len = PyUnicode_GET_LENGTH(v);
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(v);
    if (!has_upper_ascii(s, len)) {
        Py_INCREF(v);
        return v;
    }
    PyObject *out = PyUnicode_New(len, 127);
    if (out == NULL) return NULL;
    lower_ascii(PyUnicode_1BYTE_DATA(out), s, len);
    return out;
}

static PyObject *Low_missing(LowObject *self, PyObject *key) {
    PyObject *r = Py_None;
    PyObject *v = self->fields ? PyDict_GetItemWithError(self->fields, key) : NULL;
    if (v == NULL && PyErr_Occurred()) return NULL;
    if (v != NULL && PyUnicode_CheckExact(v)) {
        r = PyUnicode_IS_ASCII(v) ? ascii_lower(v) : str_lower(v);
        if (r == NULL) return NULL;
    } else {
        Py_INCREF(r);
    }
    if (PyDict_SetItem((PyObject *)self, key, r) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* low[key] without dict's __missing__ protocol (a method lookup and a bound call per miss):
 * each predicate reads its fields this way, ~10 first reads per Sysmon process creation. */
static PyObject *Low_subscript(LowObject *self, PyObject *key) {
    PyObject *r = PyDict_GetItemWithError((PyObject *)self, key);
    if (r != NULL) {
        Py_INCREF(r);
        return r;
    }
    if (PyErr_Occurred()) return NULL;
    return Low_missing(self, key);
}

static PyMappingMethods Low_as_mapping;

static PyObject *Low_get_f(LowObject *self, void *closure) {
    PyObject *f = self->fields ? self->fields : Py_None;
    Py_INCREF(f);
    return f;
}

static PyMethodDef Low_methods[] = {
    {"__missing__", (PyCFunction)Low_missing, METH_O, "Lower-case the field's value (None if not a str)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Low_getset[] = {
    {"f", (getter)Low_get_f, NULL, "the event's fields", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scmwatch.sigma._text.Low",
    .tp_doc = "Per-event cache: field name -> lower-cased value (None unless the value is a str).",
    .tp_basicsize = sizeof(LowObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DICT_SUBCLASS,
    .tp_init = (initproc)Low_init,
    .tp_traverse = (traverseproc)Low_traverse,
    .tp_clear = (inquiry)Low_clear,
    .tp_dealloc = (destructor)Low_dealloc,
    .tp_methods = Low_methods,
    .tp_getset = Low_getset,
};

/*
 * Gather: the atom scan's match handler (Hyperscan calls it once per pattern that matched, with
 * (id, from, to, flags, context)) and the set of candidate units it builds. A Python handler
 * plus ``set.update`` per match and ``sorted`` per event cost ~3 us of a ~28 us Sysmon
 * process-creation match (6.2 matches, 12 candidates per event); here a match is a C call that
 * marks the gates of the pattern, and ``take()`` returns the units whose every gate was hit
 * (with the units that are always candidates) as a sorted list, ready for the next event.
 *
 * Gather(pattern_gates: tuple[tuple[int, ...], ...], always: tuple[int, ...], need: tuple[int, ...],
 *        shift: int = 0)
 *
 * A gate id is ``position * GATE_SLOTS + k`` (k < GATE_SLOTS); ``need[position]`` is how many
 * distinct gates of the unit must be hit (0: none, the unit is a candidate only when in
 * ``always``). ``shift`` log2(GATE_SLOTS): ``pattern_gates`` holds unit positions, each its gate 0
 * (a single-gate bucket's literal path, ``index._literal_matcher``: shifting its 20,000 gate ids
 * in Python cost each process ~3.7 ms of an x5 hunt).
 */
#define GATE_SLOTS 4

typedef struct {
    PyObject_HEAD
    Py_ssize_t npat, nunits, nfound, nalways, ntouched;
    Py_ssize_t *start; /* npat + 1 offsets into gates */
    int *gates;
    int *always;
    unsigned char *need; /* nunits */
    unsigned char *count; /* nunits: distinct gates hit this scan */
    unsigned char *gmark; /* nunits * GATE_SLOTS */
    unsigned char *mark; /* nunits: in found */
    int *touched; /* gate ids marked this scan */
    int *found; /* nunits */
    vectorcallfunc vectorcall; /* Gather_vectorcall once initialised */
} GatherObject;

static void Gather_dealloc(GatherObject *self) {
    PyMem_Free(self->start);
    PyMem_Free(self->gates);
    PyMem_Free(self->always);
    PyMem_Free(self->need);
    PyMem_Free(self->count);
    PyMem_Free(self->gmark);
    PyMem_Free(self->mark);
    PyMem_Free(self->touched);
    PyMem_Free(self->found);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Read a tuple of ints v with v << shift in [0, limit) into out, shifted; raise on anything else. */
static int read_positions(PyObject *tup, int *out, Py_ssize_t limit, int shift) {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tup); k++) {
        Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(tup, k));
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v < 0 || v >= (limit + (1 << shift) - 1) >> shift) {
            PyErr_SetString(PyExc_ValueError, "unit position or gate id out of range");
            return -1;
        }
        out[k] = (int)(v << shift);
    }
    return 0;
}

/* A tuple of tuples of ints as offsets (n + 1) and the concatenated items; -1 on error. */
static int read_lists(PyObject *lists, Py_ssize_t limit, int shift, Py_ssize_t **start, int **items) {
    Py_ssize_t n = PyTuple_GET_SIZE(lists), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyTuple_GET_ITEM(lists, i);
        if (!PyTuple_Check(t)) {
            PyErr_SetString(PyExc_TypeError, "pattern lists must be tuples of tuples");
            return -1;
        }
        total += PyTuple_GET_SIZE(t);
    }
    *start = PyMem_Calloc(n + 1, sizeof(Py_ssize_t));
    *items = PyMem_Calloc(total ? total : 1, sizeof(int));
    if (*start == NULL || *items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyTuple_GET_ITEM(lists, i);
        (*start)[i] = at;
        if (read_positions(t, *items + at, limit, shift) < 0) return -1;
        at += PyTuple_GET_SIZE(t);
    }
    (*start)[n] = at;
    return 0;
}

static PyObject *Gather_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static int Gather_init(GatherObject *self, PyObject *args, PyObject *kwds) {
    PyObject *pats, *always, *need;
    int shift = 0;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Gather() takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!|i", &PyTuple_Type, &pats, &PyTuple_Type, &always, &PyTuple_Type, &need,
                          &shift))
        return -1;
    if (shift != 0 && (1 << shift) != GATE_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "shift must be 0 or log2(GATE_SLOTS)");
        return -1;
    }
    if (self->start != NULL) {
        PyErr_SetString(PyExc_TypeError, "Gather is initialised once");
        return -1;
    }
    Py_ssize_t nunits = PyTuple_GET_SIZE(need);
    if (nunits > 0x3fffffff / GATE_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many units");
        return -1;
    }
    Py_ssize_t n1 = nunits ? nunits : 1;
    self->need = PyMem_Calloc(n1, 1);
    self->count = PyMem_Calloc(n1, 1);
    self->gmark = PyMem_Calloc(n1 * GATE_SLOTS, 1);
    self->mark = PyMem_Calloc(n1, 1);
    self->touched = PyMem_Calloc(n1 * GATE_SLOTS, sizeof(int));
    self->found = PyMem_Calloc(n1, sizeof(int));
    self->always = PyMem_Calloc(PyTuple_GET_SIZE(always) ? PyTuple_GET_SIZE(always) : 1, sizeof(int));
    if (self->need == NULL || self->count == NULL || self->gmark == NULL || self->mark == NULL ||
        self->touched == NULL || self->found == NULL || self->always == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < nunits; k++) {
        Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(need, k));
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v < 0 || v > GATE_SLOTS) {
            PyErr_SetString(PyExc_ValueError, "need must be in 0..4");
            return -1;
        }
        self->need[k] = (unsigned char)v;
    }
    if (read_lists(pats, nunits * GATE_SLOTS, shift, &self->start, &self->gates) < 0) return -1;
    if (read_positions(always, self->always, nunits, 0) < 0) return -1;
    self->npat = PyTuple_GET_SIZE(pats);
    self->nalways = PyTuple_GET_SIZE(always);
    self->nunits = nunits;
    self->vectorcall = Gather_vectorcall;
    return 0;
}

/* One match of pattern ``pid`` (an int): its gates marked. */
static PyObject *gather_hit(GatherObject *self, PyObject *pid) {
    Py_ssize_t id = PyLong_AsSsize_t(pid);
    if (id == -1 && PyErr_Occurred()) return NULL;
    if (id < 0 || id >= self->npat) {
        PyErr_SetString(PyExc_ValueError, "pattern id out of range");
        return NULL;
    }
    for (Py_ssize_t k = self->start[id]; k < self->start[id + 1]; k++) {
        int g = self->gates[k];
        if (self->gmark[g]) continue;
        self->gmark[g] = 1;
        self->touched[self->ntouched++] = g;
        int u = g / GATE_SLOTS;
        if (++self->count[u] == self->need[u] && !self->mark[u]) {
            self->mark[u] = 1;
            self->found[self->nfound++] = u;
        }
    }
    Py_RETURN_NONE; /* None: Hyperscan scans on */
}

static PyObject *Gather_call(GatherObject *self, PyObject *args, PyObject *kwds) {
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1 || self->mark == NULL) {
        PyErr_SetString(PyExc_TypeError, "Gather(id, ...) needs a pattern id");
        return NULL;
    }
    return gather_hit(self, PyTuple_GET_ITEM(args, 0));
}

/* The binding calls the handler with PyObject_CallFunction, which passes its arguments as an
 * array to a callable that takes them so: no 5-tuple made and freed per match (53,680 matches
 * per NDJSON hunt pass of the attack corpus x4, all SigmaHQ). */
static PyObject *Gather_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    (void)kwnames; /* ignored, as Gather_call ignores keywords */
    if (PyVectorcall_NARGS(nargsf) < 1) {
        PyErr_SetString(PyExc_TypeError, "Gather(id, ...) needs a pattern id");
        return NULL;
    }
    return gather_hit((GatherObject *)self, args[0]);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* A unit as a candidate of this scan (once). */
static void gather_add(GatherObject *self, int u) {
    if (!self->mark[u]) {
        self->mark[u] = 1;
        self->found[self->nfound++] = u;
    }
}

/* The scan's candidates with the always ones, sorted in found[0..n), and every mark reset for
 * the next scan; found stays valid until then. */
static Py_ssize_t gather_finish(GatherObject *self) {
    for (Py_ssize_t k = 0; k < self->nalways; k++) gather_add(self, self->always[k]);
    Py_ssize_t n = self->nfound;
    for (Py_ssize_t k = 0; k < n; k++) self->mark[self->found[k]] = 0;
    if (n > 1) qsort(self->found, (size_t)n, sizeof(int), cmp_int);
    for (Py_ssize_t k = 0; k < self->ntouched; k++) {
        int g = self->touched[k];
        self->gmark[g] = 0;
        self->count[g / GATE_SLOTS] = 0;
    }
    self->nfound = self->ntouched = 0;
    return n;
}

static PyObject *Gather_take(GatherObject *self, PyObject *unused) {
    if (self->mark == NULL) {
        PyErr_SetString(PyExc_TypeError, "Gather is not initialised");
        return NULL;
    }
    Py_ssize_t n = gather_finish(self);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = PyLong_FromLong(self->found[k]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, v);
    }
    return out;
}

static PyMethodDef Gather_methods[] = {
    {"take", (PyCFunction)Gather_take, METH_NOARGS,
     "The sorted candidate unit positions since the last take (every gate hit, or always); resets."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GatherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scmwatch.sigma._text.Gather",
    .tp_doc = "Atom-scan match handler: marks the gates of each matched pattern; take() lists the candidates.",
    .tp_basicsize = sizeof(GatherObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(GatherObject, vectorcall),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Gather_init,
    .tp_dealloc = (destructor)Gather_dealloc,
    .tp_call = (ternaryfunc)Gather_call,
    .tp_methods = Gather_methods,
};

/*
 * evaluate and Matcher: the last steps of a match in C. ``Engine._evaluate`` ran each candidate's
 * predicate in a Python loop, and the atom path of ``Engine._match`` made the tagged text, called
 * the scan, took the candidates and added the non-ASCII ones in Python: three Python frames and
 * ~60 bytecodes per event around the C pieces. A Matcher does all of it in one call per event.
 *
 * evaluate(fields, order, preds, rules) -> [rules[i] for i in order if preds[i] is True or
 * preds[i](fields, Low(fields))], each rule once (first place), the Low made at most once and
 * only when a predicate is called. ``preds`` is a list (a stand-in replaces itself in it on its
 * first call, see ruleset.hot_predicates), read item by item as the loop reaches it.
 */
/* ``Low(fields)`` made directly: the dict's own tp_new, then the fields, without the argument
 * tuple and its parsing (a Low per event that has a predicate to run: 13,120 per NDJSON hunt pass
 * of the attack corpus x4). */
static PyObject *low_of(PyObject *fields) {
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) return NULL;
    PyObject *low = LowType.tp_new(&LowType, empty, NULL);
    Py_DECREF(empty);
    if (low != NULL) ((LowObject *)low)->fields = Py_NewRef(fields);
    return low;
}

static PyObject *evaluate_found(PyObject *fields, const int *order, Py_ssize_t n, PyObject *preds,
                                PyObject *rules) {
    PyObject *out = PyList_New(0), *low = NULL;
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t i = order[k];
        if (i >= PyList_GET_SIZE(preds) || i >= PyTuple_GET_SIZE(rules)) {
            PyErr_SetString(PyExc_IndexError, "unit position out of range");
            goto fail;
        }
        PyObject *p = PyList_GET_ITEM(preds, i);
        int hit = 1;
        if (p != Py_True) {
            if (low == NULL && (low = low_of(fields)) == NULL) goto fail;
            Py_INCREF(p);
            PyObject *argv[2] = {fields, low};
            PyObject *r = PyObject_Vectorcall(p, argv, 2, NULL);
            Py_DECREF(p);
            if (r == NULL) goto fail;
            hit = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (hit < 0) goto fail;
        }
        if (!hit) continue;
        PyObject *rule = PyTuple_GET_ITEM(rules, i);
        Py_ssize_t j = 0, m = PyList_GET_SIZE(out);
        while (j < m && PyList_GET_ITEM(out, j) != rule) j++;
        if (j == m && PyList_Append(out, rule) < 0) goto fail;
    }
    Py_XDECREF(low);
    return out;
fail:
    Py_XDECREF(low);
    Py_DECREF(out);
    return NULL;
}

static int *order_buf = NULL; /* evaluate's positions (the GIL serialises callers) */
static Py_ssize_t order_cap = 0;

static PyObject *evaluate(PyObject *self, PyObject *args) {
    PyObject *fields, *order, *preds, *rules;
    if (!PyArg_ParseTuple(args, "O!OO!O!", &PyDict_Type, &fields, &order, &PyList_Type, &preds, &PyTuple_Type,
                          &rules))
        return NULL;
    PyObject *seq = PySequence_Fast(order, "order must be a sequence of unit positions");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > order_cap) {
        int *grown = PyMem_Realloc(order_buf, (size_t)(n + 64) * sizeof(int));
        if (grown == NULL) {
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
        order_buf = grown;
        order_cap = n + 64;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t v = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, k));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        if (v < 0 || v > 0x3fffffff) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_IndexError, "unit position out of range");
            return NULL;
        }
        order_buf[k] = (int)v;
    }
    Py_DECREF(seq);
    return evaluate_found(fields, order_buf, n, preds, rules);
}

/* The two matchers' shared part at init: an initialised gather, one predicate and one rule per unit. */
static int gather_parts_ok(GatherObject *g, PyObject *preds, PyObject *rules) {
    if (g->mark == NULL) {
        PyErr_SetString(PyExc_TypeError, "Gather is not initialised");
        return -1;
    }
    if (PyList_GET_SIZE(preds) != g->nunits || PyTuple_GET_SIZE(rules) != g->nunits) {
        PyErr_SetString(PyExc_ValueError, "preds and rules must have one item per unit of the gather");
        return -1;
    }
    return 0;
}

/* The gathered units' rules that hold on ``fields``; the gather is left empty for the next scan. */
static PyObject *evaluate_gathered(GatherObject *g, PyObject *fields, PyObject *preds, PyObject *rules) {
    Py_ssize_t n = gather_finish(g);
    return n ? evaluate_found(fields, g->found, n, preds, rules) : PyList_New(0);
}

/* ``call`` (a tp_call) with vectorcall arguments: the matchers' path for anything but one dict. */
static PyObject *call_with_tuple(PyObject *self, ternaryfunc call, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf), nk = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *tuple = PyTuple_New(n), *kwds = nk ? PyDict_New() : NULL, *out = NULL;
    if (tuple == NULL || (nk && kwds == NULL)) goto done;
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    for (Py_ssize_t i = 0; i < nk; i++)
        if (PyDict_SetItem(kwds, PyTuple_GET_ITEM(kwnames, i), args[n + i]) < 0) goto done;
    out = call(self, tuple, kwds);
done:
    Py_XDECREF(tuple);
    Py_XDECREF(kwds);
    return out;
}

/*
 * Matcher(gather, scan_db, index, rest, skip, ascii_only, preds, rules): one bucket's atom path.
 * ``m(fields)`` is ``Engine._match`` with the atom prefilter and its C handler: the tagged text's
 * bytes (tagged_join), ``scan_db(data, gather)``, the candidates (gather's take, with the units
 * of ``ascii_only`` -- ((field, (unit, ...)), ...) -- whose field has a non-ASCII str value,
 * as ``tagged.non_ascii``), then evaluate. None when the text is not clean: the caller takes
 * the Python path, as ``_match`` does.
 */
typedef struct {
    PyObject_HEAD
    GatherObject *gather;
    PyObject *scan_db, *index, *skip, *preds, *rules;
    Py_ssize_t rest, nascii;
    PyObject **ascii_names; /* nascii borrowed from ascii_only (kept alive by it) */
    Py_ssize_t *ascii_start; /* nascii + 1 offsets into ascii_units */
    int *ascii_units;
    PyObject *ascii_only;
    KeyOrder order; /* the last event's keys (rest >= 0) */
    vectorcallfunc vectorcall; /* Matcher_vectorcall once initialised */
} MatcherObject;

static PyObject *Matcher_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);
static PyObject *matcher_match(MatcherObject *self, PyObject *fields);

static void Matcher_dealloc(MatcherObject *self) {
    Py_XDECREF(self->gather);
    Py_XDECREF(self->scan_db);
    Py_XDECREF(self->index);
    Py_XDECREF(self->skip);
    Py_XDECREF(self->preds);
    Py_XDECREF(self->rules);
    Py_XDECREF(self->ascii_only);
    PyMem_Free(self->ascii_names);
    PyMem_Free(self->ascii_start);
    PyMem_Free(self->ascii_units);
    keyorder_clear(&self->order);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Matcher_init(MatcherObject *self, PyObject *args, PyObject *kwds) {
    PyObject *gather, *scan_db, *index, *skip, *ascii_only, *preds, *rules;
    Py_ssize_t rest;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Matcher() takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!OO!nOO!O!O!", &GatherType, &gather, &scan_db, &PyDict_Type, &index, &rest,
                          &skip, &PyTuple_Type, &ascii_only, &PyList_Type, &preds, &PyTuple_Type, &rules))
        return -1;
    if (self->gather != NULL) {
        PyErr_SetString(PyExc_TypeError, "Matcher is initialised once");
        return -1;
    }
    GatherObject *g = (GatherObject *)gather;
    if (gather_parts_ok(g, preds, rules) < 0 || tagged_args_ok(index, rest, skip) < 0) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(ascii_only), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(ascii_only, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyTuple_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "ascii_only must be ((field, (unit, ...)), ...)");
            return -1;
        }
        total += PyTuple_GET_SIZE(PyTuple_GET_ITEM(pair, 1));
    }
    self->ascii_names = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    self->ascii_start = PyMem_Calloc(n + 1, sizeof(Py_ssize_t));
    self->ascii_units = PyMem_Calloc(total ? total : 1, sizeof(int));
    if (self->ascii_names == NULL || self->ascii_start == NULL || self->ascii_units == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(ascii_only, i), *units = PyTuple_GET_ITEM(pair, 1);
        self->ascii_names[i] = PyTuple_GET_ITEM(pair, 0);
        self->ascii_start[i] = at;
        if (read_positions(units, self->ascii_units + at, g->nunits, 0) < 0) return -1;
        at += PyTuple_GET_SIZE(units);
    }
    self->ascii_start[n] = at;
    self->nascii = n;
    self->rest = rest;
    Py_INCREF(gather);
    self->gather = g;
    Py_INCREF(scan_db);
    self->scan_db = scan_db;
    if ((self->index = interned_names(index)) == NULL || (self->skip = interned_names(skip)) == NULL) return -1;
    Py_INCREF(preds);
    self->preds = preds;
    Py_INCREF(rules);
    self->rules = rules;
    Py_INCREF(ascii_only);
    self->ascii_only = ascii_only;
    self->vectorcall = Matcher_vectorcall;
    return 0;
}

/* Is ``v`` a str with a non-ASCII character, or a list holding one (``tagged.non_ascii``)? */
static int not_ascii(PyObject *v) {
    if (PyUnicode_CheckExact(v)) return !PyUnicode_IS_ASCII(v);
    if (PyList_CheckExact(v)) {
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(v); k++) {
            PyObject *x = PyList_GET_ITEM(v, k);
            if (PyUnicode_CheckExact(x) && !PyUnicode_IS_ASCII(x)) return 1;
        }
    }
    return 0;
}


static PyObject *Matcher_call(MatcherObject *self, PyObject *args, PyObject *kwds) {
    PyObject *fields;
    if (self->gather == NULL) {
        PyErr_SetString(PyExc_TypeError, "Matcher is not initialised");
        return NULL;
    }
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "O!", &PyDict_Type, &fields)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "Matcher(fields) takes one dict");
        return NULL;
    }
    return matcher_match(self, fields);
}

static PyObject *matcher_match(MatcherObject *self, PyObject *fields) {
    PyObject *data = tagged_join_impl(fields, self->index, self->rest, 1, self->skip, &self->order);
    if (data == NULL || data == Py_None) return data;
    GatherObject *g = self->gather;
    PyObject *r = PyObject_CallFunctionObjArgs(self->scan_db, data, (PyObject *)g, NULL);
    Py_DECREF(data);
    if (r == NULL) {
        gather_finish(g); /* forget this scan's marks */
        return NULL;
    }
    Py_DECREF(r);
    for (Py_ssize_t i = 0; i < self->nascii; i++) {
        PyObject *v = PyDict_GetItemWithError(fields, self->ascii_names[i]);
        if (v == NULL) {
            if (PyErr_Occurred()) {
                gather_finish(g);
                return NULL;
            }
            continue;
        }
        if (not_ascii(v))
            for (Py_ssize_t k = self->ascii_start[i]; k < self->ascii_start[i + 1]; k++)
                gather_add(g, self->ascii_units[k]);
    }
    return evaluate_gathered(g, fields, self->preds, self->rules);
}

/* ``m(fields)`` from Python without the argument tuple and its parsing (one call per event). */
static PyObject *Matcher_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == NULL && PyDict_Check(args[0]))
        return matcher_match((MatcherObject *)self, args[0]);
    return call_with_tuple(self, (ternaryfunc)Matcher_call, args, nargsf, kwnames);
}

static PyTypeObject MatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scmwatch.sigma._text.Matcher",
    .tp_doc = "One bucket's atom path: Matcher(...)(fields) -> matching rules, or None (text not clean).",
    .tp_basicsize = sizeof(MatcherObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(MatcherObject, vectorcall),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Matcher_init,
    .tp_dealloc = (destructor)Matcher_dealloc,
    .tp_call = (ternaryfunc)Matcher_call,
};

/*
 * LiteralMatcher(gather, scan_db, names, skip, preds, rules): ``Engine._match`` on the literal
 * prefilter of a bucket whose scanner is final and Hyperscan's, in one call: the prefilter text
 * (lower_join), its UTF-8 bytes, ``scan_db(data, gather)`` (``gather`` built from the literal ->
 * gate lists, so a match is a C call instead of a Python handler appending to a list), the
 * candidates, then evaluate. None when lower_join gives up (too many pieces): the Python path.
 */
typedef struct {
    PyObject_HEAD
    GatherObject *gather;
    PyObject *scan_db, *names, *skip, *preds, *rules, *anchors;
    KeyOrder order; /* the last event's keys and whether ``skip`` leaves each out (names None) */
    vectorcallfunc vectorcall; /* LiteralMatcher_vectorcall once initialised */
} LiteralMatcherObject;

static PyObject *LiteralMatcher_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                           PyObject *kwnames);
static PyObject *literal_match(LiteralMatcherObject *self, PyObject *fields);

static void LiteralMatcher_dealloc(LiteralMatcherObject *self) {
    Py_XDECREF(self->gather);
    Py_XDECREF(self->scan_db);
    Py_XDECREF(self->names);
    Py_XDECREF(self->skip);
    Py_XDECREF(self->preds);
    Py_XDECREF(self->rules);
    Py_XDECREF(self->anchors);
    keyorder_clear(&self->order);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int LiteralMatcher_init(LiteralMatcherObject *self, PyObject *args, PyObject *kwds) {
    PyObject *gather, *scan_db, *names, *skip, *preds, *rules, *anchors = Py_None;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "LiteralMatcher() takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!OOOO!O!|O", &GatherType, &gather, &scan_db, &names, &skip, &PyList_Type, &preds,
                          &PyTuple_Type, &rules, &anchors))
        return -1;
    if (anchors != Py_None && !anchors_ok(anchors)) {
        PyErr_SetString(PyExc_ValueError, "anchors must be None or a tuple of non-empty lower-case ASCII str");
        return -1;
    }
    if (self->gather != NULL) {
        PyErr_SetString(PyExc_TypeError, "LiteralMatcher is initialised once");
        return -1;
    }
    GatherObject *g = (GatherObject *)gather;
    if (gather_parts_ok(g, preds, rules) < 0) return -1;
    if (names_skip_ok(names, skip) < 0) return -1;
    Py_INCREF(gather);
    self->gather = g;
    Py_INCREF(scan_db);
    self->scan_db = scan_db;
    if ((self->names = interned_names(names)) == NULL || (self->skip = interned_names(skip)) == NULL) return -1;
    Py_INCREF(preds);
    self->preds = preds;
    Py_INCREF(rules);
    self->rules = rules;
    Py_INCREF(anchors);
    self->anchors = anchors;
    self->vectorcall = LiteralMatcher_vectorcall;
    return 0;
}


static PyObject *LiteralMatcher_call(LiteralMatcherObject *self, PyObject *args, PyObject *kwds) {
    PyObject *fields;
    if (self->gather == NULL) {
        PyErr_SetString(PyExc_TypeError, "LiteralMatcher is not initialised");
        return NULL;
    }
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "O!", &PyDict_Type, &fields)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "LiteralMatcher(fields) takes one dict");
        return NULL;
    }
    return literal_match(self, fields);
}

static PyObject *literal_match(LiteralMatcherObject *self, PyObject *fields) {
    GatherObject *g = self->gather;
    if (self->anchors != Py_None) {
        int found = has_anchor_impl(fields, self->names, self->skip, self->anchors, &self->order);
        if (found < 0) return NULL;
        if (!found) /* no literal can occur: the always ones only */
            return evaluate_gathered(g, fields, self->preds, self->rules);
    }
    PyObject *text = lower_join_impl(fields, self->names, self->skip, &self->order);
    if (text == NULL || text == Py_None) return text;
    PyObject *data = PyUnicode_IS_ASCII(text)
        ? PyBytes_FromStringAndSize((const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text))
        : PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    Py_DECREF(text);
    if (data == NULL) return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(self->scan_db, data, (PyObject *)g, NULL);
    Py_DECREF(data);
    if (r == NULL) {
        gather_finish(g); /* forget this scan's marks */
        return NULL;
    }
    Py_DECREF(r);
    return evaluate_gathered(g, fields, self->preds, self->rules);
}

static PyObject *LiteralMatcher_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                           PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == NULL && PyDict_Check(args[0]))
        return literal_match((LiteralMatcherObject *)self, args[0]);
    return call_with_tuple(self, (ternaryfunc)LiteralMatcher_call, args, nargsf, kwnames);
}

static PyTypeObject LiteralMatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scmwatch.sigma._text.LiteralMatcher",
    .tp_doc = "One bucket's literal path: LiteralMatcher(...)(fields) -> matching rules, or None (Python path).",
    .tp_basicsize = sizeof(LiteralMatcherObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(LiteralMatcherObject, vectorcall),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LiteralMatcher_init,
    .tp_dealloc = (destructor)LiteralMatcher_dealloc,
    .tp_call = (ternaryfunc)LiteralMatcher_call,
};

static PyMethodDef methods[] = {
    {"evaluate", evaluate, METH_VARARGS,
     "evaluate(fields, order, preds, rules) -> the rules at positions order whose predicate holds, each once."},
    {"lower_join", lower_join, METH_VARARGS,
     "lower_join(fields, names, skip=None) -> '\\x00'.join(text of each value).lower(), or None for too "
     "many pieces."},
    {"has_anchor", has_anchor, METH_VARARGS,
     "has_anchor(fields, names, skip, anchors) -> does a value lower_join joins hold an anchor (ASCII case "
     "ignored; a non-ASCII value: True)?"},
    {"tagged_join", tagged_join, METH_VARARGS,
     "tagged_join(fields, index, rest, as_bytes=False, skip=None) -> field-tagged lower-cased text (its "
     "UTF-8 bytes), or None when a value is not clean."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_text", NULL, -1, methods};

PyMODINIT_FUNC PyInit__text(void) {
    NUL = PyUnicode_FromStringAndSize("\0", 1);
    S_lower = PyUnicode_InternFromString("lower");
    if (NUL == NULL || S_lower == NULL) return NULL;
    for (int c = 0; c < 256; c++) LOWER[c] = (Py_UCS1)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    for (int c = 0; c < 256; c++) LATIN1_LOWER[c] = (Py_UCS1)((c >= 0xc0 && c <= 0xde && c != 0xd7) ? c + 32 : LOWER[c]);
    LowType.tp_base = &PyDict_Type;
    Low_as_mapping = *PyDict_Type.tp_as_mapping;
    Low_as_mapping.mp_subscript = (binaryfunc)Low_subscript;
    LowType.tp_as_mapping = &Low_as_mapping;
    if (PyType_Ready(&LowType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&LowType);
    if (PyModule_AddObject(m, "Low", (PyObject *)&LowType) < 0) {
        Py_DECREF(&LowType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&GatherType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&GatherType);
    if (PyModule_AddObject(m, "Gather", (PyObject *)&GatherType) < 0) {
        Py_DECREF(&GatherType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&MatcherType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&MatcherType);
    if (PyModule_AddObject(m, "Matcher", (PyObject *)&MatcherType) < 0) {
        Py_DECREF(&MatcherType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&LiteralMatcherType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LiteralMatcherType);
    if (PyModule_AddObject(m, "LiteralMatcher", (PyObject *)&LiteralMatcherType) < 0) {
        Py_DECREF(&LiteralMatcherType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
