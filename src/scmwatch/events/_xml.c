/*
 * scmwatch.events._xml: the XML reader's fast path, one ``<Event>`` element of Windows event
 * XML straight into the flat fields ``xml_reader.event_from_xml`` builds from an ElementTree
 * element.
 *
 * Why: ElementTree hands every start and end of the ~60 elements of an event to Python, and
 * the reader then walks them again: 13k events/s, 0.19 x the JSONL reader on the same events.
 * This parser reads the UTF-8 bytes of the events once and builds the dicts directly, most
 * fields' keys and values found again in a cache of the fields the events before had (see
 * Field); with the loop at the end of this file making the Event objects, the reader reads
 * ~360k events/s, 1.43 x the JSONL reader's C loop on the same events
 * (``bench/read_throughput.py --xml 50000``, same run; 0.69 x without the field cache, 0.48 x
 * also without the loop). The loop takes 2.3 us per event of the simulated logs, parse and
 * Event objects (5.2 without the field cache and the start tags it keeps, same run).
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
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

/* Byte classes, so that the hot loops (white space, names, text) cost one table load per byte:
 * scan_text was 20% of the parser's time testing each byte against six conditions. */
enum { C_WS = 1, C_NAME0 = 2, C_NAME = 4, C_TEXT = 8, C_ATTR = 16 };
static unsigned char cls[256];

static void init_tables(void) {
    for (int b = 0; b < 256; b++) {
        unsigned char k = 0;
        if (is_ws((unsigned char)b)) k |= C_WS;
        if ((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || b == '_') k |= C_NAME0 | C_NAME;
        if ((b >= '0' && b <= '9') || b == '.' || b == '-') k |= C_NAME;
        /* the bytes scan_text must look at: in text, '<' '&' '>' non-ASCII and controls but tab
         * and newline; in an attribute value also both quotes, tab and newline */
        if (b == '<' || b == '&' || b >= 0x80 || b < 0x20) k |= C_ATTR | C_TEXT;
        if (b == '\t' || b == '\n') k &= (unsigned char)~C_TEXT;
        if (b == '>') k |= C_TEXT;
        if (b == '\'' || b == '"') k |= C_ATTR;
        cls[b] = k;
    }
}

/* a[0:n] == b[0:n], inlined: the names and values compared are short, and a call to libc's
 * memcmp for each was 32% of the parser's time once the field cache made them most of its work. */
static inline int same(const unsigned char *a, const unsigned char *b, Py_ssize_t n) {
    uint64_t x, y;
    for (; n >= 8; a += 8, b += 8, n -= 8) {
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y) return 0;
    }
    if (n >= 4) {
        uint32_t u, v, w, z;
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        memcpy(&w, a + n - 4, 4);
        memcpy(&z, b + n - 4, 4);
        return u == v && w == z;
    }
    for (; n > 0; a++, b++, n--) {
        if (*a != *b) return 0;
    }
    return 1;
}

static inline int name_char(unsigned char c) { return cls[c] & C_NAME; }

static void skip_ws(Cur *c) {
    const unsigned char *p = c->p;
    Py_ssize_t i = c->i, n = c->n;
    while (i < n && (cls[p[i]] & C_WS)) i++;
    c->i = i;
}

/* A name at the cursor; REJECT for anything else (prefixed names included: ':' is no name char,
 * so "a:b" ends at ':' and the caller's next check fails). */
