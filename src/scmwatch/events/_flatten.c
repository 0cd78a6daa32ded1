/*
 * scmwatch.events._flatten: the EVTX reader's per-record work of normalize.py and
 * evtx_reader.py, in C. Three parts, each the exact twin of Python code that stays in the tree
 * (the tests compare them on every record of the shared corpora and on ~2,000 odd inputs; the
 * extension is optional, and SCMWATCH_PURE_PYTHON=1 switches it off, see scmwatch/native.py):
 *
 * 1. the flattener ``from_evtx_dict`` (= ``normalize.from_evtx_dict_py``): System attributes to
 *    top-level names, EventData and UserData to top level, with the field-name tables of
 *    normalize.py handed over once by ``configure``;
 * 2. the JSON parser ``from_evtx_json`` (= ``from_evtx_dict_py(orjson.loads(text))``): reads the
 *    record text once straight into the flat dict, without the nested dicts orjson builds only
 *    for the flattener to take apart; any text it is not sure to treat exactly the same goes to
 *    the Python function (``FALLBACK``);
 * 3. the record loop ``EvtxEvents`` (= ``evtx_reader.PyEvtxEvents``): builds the Event objects
 *    and honours the hunt's ReadGate, i.e. stops after System for records no rule wants.
 * 4. the NDJSON line loop ``NdjsonEvents`` (= ``json_reader._ndjson_bytes`` over ``_Sink.line``)
 *    for files of evtx_dump records or flat objects (``from_flat``'s twin), with the same gate.
 * 5. the two walks of ``ecs.from_ecs`` over every key of a Winlogbeat document, ``dotted``
 *    (= ``ecs._walk_py``) and ``event_data`` (= ``ecs._event_data_py``): with them in Python,
 *    reading Winlogbeat NDJSON ran at 0.12-0.14 x ``orjson.loads`` per line, 40 % of it these two
 *    (0.17-0.19 x with them in C); then its per-name loops ``pick`` (= ``ecs._pick_py``) and
 *    ``upper_guids`` (= ``ecs._upper_guids_py``) and the line scan ``suspicious``
 *    (= ``sanitize.suspicious_py``), with dotted paths cached: 0.19 -> 0.22-0.26 x.
 *
 * What each buys, measured on the shared attack corpus (277 .evtx files, 8,255 events) with
 * ``bench/read_throughput.py --c-parts`` (ratio to the raw evtx + orjson parse, same run, a
 * loaded 2-CPU machine): pure Python 0.43 (+17.6 us per event over the raw parse); with the
 * flattener 0.70 (+5.6 us); with the parser too 0.81 (+3.1 us); with the loop too 0.82
 * (+2.9 us). The loop's own share is small when every record is read; its gate is what counts
 * in a hunt: built-in pack over the same corpus, best of 6, 248 ms without the gate, 218 ms
 * with it.
 */
#define _GNU_SOURCE /* memmem (see contains_bytes) */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#include "_event.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static PyObject *SYSTEM_ATTRS = NULL; /* dict: element -> {attribute: name} */
static PyObject *CORE = NULL;         /* set of System names EventData may not overwrite */
static PyObject *TO_INT = NULL;       /* callable: text EventID -> int */
static PyObject *S_Channel, *S_Event, *S_System, *S_EventData, *S_UserData, *S_attributes, *S_text, *S_EventID,
    *S_Data, *S_space, *S_empty, *S_prefix;

/* evtx renders GUID-typed values as ``0CCE9243-69AE-11D9-BED3-505054503030``; Windows (and so
 * every Sigma rule) writes ``{0CCE9243-...}``. A top-level value of exactly that form (36
 * characters, upper-case hex, dashes at 8/13/18/23) gets the braces back:
 * ``normalize.brace_guids`` is the Python twin. */
