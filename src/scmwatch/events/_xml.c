/*
 * scmwatch.events._xml: the XML reader's fast path, one ``<Event>`` element of Windows event
 * XML straight into the flat fields ``xml_reader.event_from_xml`` builds from an ElementTree
 * element.
 *
 * Why: ElementTree hands every start and end of the ~60 elements of an event to Python, and
 * the reader then walks them again: 13k events/s, 0.19 x the JSONL reader on the same events.
 * This parser reads the UTF-8 bytes of the events once and builds the dicts directly; with the
 * loop at the end of this file making the Event objects, the reader reads ~160k events/s, 0.69 x
 * the JSONL reader's C loop on the same events (``bench/read_throughput.py --xml 50000``, same
 * run).
 *
 * It accepts only a strict subset of XML that it is sure to read exactly as expat would:
 * ASCII names without prefixes, attribute values and text without CR, tab or newline in
 * attributes, the five predefined entities and character references, nothing else (no
 * comments, CDATA, processing instructions, DOCTYPE, surrogates or characters XML forbids).
 * Anything outside that subset stops the loop, and the reader hands the rest of the file to the
 * streaming ElementTree parser, which stays the reference (tests compare the two on every
 * input they have). Entities other than the predefined ones cannot occur (a DOCTYPE sends the
 * whole file to the streaming parser), so nothing here can expand or fetch anything.
 *
 * ``XmlEvents`` (at the end of this file) is the reader's loop over the bytes of a file, making the
 * Event objects; ``configure(system_attrs, system_ints, event_class)`` hands over the tables of
 * normalize.py and the Event class.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_event.h"

static PyObject *SYSTEM_ATTRS = NULL; /* dict: element -> {attribute: name} */
static PyObject *SYSTEM_INTS = NULL;  /* frozenset of names whose text becomes an int */
static PyObject *S_Data, *S_space, *S_empty, *S_TimeCreated;

#define MAX_ATTRS 32
#define MAX_DEPTH 32

enum { OK = 0, REJECT = 1, MORE = 2, FAIL = 3 };

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    Py_ssize_t i;
} Cur;

typedef struct {
    const unsigned char *name;
    Py_ssize_t name_len;
    const unsigned char *val;
    Py_ssize_t val_len;
    int special; /* contains '&' or a byte >= 0x80 */
} Attr;

typedef struct {
    const unsigned char *name;
    Py_ssize_t len;
    Attr attrs[MAX_ATTRS];
    int nattrs;
    int empty;                 /* <x/> */
    const unsigned char *text; /* text-only element: its text, NULL when none was read */
    Py_ssize_t text_len;
    int text_special;
} Elem;