static int read_name(Cur *c, const unsigned char **name, Py_ssize_t *len) {
    const unsigned char *p = c->p;
    Py_ssize_t s = c->i, i = s, n = c->n;
    if (i >= n) return MORE;
    if (!(cls[p[i]] & C_NAME0)) return REJECT;
    i++;
    while (i < n && (cls[p[i]] & C_NAME)) i++;
    c->i = i;
    if (i >= n) return MORE;
    *name = p + s;
    *len = i - s;
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

/* The first byte from i on that scan_text must look at (``cls[b] & mask``), or n. */
static inline Py_ssize_t skip_plain(const unsigned char *p, Py_ssize_t i, Py_ssize_t n, int attr, unsigned char mask) {
#ifdef __SSE2__
    /* 16 bytes per step: Sysmon's paths, command lines and hashes are long (the C parser alone
     * 6-8% faster than with the table loop only, same run) */
    const __m128i lt = _mm_set1_epi8('<'), amp = _mm_set1_epi8('&'), space = _mm_set1_epi8(' ');
    const __m128i q1 = _mm_set1_epi8(attr ? '\'' : '>'), q2 = _mm_set1_epi8(attr ? '"' : '>');
    const __m128i tab = _mm_set1_epi8(attr ? '<' : '\t'), nl = _mm_set1_epi8(attr ? '<' : '\n');
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        /* signed: bytes >= 0x80 are negative, so below ' ' as the controls are */
        __m128i ctl = _mm_andnot_si128(_mm_or_si128(_mm_cmpeq_epi8(v, tab), _mm_cmpeq_epi8(v, nl)),
                                       _mm_cmplt_epi8(v, space));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, lt), _mm_cmpeq_epi8(v, amp)),
                                   _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, q1), _mm_cmpeq_epi8(v, q2)), ctl));
        int m = _mm_movemask_epi8(hit);
        if (m != 0) return i + __builtin_ctz((unsigned)m);
    }
#endif
    while (i < n && !(cls[p[i]] & mask)) i++;
    return i;
}

/* Check text (``attr``: an attribute value) from c->i up to ``stop``; the cursor ends on the
 * stop byte. REJECT for anything expat would read differently or refuse. */
static int scan_text(Cur *c, unsigned char stop, int attr, int *special) {
    const unsigned char *p = c->p;
    Py_ssize_t i = c->i, n = c->n;
    const unsigned char mask = attr ? C_ATTR : C_TEXT;
    *special = 0;
    for (;;) {
        i = skip_plain(p, i, n, attr, mask);
        if (i >= n) return MORE;
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
        if (b < 0x20) return REJECT; /* CR and attribute white space are normalized; controls refused */
        if (b == '>' && !attr && i >= 2 && p[i - 1] == ']' && p[i - 2] == ']') return REJECT;
        i++; /* '>' in text, the other quote in an attribute value */
    }
}

/* A str of ASCII bytes (``s[0:len]`` holds no byte >= 0x80): no UTF-8 decoding to do. */
static PyObject *plain_str(const unsigned char *s, Py_ssize_t len) {
    PyObject *o = PyUnicode_New(len, 127);
    if (o != NULL) memcpy(PyUnicode_DATA(o), s, (size_t)len);
    return o;
}

/* The Python string of checked text: plain ASCII, or UTF-8 with its references decoded. */
static PyObject *make_text(const unsigned char *s, Py_ssize_t len, int special) {
    if (!special) return plain_str(s, len);
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
            if (e->attrs[k].name_len == len && same(e->attrs[k].name, name, len)) return REJECT;
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
    if (c->p[c->i] != '<' || c->p[c->i + 1] != '/' || !same(c->p + c->i + 2, name, len))
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
static int elem_text(Cur *c, Elem *e);

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
    return elem_text(c, e);
}

/* The text and end tag of a text-only element whose start tag ends at the cursor. */
static int elem_text(Cur *c, Elem *e) {
    Py_ssize_t ts = c->i;
    int rc = scan_text(c, '<', 0, &e->text_special);
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

/* ``normalize._int``: a plain ASCII decimal without a leading zero becomes an int, anything
 * else keeps its text (``value``, returned with a new reference). */
static PyObject *maybe_int(PyObject *value) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (n > 0 && PyUnicode_IS_ASCII(value)) {
        const char *d = (const char *)PyUnicode_DATA(value);
        Py_ssize_t k = 0;
        while (k < n && d[k] >= '0' && d[k] <= '9') k++;
        if (k == n && (d[0] != '0' || n == 1)) return PyLong_FromUnicodeObject(value, 10);
    }
    Py_INCREF(value);
    return value;
}