static int is_bare_guid(PyObject *v) {
    if (!PyUnicode_CheckExact(v) || PyUnicode_GET_LENGTH(v) != 36 || PyUnicode_KIND(v) != PyUnicode_1BYTE_KIND)
        return 0;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(v);
    for (int i = 0; i < 36; i++) {
        Py_UCS1 ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-') return 0;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

/* ``value`` as the flat fields hold it: a bare GUID braced (new reference). */
static PyObject *braced_value(PyObject *value) {
    if (!is_bare_guid(value)) return Py_NewRef(value);
    /* built directly: PyUnicode_FromFormat parsed its format for every GUID, ~850
     * instructions each (64M of the NDJSON reader's 1,399M on the attack corpus x4) */
    PyObject *braced = PyUnicode_New(38, 127);
    if (braced == NULL) return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(braced);
    d[0] = '{';
    memcpy(d + 1, PyUnicode_1BYTE_DATA(value), 36);
    d[37] = '}';
    return braced;
}

/* out[key] = value, a bare GUID braced: what brace_guids would make of it afterwards. */
static int set_field(PyObject *out, PyObject *key, PyObject *value) {
    PyObject *v = braced_value(value);
    if (v == NULL) return -1;
    int rc = PyDict_SetItem(out, key, v);
    Py_DECREF(v);
    return rc;
}

/* out[SYSTEM_ATTRS[key][attr]] (or out["<key>_<attr>"]) = value: one attribute of a <System>
 * child. ``names`` is SYSTEM_ATTRS[key] or NULL. */
static int put_system_attr(PyObject *out, PyObject *names, PyObject *key, PyObject *attr, PyObject *value) {
    PyObject *name = NULL;
    if (names != NULL && PyDict_Check(names)) {
        name = PyDict_GetItemWithError(names, attr);
        if (name == NULL && PyErr_Occurred()) return -1;
    }
    if (name != NULL) return set_field(out, name, value);
    PyObject *joined = PyUnicode_FromFormat("%U_%U", key, attr);
    if (joined == NULL) return -1;
    int rc = set_field(out, joined, value);
    Py_DECREF(joined);
    return rc;
}

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
        if (put_system_attr(out, names, key, attr, attr_value) < 0) return -1;
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

/* What an EventData member's value becomes (new reference): its ``#text``; None for an empty
 * element or one with only attributes; else the value itself. */
static PyObject *data_value(PyObject *value) {
    if (!PyDict_CheckExact(value)) return Py_NewRef(value);
    PyObject *text = PyDict_GetItemWithError(value, S_text);
    if (text != NULL) return Py_NewRef(text);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyDict_GET_SIZE(value);
    if (n == 0) Py_RETURN_NONE;
    if (n == 1) {
        int has_attrs = PyDict_Contains(value, S_attributes);
        if (has_attrs < 0) return NULL;
        if (has_attrs) Py_RETURN_NONE;
    }
    return Py_NewRef(value);
}

/* EventID as an int whatever the source wrote (``normalize._int``). */
static int fix_event_id(PyObject *out) {
    PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
    if (eid == NULL) return PyErr_Occurred() ? -1 : 0;
    if (eid == Py_None || PyLong_CheckExact(eid)) return 0;
    PyObject *fixed = PyObject_CallOneArg(TO_INT, eid);
    if (fixed == NULL) return -1;
    int rc = PyDict_SetItem(out, S_EventID, fixed);
    Py_DECREF(fixed);
    return rc;
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
        value = data_value(value);
        if (value == NULL) return -1;
        Py_INCREF(key);
        if (PyUnicode_FindChar(key, ' ', 0, PyUnicode_GET_LENGTH(key), 1) >= 0) {
            Py_SETREF(key, PyUnicode_Replace(key, S_space, S_empty, -1));
            if (key == NULL) goto fail;
        }
        int in_out = PyDict_Contains(out, key);
        if (in_out < 0) goto fail;
        if (in_out) {
            int core = PySet_Contains(CORE, key);
            if (core < 0) goto fail;
            if (core) {
                Py_SETREF(key, PyUnicode_Concat(S_prefix, key));
                if (key == NULL) goto fail;
            }
        }
        int rc = PyDict_SetItem(out, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0) return -1;
        continue;
    fail:
        Py_XDECREF(key);
        Py_DECREF(value);
        return -1;
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

static int brace_guids(PyObject *out) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(out, &pos, &key, &value)) {
        if (!is_bare_guid(value)) continue;
        PyObject *braced = braced_value(value);
        if (braced == NULL) return -1;
        int rc = PyDict_SetItem(out, key, braced); /* an existing key: no resize while iterating */
        Py_DECREF(braced);
        if (rc < 0) return -1;
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
    if (PyErr_Occurred() || fix_event_id(out) < 0 || brace_guids(out) < 0) goto fail;
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * from_evtx_json: the record's JSON text straight to the flat fields dict.
 *
 * Why: ``orjson.loads`` builds the nested Event/System/EventData dicts only for the flattener
 * to take them apart again; together that was about two thirds of the time scmwatch adds to
 * the raw EVTX parse. This parser reads the text once and writes EventData fields straight
 * into the flat dict (System and UserData are small and go through the functions above, so
 * the semantics are shared). It handles the JSON that evtx writes; anything it is not sure
 * to treat exactly as ``from_evtx_dict(orjson.loads(text))`` does (floats, huge integers,
 * lone surrogates, EventData before System, a duplicate part, a protected System name inside
 * EventData, malformed text) is handed to that fallback instead, so the result is always
 * identical, errors included. Tests compare both on every record of the shared corpora.
 * ------------------------------------------------------------------------------------- */

static PyObject *FALLBACK = NULL; /* callable: text -> from_evtx_dict(orjson.loads(text)) */

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    /* a member went into the fields without set_field (flatten_data, flatten_user_data): the
     * finished fields need the brace_guids pass */
    int unbraced;
} Cursor;

/* NULL without an exception set means "not sure: use the fallback". */
#define GIVE_UP NULL
#define MAX_DEPTH 64

static inline void skip_ws(Cursor *c) {
    /* one comparison for the usual next byte (structure or a value, all above the space) */
    while (c->p < c->end && *c->p <= ' ' &&
           (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

/* Object keys repeat in every record: one cached, interned str per distinct short key saves
 * the allocation and hashing, and makes lookups by the rules' (interned) names identity hits. */
#define KEY_CACHE_SIZE 2048
#define KEY_CACHE_MAX_LEN 64
typedef struct KeySlot {
    uint64_t head, tail; /* the first and last eight bytes: most keys are compared by these */
    Py_ssize_t n;
    PyObject *key;
    /* key_cache: the slots of the two names that last followed this one, the latest first */
    struct KeySlot *next, *alt;
} KeySlot;
static KeySlot key_cache[KEY_CACHE_SIZE];
/* The slot of the key member_key gave last (NULL after a key that is not cached). */
static KeySlot *key_prev = NULL;

/* `probe` gets the fields a slot holding the text s[0:n] of a buffer that ends at `end` is
 * compared by (the first and last eight bytes, the length). */
static inline void probe_of(const unsigned char *s, Py_ssize_t n, const unsigned char *end, KeySlot *probe) {
    uint64_t a = 0, b = 0;
    if (n >= 8) {
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    } else if (end - s >= 8) {
        /* A short text (most keys: "Image", "User", "Task"; values: "0x0", "-") as one 8-byte
         * load with the bytes past it masked off, the same `a` as copying its n bytes. Copying
         * them and reading `a` whole stalled on store forwarding: 8 % of parse_string's perf
         * samples in the NDJSON hunt sat on the load after that copy. */
        memcpy(&a, s, 8);
        a &= n ? ~0ULL >> (64 - 8 * n) : 0;
#endif
    } else {
        memcpy(&a, s, (size_t)n);
    }
    probe->head = a;
    probe->tail = b;
    probe->n = n;
}

/* The slot of a cache of `size` slots (a power of two) for the text s[0:n]; `probe` as probe_of. */
static inline KeySlot *slot_for(KeySlot *table, size_t size, const unsigned char *s, Py_ssize_t n,
                                const unsigned char *end, KeySlot *probe) {
    probe_of(s, n, end, probe);
    uint64_t h = (probe->head * 0x9E3779B97F4A7C15ULL) ^ (probe->tail * 0xC2B2AE3D27D4EB4FULL) ^ (uint64_t)n;
    h ^= h >> 29;
    return &table[(h * 0x9E3779B97F4A7C15ULL >> 40) & (size - 1)];
}

/* The text a slot stands for: its str, or the inside of the braces the value cache added. */
static inline const Py_UCS1 *slot_text(const KeySlot *slot) {
    return PyUnicode_1BYTE_DATA(slot->key) + (PyUnicode_GET_LENGTH(slot->key) != slot->n);
}

/* Whether `slot` holds the text s[0:n] that `probe` was made from. */
static inline int slot_holds(const KeySlot *slot, const KeySlot *probe, const unsigned char *s) {
    return slot->key != NULL && slot->n == probe->n && slot->head == probe->head &&
           slot->tail == probe->tail &&
           (probe->n <= 16 || memcmp(s + 8, slot_text(slot) + 8, probe->n - 16) == 0);
}

/* Put `obj` (a reference the slot takes) in `slot` for the text `probe` was made from. */
static inline void slot_fill(KeySlot *slot, const KeySlot *probe, PyObject *obj) {
    Py_XSETREF(slot->key, obj);
    slot->head = probe->head;
    slot->tail = probe->tail;
    slot->n = probe->n;
}

static PyObject *cached_key(const unsigned char *s, Py_ssize_t n, const unsigned char *end) {
    KeySlot probe;
    KeySlot *slot = slot_for(key_cache, KEY_CACHE_SIZE, s, n, end, &probe);
    if (slot_holds(slot, &probe, s)) {
        key_prev = slot;
        return Py_NewRef(slot->key);
    }
    PyObject *key = PyUnicode_New(n, 127);
    if (key == NULL) return NULL;
    memcpy(PyUnicode_1BYTE_DATA(key), s, n);
    PyUnicode_InternInPlace(&key);
    slot_fill(slot, &probe, Py_NewRef(key));
    key_prev = slot;
    return key;
}

static int hex4(const unsigned char *s, unsigned int *out) {
    unsigned int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char ch = s[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= ch - '0';
        else if (ch >= 'a' && ch <= 'f') v |= ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F') v |= ch - 'A' + 10;
        else return -1;
    }
    *out = v;
    return 0;
}

/* Scanning strings 8 bytes at a time: the first byte that is a quote, a backslash, a
 * control character or non-ASCII needs a closer look; everything else is copied as is. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline uint64_t special_bytes(uint64_t w) {
    uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | (w - ONES * 0x20) | w) & HIGHS;
}

/* Offset of the first byte at or after s that is '"', '\\', < 0x20 or >= 0x80.
 *
 * The lowest byte special_bytes flags is always a special one (a borrow only runs upwards, from
 * a byte that is itself flagged), so on a little-endian machine its position is the count of
 * trailing zero bits / 8: the word that holds the end of a string gives the end at once. Most
 * strings of a record are short (names, numbers as text, GUIDs), and finding their end byte by
 * byte after the word was 118M of the 1,399M instructions the NDJSON reader took for the attack
 * corpus x4 (callgrind, all SigmaHQ hunt pass). */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FIRST_FLAGGED(m) ((unsigned)__builtin_ctzll(m) >> 3)
#endif
static inline const unsigned char *scan_plain(const unsigned char *s, const unsigned char *end) {
#if defined(__SSE2__) && defined(FIRST_FLAGGED)
    /* 16 bytes per step: a signed byte below 0x20 is a control character or (negative) one of
     * 0x80-0xff, so one comparison finds both (the reader's scan 84M -> ~35M instructions). */
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (end - s >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)s);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                   _mm_cmplt_epi8(v, space));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        if (mask) return s + __builtin_ctz(mask);
        s += 16;
    }
#endif
    while (end - s >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        uint64_t m = special_bytes(w);
#ifdef FIRST_FLAGGED
        if (m) return s + FIRST_FLAGGED(m);
#else
        if (m) break;
#endif
        s += 8;
    }
    while (s < end && *s != '"' && *s != '\\' && *s >= 0x20 && *s < 0x80) s++;
    return s;
}

/* One reusable buffer for decoding escapes (the GIL serialises callers). */
static char *escape_buf = NULL;
static Py_ssize_t escape_cap = 0;

/* The rest of a string that has escapes, decoded into UTF-8 in one pass, then one
 * PyUnicode_DecodeUTF8. ``start`` is the first byte after the opening quote. */
static PyObject *escaped_string(Cursor *c, const unsigned char *start) {
    Py_ssize_t need = c->end - start; /* the decoded text is never longer than its source */
    if (need > escape_cap) {
        char *grown = PyMem_Realloc(escape_buf, need + 256);
        if (grown == NULL) return PyErr_NoMemory();
        escape_buf = grown;
        escape_cap = need + 256;
    }
    char *o = escape_buf;
    const unsigned char *s = start, *end = c->end;
    while (1) {
        const unsigned char *run = s;
        s = scan_plain(s, end);
        memcpy(o, run, s - run);
        o += s - run;
        if (s >= end) return GIVE_UP;
        unsigned char ch = *s;
        if (ch == '"') break;
        if (ch < 0x20) return GIVE_UP;
        if (ch >= 0x80) {
            *o++ = (char)ch;
            s++;
            continue;
        }
        /* a backslash */
        if (end - s < 2) return GIVE_UP;
        s++;
        switch (*s) {
        case '"': *o++ = '"'; s++; break;
        case '\\': *o++ = '\\'; s++; break;
        case '/': *o++ = '/'; s++; break;
        case 'b': *o++ = '\b'; s++; break;
        case 'f': *o++ = '\f'; s++; break;
        case 'n': *o++ = '\n'; s++; break;
        case 'r': *o++ = '\r'; s++; break;
        case 't': *o++ = '\t'; s++; break;
        case 'u': {
            unsigned int cp, lo;
            if (end - s < 5 || hex4(s + 1, &cp) < 0) return GIVE_UP;
            s += 5;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return GIVE_UP; /* lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4(s + 2, &lo) < 0) return GIVE_UP;
                if (lo < 0xDC00 || lo > 0xDFFF) return GIVE_UP;
                s += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: return GIVE_UP;
        }
    }
    PyObject *result = PyUnicode_DecodeUTF8(escape_buf, o - escape_buf, NULL);
    if (result == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
        return NULL;
    }
    c->p = s + 1;
    return result;
}

static PyObject *parse_string(Cursor *c, int is_key) {
    const unsigned char *start = ++c->p; /* past the opening quote */
    const unsigned char *q = scan_plain(start, c->end);
    int high = 0;
    while (q < c->end && *q >= 0x80) { /* non-ASCII text: keep scanning, remember to decode */
        high = 1;
        q = scan_plain(q + 1, c->end);
    }
    if (q >= c->end || *q < 0x20) return GIVE_UP;
    if (*q == '\\') return escaped_string(c, start);
    Py_ssize_t n = q - start;
    c->p = q + 1;
    if (!high) {
        if (is_key && n <= KEY_CACHE_MAX_LEN) return cached_key(start, n, c->end);
        PyObject *s = PyUnicode_New(n, 127);
        if (s != NULL) memcpy(PyUnicode_1BYTE_DATA(s), start, n);
        return s;
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)start, n, NULL);
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
    return s;
}

static PyObject *parse_number(Cursor *c) {
    const unsigned char *s = c->p;
    int negative = 0;
    if (*s == '-') {
        negative = 1;
        s++;
    }
    const unsigned char *digits = s;
    unsigned long long v = 0;
    while (s < c->end && *s >= '0' && *s <= '9') {
        unsigned int d = *s - '0';
        if (v > (ULLONG_MAX - d) / 10) return GIVE_UP; /* beyond 64 bits: orjson makes a float */
        v = v * 10 + d;
        s++;
    }
    if (s == digits || (*digits == '0' && s - digits > 1)) return GIVE_UP;
    if (s < c->end && (*s == '.' || *s == 'e' || *s == 'E')) return GIVE_UP; /* floats: orjson */
    c->p = s;
    if (!negative) return PyLong_FromUnsignedLongLong(v);
    if (v > (unsigned long long)LLONG_MAX + 1) return GIVE_UP;
    return PyLong_FromLongLong(v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v);
}

static PyObject *parse_value(Cursor *c, int depth);

/* The members of an object (or the items of an array) are walked the same way everywhere:
 *   int more = open_container(c, '}');
 *   while (more > 0) { key = member_key(c); ...value...; more = next_item(c, '}'); }
 *   if (more < 0) -> not sure: the fallback
 */

/* Past the opening bracket: 1 when there are members, 0 when it is empty (and consumed). */
static int open_container(Cursor *c, unsigned char close) {
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return 0;
    }
    return 1;
}

/* Whether the key cache's ``slot`` (or NULL) holds the name whose text starts at ``s`` (after its
 * opening quote) and ends at the quote after it. */
static inline int key_at(const KeySlot *slot, const unsigned char *s, const unsigned char *end) {
    if (slot == NULL || slot->key == NULL) return 0;
    Py_ssize_t n = slot->n;
    if (end - s <= n || s[n] != '"') return 0;
    KeySlot probe;
    probe_of(s, n, end, &probe);
    return slot_holds(slot, &probe, s);
}

/* ``"name" :`` -- returns the name (new reference), the cursor on the value; NULL otherwise.
 *
 * Records of a log repeat their member names in the same order, so the two names that last
 * followed the previous one are tried first: a cached name has no escape, quote or non-ASCII
 * byte, so its bytes at the cursor followed by a quote are that string, without the string scan,
 * hash and slot lookup of cached_key. A miss (another shape of record) costs the comparisons and
 * relinks. Callgrind, NDJSON reading of the attack corpus (40 names per record, 86 % guessed):
 * 168 -> 113 instructions per name, ~22M of the reader's ~250M instructions per pass. */
static PyObject *member_key(Cursor *c) {
    if (c->p >= c->end || *c->p != '"') return GIVE_UP;
    PyObject *key = NULL;
    KeySlot *prev = key_prev;
    const unsigned char *s = c->p + 1;
    if (prev != NULL) {
        KeySlot *guess = key_at(prev->next, s, c->end) ? prev->next
                       : key_at(prev->alt, s, c->end) ? prev->alt : NULL;
        if (guess != NULL) {
            if (guess == prev->alt) { /* the latest first */
                prev->alt = prev->next;
                prev->next = guess;
            }
            key = Py_NewRef(guess->key);
            c->p = s + guess->n + 1;
            key_prev = guess;
        }
    }
    if (key == NULL) {
        key_prev = NULL; /* cached_key sets it to the name's slot */
        key = parse_string(c, 1);
        if (key == NULL) return NULL;
        if (prev != NULL && key_prev != NULL) {
            prev->alt = prev->next;
            prev->next = key_prev;
        }
    }
    skip_ws(c);
    if (c->p >= c->end || *c->p != ':') {
        Py_DECREF(key);
        return GIVE_UP;
    }
    c->p++;
    skip_ws(c);
    return key;
}

/* After a member: 1 for ``,`` (another follows), 0 for the closing bracket, -1 otherwise. */
static int next_item(Cursor *c, unsigned char close) {
    skip_ws(c);
    if (c->p >= c->end) return -1;
    if (*c->p == ',') {
        c->p++;
        skip_ws(c);
        return 1;
    }
    if (*c->p == close) {
        c->p++;
        return 0;
    }
    return -1;
}

/* Parse a value only to step over it. */
static int skip_value(Cursor *c, int depth) {
    PyObject *value = parse_value(c, depth);
    if (value == NULL) return -1;
    Py_DECREF(value);
    return 0;
}

static PyObject *parse_object(Cursor *c, int depth) {
    if (depth > MAX_DEPTH) return GIVE_UP;
    PyObject *dict = PyDict_New();
    if (dict == NULL) return NULL;
    int more = open_container(c, '}');
    while (more > 0) {
        PyObject *key = member_key(c);
        if (key == NULL) goto fail;
        PyObject *value = parse_value(c, depth + 1);
        int rc = value == NULL ? -1 : PyDict_SetItem(dict, key, value);
        Py_DECREF(key);
        Py_XDECREF(value);
        if (rc < 0) goto fail;
        more = next_item(c, '}');
    }
    if (more == 0) return dict;
fail:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *parse_array(Cursor *c, int depth) {
    if (depth > MAX_DEPTH) return GIVE_UP;
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    int more = open_container(c, ']');
    while (more > 0) {
        PyObject *value = parse_value(c, depth + 1);
        if (value == NULL) goto fail;
        int rc = PyList_Append(list, value);
        Py_DECREF(value);
        if (rc < 0) goto fail;
        more = next_item(c, ']');
    }
    if (more == 0) return list;
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *parse_value(Cursor *c, int depth) {
    if (c->p >= c->end) return GIVE_UP;
    switch (*c->p) {
    case '"': return parse_string(c, 0);
    case '{': return parse_object(c, depth);
    case '[': return parse_array(c, depth);
    case 'n':
        if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) { c->p += 4; Py_RETURN_NONE; }
        return GIVE_UP;
    case 't':
        if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) { c->p += 4; Py_RETURN_TRUE; }
        return GIVE_UP;
    case 'f':
        if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) { c->p += 5; Py_RETURN_FALSE; }
        return GIVE_UP;
    default:
        if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9')) return parse_number(c);
        return GIVE_UP;
    }
}

/* A System or EventData member's value; a plain short string through the value cache. Values
 * repeat record after record (Channel, Computer, Keywords, Provider's Name and Guid; EventData's
 * "-", "0x0", SIDs, images): one str per distinct text, a bare GUID braced once (these values
 * all become fields, see set_field), instead of a new str (and a braced copy) per record; equal
 * objects also hash once. Texts that do not repeat (TimeCreated, command lines) only take over
 * their slot. Callgrind, attack corpus NDJSON x4, all SigmaHQ, two hunt passes: System values
 * 5,593M -> 5,462M instructions, EventData's too 5,259M -> 5,142M. */
#define VALUE_CACHE_SIZE 1024
static KeySlot value_cache[VALUE_CACHE_SIZE];

static PyObject *cached_value(Cursor *c, int depth) {
    if (c->p >= c->end || *c->p != '"') return parse_value(c, depth);
    const unsigned char *s = c->p + 1;
    const unsigned char *q = scan_plain(s, c->end);
    Py_ssize_t n = q - s;
    if (q >= c->end || *q != '"' || n > KEY_CACHE_MAX_LEN) return parse_value(c, depth);
    KeySlot probe;
    KeySlot *slot = slot_for(value_cache, VALUE_CACHE_SIZE, s, n, c->end, &probe);
    c->p = q + 1;
    if (slot_holds(slot, &probe, s)) return Py_NewRef(slot->key);
    PyObject *text = PyUnicode_New(n, 127);
    if (text == NULL) return NULL;
    memcpy(PyUnicode_1BYTE_DATA(text), s, n);
    PyObject *value = braced_value(text);
    Py_DECREF(text);
    if (value == NULL) return NULL;
    slot_fill(slot, &probe, Py_NewRef(value));
    return value;
}

/* Compare a parsed key with one of our interned names (usually the same object). */
static inline int key_is(PyObject *key, PyObject *name) {
    return key == name || (PyUnicode_GET_LENGTH(key) == PyUnicode_GET_LENGTH(name) &&
                           PyUnicode_Compare(key, name) == 0);
}

/* EventData names known to be plain (no space, no protected System name), each held by a
 * reference so that its address cannot be reused by another str while it is here; emptied when
 * configure() sets CORE. Names repeat in every record of a log, and the two tests cost ~180
 * instructions per member (66M of the NDJSON reader's 1,399M on the attack corpus x4, callgrind):
 * one pointer comparison now answers for a name seen before. */
#define PLAIN_NAMES 512
static PyObject *plain_names[PLAIN_NAMES];

static inline PyObject **plain_slot(PyObject *key) {
    return &plain_names[((uintptr_t)key >> 4) & (PLAIN_NAMES - 1)];
}

static void plain_names_clear(void) {
    for (int i = 0; i < PLAIN_NAMES; i++) Py_CLEAR(plain_names[i]);
}

/* 1 when EventData's ``key`` needs the fallback (a space, or a protected System name), 0 when
 * not, -1 on error. */
static int unsure_name(PyObject *key) {
    PyObject **slot = plain_slot(key);
    if (*slot == key) return 0;
    Py_ssize_t space = PyUnicode_FindChar(key, ' ', 0, PyUnicode_GET_LENGTH(key), 1);
    if (space == -2) return -1;
    if (space >= 0) return 1;
    int core = PySet_Contains(CORE, key);
    if (core != 0) return core;
    Py_XSETREF(*slot, Py_NewRef(key));
    return 0;
}

/* EventData's members straight into ``out``: flatten_data's rules, without the dict. */
static int stream_event_data(Cursor *c, PyObject *out) {
    int more = open_container(c, '}');
    while (more > 0) {
        PyObject *key = member_key(c);
        if (key == NULL) return -1;
        PyObject *value = cached_value(c, 3);
        if (value == NULL) {
            Py_DECREF(key);
            return -1;
        }
        if (key_is(key, S_attributes)) {
            Py_DECREF(key);
            Py_DECREF(value);
        } else {
            Py_SETREF(value, data_value(value));
            /* "Threat Name" becomes "ThreatName": with a repeated name in the same object,
             * which value survives depends on the dict orjson builds first. A protected
             * System name is renamed or not depending on the whole dict too. Both are rare
             * (Defender events; odd exports): the fallback does them exactly. */
            int unsure = value == NULL || unsure_name(key) != 0;
            int rc = unsure ? -1 : set_field(out, key, value);
            Py_DECREF(key);
            Py_XDECREF(value);
            if (rc < 0) return -1;
        }
        more = next_item(c, '}');
    }
    return more;
}

/* The field an attribute of a System child becomes (borrowed): SYSTEM_ATTRS[key][attr], or
 * "<key>_<attr>" (put_system_attr's names), remembered per (child, attribute) pair of objects.
 * Both are cached keys, the same objects record after record, each held by its slot so that
 * its address cannot be another str's while it is there; emptied when configure() sets
 * SYSTEM_ATTRS. The two dict lookups cost ~230 instructions per attribute, four to six
 * attributes a record (Provider's Name and Guid, TimeCreated, Execution, Security). */
#define ATTR_FIELDS 256
typedef struct {
    PyObject *key, *attr, *name;
} AttrSlot;
static AttrSlot attr_fields[ATTR_FIELDS];

static void attr_fields_clear(void) {
    for (int i = 0; i < ATTR_FIELDS; i++) {
        Py_CLEAR(attr_fields[i].key);
        Py_CLEAR(attr_fields[i].attr);
        Py_CLEAR(attr_fields[i].name);
    }
}

static PyObject *attr_field(PyObject *key, PyObject *attr) {
    AttrSlot *slot = &attr_fields[(((uintptr_t)key >> 4) ^ ((uintptr_t)attr >> 3)) & (ATTR_FIELDS - 1)];
    if (slot->key == key && slot->attr == attr) return slot->name;
    PyObject *names = PyDict_GetItemWithError(SYSTEM_ATTRS, key);
    if (names == NULL && PyErr_Occurred()) return NULL;
    PyObject *name = NULL;
    if (names != NULL && PyDict_Check(names)) {
        name = PyDict_GetItemWithError(names, attr);
        if (name == NULL && PyErr_Occurred()) return NULL;
    }
    name = name != NULL ? Py_NewRef(name) : PyUnicode_FromFormat("%U_%U", key, attr);
    if (name == NULL) return NULL;
    Py_XSETREF(slot->key, Py_NewRef(key));
    Py_XSETREF(slot->attr, Py_NewRef(attr));
    Py_XSETREF(slot->name, name);
    return name;
}

/* System's members straight into ``out`` (flatten_system's rules without building the System
 * dict and its children's dicts). Plain members are set in order; a member that is an object
 * gets a placeholder at its position and is finished after the last member, as
 * flatten_system's second pass does: its ``#text`` replaces it, or it is removed when it only
 * has attributes, and its attributes are added under their SYSTEM_ATTRS names. */
#define MAX_PENDING 16
#define MAX_ATTRS 8
typedef struct {
    PyObject *key, *text;
    int has_attrs_key, nattrs;
    PyObject *names[MAX_ATTRS], *values[MAX_ATTRS];
} Pending;

static void pending_clear(Pending *p) {
    Py_XDECREF(p->key);
    Py_XDECREF(p->text);
    for (int i = 0; i < p->nattrs; i++) {
        Py_DECREF(p->names[i]);
        Py_DECREF(p->values[i]);
    }
}

/* The members of a System child's ``#attributes`` object into ``p``. */
static int system_attributes(Cursor *c, Pending *p) {
    int more = open_container(c, '}');
    while (more > 0) {
        if (p->nattrs >= MAX_ATTRS) return -1;
        PyObject *name = member_key(c);
        if (name == NULL) return -1;
        PyObject *value = cached_value(c, 4);
        int duplicate = 0; /* a repeated attribute follows the dict's last-wins rule: fallback */
        for (int i = 0; i < p->nattrs && !duplicate; i++) duplicate = key_is(p->names[i], name);
        if (value == NULL || duplicate) {
            Py_DECREF(name);
            Py_XDECREF(value);
            return -1;
        }
        p->names[p->nattrs] = name;
        p->values[p->nattrs] = value;
        p->nattrs++;
        more = next_item(c, '}');
    }
    return more;
}

/* ``{"#attributes": {...}, "#text": ...}`` of one System child into ``p``. */
static int system_child(Cursor *c, Pending *p) {
    int more = open_container(c, '}');
    while (more > 0) {
        PyObject *key = member_key(c);
        if (key == NULL) return -1;
        int is_attrs = key_is(key, S_attributes), is_text = !is_attrs && key_is(key, S_text);
        Py_DECREF(key);
        if (is_attrs) {
            if (p->has_attrs_key) return -1; /* twice: the dict's last-wins rule, fallback */
            p->has_attrs_key = 1;
            if (c->p < c->end && *c->p == '{') {
                if (system_attributes(c, p) < 0) return -1;
            } else {
                /* null is no attributes; anything else: let the fallback decide */
                if (c->end - c->p < 4 || memcmp(c->p, "null", 4) != 0) return -1;
                c->p += 4;
            }
        } else if (is_text) {
            if (p->text != NULL) return -1;
            p->text = cached_value(c, 4);
            if (p->text == NULL) return -1;
        } else if (skip_value(c, 4) < 0) { /* ignored by flatten_system too */
            return -1;
        }
        more = next_item(c, '}');
    }
    return more;
}

static int stream_system(Cursor *c, PyObject *out) {
    Pending pending[MAX_PENDING];
    int npending = 0, rc = -1;
    Py_ssize_t members = 0, absent = 0;
    int more = open_container(c, '}');
    while (more > 0) {
        PyObject *key = member_key(c);
        if (key == NULL) goto done;
        members++;
        if (c->p < c->end && *c->p == '{') {
            if (npending >= MAX_PENDING) {
                Py_DECREF(key);
                goto done;
            }
            Pending *p = &pending[npending++];
            memset(p, 0, sizeof(*p));
            p->key = key;
            if (system_child(c, p) < 0) goto done;
            /* A child with attributes and no #text leaves no member (only its attributes, added
             * after the last member), so it gets no placeholder to delete again: Provider,
             * TimeCreated, Execution and Security of every record, ~270 instructions each. */
            if (p->text == NULL && p->nattrs > 0) {
                absent++;
            } else if (PyDict_SetItem(out, key, Py_None) < 0) { /* holds the position */
                goto done;
            }
        } else {
            PyObject *value = cached_value(c, 3);
            int set = value == NULL ? -1 : set_field(out, key, value);
            Py_DECREF(key);
            Py_XDECREF(value);
            if (set < 0) goto done;
        }
        more = next_item(c, '}');
    }
    /* A repeated member would follow the dict's last-wins rule: leave that to the fallback. A
     * child without a placeholder repeats a member when its name is in ``out`` or is another
     * such child's. */
    if (more < 0 || PyDict_GET_SIZE(out) != members - absent) goto done;
    for (int k = 0; absent && k < npending; k++) {
        Pending *p = &pending[k];
        if (p->text != NULL || p->nattrs == 0) continue;
        int in = PyDict_Contains(out, p->key);
        if (in != 0) goto done;
        for (int j = 0; j < k; j++)
            if (pending[j].text == NULL && pending[j].nattrs > 0 && key_is(pending[j].key, p->key)) goto done;
    }
    for (int k = 0; k < npending; k++) {
        Pending *p = &pending[k];
        if (p->text != NULL) {
            if (set_field(out, p->key, p->text) < 0) goto done;
        } else if (p->nattrs > 0) {
            /* no placeholder; but an earlier child's attribute may have taken the name, and
             * the placeholder's removal removed that too */
            int in = PyDict_Contains(out, p->key);
            if (in < 0 || (in && PyDict_DelItem(out, p->key) < 0)) goto done;
        } else {
            continue; /* stays None */
        }
        for (int i = 0; i < p->nattrs; i++) {
            PyObject *name = attr_field(p->key, p->names[i]);
            if (name == NULL || set_field(out, name, p->values[i]) < 0) goto done;
        }
    }
    rc = 0;
done:
    for (int k = 0; k < npending; k++) pending_clear(&pending[k]);
    return rc;
}

/* A reader's gate: ``want(channel, event_id) -> bool`` asked once per distinct pair (the
 * answers are kept in ``decisions``). When the answer is no, the record is not parsed past
 * its System part and not returned: ``hunt`` uses this for events no rule and no
 * correlation can see. */
typedef struct {
    PyObject *want;      /* callable, or NULL for no gate */
    PyObject *decisions; /* dict: (Channel, EventID) -> True/False */
    int strict;          /* NDJSON: a text EventID is the Python path's to report, never skipped */
    /* The last pair answered from ``decisions``: its Channel str (held, so that no other str
     * takes its address), its int EventID and the answer. Records of a log mostly repeat the
     * pair before them, and the value cache gives a repeated Channel as the same str: the tuple
     * and the dict lookup for it were ~890 instructions per NDJSON record (callgrind, attack
     * corpus x4, all SigmaHQ). */
    PyObject *last_channel;
    long long last_eid;
    int last_answer;
} Gate;

#define SKIP_RECORD (-2)

/* Is ``needle`` in ``hay``? memmem is in glibc, musl, the BSDs and macOS but not in MSVC's C
 * library: there (or with -DSCMWATCH_NO_MEMMEM, which tests/test_c_extensions.py builds to
 * check this path) a memchr for the first byte and a memcmp do the same. It runs only on the
 * rest of a record the gate turned away, so the plain search costs nothing measurable. */
#if defined(_MSC_VER) || defined(SCMWATCH_NO_MEMMEM)
static int contains_bytes(const unsigned char *hay, size_t n, const char *needle, size_t m) {
    if (m == 0) return 1;
    const unsigned char *end = hay + n;
    while ((size_t)(end - hay) >= m) {
        const unsigned char *p = memchr(hay, (unsigned char)needle[0], (size_t)(end - hay) - m + 1);
        if (p == NULL) return 0;
        if (memcmp(p, needle, m) == 0) return 1;
        hay = p + 1;
    }
    return 0;
}
#else
static int contains_bytes(const unsigned char *hay, size_t n, const char *needle, size_t m) {
    return memmem(hay, n, needle, m) != NULL;
}
#endif

/* want(channel, eid), asked once per pair: 1 to go on, 0 to skip the record, -1 on error. */
static int gate_decides(Gate *gate, PyObject *channel, PyObject *eid) {
    long long id = 0;
    int overflow = 1;
    if (channel != NULL && PyUnicode_CheckExact(channel) && eid != NULL && PyLong_CheckExact(eid)) {
        id = PyLong_AsLongLongAndOverflow(eid, &overflow);
        if (!overflow && channel == gate->last_channel && id == gate->last_eid) return gate->last_answer;
    }
    PyObject *key = PyTuple_Pack(2, channel ? channel : Py_None, eid ? eid : Py_None);
    if (key == NULL) return -1;
    PyObject *answer = PyDict_GetItemWithError(gate->decisions, key);
    if (answer == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(key);
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) return -1;
            PyErr_Clear(); /* an unhashable Channel/EventID: read the record whole */
            return 1;
        }
        PyObject *got = PyObject_Call(gate->want, key, NULL);
        if (got == NULL) { Py_DECREF(key); return -1; }
        int truth = PyObject_IsTrue(got);
        Py_DECREF(got);
        if (truth < 0 || PyDict_SetItem(gate->decisions, key, truth ? Py_True : Py_False) < 0) {
            Py_DECREF(key);
            return -1;
        }
        answer = truth ? Py_True : Py_False;
    }
    Py_DECREF(key);
    if (!overflow) {
        Py_XSETREF(gate->last_channel, Py_NewRef(channel));
        gate->last_eid = id;
        gate->last_answer = answer == Py_True;
    }
    return answer == Py_True;
}