static inline int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static inline int name_start(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
static inline int name_char(unsigned char c) {
    return name_start(c) || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

static void skip_ws(Cur *c) {
    while (c->i < c->n && is_ws(c->p[c->i])) c->i++;
}

/* A name at the cursor; REJECT for anything else (prefixed names included: ':' is no name char,
 * so "a:b" ends at ':' and the caller's next check fails). */
static int read_name(Cur *c, const unsigned char **name, Py_ssize_t *len) {
    if (c->i >= c->n) return MORE;
    if (!name_start(c->p[c->i])) return REJECT;
    Py_ssize_t s = c->i;
    while (c->i < c->n && name_char(c->p[c->i])) c->i++;
    if (c->i >= c->n) return MORE;
    *name = c->p + s;
    *len = c->i - s;
    return OK;
}

/* One UTF-8 sequence at p[i] (lead byte >= 0x80): its length, or 0 when it is a surrogate,
 * U+FFFE / U+FFFF, or not well-formed UTF-8 (the reader encodes with surrogatepass). */
static Py_ssize_t utf8_len(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) {
    unsigned char b = p[i];
    if (b >= 0xC2 && b <= 0xDF) return (i + 1 < n && (p[i + 1] & 0xC0) == 0x80) ? 2 : 0;
    if (b >= 0xE0 && b <= 0xEF) {
        if (i + 2 >= n || (p[i + 1] & 0xC0) != 0x80 || (p[i + 2] & 0xC0) != 0x80) return 0;
        if (b == 0xE0 && p[i + 1] < 0xA0) return 0;
        if (b == 0xED && p[i + 1] >= 0xA0) return 0; /* surrogate */
        if (b == 0xEF && p[i + 1] == 0xBF && (p[i + 2] == 0xBE || p[i + 2] == 0xBF)) return 0;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (i + 3 >= n || (p[i + 1] & 0xC0) != 0x80 || (p[i + 2] & 0xC0) != 0x80 || (p[i + 3] & 0xC0) != 0x80)
            return 0;
        if (b == 0xF0 && p[i + 1] < 0x90) return 0;
        if (b == 0xF4 && p[i + 1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

/* Length of an entity or character reference at p[i] == '&' that XML defines without a DTD,
 * else 0. */
static Py_ssize_t entity_len(const unsigned char *p, Py_ssize_t i, Py_ssize_t n, Py_UCS4 *out) {
    static const struct { const char *s; Py_ssize_t len; Py_UCS4 ch; } named[] = {
        {"&lt;", 4, '<'}, {"&gt;", 4, '>'}, {"&amp;", 5, '&'}, {"&quot;", 6, '"'}, {"&apos;", 6, '\''}};
    for (int k = 0; k < 5; k++) {
        if (i + named[k].len <= n && memcmp(p + i, named[k].s, (size_t)named[k].len) == 0) {
            *out = named[k].ch;
            return named[k].len;
        }
    }
    if (i + 3 >= n || p[i + 1] != '#') return 0;
    Py_ssize_t j = i + 2;
    int hex = 0;
    if (p[j] == 'x') {
        hex = 1;
        j++;
    }
    Py_UCS4 v = 0;
    Py_ssize_t digits = 0;
    for (; j < n && p[j] != ';'; j++, digits++) {
        unsigned char d = p[j];
        int x;
        if (d >= '0' && d <= '9') x = d - '0';
        else if (hex && d >= 'a' && d <= 'f') x = d - 'a' + 10;
        else if (hex && d >= 'A' && d <= 'F') x = d - 'A' + 10;
        else return 0;
        v = v * (hex ? 16 : 10) + (Py_UCS4)x;
        if (v > 0x10FFFF || digits > 8) return 0;
    }
    if (j >= n || digits == 0) return 0;
    if (!(v == 0x9 || v == 0xA || v == 0xD || (v >= 0x20 && v <= 0xD7FF) || (v >= 0xE000 && v <= 0xFFFD) ||
          (v >= 0x10000 && v <= 0x10FFFF)))
        return 0;
    *out = v;
    return j + 1 - i;
}

/* Check text (``attr``: an attribute value) from c->i up to ``stop``; the cursor ends on the
 * stop byte. REJECT for anything expat would read differently or refuse. */
static int scan_text(Cur *c, unsigned char stop, int attr, int *special) {
    const unsigned char *p = c->p;
    Py_ssize_t i = c->i, n = c->n;
    *special = 0;
    while (i < n) {
        unsigned char b = p[i];
        if (b == stop) {
            c->i = i;
            return OK;
        }
        if (b == '<') return REJECT;
        if (b == '&') {
            Py_UCS4 ch;
            Py_ssize_t k = entity_len(p, i, n, &ch);
            if (k == 0) return (n - i < 16) ? MORE : REJECT;
            *special = 1;
            i += k;
            continue;
        }
        if (b >= 0x80) {
            Py_ssize_t k = utf8_len(p, i, n);
            if (k == 0) return (n - i < 4) ? MORE : REJECT;
            *special = 1;
            i += k;
            continue;
        }
        if (b < 0x20 && (attr || (b != '\n' && b != '\t'))) return REJECT; /* CR and attribute
                                                     white space are normalized; controls refused */
        if (b == '>' && !attr && i >= 2 && p[i - 1] == ']' && p[i - 2] == ']') return REJECT;
        i++;
    }
    return MORE;
}

/* The Python string of checked text: plain UTF-8, or with its references decoded. */
/* Names and short plain values recur in every event (element and Data names, Provider, Channel,
 * Computer, Level...): a direct-mapped cache of their str objects saves the allocation and,
 * as a str caches its hash, every dict insertion's hashing. Bounded (a collision replaces the
 * entry), so varied hostile values cost a miss each, no memory. Without it the parser built ~45
 * new strings per event: 6.6 of the XML reader's 11 us per event. */
#define ICACHE 1024
#define ICACHE_LEN 40
typedef struct {
    Py_ssize_t len;
    unsigned char s[ICACHE_LEN];
    PyObject *str;
} IEntry;
static IEntry icache[ICACHE];

/* A str of ASCII bytes (``s[0:len]`` holds no byte >= 0x80), from the cache when it is there. */
static PyObject *ascii_str(const unsigned char *s, Py_ssize_t len) {
    if (len > ICACHE_LEN) return PyUnicode_FromStringAndSize((const char *)s, len);
    uint32_t h = 2166136261u;
    for (Py_ssize_t k = 0; k < len; k++) h = (h ^ s[k]) * 16777619u;
    IEntry *e = &icache[(h ^ (h >> 16)) & (ICACHE - 1)];
    if (e->str != NULL && e->len == len && memcmp(e->s, s, (size_t)len) == 0) {
        Py_INCREF(e->str);
        return e->str;
    }
    PyObject *o = PyUnicode_FromStringAndSize((const char *)s, len);
    if (o == NULL) return NULL;
    Py_INCREF(o);
    Py_XSETREF(e->str, o);
    e->len = len;
    memcpy(e->s, s, (size_t)len);
    return o;
}

static PyObject *make_text(const unsigned char *s, Py_ssize_t len, int special) {
    if (!special) return ascii_str(s, len);
    if (memchr(s, '&', (size_t)len) == NULL) return PyUnicode_DecodeUTF8((const char *)s, len, NULL);
    PyObject *parts = PyList_New(0);
    if (parts == NULL) return NULL;
    Py_ssize_t start = 0, i = 0;
    while (i < len) {
        if (s[i] != '&') {
            i++;
            continue;
        }
        Py_UCS4 ch = 0;
        Py_ssize_t k = entity_len(s, i, len, &ch);
        PyObject *piece = PyUnicode_DecodeUTF8((const char *)s + start, i - start, NULL);
        PyObject *chs = piece ? PyUnicode_FromOrdinal((int)ch) : NULL;
        if (chs == NULL || PyList_Append(parts, piece) < 0 || PyList_Append(parts, chs) < 0) {
            Py_XDECREF(piece);
            Py_XDECREF(chs);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(piece);
        Py_DECREF(chs);
        i += k;
        start = i;
    }
    PyObject *tail = PyUnicode_DecodeUTF8((const char *)s + start, len - start, NULL);
    if (tail == NULL || PyList_Append(parts, tail) < 0) {
        Py_XDECREF(tail);
        Py_DECREF(parts);
        return NULL;
    }
    Py_DECREF(tail);
    PyObject *out = PyUnicode_Join(S_empty, parts);
    Py_DECREF(parts);
    return out;
}

/* Attributes up to '>' or '/>' after a tag name; fills e->attrs (an ``xmlns`` declaration is
 * checked but not kept: ElementTree does not report it). */
static int read_attrs(Cur *c, Elem *e) {
    e->nattrs = 0;
    e->empty = 0;
    for (;;) {
        Py_ssize_t before = c->i;
        skip_ws(c);
        if (c->i >= c->n) return MORE;
        unsigned char b = c->p[c->i];
        if (b == '>') {
            c->i++;
            return OK;
        }
        if (b == '/') {
            if (c->i + 1 >= c->n) return MORE;
            if (c->p[c->i + 1] != '>') return REJECT;
            c->i += 2;
            e->empty = 1;
            return OK;
        }
        if (c->i == before) return REJECT; /* attributes are separated by white space */
        const unsigned char *name;
        Py_ssize_t len;
        int rc = read_name(c, &name, &len);
        if (rc != OK) return rc;
        skip_ws(c);
        if (c->i >= c->n) return MORE;
        if (c->p[c->i] != '=') return REJECT;
        c->i++;
        skip_ws(c);
        if (c->i >= c->n) return MORE;
        unsigned char q = c->p[c->i];
        if (q != '\'' && q != '"') return REJECT;
        c->i++;
        Py_ssize_t vs = c->i;
        int special;
        rc = scan_text(c, q, 1, &special);
        if (rc != OK) return rc;
        Py_ssize_t vlen = c->i - vs;
        c->i++;
        int total = e->nattrs;
        for (int k = 0; k < total; k++) {
            if (e->attrs[k].name_len == len && memcmp(e->attrs[k].name, name, (size_t)len) == 0) return REJECT;
        }
        if (total >= MAX_ATTRS) return REJECT;
        e->attrs[total].name = name;
        e->attrs[total].name_len = len;
        e->attrs[total].val = c->p + vs;
        e->attrs[total].val_len = vlen;
        e->attrs[total].special = special;
        e->nattrs++;
    }
}

static int is_xmlns(const Attr *a) { return a->name_len == 5 && memcmp(a->name, "xmlns", 5) == 0; }

/* ``</name S? >`` at the cursor. */
static int close_tag(Cur *c, const unsigned char *name, Py_ssize_t len) {
    if (c->i + 2 + len >= c->n) return MORE;
    if (c->p[c->i] != '<' || c->p[c->i + 1] != '/' || memcmp(c->p + c->i + 2, name, (size_t)len) != 0)
        return REJECT;
    c->i += 2 + len;
    if (c->i < c->n && name_char(c->p[c->i])) return REJECT;
    skip_ws(c);
    if (c->i >= c->n) return MORE;
    if (c->p[c->i] != '>') return REJECT;
    c->i++;
    return OK;
}

/* An element named Event inside an event: the streaming parser reads every element of that
 * name as an event of its own, so it is left to it. */
static int is_event(const unsigned char *name, Py_ssize_t len) { return len == 5 && memcmp(name, "Event", 5) == 0; }

/* A start tag at the cursor (``<`` then a name): fills e, and for a text-only element also its
 * text and end tag. ``text_only``: nested elements are refused; ``nested``: below the event. */
static int read_elem(Cur *c, Elem *e, int text_only, int nested) {
    if (c->i + 1 >= c->n) return MORE;
    if (c->p[c->i] != '<') return REJECT;
    c->i++;
    int rc = read_name(c, &e->name, &e->len);
    if (rc != OK) return rc;
    if (nested && is_event(e->name, e->len)) return REJECT;
    rc = read_attrs(c, e);
    if (rc != OK) return rc;
    e->text = NULL;
    e->text_len = 0;
    e->text_special = 0;
    if (e->empty || !text_only) return OK;
    Py_ssize_t ts = c->i;
    rc = scan_text(c, '<', 0, &e->text_special);
    if (rc != OK) return rc;
    if (c->i > ts) {
        e->text = c->p + ts;
        e->text_len = c->i - ts;
    }
    return close_tag(c, e->name, e->len);
}

/* Skip a whole element whose start tag was just read (its content is checked, not kept). */
static int skip_elem(Cur *c, const Elem *start) {
    const unsigned char *names[MAX_DEPTH];
    Py_ssize_t lens[MAX_DEPTH];
    int depth = 0;
    if (start->empty) return OK;
    names[0] = start->name;
    lens[0] = start->len;
    depth = 1;
    while (depth > 0) {
        int special;
        int rc = scan_text(c, '<', 0, &special);
        if (rc != OK) return rc;
        if (c->i + 1 >= c->n) return MORE;
        if (c->p[c->i + 1] == '/') {
            rc = close_tag(c, names[depth - 1], lens[depth - 1]);
            if (rc != OK) return rc;
            depth--;
            continue;
        }
        Elem e;
        c->i++;
        rc = read_name(c, &e.name, &e.len);
        if (rc != OK) return rc;
        if (is_event(e.name, e.len)) return REJECT;
        rc = read_attrs(c, &e);
        if (rc != OK) return rc;
        if (e.empty) continue;
        if (depth >= MAX_DEPTH) return REJECT;
        names[depth] = e.name;
        lens[depth] = e.len;
        depth++;
    }
    return OK;
}

static PyObject *name_str(const unsigned char *s, Py_ssize_t len) { return ascii_str(s, len); }

/* str.strip() would leave something (Python's notion of white space, also for non-ASCII). */
static int has_content(PyObject *text) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, k))) return 1;
    }
    return 0;
}

/* ``normalize._int`` for the names in SYSTEM_INTS: a plain ASCII decimal without a leading zero
 * becomes an int, anything else keeps its text. */
static PyObject *maybe_int(PyObject *name, PyObject *value) {
    int isint = PySet_Contains(SYSTEM_INTS, name);
    if (isint < 0) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (isint && n > 0 && PyUnicode_IS_ASCII(value)) {
        const char *d = (const char *)PyUnicode_DATA(value);
        Py_ssize_t k = 0;
        while (k < n && d[k] >= '0' && d[k] <= '9') k++;
        if (k == n && (d[0] != '0' || n == 1)) return PyLong_FromUnicodeObject(value, 10);
    }
    Py_INCREF(value);
    return value;
}

/* One <System> child (``event_from_xml``'s System branch). */
static int system_child(PyObject *out, const Elem *e) {
    PyObject *key = name_str(e->name, e->len);
    if (key == NULL) return -1;
    int rc = -1;
    if (e->text != NULL) {
        PyObject *text = make_text(e->text, e->text_len, e->text_special);
        if (text == NULL) goto done;
        if (has_content(text)) {
            PyObject *v = maybe_int(key, text);
            Py_DECREF(text);
            if (v == NULL || PyDict_SetItem(out, key, v) < 0) {
                Py_XDECREF(v);
                goto done;
            }
            Py_DECREF(v);
        } else {
            Py_DECREF(text);
        }
    }
    int kept = 0;
    for (int k = 0; k < e->nattrs; k++) kept += !is_xmlns(&e->attrs[k]);
    if (kept) {
        PyObject *names = PyDict_GetItemWithError(SYSTEM_ATTRS, key);
        if (names == NULL && PyErr_Occurred()) goto done;
        for (int k = 0; k < e->nattrs; k++) {
            const Attr *a = &e->attrs[k];
            if (is_xmlns(a)) continue;
            PyObject *attr = name_str(a->name, a->name_len);
            if (attr == NULL) goto done;
            PyObject *name = NULL;
            if (names != NULL && PyDict_Check(names)) {
                name = PyDict_GetItemWithError(names, attr);
                if (name == NULL && PyErr_Occurred()) {
                    Py_DECREF(attr);
                    goto done;
                }
                Py_XINCREF(name);
            }
            if (name == NULL) name = PyUnicode_FromFormat("%U_%U", key, attr);
            Py_DECREF(attr);
            if (name == NULL) goto done;
            PyObject *val = make_text(a->val, a->val_len, a->special);
            PyObject *v = val ? maybe_int(name, val) : NULL;
            Py_XDECREF(val);
            int bad = v == NULL || PyDict_SetItem(out, name, v) < 0;
            Py_XDECREF(v);
            Py_DECREF(name);
            if (bad) goto done;
        }
    } else {
        int has = PyDict_Contains(out, key);
        if (has < 0 || (!has && PyDict_SetItem(out, key, Py_None) < 0)) goto done;
    }
    rc = 0;
done:
    Py_DECREF(key);
    return rc;
}

/* One child of <EventData> or of a <UserData> wrapper (``xml_reader._data``). */
static int data_child(PyObject *out, PyObject *unnamed, const Elem *e) {
    PyObject *text = e->text ? make_text(e->text, e->text_len, e->text_special) : (Py_INCREF(S_empty), S_empty);
    if (text == NULL) return -1;
    PyObject *name = NULL;
    if (e->len == 4 && memcmp(e->name, "Data", 4) == 0) {
        for (int k = 0; k < e->nattrs; k++) {
            const Attr *a = &e->attrs[k];
            if (a->name_len == 4 && memcmp(a->name, "Name", 4) == 0) {
                name = make_text(a->val, a->val_len, a->special);
                if (name == NULL) {
                    Py_DECREF(text);
                    return -1;
                }
            }
        }
        if (name == NULL) {
            int rc = PyList_Append(unnamed, text);
            Py_DECREF(text);
            return rc;
        }
    } else {
        name = name_str(e->name, e->len);
        if (name == NULL) {
            Py_DECREF(text);
            return -1;
        }
    }
    PyObject *key = PyUnicode_Replace(name, S_space, S_empty, -1);
    Py_DECREF(name);
    int rc = key ? PyDict_SetItem(out, key, text) : -1;
    Py_XDECREF(key);
    Py_DECREF(text);
    return rc;
}

/* The text-only children of an element until its end tag; each to system_child or data_child. */
static int children(Cur *c, PyObject *out, const unsigned char *parent, Py_ssize_t plen, int system) {
    PyObject *unnamed = system ? NULL : PyList_New(0);
    if (!system && unnamed == NULL) return FAIL;
    int rc;
    for (;;) {
        skip_ws(c);
        if (c->i + 1 >= c->n) {
            rc = MORE;
            break;
        }
        if (c->p[c->i] != '<') {
            rc = REJECT; /* text between children */
            break;
        }
        if (c->p[c->i + 1] == '/') {
            rc = close_tag(c, parent, plen);
            break;
        }
        Elem e;
        rc = read_elem(c, &e, 1, 1);
        if (rc != OK) break;
        if ((system ? system_child(out, &e) : data_child(out, unnamed, &e)) < 0) {
            rc = FAIL;
            break;
        }
    }
    if (rc == OK && !system) {
        Py_ssize_t k = PyList_GET_SIZE(unnamed);
        if (k > 0) {
            PyObject *v = k > 1 ? unnamed : PyList_GET_ITEM(unnamed, 0);
            if (PyDict_SetItem(out, S_Data, v) < 0) rc = FAIL;
        }
    }
    Py_XDECREF(unnamed);
    return rc;
}

static int is_name(const Elem *e, const char *s) {
    Py_ssize_t n = (Py_ssize_t)strlen(s);
    return e->len == n && memcmp(e->name, s, (size_t)n) == 0;
}

static int event_body(Cur *c, PyObject *out) {
    Elem ev;
    int rc = read_elem(c, &ev, 0, 0);
    if (rc != OK) return rc;
    if (!is_name(&ev, "Event") || ev.empty) return REJECT;
    for (;;) {
        skip_ws(c);
        if (c->i + 1 >= c->n) return MORE;
        if (c->p[c->i] != '<') return REJECT;
        if (c->p[c->i + 1] == '/') return close_tag(c, (const unsigned char *)"Event", 5);
        Elem part;
        rc = read_elem(c, &part, 0, 1);
        if (rc != OK) return rc;
        if (part.empty) continue;
        if (is_name(&part, "System")) rc = children(c, out, part.name, part.len, 1);
        else if (is_name(&part, "EventData")) rc = children(c, out, part.name, part.len, 0);
        else if (is_name(&part, "UserData")) {
            for (;;) {
                skip_ws(c);
                if (c->i + 1 >= c->n) return MORE;
                if (c->p[c->i] != '<') return REJECT;
                if (c->p[c->i + 1] == '/') {
                    rc = close_tag(c, part.name, part.len);
                    break;
                }
                Elem wrapper;
                rc = read_elem(c, &wrapper, 0, 1);
                if (rc != OK) return rc;
                if (wrapper.empty) continue;
                rc = children(c, out, wrapper.name, wrapper.len, 0);
                if (rc != OK) return rc;
            }
        } else rc = skip_elem(c, &part);
        if (rc != OK) return rc;
    }
}

/* ``normalize.iso_utc``'s shortcut for Windows XML's SystemTime: a valid 1970-2099
 * ``YYYY-MM-DDTHH:MM:SS.fffffffZ`` loses its 7th fraction digit (the canonical form). Done here,
 * it saves the reader ~1.5 us per event of pattern and date checks; anything else stays as it
 * is for iso_utc (tests compare the two on valid and out-of-range times). */
static int digits(const char *d, int n) {
    int v = 0;
    for (int k = 0; k < n; k++) {
        if (d[k] < '0' || d[k] > '9') return -1;
        v = v * 10 + (d[k] - '0');
    }
    return v;
}

static int canonical_time(PyObject *out) {
    PyObject *key = S_TimeCreated;
    PyObject *v = PyDict_GetItemWithError(out, key);
    if (v == NULL || !PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) != 28)
        return PyErr_Occurred() ? -1 : 0;
    const char *d = (const char *)PyUnicode_DATA(v);
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = digits(d, 4), mo = digits(d + 5, 2), day = digits(d + 8, 2);
    int h = digits(d + 11, 2), mi = digits(d + 14, 2), se = digits(d + 17, 2), frac = digits(d + 20, 7);
    int ok = d[4] == '-' && d[7] == '-' && d[10] == 'T' && d[13] == ':' && d[16] == ':' && d[19] == '.' &&
             d[27] == 'Z' && y >= 1970 && y <= 2099 && mo >= 1 && mo <= 12 && day >= 1 && h >= 0 && h <= 23 &&
             mi >= 0 && mi <= 59 && se >= 0 && se <= 59 && frac >= 0;
    if (ok) {
        int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        ok = day <= dim[mo - 1] + (mo == 2 && leap);
    }
    int rc = 0;
    if (ok) {
        char buf[27];
        memcpy(buf, d, 26);
        buf[26] = 'Z';
        PyObject *t = PyUnicode_FromStringAndSize(buf, 27);
        rc = t == NULL ? -1 : PyDict_SetItem(out, key, t);
        Py_XDECREF(t);
    }
    return rc;
}

/* One ``<Event>`` at the cursor: OK with ``*out`` a new dict of its fields (SystemTime in its
 * canonical form), else REJECT, MORE or FAIL with ``*out`` NULL. */
static int event(Cur *c, PyObject **out) {
    PyObject *fields = PyDict_New();
    *out = NULL;
    if (fields == NULL) return FAIL;
    int rc = event_body(c, fields);
    if (rc == OK && canonical_time(fields) < 0) rc = FAIL;
    if (rc != OK) {
        Py_DECREF(fields);
        return rc;
    }
    *out = fields;
    return OK;
}

/* ------------------------------------------------------------------------------------------
 * XmlEvents: the reader's loop, Event objects straight from the UTF-8 bytes of the file.
 *
 * Why: with a Python loop around a parser that returned lists of dicts, the reader paid per
 * event for the loop, the TimeCreated and EventID checks, a method call making the Event, two
 * generator frames and, for every file, decoding the bytes to text and encoding them back:
 * 2.5 of its 7.7 us per event (``bench/read_throughput.py --xml 50000``). This iterator takes
 * the bytes in blocks cut anywhere, keeps the unread part in a buffer of its own (an event cut
 * by a block end waits for the next block; one that still does not fit doubles what is read
 * next, so a huge event costs a few parses, not one per block), skips white space and one
 * ``</Events>`` end tag between events, and makes each Event as ``_Walk.emit`` does. An event it
 * is not sure about -- no EventID, an EventID that is not a plain decimal, a TimeCreated that is
 * not canonical -- goes to ``slow(fields)``, the Python code that reports and makes it.
 *
 * It stops at the first byte that is not an event in the subset above, or at the end:
 * ``rest()`` then gives the unread bytes, whether the wrapper is still open and the line
 * breaks before them, from where the streaming parser goes on. ``on_end(nbytes, count)`` runs
 * once when it stops (or is freed first): bytes read up to where it stopped, events made here.
 * ------------------------------------------------------------------------------------------ */

#define LOW_WATER 64 /* fewer unread bytes than this and more to come: read on first */

typedef struct {
    PyObject_HEAD
    PyObject *blocks;    /* iterator of UTF-8 buffers; NULL once exhausted */
    unsigned char *buf;  /* the unread bytes are buf[pos:len] */
    Py_ssize_t len, cap, pos;
    PyObject *name;      /* provenance: the input's name */
    PyObject *slow;      /* callable: fields -> Event or None */
    PyObject *on_end;    /* callable(nbytes, count), called once; NULL after */
    int wrapper;         /* an <Events> start tag is open */
    int stopped;
    Py_ssize_t dropped;  /* bytes dropped from the front of buf */
    Py_ssize_t lines;    /* line breaks in them */
    Py_ssize_t count;    /* events made here (slow makes and counts its own) */
    Py_ssize_t reparsed; /* bytes parsed again after an event did not fit */
} XmlEvents;

static EventClass EVENT = {NULL, -1, -1, -1, -1, -1};

/* ``<Event`` followed by white space or ``>`` at the cursor. */
static int at_event(const Cur *c) {
    return c->n - c->i >= 7 && memcmp(c->p + c->i, "<Event", 6) == 0 &&
           (is_ws(c->p[c->i + 6]) || c->p[c->i + 6] == '>');
}
static PyObject *S_xml, *S_EventID, *S_EventRecordID;

/* Line breaks as XML counts them (CR LF, LF, CR) in p[0:n]. */
static Py_ssize_t breaks(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t k = 0;
    const unsigned char *end = p + n, *s = p;
    while ((s = memchr(s, '\n', (size_t)(end - s))) != NULL) {
        k++;
        s++;
    }
    if (memchr(p, '\r', (size_t)n) == NULL) return k;
    for (Py_ssize_t i = 0; i < n; i++) k += p[i] == '\r' && (i + 1 == n || p[i + 1] != '\n');
    return k;
}

/* Drop the bytes before pos (a CR just before it stays: it may start a CR LF), then take blocks
 * until ``want`` bytes are unread or the blocks run out. */
static int refill(XmlEvents *self, Py_ssize_t want) {
    Py_ssize_t drop = self->pos;
    if (drop > 0 && self->buf[drop - 1] == '\r') drop--;
    self->lines += breaks(self->buf, drop);
    self->dropped += drop;
    memmove(self->buf, self->buf + drop, (size_t)(self->len - drop));
    self->len -= drop;
    self->pos -= drop;
    while (self->blocks != NULL && self->len - self->pos < want) {
        PyObject *block = PyIter_Next(self->blocks);
        if (block == NULL) {
            if (PyErr_Occurred()) return -1;
            Py_CLEAR(self->blocks);
            break;
        }
        Py_buffer view;
        if (PyObject_GetBuffer(block, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(block);
            return -1;
        }
        if (self->len + view.len > self->cap) {
            Py_ssize_t cap = 2 * (self->len + view.len) + 4096;
            unsigned char *grown = PyMem_Realloc(self->buf, (size_t)cap);
            if (grown == NULL) {
                PyBuffer_Release(&view);
                Py_DECREF(block);
                PyErr_NoMemory();
                return -1;
            }
            self->buf = grown;
            self->cap = cap;
        }
        memcpy(self->buf + self->len, view.buf, (size_t)view.len);
        self->len += view.len;
        PyBuffer_Release(&view);
        Py_DECREF(block);
    }
    return 0;
}

static int xml_finish(XmlEvents *self) {
    PyObject *fn = self->on_end;
    if (fn == NULL) return 0;
    self->on_end = NULL;
    PyObject *res = PyObject_CallFunction(fn, "nn", self->dropped + self->pos, self->count);
    Py_DECREF(fn);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

/* ``</Events S? >`` at pos: 1 (pos moved past it), 0 no, -1 cannot tell before more is read. */
static int end_wrapper(XmlEvents *self) {
    const unsigned char *p = self->buf;
    Py_ssize_t i = self->pos, n = self->len;
    if (n - i < 8) return self->blocks != NULL && memcmp(p + i, "</Events", (size_t)(n - i)) == 0 ? -1 : 0;
    if (memcmp(p + i, "</Events", 8) != 0) return 0;
    i += 8;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
    if (i == n) return self->blocks != NULL ? -1 : 0;
    if (p[i] != '>') return 0;
    self->pos = i + 1;
    return 1;
}

/* The Event of a parsed event's fields, or NULL with no exception when slow() said None. */
static PyObject *make_event(XmlEvents *self, PyObject *fields) {
    PyObject *id = PyDict_GetItemWithError(fields, S_EventID);
    PyObject *tc = id != NULL ? PyDict_GetItemWithError(fields, S_TimeCreated) : NULL;
    if (PyErr_Occurred()) return NULL;
    int sure = id != NULL && PyLong_CheckExact(id);
    if (sure && tc != NULL && tc != Py_None) {
        sure = PyUnicode_CheckExact(tc) &&
               (PyUnicode_GET_LENGTH(tc) == 0 ||
                (PyUnicode_GET_LENGTH(tc) == 27 && PyUnicode_READ_CHAR(tc, 10) == 'T' &&
                 PyUnicode_READ_CHAR(tc, 26) == 'Z'));
    }
    if (!sure) {
        PyObject *ev = PyObject_CallOneArg(self->slow, fields);
        if (ev == Py_None) Py_CLEAR(ev);
        return ev;
    }
    PyObject *rid = PyDict_GetItemWithError(fields, S_EventRecordID);
    if (rid == NULL && PyErr_Occurred()) return NULL;
    if (rid == NULL || !PyLong_CheckExact(rid)) rid = Py_None;
    PyObject *ev = event_new(&EVENT, fields, self->name, rid, S_xml);
    if (ev != NULL) self->count++;
    return ev;
}

static PyObject *xml_events_step(XmlEvents *self) {
    while (!self->stopped) {
        while (self->pos < self->len && is_ws(self->buf[self->pos])) self->pos++;
        if (self->blocks != NULL && self->len - self->pos < LOW_WATER) {
            if (refill(self, LOW_WATER) < 0) return NULL;
            continue;
        }
        Cur c = {self->buf, self->len, self->pos};
        if (at_event(&c)) {
            PyObject *fields;
            int rc = event(&c, &fields);
            if (rc == OK) {
                self->pos = c.i;
                PyObject *ev = make_event(self, fields);
                Py_DECREF(fields);
                if (ev != NULL || PyErr_Occurred()) return ev;
                continue;
            }
            if (rc == FAIL) return NULL;
            if (rc == MORE && self->blocks != NULL) {
                self->reparsed += c.i - self->pos;
                if (refill(self, 2 * (self->len - self->pos)) < 0) return NULL;
                continue;
            }
        } else if (self->wrapper) {
            int end = end_wrapper(self);
            if (end == 1) {
                self->wrapper = 0;
                continue;
            }
            if (end < 0) {
                if (refill(self, 2 * (self->len - self->pos) + LOW_WATER) < 0) return NULL;
                continue;
            }
        }
        self->stopped = 1;
    }
    return NULL;
}

/* The next event; when the loop stops (or fails) on_end runs first, an error it raises chained
 * to the reading error. */
static PyObject *xml_events_next(XmlEvents *self) {
    PyObject *ev = xml_events_step(self);
    if (ev == NULL) {
        self->stopped = 1;
        if (self->on_end != NULL) {
            if (PyErr_Occurred()) {
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                if (xml_finish(self) < 0) _PyErr_ChainExceptions(type, value, tb);
                else PyErr_Restore(type, value, tb);
            } else {
                xml_finish(self);
            }
        }
    }
    return ev;
}

/* rest() -> (unread bytes, wrapper still open, line breaks before them), once stopped. */
static PyObject *xml_events_rest(XmlEvents *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->stopped) {
        PyErr_SetString(PyExc_RuntimeError, "rest() before the loop stopped");
        return NULL;
    }
    Py_ssize_t lines = self->lines + breaks(self->buf, self->pos);
    return Py_BuildValue("(y#Nn)", (const char *)self->buf + self->pos, self->len - self->pos,
                         PyBool_FromLong(self->wrapper), lines);
}

static PyObject *xml_events_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *blocks, *name, *slow, *on_end;
    int wrapper;
    if (!PyArg_ParseTuple(args, "OUpOO", &blocks, &name, &wrapper, &slow, &on_end)) return NULL;
    if (!PyCallable_Check(slow) || !PyCallable_Check(on_end)) {
        PyErr_SetString(PyExc_TypeError, "slow and on_end must be callable");
        return NULL;
    }
    if (EVENT.cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_xml.configure() was not called");
        return NULL;
    }
    XmlEvents *self = (XmlEvents *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->blocks = PyObject_GetIter(blocks);
    if (self->blocks == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->name = Py_NewRef(name);
    self->slow = Py_NewRef(slow);
    self->on_end = Py_NewRef(on_end);
    self->wrapper = wrapper;
    return (PyObject *)self;
}

static void xml_events_dealloc(XmlEvents *self) {
    if (self->on_end != NULL) { /* dropped before its end: its counts still go in */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (xml_finish(self) < 0) PyErr_WriteUnraisable(NULL);
        PyErr_Restore(type, value, tb);
    }
    Py_XDECREF(self->blocks);
    Py_XDECREF(self->name);
    Py_XDECREF(self->slow);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef xml_events_members[] = {
    {"count", T_PYSSIZET, offsetof(XmlEvents, count), READONLY, "events made here (not by slow)"},
    {"reparsed", T_PYSSIZET, offsetof(XmlEvents, reparsed), READONLY,
     "bytes parsed again because an event did not end inside the buffer"},
    {NULL},
};

static PyMethodDef xml_events_methods[] = {
    {"rest", (PyCFunction)xml_events_rest, METH_NOARGS,
     "rest() -> (unread bytes, wrapper open, line breaks before them), once the loop stopped"},
    {NULL},
};

static PyTypeObject XmlEventsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scmwatch.events._xml.XmlEvents",
    .tp_basicsize = sizeof(XmlEvents),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "XmlEvents(blocks, name, wrapper, slow, on_end): Event objects from UTF-8 blocks of Windows "
              "event XML starting at an <Event>; events it is not sure about go to slow(fields); "
              "on_end(nbytes, count) once when it stops; rest() then says where.",
    .tp_new = xml_events_new,
    .tp_dealloc = (destructor)xml_events_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)xml_events_next,
    .tp_members = xml_events_members,
    .tp_methods = xml_events_methods,
};

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *attrs, *ints, *event_type;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyDict_Type, &attrs, &PyFrozenSet_Type, &ints, &PyType_Type,
                          &event_type))
        return NULL;
    Py_INCREF(attrs);
    Py_INCREF(ints);
    Py_XSETREF(SYSTEM_ATTRS, attrs);
    Py_XSETREF(SYSTEM_INTS, ints);
    event_class_set(&EVENT, event_type);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(system_attrs, system_ints, event_class): normalize.py's tables and the Event class."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_xml", NULL, -1, methods};

PyMODINIT_FUNC PyInit__xml(void) {
    S_Data = PyUnicode_InternFromString("Data");
    S_TimeCreated = PyUnicode_InternFromString("TimeCreated");
    S_space = PyUnicode_InternFromString(" ");
    S_empty = PyUnicode_InternFromString("");
    S_xml = PyUnicode_InternFromString("xml");
    S_EventID = PyUnicode_InternFromString("EventID");
    S_EventRecordID = PyUnicode_InternFromString("EventRecordID");
    if (S_Data == NULL || S_TimeCreated == NULL || S_space == NULL || S_empty == NULL || S_xml == NULL ||
        S_EventID == NULL || S_EventRecordID == NULL)
        return NULL;
    if (PyType_Ready(&XmlEventsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&XmlEventsType);
    if (PyModule_AddObject(m, "XmlEvents", (PyObject *)&XmlEventsType) < 0) {
        Py_DECREF(&XmlEventsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