/* ``maybe_int`` on plain ASCII bytes, without making the str first: up to 18 digits fit a long
 * long. NULL without an error when the bytes are no such decimal (or too long for this). */
static PyObject *bytes_int(const unsigned char *s, Py_ssize_t len) {
    if (len == 0 || len > 18 || (s[0] == '0' && len > 1)) return NULL;
    long long v = 0;
    for (Py_ssize_t k = 0; k < len; k++) {
        if (s[k] < '0' || s[k] > '9') return NULL;
        v = v * 10 + (s[k] - '0');
    }
    return PyLong_FromLongLong(v);
}

/* How a field's value is converted: CONV_INT as ``_int`` does for the names in SYSTEM_INTS,
 * CONV_TIME to the canonical form of a SystemTime for the key TimeCreated (see canonical). */
enum { CONV_INT = 1, CONV_TIME = 2 };

static PyObject *canonical(PyObject *v);

/* The value of checked text as ``event_from_xml`` stores it (``isint``: as ``_int`` converts it),
 * ``content``: Py_None when str.strip() leaves nothing (a <System> child's text is then not
 * stored). */
static PyObject *text_value(const unsigned char *s, Py_ssize_t len, int special, int isint, int content) {
    if (!special) {
        if (content) {
            Py_ssize_t k = 0;
            while (k < len && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n')) k++; /* no other
                                                     white space passes scan_text in plain text */
            if (k == len) Py_RETURN_NONE;
        }
        if (isint) {
            PyObject *v = bytes_int(s, len);
            if (v != NULL || PyErr_Occurred()) return v;
            if (len > 18) {
                PyObject *text = plain_str(s, len);
                if (text == NULL) return NULL;
                v = maybe_int(text);
                Py_DECREF(text);
                return v;
            }
        }
        return plain_str(s, len);
    }
    PyObject *text = make_text(s, len, special);
    if (text == NULL) return NULL;
    if (content && !has_content(text)) {
        Py_DECREF(text);
        Py_RETURN_NONE;
    }
    if (!isint) return text;
    PyObject *v = maybe_int(text);
    Py_DECREF(text);
    return v;
}

/* text_value, then what ``event_from_xml`` does to the key TimeCreated's value at the end: done
 * as the value is made, the last value stored under the key is canonical all the same, and the
 * event's dict is not looked up and changed again (the C loop 2-4% faster, same run). */
static PyObject *make_value(const unsigned char *s, Py_ssize_t len, int special, int conv, int content) {
    PyObject *v = text_value(s, len, special, conv & CONV_INT, content);
    if (v != NULL && (conv & CONV_TIME)) Py_SETREF(v, canonical(v));
    return v;
}

/* The fields of consecutive events mostly come in the same order with the same names, and
 * many with the same values (Provider, Channel, Computer, Level, Task, most Data). So each
 * field the parser stores (a <System> child's text or attribute, a named Data, a UserData
 * child) has an entry in a bounded table: the name bytes it comes from, its dict key (spaces
 * removed, SYSTEM_ATTRS applied), whether SYSTEM_INTS makes it an int, and the last value made
 * for it with the bytes it came from. Each entry remembers the entry of the field that followed
 * it: when that guess holds (91% of the fields of the simulated logs), finding the key costs a
 * compare of the name bytes, no hashing, and an unchanged value (57%) a compare of its bytes,
 * no allocation. A miss hashes the names into a 4-way set (so a field's last value survives
 * events of other layouts in between) and refreshes the least recently used entry there.
 * Everything is bounded (longer names and values are made anew each time), so hostile input
 * costs misses, no memory. This replaced a direct-mapped cache of short strings, which hashed
 * every name and value: the C parser alone went from 5.2 to 2.5 us per event (45k simulated
 * events, same run); guessing by the field's number in the event instead of by the field
 * before it missed twice as often, and one way instead of four thrashed (3 of 154 names fell
 * on one set), 5% slower. */
#define F_NAME1 48   /* element name, or a Data element's Name value */
#define F_NAME2 24   /* attribute name */
#define F_INLINE 32  /* value bytes kept in the entry (an int's digits, decoded or blank text) */
#define F_VALMAX 512  /* longer values are not kept (at most 1 MB held) */
#define F_TAG 64     /* start tags kept (``<Data Name='SubjectUserName'>``) */
#define FIELDS 2048
#define WAYS 4 /* a set of entries for names of the same hash (1,024 entries of one way thrashed
                   with 3 of 154 names falling on one) */