/* After System: 1 to go on, 0 to skip the record, -1 on error. ``rest`` is the text after
 * System: a record with UserData is always read whole (UserData may set any name). */
static int gate_allows(Gate *gate, PyObject *out, const unsigned char *rest, const unsigned char *end) {
    if (fix_event_id(out) < 0) return -1; /* the key is what the finished event will hold */
    PyObject *channel = PyDict_GetItemWithError(out, S_Channel);
    if (channel == NULL && PyErr_Occurred()) return -1;
    PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
    if (eid == NULL && PyErr_Occurred()) return -1;
    if (gate->strict && eid != NULL && PyUnicode_Check(eid)) return -1; /* not sure: the caller's path */
    int go = gate_decides(gate, channel, eid);
    if (go != 0) return go;
    static const char user_data[] = "\"UserData\"";
    if (end > rest && contains_bytes(rest, (size_t)(end - rest), user_data, sizeof(user_data) - 1)) return 1;
    return 0;
}

/* The Event object: System, EventData, UserData in flatten order. Returns 0, SKIP_RECORD, or
 * -1 (check PyErr_Occurred: none set means "use the fallback"). */
static int parse_event(Cursor *c, PyObject *out, Gate *gate, int *parts) {
    int system_done = 0, data_done = 0;
    PyObject *user = NULL;
    int more = open_container(c, '}');
    while (more > 0) {
        PyObject *key = member_key(c);
        if (key == NULL) goto fail;
        int is_data = key_is(key, S_EventData), is_system = key_is(key, S_System);
        int is_user = key_is(key, S_UserData);
        Py_DECREF(key);
        int object = c->p < c->end && *c->p == '{';
        if (is_data) {
            if (data_done) goto fail;
            data_done = 1;
            if (object) {
                if (stream_event_data(c, out) < 0) goto fail;
            } else {
                PyObject *data = parse_value(c, 2);
                c->unbraced = 1;
                int rc = data == NULL ? -1 : (data == Py_None ? 0 : flatten_data(data, out));
                Py_XDECREF(data);
                if (rc < 0) goto fail;
            }
        } else if (is_system) {
            if (system_done || data_done) goto fail; /* twice, or after EventData: fallback */
            system_done = 1;
            if (!object) {
                if (skip_value(c, 2) < 0) goto fail; /* not an object: ignored */
            } else {
                if (stream_system(c, out) < 0) goto fail;
                int go = gate == NULL || gate->want == NULL ? 1 : gate_allows(gate, out, c->p, c->end);
                if (go < 0) goto fail;
                if (!go) {
                    Py_XDECREF(user);
                    return SKIP_RECORD;
                }
            }
        } else if (is_user) {
            if (user != NULL) goto fail;
            user = parse_value(c, 2);
            if (user == NULL) goto fail;
        } else if (skip_value(c, 2) < 0) {
            goto fail;
        }
        more = next_item(c, '}');
    }
    if (more < 0) goto fail;
    *parts = system_done || data_done;
    if (user != NULL) {
        c->unbraced = 1;
        int rc = user == Py_None ? 0 : flatten_user_data(user, out);
        Py_DECREF(user);
        return rc;
    }
    return 0;
fail:
    Py_XDECREF(user);
    return -1;
}