enum { F_STEXT = 1, F_SATTR, F_DNAMED, F_DELEM };

typedef struct Field { /* what a hit reads first, in its first 64 bytes */
    unsigned char kind, len1, len2;
    /* the start tag of the last element whose first field this was, as read_elem read it */
    unsigned char taglen, elen, nattrs, an_off, an_len, av_off, av_len, av_special;
    int conv;
    struct Field *next; /* the entry of the field that followed this one last time */
    PyObject *key;
    PyObject *val;            /* NULL: none kept */
    const unsigned char *raw; /* the bytes val was made from: val's own ASCII data, or vbuf */
    Py_ssize_t rawlen;
    uint64_t used; /* ``uses`` when it was last used: a set replaces its least recent */
    unsigned char tag[F_TAG];
    unsigned char name1[F_NAME1], name2[F_NAME2];
    unsigned char vbuf[F_INLINE];
} Field;

static Field fields[FIELDS];
static uint64_t uses;
static Field *first;   /* the entry of the previous event's first field */
static Field *prev;    /* the entry of this event's last field, NULL before its first */
static int elem_calls;    /* field_for calls for the element at hand */
static Field *elem_first; /* the entry of its first field (NULL: none, or names too long) */

static int field_is(const Field *f, int kind, const unsigned char *n1, Py_ssize_t l1, const unsigned char *n2,
                    Py_ssize_t l2) {
    return f->kind == kind && f->len1 == l1 && f->len2 == l2 && same(f->name1, n1, l1) && same(f->name2, n2, l2);
}

static PyObject *system_key(int kind, const unsigned char *n1, Py_ssize_t l1, const unsigned char *n2, Py_ssize_t l2,
                            int *conv);

/* The key of a field, made from its name bytes, and how its value is converted (``*conv``). */
static PyObject *make_key(int kind, const unsigned char *n1, Py_ssize_t l1, const unsigned char *n2, Py_ssize_t l2,
                          int special, int *conv) {
    PyObject *key;
    *conv = 0;
    if (kind == F_DELEM) {
        key = plain_str(n1, l1); /* a name holds no space */
    } else if (kind == F_DNAMED) {
        PyObject *name = make_text(n1, l1, special);
        if (name == NULL) return NULL;
        Py_ssize_t at = PyUnicode_FindChar(name, ' ', 0, PyUnicode_GET_LENGTH(name), 1);
        key = at == -1 ? (Py_INCREF(name), name) : at == -2 ? NULL : PyUnicode_Replace(name, S_space, S_empty, -1);
        Py_DECREF(name);
    } else {
        key = system_key(kind, n1, l1, n2, l2, conv);
    }
    if (key != NULL && PyUnicode_Check(key) && PyUnicode_Compare(key, S_TimeCreated) == 0) *conv |= CONV_TIME;
    if (PyErr_Occurred()) Py_CLEAR(key);
    return key;
}

/* make_key for a <System> child's text or attribute. */
static PyObject *system_key(int kind, const unsigned char *n1, Py_ssize_t l1, const unsigned char *n2, Py_ssize_t l2,
                            int *conv) {
    PyObject *key = plain_str(n1, l1);
    if (key == NULL) return NULL;
    if (kind == F_SATTR) {
        PyObject *names = PyDict_GetItemWithError(SYSTEM_ATTRS, key);
        PyObject *attr = names == NULL && PyErr_Occurred() ? NULL : plain_str(n2, l2);
        PyObject *name = NULL;
        if (attr != NULL && names != NULL && PyDict_Check(names)) {
            name = PyDict_GetItemWithError(names, attr);
            Py_XINCREF(name);
        }
        if (name == NULL && attr != NULL && !PyErr_Occurred()) name = PyUnicode_FromFormat("%U_%U", key, attr);
        Py_XDECREF(attr);
        Py_SETREF(key, name);
        if (key == NULL) return NULL;
    }
    int rc = PySet_Contains(SYSTEM_INTS, key);
    if (rc < 0) Py_CLEAR(key);
    *conv = rc > 0 ? CONV_INT : 0;
    return key;
}

/* The entry of the event's next field (NULL when its names are too long to keep one), with
 * its key (a new reference) and conv; -1 on an error. */
static int field_for(int kind, const unsigned char *n1, Py_ssize_t l1, const unsigned char *n2, Py_ssize_t l2,
                     int special, Field **out, PyObject **key, int *conv) {
    Field *f = prev != NULL ? prev->next : first;
    if (f == NULL || !field_is(f, kind, n1, l1, n2, l2)) {
        if (l1 > F_NAME1 || l2 > F_NAME2) {
            if (elem_calls++ == 0) elem_first = NULL;
            *out = NULL;
            *key = make_key(kind, n1, l1, n2, l2, special, conv);
            return *key == NULL ? -1 : 0;
        }
        uint32_t h = 2166136261u ^ (uint32_t)kind;
        for (Py_ssize_t j = 0; j < l1; j++) h = (h ^ n1[j]) * 16777619u;
        h = (h ^ 0xFFu) * 16777619u;
        for (Py_ssize_t j = 0; j < l2; j++) h = (h ^ n2[j]) * 16777619u;
        Field *set = &fields[((h ^ (h >> 16)) * WAYS) & (FIELDS - 1)];
        f = set; /* the matching way, else the least recently used one */
        for (int w = 0; w < WAYS; w++) {
            if (field_is(&set[w], kind, n1, l1, n2, l2)) {
                f = &set[w];
                break;
            }
            if (set[w].used < f->used) f = &set[w];
        }
        if (!field_is(f, kind, n1, l1, n2, l2)) {
            f->kind = 0;
            f->taglen = 0;
            Py_CLEAR(f->key);
            Py_CLEAR(f->val);
            f->key = make_key(kind, n1, l1, n2, l2, special, &f->conv);
            if (f->key == NULL) return -1;
            f->kind = (unsigned char)kind;
            f->len1 = (unsigned char)l1;
            f->len2 = (unsigned char)l2;
            memcpy(f->name1, n1, (size_t)l1);
            memcpy(f->name2, n2, (size_t)l2);
        }
        if (prev != NULL) prev->next = f;
        else first = f;
    }
    prev = f;
    f->used = ++uses;
    if (elem_calls++ == 0) elem_first = f;
    *out = f;
    Py_INCREF(f->key);
    *key = f->key;
    *conv = f->conv;
    return 0;
}

/* A field's value (``make_value``), the entry's last one when it was made from the same bytes. */
static PyObject *field_value(Field *f, const unsigned char *s, Py_ssize_t len, int special, int conv, int content) {
    if (f != NULL && f->val != NULL && f->rawlen == len && same(f->raw, s, len)) {
        Py_INCREF(f->val);
        return f->val;
    }
    PyObject *v = make_value(s, len, special, conv, content);
    if (v == NULL || f == NULL) return v;
    Py_CLEAR(f->val);
    if (!special && PyUnicode_CheckExact(v) && PyUnicode_GET_LENGTH(v) == len) {
        f->raw = PyUnicode_DATA(v); /* plain text kept as it is: the str holds the very bytes */
    } else if (len <= F_INLINE) {
        memcpy(f->vbuf, s, (size_t)len);
        f->raw = f->vbuf;
    } else {
        return v;
    }
    if (len > F_VALMAX) return v;
    Py_INCREF(v);
    f->val = v;
    f->rawlen = len;
    return v;
}