static PyObject *fallback(PyObject *text) {
    if (PyErr_Occurred()) return NULL;
    return PyObject_CallOneArg(FALLBACK, text);
}

/* One record's text to its flat fields. Returns the fields, Py_None (a JSON object without an
 * Event member), Py_Ellipsis (skipped by the gate; never a parse result), or NULL: with an
 * exception set an error, without one "not sure" (the caller takes its exact path).
 * ``ndjson``: also not sure unless the object is what ``normalize.shape_of`` calls ``evtx``
 * (an Event object with System or EventData) and its EventID is not text (the JSON reader
 * reports those). */
static PyObject *parse_text(const unsigned char *data, Py_ssize_t size, Gate *gate, int ndjson) {
    Cursor cur = {data, data + size};
    Cursor *c = &cur;
    PyObject *out = NULL;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{') return GIVE_UP;
    int more = open_container(c, '}');
    while (more > 0) {
        PyObject *key = member_key(c);
        if (key == NULL) goto give_up;
        int is_event = key_is(key, S_Event);
        Py_DECREF(key);
        if (is_event && c->p < c->end && *c->p == '{') {
            if (out != NULL) goto give_up; /* Event twice */
            out = _PyDict_NewPresized(24);
            if (out == NULL) return NULL;
            int parts = 0;
            int rc = parse_event(c, out, gate, &parts);
            if (rc == SKIP_RECORD) {
                Py_DECREF(out);
                return Py_NewRef(Py_Ellipsis);
            }
            if (rc < 0 || (ndjson && !parts)) goto give_up;
        } else {
            if (is_event) goto give_up; /* an Event that is no object: the fallback says None */
            if (skip_value(c, 1) < 0) goto give_up;
        }
        more = next_item(c, '}');
    }
    skip_ws(c);
    if (more < 0 || c->p != c->end) goto give_up;
    if (out == NULL) Py_RETURN_NONE;
    /* streamed members were braced as they were set (set_field): the pass over every value
     * cost ~4 % of an NDJSON hunt's instructions (callgrind, attack corpus x4, all SigmaHQ) */
    if (fix_event_id(out) < 0 || (c->unbraced && brace_guids(out) < 0)) goto give_up;
    if (ndjson) {
        PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
        if (eid != NULL && PyUnicode_Check(eid)) goto give_up;
        if (PyErr_Occurred()) goto give_up;
    }
    return out;
give_up:
    Py_XDECREF(out);
    return GIVE_UP;
}

/* Py_Ellipsis stands for "skipped by the gate" (never a parse result). */
static PyObject *parse_json(PyObject *text, Gate *gate) {
    if (FALLBACK == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_flatten.configure() was not called");
        return NULL;
    }
    const char *data;
    Py_ssize_t size;
    if (PyUnicode_Check(text)) {
        data = PyUnicode_AsUTF8AndSize(text, &size);
        if (data == NULL) {
            PyErr_Clear(); /* e.g. a lone surrogate: the fallback raises its own error */
            return fallback(text);
        }
    } else if (PyBytes_Check(text)) {
        data = PyBytes_AS_STRING(text);
        size = PyBytes_GET_SIZE(text);
    } else {
        return fallback(text);
    }
    PyObject *out = parse_text((const unsigned char *)data, size, gate, 0);
    return out != NULL ? out : fallback(text);
}

static PyObject *from_evtx_json(PyObject *self, PyObject *text) { return parse_json(text, NULL); }

/* ---------------------------------------------------------------------------------------
 * EvtxEvents: records_json() records -> Event objects, the EVTX reader's inner loop in C.
 *
 * Why: after parsing, the Python loop around it (next record, two subscripts, the call, the
 * Event dataclass's __init__, the counter) was the largest cost left per event. This iterator
 * does exactly that loop. Event instances are made the way ``Event(fields, source, record_id,
 * "evtx")`` makes them: Event is a slots dataclass, so its slots are plain object pointers at
 * offsets its member descriptors give (read once by ``configure``); if they cannot be read,
 * the class is called instead. Errors of the parser propagate to the Python reader, which
 * counts them and iterates on; records without an Event element are counted here.
 * ------------------------------------------------------------------------------------- */

static EventClass EVENT = {NULL, -1, -1, -1, -1, -1};
static PyObject *S_data, *S_event_record_id, *S_evtx, *S_json;

#define MAX_MISSING_KEPT 100

typedef struct {
    PyObject_HEAD
    PyObject *records; /* the records_json() iterator */
    PyObject *name;    /* provenance: the input's name */
    Py_ssize_t count;  /* events produced */
    Py_ssize_t missing_count; /* records without an Event element */
    Py_ssize_t skipped; /* records the gate turned away */
    Gate gate;
    PyObject *missing; /* list of their record ids (the first MAX_MISSING_KEPT) */
} EvtxEvents;

static PyObject *evtx_events_next(EvtxEvents *self) {
    while (1) {
        PyObject *rec = PyIter_Next(self->records);
        if (rec == NULL) return NULL; /* exhausted, or the parser's error for one record */
        PyObject *data = PyDict_Check(rec) ? PyDict_GetItemWithError(rec, S_data) : NULL;
        PyObject *rid = PyDict_Check(rec) ? PyDict_GetItemWithError(rec, S_event_record_id) : NULL;
        if (data == NULL || rid == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "evtx record without data");
            Py_DECREF(rec);
            return NULL;
        }
        PyObject *fields = parse_json(data, &self->gate);
        if (fields == NULL) {
            Py_DECREF(rec);
            return NULL;
        }
        if (fields == Py_Ellipsis) {
            Py_DECREF(fields);
            Py_DECREF(rec);
            self->skipped++;
            continue;
        }
        if (fields == Py_None) {
            Py_DECREF(fields);
            self->missing_count++;
            if (PyList_GET_SIZE(self->missing) < MAX_MISSING_KEPT && PyList_Append(self->missing, rid) < 0) {
                Py_DECREF(rec);
                return NULL;
            }
            Py_DECREF(rec);
            continue;
        }
        PyObject *ev = event_new(&EVENT, fields, self->name, rid, S_evtx);
        Py_DECREF(fields);
        Py_DECREF(rec);
        if (ev != NULL) self->count++;
        return ev;
    }
}