/* One <System> child (``event_from_xml``'s System branch). */
static int system_child(PyObject *out, const Elem *e) {
    Field *f = NULL;
    PyObject *key = NULL, *v;
    int conv, kept = 0;
    for (int k = 0; k < e->nattrs; k++) kept += !is_xmlns(&e->attrs[k]);
    if (e->text != NULL || !kept) {
        if (field_for(F_STEXT, e->name, e->len, NULL, 0, 0, &f, &key, &conv) < 0) return -1;
    }
    if (e->text != NULL) {
        v = field_value(f, e->text, e->text_len, e->text_special, conv, 1);
        int bad = v == NULL || (v != Py_None && PyDict_SetItem(out, key, v) < 0);
        Py_XDECREF(v);
        if (bad) goto fail;
    }
    if (!kept) {
        if (PyDict_SetDefault(out, key, Py_None) == NULL) goto fail;
        Py_DECREF(key);
        return 0;
    }
    Py_XDECREF(key);
    for (int k = 0; k < e->nattrs; k++) {
        const Attr *a = &e->attrs[k];
        if (is_xmlns(a)) continue;
        if (field_for(F_SATTR, e->name, e->len, a->name, a->name_len, 0, &f, &key, &conv) < 0) return -1;
        v = field_value(f, a->val, a->val_len, a->special, conv, 0);
        int bad = v == NULL || PyDict_SetItem(out, key, v) < 0;
        Py_XDECREF(v);
        Py_DECREF(key);
        if (bad) return -1;
    }
    return 0;
fail:
    Py_DECREF(key);
    return -1;
}

/* One child of <EventData> or of a <UserData> wrapper (``xml_reader._data``); ``*unnamed``
 * (made on the first) collects the texts of Data elements without a Name. */
static int data_child(PyObject *out, PyObject **unnamed, const Elem *e) {
    const Attr *name = NULL;
    Field *f;
    PyObject *key, *text;
    int conv;
    if (e->len == 4 && memcmp(e->name, "Data", 4) == 0) {
        for (int k = 0; k < e->nattrs; k++) {
            const Attr *a = &e->attrs[k];
            if (a->name_len == 4 && memcmp(a->name, "Name", 4) == 0) name = a;
        }
        if (name == NULL) {
            text = e->text ? make_text(e->text, e->text_len, e->text_special) : (Py_INCREF(S_empty), S_empty);
            if (text == NULL) return -1;
            if (*unnamed == NULL && (*unnamed = PyList_New(0)) == NULL) {
                Py_DECREF(text);
                return -1;
            }
            int rc = PyList_Append(*unnamed, text);
            Py_DECREF(text);
            return rc;
        }
    }
    int rc = name ? field_for(F_DNAMED, name->val, name->val_len, NULL, 0, name->special, &f, &key, &conv)
                  : field_for(F_DELEM, e->name, e->len, NULL, 0, 0, &f, &key, &conv);
    if (rc < 0) return -1;
    text = e->text ? field_value(f, e->text, e->text_len, e->text_special, 0, 0) : (Py_INCREF(S_empty), S_empty);
    rc = text ? PyDict_SetItem(out, key, text) : -1;
    Py_XDECREF(text);
    Py_DECREF(key);
    return rc;
}

/* Most children's start tags are those the same field had in the event before
 * (``<Data Name='SubjectUserName'>``, ``<EventID>``): the first field's entry keeps the bytes of
 * the start tag (up to one attribute) and where read_elem found its name and attribute in them.
 * When the bytes at the cursor are those, the element is what read_elem made of them then: one
 * compare instead of reading the name, the attribute and its value: the C loop 7% faster on
 * the simulated logs (2.51 -> 2.34 us per event, same run). */