static PyObject *evtx_events_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *records, *name, *want = Py_None;
    if (!PyArg_ParseTuple(args, "OU|O", &records, &name, &want)) return NULL;
    if (want != Py_None && !PyCallable_Check(want)) {
        PyErr_SetString(PyExc_TypeError, "want must be callable or None");
        return NULL;
    }
    if (EVENT.cls == NULL || FALLBACK == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_flatten.configure() was not called");
        return NULL;
    }
    EvtxEvents *self = (EvtxEvents *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->records = PyObject_GetIter(records);
    self->missing = PyList_New(0);
    if (self->records == NULL || self->missing == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(name);
    self->name = name;
    if (want != Py_None) {
        self->gate.decisions = PyDict_New();
        if (self->gate.decisions == NULL) {
            Py_DECREF(self);
            return NULL;
        }
        Py_INCREF(want);
        self->gate.want = want;
    }
    return (PyObject *)self;
}

static void evtx_events_dealloc(EvtxEvents *self) {
    Py_XDECREF(self->records);
    Py_XDECREF(self->name);
    Py_XDECREF(self->missing);
    Py_XDECREF(self->gate.want);
    Py_XDECREF(self->gate.decisions);
    Py_XDECREF(self->gate.last_channel);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef evtx_events_members[] = {
    {"count", T_PYSSIZET, offsetof(EvtxEvents, count), READONLY, "events produced so far"},
    {"missing_count", T_PYSSIZET, offsetof(EvtxEvents, missing_count), READONLY,
     "records without an Event element"},
    {"missing", T_OBJECT, offsetof(EvtxEvents, missing), READONLY,
     "record ids of the first of those records"},
    {"skipped", T_PYSSIZET, offsetof(EvtxEvents, skipped), READONLY,
     "records not parsed past System because want(channel, event_id) said no"},
    {NULL},
};

static PyTypeObject EvtxEventsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scmwatch.events._flatten.EvtxEvents",
    .tp_basicsize = sizeof(EvtxEvents),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "EvtxEvents(records, name, want=None): Event objects from a records_json() iterator.",
    .tp_new = evtx_events_new,
    .tp_dealloc = (destructor)evtx_events_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)evtx_events_next,
    .tp_members = evtx_events_members,
};

/* ---------------------------------------------------------------------------------------
 * Flat exports (NXLog, Security-Datasets, the simulator): one line's object straight to
 * ``normalize.from_flat``'s result, with the tables ``configure_flat`` hands over. Only for an
 * object ``normalize.shape_of`` must call ``flat``: a member that could make it evtx or ECS
 * (Event, winlog, winlog.*, _source, fields, event, event.code), or no EventID/EventId/Channel,
 * and it is not sure (the Python path decides).
 * ------------------------------------------------------------------------------------- */

static PyObject *FLAT_MAP = NULL, *FLAT_DROP = NULL, *FLAT_TIME_KEYS = NULL, *SYSTEM_INTS = NULL,
                *ISO_UTC = NULL;
static PyObject *S_TimeCreated, *S_EventId;

static int ascii_is(PyObject *key, const char *name, Py_ssize_t n) {
    return PyUnicode_GET_LENGTH(key) == n && PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND &&
           memcmp(PyUnicode_1BYTE_DATA(key), name, (size_t)n) == 0;
}

/* A member that could make the object other than flat. */
static int not_flat_key(PyObject *key) {
    if (PyUnicode_KIND(key) != PyUnicode_1BYTE_KIND) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(key);
    const char *s = (const char *)PyUnicode_1BYTE_DATA(key);
    if (n >= 6 && memcmp(s, "winlog", 6) == 0 && (n == 6 || s[6] == '.')) return 1;
    return ascii_is(key, "Event", 5) || ascii_is(key, "_source", 7) || ascii_is(key, "fields", 6) ||
           ascii_is(key, "event", 5) || ascii_is(key, "event.code", 10);
}

/* from_flat on the parsed object (new reference, NULL on error). */
static PyObject *flat_fields(PyObject *rec) {
    PyObject *out = _PyDict_NewPresized(PyDict_GET_SIZE(rec));
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(rec, &pos, &key, &value)) {
        int drop = PySet_Contains(FLAT_DROP, key);
        if (drop < 0) goto fail;
        if (drop) continue;
        PyObject *name = PyDict_GetItemWithError(FLAT_MAP, key);
        if (name == NULL && PyErr_Occurred()) goto fail;
        if (name != NULL) {
            int have = PyDict_Contains(out, name);
            if (have < 0) goto fail;
            if (have) continue; /* a genuine Windows-named key already present wins */
        } else {
            name = key;
        }
        Py_INCREF(name);
        if (PyUnicode_FindChar(name, ' ', 0, PyUnicode_GET_LENGTH(name), 1) >= 0) {
            Py_SETREF(name, PyUnicode_Replace(name, S_space, S_empty, -1));
            if (name == NULL) goto fail;
        }
        int rc = PyDict_SetItem(out, name, value);
        Py_DECREF(name);
        if (rc < 0) goto fail;
    }
    PyObject *ts = PyDict_GetItemWithError(out, S_TimeCreated);
    if (ts == NULL && PyErr_Occurred()) goto fail;
    if (ts == NULL || PyDict_CheckExact(ts)) {
        Py_ssize_t n = PyTuple_GET_SIZE(FLAT_TIME_KEYS);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyDict_GetItemWithError(rec, PyTuple_GET_ITEM(FLAT_TIME_KEYS, i));
            if (v == NULL && PyErr_Occurred()) goto fail;
            int truth = v == NULL ? 0 : PyObject_IsTrue(v);
            if (truth < 0) goto fail;
            if (truth) {
                if (PyDict_SetItem(out, S_TimeCreated, v) < 0) goto fail;
                break;
            }
        }
    }
    Py_ssize_t n = PyTuple_GET_SIZE(SYSTEM_INTS);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(SYSTEM_INTS, i);
        PyObject *v = PyDict_GetItemWithError(out, k);
        if (v == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        if (!PyUnicode_CheckExact(v)) continue;
        PyObject *fixed = PyObject_CallOneArg(TO_INT, v);
        if (fixed == NULL) goto fail;
        int rc = PyDict_SetItem(out, k, fixed);
        Py_DECREF(fixed);
        if (rc < 0) goto fail;
    }
    ts = PyDict_GetItemWithError(out, S_TimeCreated);
    if (ts == NULL && PyErr_Occurred()) goto fail;
    if (ts != NULL && ts != Py_None) {
        /* iso_utc keeps the canonical form as it is: only other values need the call */
        int canonical = PyUnicode_CheckExact(ts) && PyUnicode_GET_LENGTH(ts) == 27 &&
                        PyUnicode_READ_CHAR(ts, 10) == 'T' && PyUnicode_READ_CHAR(ts, 26) == 'Z';
        if (!canonical) {
            PyObject *fixed = PyObject_CallOneArg(ISO_UTC, ts);
            if (fixed == NULL) goto fail;
            int rc = PyDict_SetItem(out, S_TimeCreated, fixed);
            Py_DECREF(fixed);
            if (rc < 0) goto fail;
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* One line of a flat export: the fields, Py_Ellipsis (skipped by the gate), or NULL (with an
 * exception: an error; without: not sure, the caller's exact path). */
static PyObject *parse_flat(const unsigned char *data, Py_ssize_t size, Gate *gate) {
    Cursor cur = {data, data + size};
    Cursor *c = &cur;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{' || FLAT_MAP == NULL) return GIVE_UP;
    PyObject *rec = PyDict_New();
    if (rec == NULL) return NULL;
    int more = open_container(c, '}');
    while (more > 0) {
        PyObject *key = member_key(c);
        if (key == NULL) goto give_up;
        if (not_flat_key(key)) {
            Py_DECREF(key);
            goto give_up;
        }
        PyObject *value = parse_value(c, 1);
        int rc = value == NULL ? -1 : PyDict_SetItem(rec, key, value);
        Py_DECREF(key);
        Py_XDECREF(value);
        if (rc < 0) goto give_up;
        more = next_item(c, '}');
    }
    skip_ws(c);
    if (more < 0 || c->p != c->end) goto give_up;
    int shaped = 0;
    PyObject *names[3] = {S_EventID, S_EventId, S_Channel};
    for (int i = 0; i < 3 && !shaped; i++) {
        shaped = PyDict_Contains(rec, names[i]);
        if (shaped < 0) goto give_up;
    }
    if (!shaped) goto give_up; /* Zeek, or not an event: the Python path says which */
    PyObject *out = flat_fields(rec);
    Py_DECREF(rec);
    if (out == NULL) return NULL;
    PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
    if (eid != NULL && PyUnicode_Check(eid)) { /* reported by the Python path */
        Py_DECREF(out);
        return GIVE_UP;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(out);
        return NULL;
    }
    if (gate != NULL && gate->want != NULL) {
        PyObject *channel = PyDict_GetItemWithError(out, S_Channel);
        int go = channel == NULL && PyErr_Occurred() ? -1 : gate_decides(gate, channel, eid);
        if (go <= 0) {
            Py_DECREF(out);
            return go < 0 ? NULL : Py_NewRef(Py_Ellipsis);
        }
    }
    return out;
give_up:
    Py_DECREF(rec);
    return GIVE_UP;
}

static PyObject *configure_flat(PyObject *self, PyObject *args) {
    PyObject *map, *drop, *time_keys, *ints, *iso;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O", &PyDict_Type, &map, &PyFrozenSet_Type, &drop, &PyTuple_Type,
                          &time_keys, &PyTuple_Type, &ints, &iso))
        return NULL;
    Py_XSETREF(FLAT_MAP, Py_NewRef(map));
    Py_XSETREF(FLAT_DROP, Py_NewRef(drop));
    Py_XSETREF(FLAT_TIME_KEYS, Py_NewRef(time_keys));
    Py_XSETREF(SYSTEM_INTS, Py_NewRef(ints));
    Py_XSETREF(ISO_UTC, Py_NewRef(iso));
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------
 * NdjsonEvents: NDJSON lines of evtx-shaped records -> Event objects, the JSON reader's loop.
 *
 * Why: for an NDJSON file of evtx_dump records (``{"Event": {"System": ..., "EventData": ...}}``
 * per line) the Python loop paid per line for orjson's nested dicts, the flattener taking them
 * apart again, two substring scans for lone surrogates and deep nesting (sanitize.suspicious),
 * the shape test, and a generator and a method call. This iterator takes the file in blocks
 * cut anywhere (any buffer), splits lines with memchr (a line cut by a block end is carried
 * over), parses each line with the parser above straight into the flat dict (its own checks
 * make the suspicious() scan unneeded: it gives up on lone surrogates and nesting past 64),
 * honours the hunt's ReadGate as EvtxEvents does, and builds the Event. Every line it is not
 * sure about -- not an evtx-shaped object, malformed, invalid UTF-8, a text EventID, any of
 * the parser's own doubts -- goes whole (newline included) to ``slow(line, lineno)``, the
 * Python reader's per-line function, which counts and reports exactly as before. A line of
 * ``cap`` bytes or more (newline not counted) is never held whole: ``too_long(lineno, size)``
 * is told and the line skipped. Measured on the shared corpus as NDJSON (8,255 events x 4, one
 * run, load 3.3): ``orjson.loads`` per line 4.66 us, the Python reader 12.0 us, this loop
 * 5.38 us; on the simulator's flat lines the Python reader took >9 us per line against 2.4 us
 * for orjson.loads, this loop 4.7 us.
 * ------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *blocks;   /* iterator of buffers */
    PyObject *block;    /* the current one, or NULL */
    Py_buffer view;     /* its bytes while ``block`` is set */
    Py_ssize_t pos;     /* offset of the next line in it */
    Py_ssize_t line;    /* number of the next line */
    Py_ssize_t cap;     /* a line this long or longer is skipped */
    PyObject *name;     /* provenance: the input's name */
    PyObject *slow;     /* callable: (line bytes, line number) -> Event or None */
    PyObject *too_long; /* callable: (line number, bytes) -> None */
    char *carry;        /* the start of a line cut by the end of a block */
    Py_ssize_t carried, carry_cap;
    int skipping;       /* inside a line past the cap: its bytes are counted, not kept */
    int done;
    Py_ssize_t skip_line, skip_bytes;
    Py_ssize_t count;   /* events produced here (the slow path counts its own) */
    Py_ssize_t skipped; /* lines the gate turned away */
    Py_ssize_t nbytes;  /* bytes read */
    int flat;           /* the file's flavour: flat exports, else evtx_dump records */
    Gate gate;
    PyObject *on_end;   /* callable(nbytes, count, skipped), called once when done, or NULL */
} NdjsonEvents;

/* on_end(nbytes, count, skipped), once (``loop_end`` in _event.h): when the lines run out or
 * reading fails, at close() or at the latest when the loop is freed. Without the generator
 * frames it replaces (json_reader.read_json and _c_lines) the hunt reads each event ~120
 * instructions cheaper (callgrind, NDJSON reading of the attack corpus: 249M -> 245M
 * instructions per pass). */
#define NDJSON_END "(nnn)", self->nbytes, self->count, self->skipped

static int carry_append(NdjsonEvents *self, const unsigned char *s, Py_ssize_t n) {
    if (self->carried + n > self->carry_cap) {
        Py_ssize_t want = (self->carried + n) * 2 + 256;
        char *grown = PyMem_Realloc(self->carry, (size_t)want);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->carry = grown;
        self->carry_cap = want;
    }
    memcpy(self->carry + self->carried, s, (size_t)n);
    self->carried += n;
    return 0;
}

static void release_block(NdjsonEvents *self) {
    if (self->block != NULL) {
        PyBuffer_Release(&self->view);
        Py_CLEAR(self->block);
    }
}

static int report_long(NdjsonEvents *self, Py_ssize_t lineno, Py_ssize_t size) {
    PyObject *res = PyObject_CallFunction(self->too_long, "nn", lineno, size);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

/* One line ``[start, stop)`` (``stop`` at its newline or the end), ``whole`` bytes with the
 * newline: an Event, NULL with no exception for "nothing to yield", or NULL with one. */
static PyObject *ndjson_line(NdjsonEvents *self, const unsigned char *start, const unsigned char *stop,
                             Py_ssize_t whole, Py_ssize_t lineno) {
    Cursor blank = {start, stop};
    skip_ws(&blank);
    if (blank.p >= blank.end) return NULL; /* a blank line: not an object, not counted */
    if (*blank.p == '{') {
        PyObject *fields = self->flat ? parse_flat(start, stop - start, &self->gate)
                                      : parse_text(start, stop - start, &self->gate, 1);
        if (fields == Py_Ellipsis) {
            Py_DECREF(fields);
            self->skipped++;
            return NULL;
        }
        if (fields == Py_None) Py_CLEAR(fields); /* no Event member: not this loop's shape */
        if (fields == NULL && PyErr_Occurred()) return NULL;
        if (fields != NULL) {
            PyObject *rid = PyLong_FromSsize_t(lineno);
            if (rid == NULL) {
                Py_DECREF(fields);
                return NULL;
            }
            PyObject *ev = event_new(&EVENT, fields, self->name, rid, S_json);
            Py_DECREF(fields);
            Py_DECREF(rid);
            if (ev != NULL) self->count++;
            return ev;
        }
    }
    PyObject *text = PyBytes_FromStringAndSize((const char *)start, whole);
    if (text == NULL) return NULL;
    PyObject *num = PyLong_FromSsize_t(lineno);
    if (num == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *args[2] = {text, num};
    PyObject *ev = PyObject_Vectorcall(self->slow, args, 2, NULL);
    Py_DECREF(text);
    Py_DECREF(num);
    if (ev == Py_None) {
        Py_DECREF(ev);
        return NULL;
    }
    return ev;
}

static PyObject *ndjson_events_step(NdjsonEvents *self) {
    while (!self->done) {
        if (self->block == NULL || self->pos >= self->view.len) {
            release_block(self);
            PyObject *block = PyIter_Next(self->blocks);
            if (block == NULL) {
                if (PyErr_Occurred()) return NULL;
                self->done = 1;
                /* the last line, without a newline */
                if (self->skipping) {
                    self->skipping = 0;
                    if (report_long(self, self->skip_line, self->skip_bytes) < 0) return NULL;
                } else if (self->carried) {
                    Py_ssize_t n = self->carried;
                    self->carried = 0;
                    PyObject *ev = ndjson_line(self, (const unsigned char *)self->carry,
                                               (const unsigned char *)self->carry + n, n, self->line++);
                    if (ev != NULL || PyErr_Occurred()) return ev;
                }
                return NULL;
            }
            if (PyObject_GetBuffer(block, &self->view, PyBUF_SIMPLE) < 0) {
                Py_DECREF(block);
                return NULL;
            }
            self->block = block;
            self->pos = 0;
            self->nbytes += self->view.len;
            continue;
        }
        const unsigned char *base = (const unsigned char *)self->view.buf;
        Py_ssize_t size = self->view.len;
        const unsigned char *start = base + self->pos;
        const unsigned char *nl = memchr(start, '\n', (size_t)(size - self->pos));
        Py_ssize_t upto = nl != NULL ? (nl - base) + 1 : size; /* this line's part of the block */
        Py_ssize_t part = upto - self->pos;
        self->pos = upto;
        if (self->skipping) {
            self->skip_bytes += part;
            if (nl == NULL) continue;
            self->skipping = 0;
            if (report_long(self, self->skip_line, self->skip_bytes) < 0) return NULL;
            continue;
        }
        Py_ssize_t length = self->carried + (nl != NULL ? part - 1 : part); /* without the newline */
        if (length >= self->cap) {
            self->skip_line = self->line++;
            self->skip_bytes = self->carried + part;
            self->carried = 0;
            if (nl == NULL) {
                self->skipping = 1;
                continue;
            }
            if (report_long(self, self->skip_line, self->skip_bytes) < 0) return NULL;
            continue;
        }
        if (nl == NULL) {
            if (carry_append(self, start, part) < 0) return NULL;
            continue;
        }
        PyObject *ev;
        Py_ssize_t lineno = self->line++;
        if (self->carried) {
            if (carry_append(self, start, part) < 0) return NULL;
            Py_ssize_t n = self->carried;
            self->carried = 0;
            const unsigned char *c = (const unsigned char *)self->carry;
            ev = ndjson_line(self, c, c + n - 1, n, lineno);
        } else {
            ev = ndjson_line(self, start, nl, part, lineno);
        }
        if (ev != NULL || PyErr_Occurred()) return ev;
    }
    return NULL;
}

/* The next event; at the end (or an error) on_end runs first, an error it raises chained to the
 * reading error. */
static PyObject *ndjson_events_next(NdjsonEvents *self) {
    PyObject *ev = ndjson_events_step(self);
    if (ev == NULL) loop_end_stopped(&self->on_end, NDJSON_END);
    return ev;
}

/* close(): no more lines are read, on_end runs now (a generator delegating to the loop with
 * ``yield from`` calls this when it is closed). */
static PyObject *ndjson_events_close(NdjsonEvents *self, PyObject *Py_UNUSED(ignored)) {
    self->done = 1;
    self->carried = 0;
    self->skipping = 0;
    release_block(self);
    if (loop_end(&self->on_end, NDJSON_END) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *ndjson_events_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *blocks, *name, *slow, *too_long, *want = Py_None, *on_end = Py_None;
    Py_ssize_t first = 1, cap = PY_SSIZE_T_MAX;
    int flat = 0;
    if (!PyArg_ParseTuple(args, "OUnOOn|OpO", &blocks, &name, &first, &slow, &too_long, &cap, &want, &flat,
                          &on_end))
        return NULL;
    if (on_end != Py_None && !PyCallable_Check(on_end)) {
        PyErr_SetString(PyExc_TypeError, "on_end must be callable or None");
        return NULL;
    }
    if (flat && FLAT_MAP == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_flatten.configure_flat() was not called");
        return NULL;
    }
    if (!PyCallable_Check(slow) || !PyCallable_Check(too_long) || (want != Py_None && !PyCallable_Check(want))) {
        PyErr_SetString(PyExc_TypeError, "slow and too_long must be callable, want callable or None");
        return NULL;
    }
    if (EVENT.cls == NULL || FALLBACK == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_flatten.configure() was not called");
        return NULL;
    }
    NdjsonEvents *self = (NdjsonEvents *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->blocks = PyObject_GetIter(blocks);
    if (self->blocks == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->name = Py_NewRef(name);
    self->slow = Py_NewRef(slow);
    self->too_long = Py_NewRef(too_long);
    self->line = first;
    self->flat = flat;
    self->cap = cap > 0 ? cap : 1;
    self->gate.strict = 1;
    if (want != Py_None) {
        self->gate.decisions = PyDict_New();
        if (self->gate.decisions == NULL) {
            Py_DECREF(self);
            return NULL;
        }
        self->gate.want = Py_NewRef(want);
    }
    if (on_end != Py_None) self->on_end = Py_NewRef(on_end);
    return (PyObject *)self;
}

static void ndjson_events_dealloc(NdjsonEvents *self) {
    loop_end_freed(&self->on_end, NDJSON_END);
    release_block(self);
    Py_XDECREF(self->blocks);
    Py_XDECREF(self->name);
    Py_XDECREF(self->slow);
    Py_XDECREF(self->too_long);
    Py_XDECREF(self->gate.want);
    Py_XDECREF(self->gate.decisions);
    Py_XDECREF(self->gate.last_channel);
    PyMem_Free(self->carry);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef ndjson_events_members[] = {
    {"count", T_PYSSIZET, offsetof(NdjsonEvents, count), READONLY, "events produced here (not by slow)"},
    {"skipped", T_PYSSIZET, offsetof(NdjsonEvents, skipped), READONLY,
     "lines not parsed past System because want(channel, event_id) said no"},
    {"line", T_PYSSIZET, offsetof(NdjsonEvents, line), READONLY, "number of the next line"},
    {"nbytes", T_PYSSIZET, offsetof(NdjsonEvents, nbytes), READONLY, "bytes taken from the blocks"},
    {NULL},
};

static PyMethodDef ndjson_events_methods[] = {
    {"close", (PyCFunction)ndjson_events_close, METH_NOARGS, "stop reading; on_end runs now"},
    {NULL},
};

static PyTypeObject NdjsonEventsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scmwatch.events._flatten.NdjsonEvents",
    .tp_basicsize = sizeof(NdjsonEvents),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "NdjsonEvents(blocks, name, first_line, slow, too_long, cap, want=None, flat=False, "
              "on_end=None): Event objects from NDJSON lines of evtx_dump records (or flat exports); "
              "other lines go to slow(line, lineno); on_end(nbytes, count, skipped) once when done.",
    .tp_new = ndjson_events_new,
    .tp_dealloc = (destructor)ndjson_events_dealloc,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)ndjson_events_next,
    .tp_members = ndjson_events_members,
    .tp_methods = ndjson_events_methods,
};

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *attrs, *core, *to_int, *fallback_fn = NULL, *event_type = NULL;
    if (!PyArg_ParseTuple(args, "O!OO|OO!", &PyDict_Type, &attrs, &core, &to_int, &fallback_fn, &PyType_Type,
                          &event_type))
        return NULL;
    if (event_type != NULL) event_class_set(&EVENT, event_type);
    if (fallback_fn != NULL) {
        Py_INCREF(fallback_fn);
        Py_XSETREF(FALLBACK, fallback_fn);
    }
    PyObject *core_set = PyFrozenSet_New(core);
    if (core_set == NULL) return NULL;
    Py_XSETREF(CORE, core_set);
    plain_names_clear();
    attr_fields_clear();
    Py_INCREF(attrs);
    Py_XSETREF(SYSTEM_ATTRS, attrs);
    Py_INCREF(to_int);
    Py_XSETREF(TO_INT, to_int);
    Py_RETURN_NONE;
}

/* ---- 5. Winlogbeat / ECS documents (ecs.py): the two walks over every key of a document ---- */

static PyObject *S_dot, *S_event_data_prefix, *S_user_data_prefix;

/* ``prefix + key``, the same string object for the same pair while PATHS holds it: documents
 * of one export repeat the same few dozen paths, and a cached path is neither built nor hashed
 * again (reading the shared Winlogbeat golden documents as lines: ``dotted`` 7.6 -> 2.9 us per
 * line, measured apart). PATHS maps prefix -> {key: path}; it is emptied when it reaches
 * PATHS_MAX entries, so hostile keys cost what building every path did, and memory stays flat. */
static PyObject *PATHS = NULL;
static Py_ssize_t paths_held = 0;
#define PATHS_MAX 16384

static PyObject *joined(PyObject *prefix, PyObject *key) {
    if (!PyUnicode_CheckExact(prefix)) return PyUnicode_Concat(prefix, key);
    PyObject *inner = PyDict_GetItemWithError(PATHS, prefix);
    if (inner == NULL) {
        if (PyErr_Occurred()) return NULL;
        if (paths_held >= PATHS_MAX) {
            PyDict_Clear(PATHS);
            paths_held = 0;
        }
        inner = PyDict_New();
        if (inner == NULL) return NULL;
        int rc = PyDict_SetItem(PATHS, prefix, inner);
        Py_DECREF(inner); /* PATHS holds it */
        if (rc < 0) return NULL;
        paths_held++;
    }
    PyObject *path = PyDict_GetItemWithError(inner, key);
    if (path != NULL) {
        Py_INCREF(path);
        return path;
    }
    if (PyErr_Occurred()) return NULL;
    path = PyUnicode_Concat(prefix, key);
    if (path == NULL) return NULL;
    if (paths_held < PATHS_MAX) {
        if (PyDict_SetItem(inner, key, path) < 0) {
            Py_DECREF(path);
            return NULL;
        }
        paths_held++;
    }
    return path;
}

/* ecs._walk_py's twin: every leaf of ``obj`` under ``prefix`` + its dotted path, the first
 * one of a path kept. */
static int walk(PyObject *obj, PyObject *prefix, PyObject *out) {
    if (Py_EnterRecursiveCall(" in _flatten.dotted")) return -1;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    int rc = 0;
    while (rc == 0 && PyDict_Next(obj, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) continue;
        PyObject *path = joined(prefix, key);
        if (path == NULL) {
            rc = -1;
            break;
        }
        if (PyDict_CheckExact(value) && PyDict_GET_SIZE(value) > 0) {
            PyObject *deeper = joined(path, S_dot);
            if (deeper == NULL) {
                rc = -1;
            } else {
                Py_INCREF(value); /* held while walked: the dict is the caller's */
                rc = walk(value, deeper, out);
                Py_DECREF(value);
                Py_DECREF(deeper);
            }
        } else if (PyDict_SetDefault(out, path, value) == NULL) {
            rc = -1;
        }
        Py_DECREF(path);
    }
    Py_LeaveRecursiveCall();
    return rc;
}

static PyObject *dotted(PyObject *self, PyObject *args) {
    PyObject *obj, *prefix, *out;
    if (!PyArg_ParseTuple(args, "O!UO!", &PyDict_Type, &obj, &prefix, &PyDict_Type, &out)) return NULL;
    if (walk(obj, prefix, out) < 0) return NULL;
    Py_RETURN_NONE;
}

/* ecs._event_data_py's twin: the ``winlog.event_data.*`` and ``winlog.user_data.*`` leaves of
 * a dotted view under their own names. */
static PyObject *event_data(PyObject *self, PyObject *flat) {
    if (!PyDict_Check(flat)) {
        PyErr_SetString(PyExc_TypeError, "event_data() takes a dict");
        return NULL;
    }
    PyObject *data = PyDict_New();
    if (data == NULL) return NULL;
    const Py_ssize_t ne = PyUnicode_GET_LENGTH(S_event_data_prefix), nu = PyUnicode_GET_LENGTH(S_user_data_prefix);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(flat, &pos, &key, &value)) {
        if (!PyUnicode_Check(key)) continue;
        Py_ssize_t cut = 0;
        Py_ssize_t m = PyUnicode_Tailmatch(key, S_event_data_prefix, 0, PY_SSIZE_T_MAX, -1);
        if (m < 0) goto fail;
        if (m) {
            cut = ne;
        } else {
            m = PyUnicode_Tailmatch(key, S_user_data_prefix, 0, PY_SSIZE_T_MAX, -1);
            if (m < 0) goto fail;
            if (m) cut = nu;
        }
        if (!cut) continue;
        PyObject *name = PyUnicode_Substring(key, cut, PyUnicode_GET_LENGTH(key));
        if (name == NULL) goto fail;
        int rc = PyDict_SetItem(data, name, value);
        Py_DECREF(name);
        if (rc < 0) goto fail;
    }
    return data;
fail:
    Py_DECREF(data);
    return NULL;
}

/* ecs._pick_py's twin: ``{name: flat[path]}`` over ``pairs`` ((path, name), ...), in order,
 * skipping None values and names already set (the first path of a name that has a value wins). */
static PyObject *pick(PyObject *self, PyObject *args) {
    PyObject *flat, *pairs;
    if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &flat, &PyTuple_Type, &pairs)) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pairs); i++) {
        PyObject *pair = PyTuple_GET_ITEM(pairs, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "pick() takes a tuple of (path, name) pairs");
            goto fail;
        }
        PyObject *path = PyTuple_GET_ITEM(pair, 0), *name = PyTuple_GET_ITEM(pair, 1);
        int have = PyDict_Contains(out, name);
        if (have < 0) goto fail;
        if (have) continue;
        PyObject *value = PyDict_GetItemWithError(flat, path);
        if (value == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        if (value != Py_None && PyDict_SetItem(out, name, value) < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* ``{`` + 36 of ``[0-9a-fA-F-]`` in the GUID's places + ``}`` (ecs._GUID), with a lower-case
 * letter in it: 1, else 0. */
static int lower_guid(PyObject *v) {
    if (!PyUnicode_CheckExact(v) || PyUnicode_GET_LENGTH(v) != 38 || PyUnicode_KIND(v) != PyUnicode_1BYTE_KIND)
        return 0;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(v);
    if (s[0] != '{' || s[37] != '}') return 0;
    int lower = 0;
    for (int i = 1; i < 37; i++) {
        Py_UCS1 ch = s[i];
        if (i == 9 || i == 14 || i == 19 || i == 24) {
            if (ch != '-') return 0;
        } else if (ch >= 'a' && ch <= 'f') {
            lower = 1;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F'))) {
            return 0;
        }
    }
    return lower;
}

/* ecs._upper_guids_py's twin: every top-level ``{guid}`` value of ``out`` in upper case, as
 * Windows writes it (Winlogbeat lower-cases them). Values already upper-case stay as they are. */
static PyObject *upper_guids(PyObject *self, PyObject *out) {
    if (!PyDict_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "upper_guids() takes a dict");
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(out, &pos, &key, &value)) {
        if (!lower_guid(value)) continue;
        PyObject *upper = PyUnicode_New(38, 127);
        if (upper == NULL) return NULL;
        const Py_UCS1 *s = PyUnicode_1BYTE_DATA(value);
        Py_UCS1 *d = PyUnicode_1BYTE_DATA(upper);
        for (int i = 0; i < 38; i++) d[i] = (s[i] >= 'a' && s[i] <= 'f') ? (Py_UCS1)(s[i] - 32) : s[i];
        int rc = PyDict_SetItem(out, key, upper); /* an existing key: no resize while iterating */
        Py_DECREF(upper);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

/* sanitize.suspicious's twin for a whole bytes-like text, in one pass instead of four: an
 * escape ``\ud``/``\uD`` anywhere, or more than ``limit`` of ``{`` and ``[`` together
 * (4.8 -> 0.9 us per Winlogbeat line of ~2 kB, measured apart). */
static PyObject *suspicious(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &limit)) return NULL;
    const unsigned char *s = buf.buf, *end = s + buf.len;
    Py_ssize_t brackets = 0;
    int found = 0;
    for (; s < end; s++) {
        unsigned char ch = *s;
        if (ch == '{' || ch == '[') {
            if (++brackets > limit) {
                found = 1;
                break;
            }
        } else if (ch == '\\' && end - s >= 3 && s[1] == 'u' && (s[2] == 'd' || s[2] == 'D')) {
            found = 1;
            break;
        }
    }
    PyBuffer_Release(&buf);
    return PyBool_FromLong(found);
}

/* ---------------------------------------------------------------------------------------
 * canonical_epoch: ``2019-03-03T09:20:28.621489Z`` (what every reader writes) -> POSIX seconds.
 *
 * Why: ``model.parse_time`` of that text (a regex test, ``fromisoformat``, ``timestamp``) is
 * 0.7-0.8 us, paid for every event that gets a hit or a correlation candidate. This returns
 * the same float: ``timestamp()`` of an aware datetime divides its whole microseconds since the
 * epoch by 10**6, correctly rounded, which IEEE division of the exact double is while they
 * stay below 2**53 (the years 1685 to 2255). Anything else -- another shape, a field out of range,
 * a later time -- is None, and the caller takes the Python path.
 * ------------------------------------------------------------------------------------- */

static int fixed_digits(const Py_UCS1 *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned d = (unsigned)s[i] - '0';
        if (d > 9) return 0;
        v = v * 10 + (int)d;
    }
    *out = v;
    return 1;
}

static long long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static PyObject *canonical_epoch(PyObject *self, PyObject *arg) {
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!PyUnicode_Check(arg) || PyUnicode_GET_LENGTH(arg) != 27 || !PyUnicode_IS_ASCII(arg)) Py_RETURN_NONE;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(arg);
    if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' || s[26] != 'Z')
        Py_RETURN_NONE;
    int y, mo, d, h, mi, sec, us;
    if (!fixed_digits(s, 4, &y) || !fixed_digits(s + 5, 2, &mo) || !fixed_digits(s + 8, 2, &d) ||
        !fixed_digits(s + 11, 2, &h) || !fixed_digits(s + 14, 2, &mi) || !fixed_digits(s + 17, 2, &sec) ||
        !fixed_digits(s + 20, 6, &us))
        Py_RETURN_NONE;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59) Py_RETURN_NONE;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > month_days[mo - 1] + (mo == 2 && leap)) Py_RETURN_NONE;
    long long total = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) * 1000000LL) + us;
    if (total >= (1LL << 53) || total <= -(1LL << 53)) Py_RETURN_NONE;
    return PyFloat_FromDouble((double)total / 1e6);
}