static void keep_tag(Field *f, const unsigned char *tag, const Elem *e) {
    f->taglen = (unsigned char)(e->text - tag);
    memcpy(f->tag, tag, f->taglen);
    f->elen = (unsigned char)e->len;
    f->nattrs = (unsigned char)e->nattrs;
    if (e->nattrs) {
        const Attr *a = &e->attrs[0];
        f->an_off = (unsigned char)(a->name - tag);
        f->an_len = (unsigned char)a->name_len;
        f->av_off = (unsigned char)(a->val - tag);
        f->av_len = (unsigned char)a->val_len;
        f->av_special = (unsigned char)a->special;
    }
}

/* The element whose start tag at the cursor equals f's kept one; the cursor moves past it. */
static void replay_tag(Cur *c, const Field *f, Elem *e) {
    const unsigned char *tag = c->p + c->i;
    e->name = tag + 1;
    e->len = f->elen;
    e->nattrs = f->nattrs;
    e->empty = 0;
    if (f->nattrs) {
        Attr *a = &e->attrs[0];
        a->name = tag + f->an_off;
        a->name_len = f->an_len;
        a->val = tag + f->av_off;
        a->val_len = f->av_len;
        a->special = f->av_special;
    }
    e->text = NULL;
    e->text_len = 0;
    e->text_special = 0;
    c->i += f->taglen;
}

/* The text-only children of an element until its end tag; each to system_child or data_child. */
static int children(Cur *c, PyObject *out, const unsigned char *parent, Py_ssize_t plen, int system) {
    PyObject *unnamed = NULL;
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
        Field *g = prev != NULL ? prev->next : first;
        const unsigned char *tag = c->p + c->i;
        int known = g != NULL && g->taglen != 0 && c->n - c->i >= g->taglen && same(tag, g->tag, g->taglen);
        if (known) {
            replay_tag(c, g, &e);
            rc = elem_text(c, &e);
        } else {
            rc = read_elem(c, &e, 1, 1);
        }
        if (rc != OK) break;
        elem_calls = 0;
        elem_first = NULL;
        if ((system ? system_child(out, &e) : data_child(out, &unnamed, &e)) < 0) {
            rc = FAIL;
            break;
        }
        if (!known && elem_first != NULL && e.text != NULL && e.nattrs <= 1 && e.text - tag <= F_TAG)
            keep_tag(elem_first, tag, &e);
    }
    if (rc == OK && unnamed != NULL) {
        Py_ssize_t k = PyList_GET_SIZE(unnamed);
        PyObject *v = k > 1 ? unnamed : PyList_GET_ITEM(unnamed, 0);
        if (PyDict_SetItem(out, S_Data, v) < 0) rc = FAIL;
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

/* The canonical form of v when it is a valid SystemTime (a new reference either way). */
static PyObject *canonical(PyObject *v) {
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) != 28) return Py_NewRef(v);
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
    if (!ok) return Py_NewRef(v);
    char buf[27];
    memcpy(buf, d, 26);
    buf[26] = 'Z';
    return PyUnicode_FromStringAndSize(buf, 27);
}

/* One ``<Event>`` at the cursor: OK with ``*out`` a new dict of its fields (SystemTime in its
 * canonical form), else REJECT, MORE or FAIL with ``*out`` NULL. */
static int event(Cur *c, PyObject **out) {
    static Py_ssize_t last_size = 0; /* the previous event's field count: its dict never resizes */
    PyObject *d = _PyDict_NewPresized(last_size);
    *out = NULL;
    if (d == NULL) return FAIL;
    prev = NULL;
    int rc = event_body(c, d);
    if (rc != OK) {
        Py_DECREF(d);
        return rc;
    }
    last_size = Py_MIN(PyDict_GET_SIZE(d), 128);
    *out = d;
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

#define XML_END "(nn)", self->dropped + self->pos, self->count /* on_end's values */

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
        loop_end_stopped(&self->on_end, XML_END);
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
    loop_end_freed(&self->on_end, XML_END);
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
    init_tables();
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