static PyMethodDef methods[] = {
    {"from_evtx_dict", from_evtx_dict, METH_O,
     "evtx JSON record (parsed) -> flat fields dict, or None when it has no Event object."},
    {"from_evtx_json", from_evtx_json, METH_O,
     "evtx JSON record text -> flat fields dict (as from_evtx_dict(orjson.loads(text)))."},
    {"configure_flat", configure_flat, METH_VARARGS,
     "configure_flat(flat_map, flat_drop, time_keys, system_ints, iso_utc): from_flat's tables."},
    {"dotted", dotted, METH_VARARGS,
     "dotted(obj, prefix, out): every leaf of obj under its dotted path (ecs._walk_py's twin)."},
    {"event_data", event_data, METH_O,
     "event_data(flat): the winlog.event_data.* / winlog.user_data.* leaves by name (ecs._event_data_py)."},
    {"pick", pick, METH_VARARGS,
     "pick(flat, pairs): {name: flat[path]} over (path, name) pairs, first value of a name (ecs._pick_py)."},
    {"upper_guids", upper_guids, METH_O,
     "upper_guids(out): top-level {guid} values in upper case, in place (ecs._upper_guids_py)."},
    {"suspicious", suspicious, METH_VARARGS,
     "suspicious(data, limit): a \\ud escape or more than limit brackets (sanitize.suspicious)."},
    {"canonical_epoch", canonical_epoch, METH_O,
     "canonical_epoch(text): POSIX seconds of YYYY-MM-DDTHH:MM:SS.ffffffZ, None for anything else."},
    {"configure", configure, METH_VARARGS,
     "configure(system_attrs, core_names, to_int, fallback, event_type): the tables of normalize.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_flatten", NULL, -1, methods};

PyMODINIT_FUNC PyInit__flatten(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(S_Channel, "Channel");
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
    INTERN(S_data, "data");
    INTERN(S_event_record_id, "event_record_id");
    INTERN(S_evtx, "evtx");
    INTERN(S_json, "json");
    INTERN(S_TimeCreated, "TimeCreated");
    INTERN(S_EventId, "EventId");
    INTERN(S_dot, ".");
    INTERN(S_event_data_prefix, "winlog.event_data.");
    INTERN(S_user_data_prefix, "winlog.user_data.");
#undef INTERN
    if ((PATHS = PyDict_New()) == NULL) return NULL;
    if (PyType_Ready(&EvtxEventsType) < 0 || PyType_Ready(&NdjsonEventsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&EvtxEventsType);
    if (PyModule_AddObject(m, "EvtxEvents", (PyObject *)&EvtxEventsType) < 0) {
        Py_DECREF(&EvtxEventsType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&NdjsonEventsType);
    if (PyModule_AddObject(m, "NdjsonEvents", (PyObject *)&NdjsonEventsType) < 0) {
        Py_DECREF(&NdjsonEventsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
