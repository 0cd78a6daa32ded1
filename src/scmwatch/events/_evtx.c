/*
 * scmwatch.events._evtx: EVTX chunks decoded straight from binary XML into our flat events.
 *
 * Why: the ``evtx`` package renders every record as JSON text, which ``_flatten`` then parses
 * again; both steps were most of the ~35 % that reading took of a whole-process hunt with all
 * of SigmaHQ. This module walks one 64 KiB chunk itself (string table, template definitions,
 * records, BinXml tokens, template instances with their substitution arrays, nested BinXml)
 * and builds for each record the same object that ``orjson.loads`` makes of the package's JSON
 * (the rendering rules of the evtx crate's JSON writer, ported one for one), which the
 * flattener of ``_flatten`` turns into the Event's fields.
 *
 * It decodes only what it is sure to render exactly as the package does. Anything else in a
 * chunk -- a record the package would report as an error, an unknown or unusual token (CDATA,
 * character and entity references, processing instructions), an array, ANSI or float value,
 * a lone surrogate, a name JSON would have to escape, a value whose size does not match its
 * type, nesting past a small depth, more nodes than the pools hold -- makes ``decode_chunk``
 * return None, and the reader hands that whole chunk to the ``evtx`` package instead. So the
 * result is the package's, event for event and error for error; tests compare both paths on
 * every recording of the shared corpora and on damaged and random chunks.
 *
 * Records of one template are rendered once per chunk and their steps replayed for the rest
 * (see "plans" below).
 *
 * Hostile input: every read is bounds-checked against the chunk, token loops end at the data
 * they were given, template and BinXml nesting and element depth are capped, and the node pools
 * are fixed in size.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#include "_event.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define CHUNK_SIZE 65536
#define CHUNK_HEADER 512
#define MAX_NODES 32768
#define MAX_ELEMS 16384
#define MAX_ATTRS 16384
#define MAX_TEMPLATES 256
#define MAX_VALUES 512
#define MAX_DEPTH 24   /* open elements in one stream */
#define MAX_NEST 4     /* template instance / BinXml fragment nesting */
#define MAX_NAMES 1024

/* value types */
enum {
    V_NULL = 0x00, V_STRING = 0x01, V_ANSI = 0x02, V_I8 = 0x03, V_U8 = 0x04, V_I16 = 0x05, V_U16 = 0x06,
    V_I32 = 0x07, V_U32 = 0x08, V_I64 = 0x09, V_U64 = 0x0A, V_R32 = 0x0B, V_R64 = 0x0C, V_BOOL = 0x0D,
    V_BINARY = 0x0E, V_GUID = 0x0F, V_SIZET = 0x10, V_FILETIME = 0x11, V_SYSTIME = 0x12, V_SID = 0x13,
    V_HEX32 = 0x14, V_HEX64 = 0x15, V_EVTHANDLE = 0x20, V_BINXML = 0x21, V_EVTXML = 0x23,
};

/* node kinds */
enum { K_ELEM, K_TEXT, K_VALUE, K_PH };

typedef struct {
    uint8_t kind;
    uint8_t vtype;    /* K_VALUE, K_PH: value type */
    uint8_t optional; /* K_PH */
    uint16_t index;   /* K_PH: substitution index */
    int16_t origin;   /* the substitution a record node was made from, -1: the template's own */
    uint32_t len;     /* K_TEXT: UTF-16 units; K_VALUE: bytes */
    uint32_t off;     /* K_TEXT, K_VALUE: chunk offset of the data */
    int32_t elem;     /* K_ELEM */
    int32_t next;     /* next node in its list, -1 */
} Node;

typedef struct {
    PyObject *name; /* borrowed from the chunk's name table */
    int32_t first, last; /* node list */
    int32_t next;
} Attr;

typedef struct {
    PyObject *name;
    int32_t attr_first, attr_last;
    int32_t child_first, child_last;
    int32_t nchildren;
    int has_elem_child;
} Elem;

typedef struct {
    Node nodes[MAX_NODES];
    Elem elems[MAX_ELEMS];
    Attr attrs[MAX_ATTRS];
    int nn, ne, na;
} Pool;

typedef struct {
    uint32_t off, size; /* its definition, its tokens' size */
    int root;           /* element in the template pool, UNPARSED, or BAIL */
    int nest;
    uint32_t key; /* what plans know it by: template_key */
} Template;

#define UNPARSED (-2)

typedef struct {
    uint32_t off; /* 0: empty slot (no name or key lives at offset 0: that is the chunk magic) */
    uint32_t len;
    int space; /* text keys: whether the key has a space */
    PyObject *name;
} NameEntry;

#define NAME_SLOTS 4096 /* a power of two, well above MAX_NAMES */

/* A str made from bytes of the chunk, kept for the rest of the chunk: equal bytes of the same
 * kind (``tag``: a value type, or TAG_TEXT for UTF-16 text) give the same str. */
typedef struct {
    uint64_t h;
    uint32_t off, len; /* bytes */
    uint8_t tag;
    PyObject *obj; /* NULL: empty slot */
} ValEntry;

#define VAL_SLOTS 8192 /* a power of two, twice MAX_VALS */
#define MAX_VALS 4096
#define TAG_TEXT 0xFF
#define GATE_MEMO 16
#define GUID_MEMO 64 /* a power of two */

/* A value of one template instance: a typed window of the chunk, or an element (nested BinXml). */
typedef struct {
    uint8_t type;
    uint32_t off, len;
    uint32_t units; /* strings: UTF-16 units before the first NUL */
    int elem;       /* >= 0: a BinXml value parsed into the record pool */
} Value;

/* Where the value being rendered comes from: a substitution (>= 0), the template or the
 * record's layout alone (VS_CONST), or several nodes or an object (VS_OPAQUE). */
#define VS_CONST (-2)
#define VS_OPAQUE (-3)

/* One step of a record's flat fields: out[key] = the value (braced), or del out[key]. */
typedef struct {
    PyObject *key;   /* owned */
    PyObject *value; /* owned: the value itself when src is VS_CONST */
    int16_t src;
    uint8_t del;
} Op;

#define MAX_PLANS 32
#define MAX_PLAN_OPS 160
#define MAX_FRAMES 8          /* template instances of one record read lazily */
#define MAX_LAZY_VALUES 1024  /* and their values */

/* A template instance read lazily: its values are x->lv[base, base + count). */
typedef struct {
    uint32_t key; /* its template's template_key */
    int tpl;      /* its template in x->templates */
    int base, count;
} Frame;

/* The flat fields of every record made of the same template instances (one inside a BinXml
 * value of another) whose substitutions have the same types and emptiness, as a list of
 * steps: see ``replay``. */
typedef struct {
    int nframes, nlv;
    uint32_t keys[MAX_FRAMES]; /* the frames' template keys */
    int counts[MAX_FRAMES];
    int nops, nsys; /* steps; the first nsys are System's (then the gate is asked) */
    int broken;     /* recording met something that is not one value of one substitution */
    uint8_t sig[MAX_LAZY_VALUES];
    Op ops[MAX_PLAN_OPS];
} Plan;

typedef struct {
    const uint8_t *d; /* the chunk */
    Pool *tpl;        /* template definitions of this chunk */
    Pool *rec;        /* the current record */
    Template templates[MAX_TEMPLATES];
    int ntemplates;
    NameEntry names[NAME_SLOTS]; /* names by string-table offset, and text keys (len > 0) */
    uint16_t used[MAX_NAMES];    /* the slots in use, to clear them */
    int nnames;
    ValEntry vals[VAL_SLOTS]; /* value strings of this chunk by their bytes */
    uint16_t vused[MAX_VALS];
    int nvals;
    struct {
        PyObject *in, *out;
    } guids[GUID_MEMO]; /* GUIDs given braces (by the str's address), and the braced str */
    struct {
        PyObject *channel;
        long long eid;
        int keep;
    } gate[GATE_MEMO]; /* the gate's answers for this chunk (gate_keeps) */
    int ngate;
    int depth; /* objects being rendered, one inside the other */
    Frame frames[MAX_FRAMES]; /* the record's template instances read lazily */
    int nframes;
    Value lv[MAX_LAZY_VALUES]; /* their values */
    int nlv;
    int plannable; /* every BinXml value of those instances is itself one read lazily */
    uint8_t lsig[MAX_LAZY_VALUES];
    Plan plans[MAX_PLANS]; /* the chunk's plans */
    int nplans;
    Plan *recording; /* the plan the record being rendered writes (or NULL) */
    int vsrc;        /* VS_* or the substitution of the value just made */
} Ctx;

#define BAIL (-1)

static Pool *POOL_TPL = NULL, *POOL_REC = NULL;
static PyObject *FROM_DICT = NULL; /* _flatten.from_evtx_dict */
static EventClass EVENT = {NULL, -1, -1, -1, -1, -1}; /* the Event class */
static PyObject *S_attributes, *S_text, *S_Data, *S_Event, *S_evtx, *S_Channel, *S_EventID, *S_UserData,
    *S_empty, *S_Name, *S_EventData;

static inline uint16_t u16at(const uint8_t *d, uint32_t o) { return (uint16_t)(d[o] | (d[o + 1] << 8)); }
static inline uint32_t u32at(const uint8_t *d, uint32_t o) {
    return (uint32_t)d[o] | ((uint32_t)d[o + 1] << 8) | ((uint32_t)d[o + 2] << 16) | ((uint32_t)d[o + 3] << 24);
}
static inline uint64_t u64at(const uint8_t *d, uint32_t o) {
    return (uint64_t)u32at(d, o) | ((uint64_t)u32at(d, o + 4) << 32);
}
/* The bytes of the chunk at hand: all CHUNK_SIZE of them, or a true prefix of the chunk (its
 * header and records up to the free-space offset: what the reader reads of a chunk, 8.8 of the
 * 23.4 MB of the attack corpus's chunks). Every failed bounds check ends in BAIL, so decoding a
 * prefix either runs exactly as decoding the whole chunk would or bails; decode_chunk then asks
 * for the whole chunk. */
static uint32_t END = CHUNK_SIZE;
static inline int within(uint64_t end) { return end <= END; }
static inline int has(uint64_t at, uint64_t n) { return within(at + n); }

/* ---- UTF-16 ---------------------------------------------------------------------------- */

/* Units before the first NUL (the crate truncates there); -1 for a lone surrogate. */
static int64_t utf16_units(const uint8_t *d, uint32_t off, uint32_t units) {
    uint32_t i = 0;
#if defined(__SSE2__)
    /* eight units at a time while none is NUL or a surrogate (the common case) */
    const __m128i zero = _mm_setzero_si128(), mask = _mm_set1_epi16((short)0xF800),
                  sur = _mm_set1_epi16((short)0xD800);
    for (; i + 8 <= units; i += 8) {
        __m128i w = _mm_loadu_si128((const __m128i *)(d + off + 2 * i));
        __m128i odd = _mm_or_si128(_mm_cmpeq_epi16(w, zero), _mm_cmpeq_epi16(_mm_and_si128(w, mask), sur));
        if (_mm_movemask_epi8(odd)) break;
    }
#endif
    /* four units at a time while none is NUL or a surrogate */
    for (; i + 4 <= units; i += 4) {
        uint64_t w;
        memcpy(&w, d + off + 2 * i, 8);
        uint64_t zero = (w - 0x0001000100010001ULL) & ~w & 0x8000800080008000ULL;
        uint64_t sur = (w & 0xF800F800F800F800ULL) ^ 0xD800D800D800D800ULL;
        uint64_t is_sur = ~(((sur & 0x7FFF7FFF7FFF7FFFULL) + 0x7FFF7FFF7FFF7FFFULL) | sur) & 0x8000800080008000ULL;
        if (zero | is_sur) break;
    }
    for (; i < units; i++) {
        uint16_t u = u16at(d, off + 2 * i);
        if (u == 0) return i;
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (i + 1 >= units) return -1;
            uint16_t lo = u16at(d, off + 2 * i + 2);
            if (lo < 0xDC00 || lo > 0xDFFF) return -1;
            i++;
        } else if (u >= 0xDC00 && u <= 0xDFFF) {
            return -1;
        }
    }
    return units;
}

/* A growable UCS-4 text buffer. */
typedef struct {
    Py_UCS4 *s;
    Py_ssize_t n, cap;
    Py_UCS4 max;
} Buf;
static Buf TB = {NULL, 0, 0, 0};

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->n + more <= b->cap) return 0;
    Py_ssize_t cap = (b->n + more) * 2 + 64;
    Py_UCS4 *s = PyMem_Realloc(b->s, (size_t)cap * sizeof(Py_UCS4));
    if (s == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

static int buf_ascii(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++) b->s[b->n++] = (unsigned char)s[i];
    if (b->max < 0x7F) b->max = 0x7F;
    return 0;
}

static int buf_utf16(Buf *b, const uint8_t *d, uint32_t off, uint32_t units) {
    if (buf_reserve(b, units) < 0) return -1;
    for (uint32_t i = 0; i < units; i++) {
        Py_UCS4 u = u16at(d, off + 2 * i);
        if (u >= 0xD800 && u <= 0xDBFF && i + 1 < units) {
            Py_UCS4 lo = u16at(d, off + 2 * i + 2);
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            i++;
        }
        if (u > b->max) b->max = u;
        b->s[b->n++] = u;
    }
    return 0;
}

#if defined(__SSE2__)
/* The ASCII str of ``units`` UTF-16 units when every one is below 0x80 (nearly every value),
 * packed 16 units per step in one pass; NULL without an error otherwise (the caller's general
 * path then makes it). ``utf16_str`` on x5 (callgrind, ``--jobs 1``, 82k calls): ~1,370
 * instructions per call in three byte loops, now ~310 with the allocation. */
static PyObject *utf16_ascii(const uint8_t *p, uint32_t units) {
    PyObject *s = PyUnicode_New(units, 127);
    if (s == NULL) return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(s);
    const __m128i high = _mm_set1_epi16((short)0xFF80);
    __m128i bad = _mm_setzero_si128();
    uint32_t i = 0;
    for (; i + 16 <= units; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + 2 * i));
        __m128i b = _mm_loadu_si128((const __m128i *)(p + 2 * i + 16));
        bad = _mm_or_si128(bad, _mm_and_si128(_mm_or_si128(a, b), high));
        _mm_storeu_si128((__m128i *)(o + i), _mm_packus_epi16(a, b));
    }
    unsigned rest = 0;
    for (; i < units; i++) {
        uint16_t u = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        rest |= u;
        o[i] = (Py_UCS1)u;
    }
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(bad, _mm_setzero_si128())) != 0xFFFF || rest >= 0x80) {
        Py_DECREF(s);
        return NULL;
    }
    return s;
}
#endif

/* A str of ``units`` UTF-16 units (no lone surrogates: checked before), without the buffer. */
static PyObject *utf16_str(const uint8_t *d, uint32_t off, uint32_t units) {
#if defined(__SSE2__)
    if (units > 0) {
        PyObject *s = utf16_ascii(d + off, units);
        if (s != NULL || PyErr_Occurred()) return s;
    }
#endif
    unsigned any = 0;
    for (uint32_t i = 0; i < units; i++) any |= d[off + 2 * i + 1];
    if (any == 0) {
        unsigned low = 0;
        for (uint32_t i = 0; i < units; i++) low |= d[off + 2 * i];
        PyObject *s = PyUnicode_New(units, low < 0x80 ? 127 : 255);
        if (s == NULL) return NULL;
        Py_UCS1 *o = PyUnicode_1BYTE_DATA(s);
        for (uint32_t i = 0; i < units; i++) o[i] = d[off + 2 * i];
        return s;
    }
    int order = -1;
    return PyUnicode_DecodeUTF16((const char *)d + off, 2 * (Py_ssize_t)units, "strict", &order);
}

static PyObject *buf_str(Buf *b, Py_ssize_t from) {
    return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, b->s + from, b->n - from);
}

/* ---- names ----------------------------------------------------------------------------- */

/* The name at a string-table offset (borrowed; owned by ctx). NULL: not sure (bail). */
static NameEntry *name_slot(Ctx *x, uint32_t off, uint32_t len) {
    uint32_t h = (off * 2654435761u ^ len) & (NAME_SLOTS - 1);
    while (x->names[h].off != 0 && !(x->names[h].off == off && x->names[h].len == len)) h = (h + 1) & (NAME_SLOTS - 1);
    return &x->names[h];
}

static uint64_t bytes_hash(const uint8_t *p, uint32_t n, uint8_t tag);

/* Names and keys kept across chunks: the element, attribute and Data names of a log are the same
 * few in every chunk, and a chunk's own table (by offset) would make and intern each of them
 * again. Bounded: the table is emptied when it is full, and only short texts are kept (a
 * hostile log's long names are made per chunk, as before). With the GUID memo of ``braced`` and
 * the FILETIME range check without formatting, the decoder went from 3.47 to 3.11 us per event
 * on the attack samples (bench/evtx_decode.py --base, load 1.4). */
#define KEEP_SLOTS 2048 /* a power of two */
#define KEEP_MAX 1536
#define KEEP_UNITS 64 /* longer texts are not kept */
#define TAG_NAME 1 /* a name checked by name_at */
#define TAG_KEY 2  /* a Data Name key */
typedef struct {
    uint64_t h;
    uint32_t units;
    uint8_t tag;
    PyObject *s; /* interned; NULL: empty slot */
} Kept;
static Kept KEPT[KEEP_SLOTS];
static int NKEPT;

/* Is ``s`` the text of ``units`` UTF-16 units at d + off? (0 when not sure) */
static int same_text(PyObject *s, const uint8_t *d, uint32_t off, uint32_t units) {
    if (PyUnicode_GET_LENGTH(s) != units) return 0;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (kind == PyUnicode_4BYTE_KIND) return 0;
    for (uint32_t i = 0; i < units; i++)
        if (PyUnicode_READ(kind, data, i) != u16at(d, off + 2 * i)) return 0;
    return 1;
}

/* New reference to the interned str of ``units`` UTF-16 units at d + off (no lone surrogates). */
static PyObject *kept_text(const uint8_t *d, uint32_t off, uint32_t units, uint8_t tag) {
    if (units > KEEP_UNITS) {
        PyObject *s = utf16_str(d, off, units);
        if (s != NULL) PyUnicode_InternInPlace(&s);
        return s;
    }
    uint64_t h = bytes_hash(d + off, 2 * units, tag);
    uint32_t i = (uint32_t)h & (KEEP_SLOTS - 1);
    for (; KEPT[i].s != NULL; i = (i + 1) & (KEEP_SLOTS - 1)) {
        const Kept *k = &KEPT[i];
        if (k->h == h && k->units == units && k->tag == tag && same_text(k->s, d, off, units)) return Py_NewRef(k->s);
    }
    PyObject *s = utf16_str(d, off, units);
    if (s == NULL) return NULL;
    PyUnicode_InternInPlace(&s);
    if (NKEPT >= KEEP_MAX) {
        for (int j = 0; j < KEEP_SLOTS; j++) Py_CLEAR(KEPT[j].s);
        NKEPT = 0;
        i = (uint32_t)h & (KEEP_SLOTS - 1);
    }
    KEPT[i].h = h;
    KEPT[i].units = units;
    KEPT[i].tag = tag;
    KEPT[i].s = Py_NewRef(s);
    NKEPT++;
    return s;
}

static PyObject *name_at(Ctx *x, uint32_t off) {
    NameEntry *slot = name_slot(x, off, 0);
    if (slot->off != 0) return slot->name;
    if (x->nnames >= MAX_NAMES || off == 0 || !has(off, 8)) return NULL;
    uint32_t units = u16at(x->d, off + 6);
    if (!has(off + 8, 2ull * units + 2)) return NULL;
    int64_t n = utf16_units(x->d, off + 8, units);
    if (n < 0) return NULL;
    for (int64_t i = 0; i < n; i++) {
        uint16_t u = u16at(x->d, off + 8 + 2 * (uint32_t)i);
        if (u < 0x20 || u == '"' || u == '\\') return NULL; /* JSON writes names unescaped */
    }
    PyObject *s = kept_text(x->d, off + 8, (uint32_t)n, TAG_NAME);
    if (s == NULL) return NULL;
    slot->off = off;
    slot->len = 0;
    slot->name = s;
    x->used[x->nnames++] = (uint16_t)(slot - x->names);
    return s;
}

#define LOOPS (-2)

/* The string table the crate reads first: a chunk it cannot read fails as a whole there.
 * LOOPS: a chain comes back to a string it has passed (more steps than a chunk has offsets),
 * on which the crate would follow the chain forever. */
static int check_string_table(const uint8_t *d) {
    for (int i = 0; i < 64; i++) {
        uint32_t off = u32at(d, 128 + 4 * i);
        int steps = 0;
        while (off > 0) {
            if (++steps > CHUNK_SIZE) return LOOPS;
            if (!has(off, 8)) return BAIL;
            uint32_t next = u32at(d, off);
            uint32_t units = u16at(d, off + 6);
            if (!has(off + 8, 2ull * units + 2)) return BAIL;
            if (utf16_units(d, off + 8, units) < 0) return BAIL;
            if (next == off) break;
            off = next;
        }
    }
    return 0;
}

/* A name reference: u32 offset, and the name itself inline when it is stored right here. */
static int read_name(Ctx *x, uint32_t *pos, uint32_t *name_off) {
    if (!has(*pos, 4)) return BAIL;
    uint32_t off = u32at(x->d, *pos);
    *pos += 4;
    if (off == *pos) {
        if (!has(*pos, 8)) return BAIL;
        *pos += 10 + 2 * (uint32_t)u16at(x->d, *pos + 6);
        if (!within(*pos)) return BAIL;
    }
    *name_off = off;
    return 0;
}

/* ---- pools ----------------------------------------------------------------------------- */

static int new_node(Pool *p) {
    if (p->nn >= MAX_NODES) return BAIL;
    Node *n = &p->nodes[p->nn];
    memset(n, 0, sizeof(*n));
    n->next = -1;
    n->elem = -1;
    n->origin = -1;
    return p->nn++;
}

static int new_elem(Pool *p, PyObject *name) {
    if (p->ne >= MAX_ELEMS) return BAIL;
    Elem *e = &p->elems[p->ne];
    e->name = name;
    e->attr_first = e->attr_last = e->child_first = e->child_last = -1;
    e->nchildren = 0;
    e->has_elem_child = 0;
    return p->ne++;
}

static void add_child(Pool *p, int elem, int node) {
    Elem *e = &p->elems[elem];
    if (e->child_last < 0) e->child_first = node;
    else p->nodes[e->child_last].next = node;
    e->child_last = node;
    e->nchildren++;
    if (p->nodes[node].kind == K_ELEM) e->has_elem_child = 1;
}

static int add_attr(Pool *p, int elem, PyObject *name) {
    if (p->na >= MAX_ATTRS) return BAIL;
    int a = p->na++;
    p->attrs[a].name = name;
    p->attrs[a].first = p->attrs[a].last = -1;
    p->attrs[a].next = -1;
    Elem *e = &p->elems[elem];
    if (e->attr_last < 0) e->attr_first = a;
    else p->attrs[e->attr_last].next = a;
    e->attr_last = a;
    return a;
}

static void attr_push(Pool *p, int a, int node) {
    if (p->attrs[a].last < 0) p->attrs[a].first = node;
    else p->nodes[p->attrs[a].last].next = node;
    p->attrs[a].last = node;
}

/* Drop attributes without value nodes (the crate keeps only those with some). */
static void prune_attrs(Pool *p, int elem) {
    Elem *e = &p->elems[elem];
    int prev = -1;
    for (int a = e->attr_first; a >= 0; a = p->attrs[a].next) {
        if (p->attrs[a].first < 0) {
            if (prev < 0) e->attr_first = p->attrs[a].next;
            else p->attrs[prev].next = p->attrs[a].next;
            if (e->attr_last == a) e->attr_last = prev;
        } else {
            prev = a;
        }
    }
}

/* ---- values ---------------------------------------------------------------------------- */

/* The fixed size of a type, 0 for variable, -1 for one we do not decode. */
static int fixed_size(uint8_t t) {
    switch (t) {
    case V_I8: case V_U8: return 1;
    case V_I16: case V_U16: return 2;
    case V_I32: case V_U32: case V_BOOL: case V_HEX32: return 4;
    case V_I64: case V_U64: case V_FILETIME: case V_HEX64: return 8;
    case V_GUID: case V_SYSTIME: return 16;
    case V_NULL: case V_STRING: case V_BINARY: case V_SID: case V_SIZET: case V_BINXML: return 0;
    default: return -1;
    }
}

/* Is this a valid value type byte for the crate (else it fails the record)? */
static int known_type(uint8_t t) {
    return t <= 0x15 || t == 0x20 || t == 0x21 || t == 0x23 || (t >= 0x81 && t <= 0x95);
}

/* Check one substitution value of ``len`` bytes; returns its normalised type or BAIL. */
/* Does the crate render this FILETIME (else it fails the record)? From year 9999 on it does not:
 * near the end of jiff's range. */
static inline int filetime_ok(uint64_t ft) {
    return (int64_t)(ft / 10000000ULL) - 11644473600LL < 253370764800LL;
}

static int format_filetime(uint64_t ft, char *out);
static int format_systime(const uint8_t *d, uint32_t off, char *out);

static int check_value(const uint8_t *d, uint8_t type, uint32_t off, uint32_t len, uint32_t *units) {
    int fs = fixed_size(type);
    if (fs < 0) return BAIL;
    if (fs > 0 && len != (uint32_t)fs) return BAIL;
    char tmp[32];
    if (type == V_FILETIME && !filetime_ok(u64at(d, off))) return BAIL;
    if (type == V_SYSTIME && format_systime(d, off, tmp) < 0) return BAIL;
    if (fs > 0) return type;
    switch (type) {
    case V_NULL: return type;
    case V_STRING: {
        if (len & 1) return BAIL;
        int64_t n = utf16_units(d, off, len / 2);
        if (n < 0) return BAIL;
        *units = (uint32_t)n;
        return type;
    }
    case V_BINARY: return type;
    case V_SIZET: return len == 4 ? V_HEX32 : len == 8 ? V_HEX64 : BAIL;
    case V_SID: {
        if (len < 8) return BAIL;
        uint32_t n = d[off + 1];
        return len == 8 + 4 * n ? type : BAIL;
    }
    default: return BAIL;
    }
}

static void put_digits(char *out, int width, unsigned v) {
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` */
static void put_time(char *out, unsigned y, unsigned mo, unsigned d, unsigned h, unsigned mi, unsigned s,
                     unsigned us) {
    put_digits(out, 4, y);
    out[4] = '-';
    put_digits(out + 5, 2, mo);
    out[7] = '-';
    put_digits(out + 8, 2, d);
    out[10] = 'T';
    put_digits(out + 11, 2, h);
    out[13] = ':';
    put_digits(out + 14, 2, mi);
    out[16] = ':';
    put_digits(out + 17, 2, s);
    out[19] = '.';
    put_digits(out + 20, 6, us);
    out[26] = 'Z';
    out[27] = 0;
}

/* FILETIME (100 ns since 1601) to the crate's text, 27 ASCII characters. */
static int format_filetime(uint64_t ft, char *out) {
    int64_t secs = (int64_t)(ft / 10000000ULL) - 11644473600LL;
    uint32_t micros = (uint32_t)((ft % 10000000ULL) / 10);
    if (!filetime_ok(ft)) return BAIL;
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t rem = secs - days * 86400;
    /* days since 1970-01-01 -> civil date (H. Hinnant) */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t dd = doy - (153 * mp + 2) / 5 + 1;
    int64_t mm = mp < 10 ? mp + 3 : mp - 9;
    if (mm <= 2) y++;
    put_time(out, (unsigned)y, (unsigned)mm, (unsigned)dd, (unsigned)(rem / 3600), (unsigned)(rem / 60 % 60),
             (unsigned)(rem % 60), micros);
    return 0;
}

static int format_systime(const uint8_t *d, uint32_t off, char *out) {
    unsigned y = u16at(d, off), mo = u16at(d, off + 2), day = u16at(d, off + 6), h = u16at(d, off + 8),
             mi = u16at(d, off + 10), s = u16at(d, off + 12), ms = u16at(d, off + 14);
    if (!y && !mo && !day && !h && !mi && !s && !ms) return format_filetime(0, out);
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1601 || y > 9999 || mo < 1 || mo > 12 || day < 1 || day > mdays[mo - 1] || h > 23 || mi > 59 ||
        s > 59 || ms > 999)
        return BAIL;
    if (mo == 2 && day == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return BAIL;
    put_time(out, y, mo, day, h, mi, s, ms * 1000);
    return 0;
}

/* Is the value "empty" in the crate's sense (an optional substitution then disappears)? */
static int value_empty(const uint8_t *d, uint8_t type, uint32_t off, uint32_t len) {
    switch (type) {
    case V_NULL: return 1;
    case V_STRING: return utf16_units(d, off, len / 2) == 0;
    case V_BINARY: case V_BINXML: return len == 0;
    default: return 0;
    }
}

/* The value as a JSON number/bool when the crate writes it as one; NULL (no error) otherwise. */
static PyObject *value_number(const uint8_t *d, uint8_t t, uint32_t o) {
    switch (t) {
    case V_I8: return PyLong_FromLong((int8_t)d[o]);
    case V_U8: return PyLong_FromLong(d[o]);
    case V_I16: return PyLong_FromLong((int16_t)u16at(d, o));
    case V_U16: return PyLong_FromLong(u16at(d, o));
    case V_I32: return PyLong_FromLong((int32_t)u32at(d, o));
    case V_U32: return PyLong_FromUnsignedLong(u32at(d, o));
    case V_I64: return PyLong_FromLongLong((int64_t)u64at(d, o));
    case V_U64: return PyLong_FromUnsignedLongLong(u64at(d, o));
    case V_BOOL: return PyBool_FromLong(u32at(d, o) != 0);
    default: return NULL;
    }
}

static const char HEXU[] = "0123456789ABCDEF";

static int put_u64(char *out, uint64_t v) {
    char rev[24];
    int n = 0;
    do {
        rev[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++) out[i] = rev[n - 1 - i];
    return n;
}

static int put_i64(char *out, int64_t v) {
    if (v >= 0) return put_u64(out, (uint64_t)v);
    out[0] = '-';
    return 1 + put_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

static int put_hex(char *out, uint64_t v) {
    static const char hexl[] = "0123456789abcdef";
    char rev[16];
    int n = 0;
    do {
        rev[n++] = hexl[v & 15];
        v >>= 4;
    } while (v);
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < n; i++) out[2 + i] = rev[n - 1 - i];
    return n + 2;
}

/* The text of a fixed-size value into ``tmp`` (>= 40 bytes): its length, or BAIL. */
static int value_ascii(const uint8_t *d, uint8_t t, uint32_t o, char *tmp) {
    int n = 0;
    switch (t) {
    case V_I8: return put_i64(tmp, (int8_t)d[o]);
    case V_U8: return put_u64(tmp, d[o]);
    case V_I16: return put_i64(tmp, (int16_t)u16at(d, o));
    case V_U16: return put_u64(tmp, u16at(d, o));
    case V_I32: return put_i64(tmp, (int32_t)u32at(d, o));
    case V_U32: return put_u64(tmp, u32at(d, o));
    case V_I64: return put_i64(tmp, (int64_t)u64at(d, o));
    case V_U64: return put_u64(tmp, u64at(d, o));
    case V_BOOL:
        if (u32at(d, o)) {
            memcpy(tmp, "true", 4);
            return 4;
        }
        memcpy(tmp, "false", 5);
        return 5;
    case V_HEX32: return put_hex(tmp, u32at(d, o));
    case V_HEX64: return put_hex(tmp, u64at(d, o));
    case V_FILETIME: return format_filetime(u64at(d, o), tmp) < 0 ? BAIL : 27;
    case V_SYSTIME: return format_systime(d, o, tmp) < 0 ? BAIL : 27;
    case V_GUID: {
        static const int order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10) tmp[n++] = '-';
            tmp[n++] = HEXU[d[o + order[i]] >> 4];
            tmp[n++] = HEXU[d[o + order[i]] & 15];
        }
        return n;
    }
    default: return BAIL;
    }
}

/* The value's text appended to TB. */
static int value_text(const uint8_t *d, uint8_t t, uint32_t o, uint32_t len) {
    char tmp[64];
    int n = 0;
    switch (t) {
    case V_NULL: return 0;
    case V_STRING: {
        int64_t units = utf16_units(d, o, len / 2);
        return buf_utf16(&TB, d, o, (uint32_t)units);
    }
    case V_SID: {
        uint64_t auth = 0;
        for (int i = 2; i < 8; i++) auth = (auth << 8) | d[o + i];
        n = snprintf(tmp, sizeof tmp, "S-%u-%llu", d[o], (unsigned long long)auth);
        if (buf_ascii(&TB, tmp, n) < 0) return -2;
        for (uint32_t i = 0; i < d[o + 1]; i++) {
            n = snprintf(tmp, sizeof tmp, "-%u", u32at(d, o + 8 + 4 * i));
            if (buf_ascii(&TB, tmp, n) < 0) return -2;
        }
        return 0;
    }
    case V_BINARY: {
        if (buf_reserve(&TB, 2 * (Py_ssize_t)len) < 0) return -2;
        for (uint32_t i = 0; i < len; i++) {
            TB.s[TB.n++] = HEXU[d[o + i] >> 4];
            TB.s[TB.n++] = HEXU[d[o + i] & 15];
        }
        if (TB.max < 0x7F) TB.max = 0x7F;
        return 0;
    }
    default:
        n = value_ascii(d, t, o, tmp);
        if (n == BAIL) return BAIL;
    }
    return buf_ascii(&TB, tmp, n) < 0 ? -2 : 0;
}

/* ---- BinXml streams -------------------------------------------------------------------- */

/* MODE_RECORD_LAZY: a template instance at the top of the stream is read lazily. */
enum { MODE_RECORD, MODE_RECORD_LAZY, MODE_TEMPLATE };

static int parse_stream(Ctx *x, Pool *p, uint32_t start, uint32_t size, int mode, int nest);

static uint32_t template_key(Ctx *x, uint32_t start, uint32_t size, uint32_t off);

/* The template definition at ``off``, once per chunk: its index in x->templates, its tokens
 * keyed (template_key) but not yet parsed (``template_root``). */
static int template_at(Ctx *x, uint32_t off, int nest) {
    for (int i = 0; i < x->ntemplates; i++)
        if (x->templates[i].off == off) return i;
    if (x->ntemplates >= MAX_TEMPLATES || !has(off, 24)) return BAIL;
    uint32_t size = u32at(x->d, off + 20);
    if (!has(off + 24ull, size)) return BAIL;
    Template *t = &x->templates[x->ntemplates];
    t->off = off;
    t->size = size;
    t->root = UNPARSED;
    t->nest = nest;
    t->key = template_key(x, off + 24, size, off);
    return x->ntemplates++;
}

/* Template ``i``'s root in the template pool, parsed when first asked for: a record replayed from
 * a plan never asks (a plan is made from a record rendered from the tree of a template of the
 * same tokens and names, parsed then). BAIL when it cannot be parsed. */
static Py_ssize_t N_PARSED; /* templates parsed, for counters() */

static int template_root(Ctx *x, int i) {
    Template *t = &x->templates[i];
    if (t->root == UNPARSED) {
        N_PARSED++;
        int root = parse_stream(x, x->tpl, t->off + 24, t->size, MODE_TEMPLATE, t->nest);
        t->root = root < 0 ? BAIL : root;
    }
    return t->root;
}

/* A copy of template element ``te`` in the record pool with substitutions resolved; ``base``:
 * where the values are in x->lv (the origin of the nodes made from them), -1 not there. */
static int instantiate(Ctx *x, int te, const Value *values, int nvalues, int depth, int base);

static int resolve_into(Ctx *x, const Node *tn, const Value *values, int nvalues, int depth, int base, int *out) {
    Pool *r = x->rec;
    *out = -1;
    if (tn->kind == K_ELEM) {
        int e = instantiate(x, tn->elem, values, nvalues, depth + 1, base);
        if (e < 0) return BAIL;
        int n = new_node(r);
        if (n < 0) return BAIL;
        r->nodes[n].kind = K_ELEM;
        r->nodes[n].elem = e;
        *out = n;
        return 0;
    }
    if (tn->kind != K_PH) {
        int n = new_node(r);
        if (n < 0) return BAIL;
        r->nodes[n] = *tn;
        r->nodes[n].next = -1;
        *out = n;
        return 0;
    }
    if (tn->index >= nvalues) return 0;
    const Value *v = &values[tn->index];
    if (v->elem >= 0) {
        int n = new_node(r);
        if (n < 0) return BAIL;
        r->nodes[n].kind = K_ELEM;
        r->nodes[n].elem = v->elem;
        *out = n;
        return 0;
    }
    if (tn->optional && (v->type == V_STRING ? v->units == 0 : value_empty(x->d, v->type, v->off, v->len)))
        return 0;
    int n = new_node(r);
    if (n < 0) return BAIL;
    Node *o = &r->nodes[n];
    if (base >= 0) o->origin = (int16_t)(base + tn->index);
    if (v->type == V_STRING) {
        o->kind = K_TEXT;
        o->off = v->off;
        o->len = v->units;
    } else {
        o->kind = K_VALUE;
        o->vtype = v->type;
        o->off = v->off;
        o->len = v->len;
    }
    *out = n;
    return 0;
}

static int instantiate(Ctx *x, int te, const Value *values, int nvalues, int depth, int base) {
    if (depth > MAX_DEPTH) return BAIL;
    Pool *t = x->tpl, *r = x->rec;
    int e = new_elem(r, t->elems[te].name);
    if (e < 0) return BAIL;
    for (int a = t->elems[te].attr_first; a >= 0; a = t->attrs[a].next) {
        int ra = -1;
        for (int tn = t->attrs[a].first; tn >= 0; tn = t->nodes[tn].next) {
            int n;
            if (resolve_into(x, &t->nodes[tn], values, nvalues, depth, base, &n) < 0) return BAIL;
            if (n < 0) continue;
            if (ra < 0 && (ra = add_attr(r, e, t->attrs[a].name)) < 0) return BAIL;
            attr_push(r, ra, n);
        }
    }
    for (int tn = t->elems[te].child_first; tn >= 0; tn = t->nodes[tn].next) {
        int n;
        if (resolve_into(x, &t->nodes[tn], values, nvalues, depth, base, &n) < 0) return BAIL;
        if (n >= 0) add_child(r, e, n);
    }
    return e;
}

/* LAZY + f: the root ``parse_stream`` gives for a stream whose only content is a template
 * instance read lazily into frame f (no element of the pools yet: ``materialize``). */
#define LAZY (MAX_ELEMS + 1)

/* A template instance token at ``*pos`` (past the 0x0c): its element in the record pool; with
 * ``lazy`` (and room in the frames), LAZY + its frame, its BinXml values read lazily too. */
static int template_instance(Ctx *x, uint32_t *pos, int nest, int lazy) {
    const uint8_t *d = x->d;
    uint32_t at = *pos;
    if (!has(at, 9)) return BAIL;
    uint32_t def = u32at(d, at + 5);
    at += 9;
    if (at == def) {
        if (!has(at, 24)) return BAIL;
        uint64_t skip = 24ull + u32at(d, at + 20);
        if (!has(at, skip)) return BAIL;
        at += (uint32_t)skip;
    }
    if (!has(at, 4)) return BAIL;
    uint32_t count = u32at(d, at);
    at += 4;
    if (count > MAX_VALUES || !has(at, 4ull * count)) return BAIL;
    Value own[MAX_VALUES];
    Value *values = own;
    int f = -1;
    if (lazy && x->nframes < MAX_FRAMES && x->nlv + count <= MAX_LAZY_VALUES) {
        f = x->nframes++;
        x->frames[f].base = x->nlv;
        x->frames[f].count = (int)count;
        values = x->lv + x->nlv;
        x->nlv += (int)count;
    }
    uint32_t desc = at;
    at += 4 * count;
    for (uint32_t i = 0; i < count; i++) {
        uint16_t len = u16at(d, desc + 4 * i);
        uint8_t type = d[desc + 4 * i + 2];
        if (!known_type(type) || !has(at, len)) return BAIL;
        values[i].elem = -1;
        values[i].off = at;
        values[i].len = len;
        if (type == V_BINXML) {
            values[i].type = len > 0 ? V_BINXML : V_NULL; /* an empty fragment is a null value */
            if (len > 0) {
                int e = parse_stream(x, x->rec, at, len, f >= 0 ? MODE_RECORD_LAZY : MODE_RECORD, nest + 1);
                if (e < 0) return BAIL;
                values[i].elem = e;
                if (e < LAZY) x->plannable = 0;
            }
        } else {
            int t = check_value(d, type, at, len, &values[i].units);
            if (t < 0) return BAIL;
            values[i].type = (uint8_t)t;
        }
        at += len;
    }
    *pos = at;
    int t = template_at(x, def, nest);
    if (t < 0) return BAIL;
    if (f < 0) {
        int root = template_root(x, t);
        return root < 0 ? BAIL : instantiate(x, root, values, (int)count, 0, -1);
    }
    x->frames[f].key = x->templates[t].key;
    x->frames[f].tpl = t;
    return LAZY + f;
}

/* The element of a frame read lazily, its BinXml values first (as an eager read makes them). */
static int materialize(Ctx *x, int f) {
    const Frame *fr = &x->frames[f];
    Value *vals = x->lv + fr->base;
    for (int i = 0; i < fr->count; i++) {
        if (vals[i].elem >= LAZY) {
            int e = materialize(x, vals[i].elem - LAZY);
            if (e < 0) return BAIL;
            vals[i].elem = e;
        }
    }
    int root = template_root(x, fr->tpl);
    if (root < 0) return BAIL;
    return instantiate(x, root, vals, fr->count, 0, fr->base);
}

/* A text or placeholder node goes to the attribute being read, or under the open element. */
static int attach_value(Pool *p, const int *stack, int depth, int current, int cur_attr, int n) {
    if (current >= 0) {
        if (cur_attr >= 0) attr_push(p, cur_attr, n);
        return 0;
    }
    if (depth == 0) return BAIL;
    add_child(p, stack[depth - 1], n);
    return 0;
}

/* Hang a finished element under the open one, or make it the stream's root (only one). */
static int attach_elem(Pool *p, const int *stack, int depth, int *root, int e) {
    if (depth > 0) {
        int n = new_node(p);
        if (n < 0) return BAIL;
        p->nodes[n].kind = K_ELEM;
        p->nodes[n].elem = e;
        add_child(p, stack[depth - 1], n);
        return 0;
    }
    if (*root >= 0) return BAIL;
    *root = e;
    return 0;
}

static int parse_stream(Ctx *x, Pool *p, uint32_t start, uint32_t size, int mode, int nest) {
    if (nest > MAX_NEST) return BAIL;
    const uint8_t *d = x->d;
    uint32_t pos = start, end = start + size;
    if (!within(end)) return BAIL;
    int stack[MAX_DEPTH + 1], depth = 0;
    int current = -1, cur_attr = -1, root = -1;
    while (pos < end) {
        uint8_t tok = d[pos++];
        switch (tok) {
        case 0x00:
            pos = end;
            continue;
        case 0x0c: {
            if (mode == MODE_TEMPLATE || current >= 0) return BAIL;
            int e = template_instance(x, &pos, nest, mode == MODE_RECORD_LAZY && depth == 0);
            if (e < 0 || attach_elem(p, stack, depth, &root, e) < 0) return BAIL;
            break;
        }
        case 0x01:
        case 0x41: {
            if (current >= 0) return BAIL;
            if (mode == MODE_TEMPLATE) pos += 2; /* dependency id */
            pos += 4;                            /* data size */
            uint32_t name_off;
            if (pos > end || read_name(x, &pos, &name_off) < 0) return BAIL;
            if (tok == 0x41) pos += 4; /* attribute list size */
            if (pos > end) return BAIL;
            PyObject *name = name_at(x, name_off);
            if (name == NULL) return BAIL;
            current = new_elem(p, name);
            if (current < 0) return BAIL;
            cur_attr = -1;
            break;
        }
        case 0x02:
        case 0x03: {
            if (current < 0) return BAIL;
            prune_attrs(p, current);
            if (tok == 0x02) {
                if (depth >= MAX_DEPTH) return BAIL;
                stack[depth++] = current;
                current = -1;
                break;
            }
            int e = current;
            current = -1;
            goto attach;
        case 0x04:
            if (current >= 0 || depth == 0) return BAIL;
            e = stack[--depth];
        attach:
            if (attach_elem(p, stack, depth, &root, e) < 0) return BAIL;
            break;
        }
        case 0x05:
        case 0x45: {
            if (!has(pos, 3) || d[pos] != V_STRING) return BAIL;
            uint32_t units = u16at(d, pos + 1);
            pos += 3;
            if (!has(pos, 2ull * units) || pos + 2 * units > end) return BAIL;
            int64_t n16 = utf16_units(d, pos, units);
            if (n16 < 0) return BAIL;
            int n = new_node(p);
            if (n < 0) return BAIL;
            p->nodes[n].kind = K_TEXT;
            p->nodes[n].off = pos;
            p->nodes[n].len = (uint32_t)n16;
            pos += 2 * units;
            if (attach_value(p, stack, depth, current, cur_attr, n) < 0) return BAIL;
            break;
        }
        case 0x06:
        case 0x46: {
            if (current < 0) return BAIL;
            uint32_t name_off;
            if (read_name(x, &pos, &name_off) < 0 || pos > end) return BAIL;
            PyObject *name = name_at(x, name_off);
            if (name == NULL) return BAIL;
            cur_attr = add_attr(p, current, name);
            if (cur_attr < 0) return BAIL;
            break;
        }
        case 0x0d:
        case 0x0e: {
            if (mode != MODE_TEMPLATE || !has(pos, 3) || pos + 3 > end) return BAIL;
            uint8_t type = d[pos + 2];
            if (!known_type(type)) return BAIL;
            int n = new_node(p);
            if (n < 0) return BAIL;
            p->nodes[n].kind = K_PH;
            p->nodes[n].index = u16at(d, pos);
            p->nodes[n].vtype = type;
            p->nodes[n].optional = tok == 0x0e;
            pos += 3;
            if (attach_value(p, stack, depth, current, cur_attr, n) < 0) return BAIL;
            break;
        }
        case 0x0f:
            pos += 3;
            break;
        default:
            return BAIL; /* CDATA, references, PI, unknown: the package's path */
        }
    }
    if (current >= 0 || depth != 0 || root < 0 || pos != end) return BAIL;
    return root;
}

/* ---- rendering: the crate's JSON writer, producing what orjson.loads makes of it -------- */

static int node_is_content(Ctx *x, const Node *n) {
    switch (n->kind) {
    case K_TEXT: return n->len > 0;
    case K_VALUE: return !value_empty(x->d, n->vtype, n->off, n->len);
    default: return 0;
    }
}

static int list_has_content(Ctx *x, int first) {
    for (int i = first; i >= 0; i = x->rec->nodes[i].next)
        if (node_is_content(x, &x->rec->nodes[i])) return 1;
    return 0;
}

static void content_layout(Ctx *x, const Elem *e, int *has_text, int *has_elem) {
    *has_text = 0;
    *has_elem = e->has_elem_child;
    for (int i = e->child_first; i >= 0; i = x->rec->nodes[i].next) {
        const Node *n = &x->rec->nodes[i];
        if (n->kind == K_ELEM) *has_elem = 1;
        else if (node_is_content(x, n)) *has_text = 1;
    }
}

static int attrs_have_text(Ctx *x, const Elem *e) {
    for (int a = e->attr_first; a >= 0; a = x->rec->attrs[a].next)
        if (list_has_content(x, x->rec->attrs[a].first)) return 1;
    return 0;
}

/* Text of a node list into TB: -1 bail, -2 error. */
static int text_content(Ctx *x, int first, int skip_elements) {
    for (int i = first; i >= 0; i = x->rec->nodes[i].next) {
        const Node *n = &x->rec->nodes[i];
        int rc = 0;
        if (n->kind == K_TEXT) rc = buf_utf16(&TB, x->d, n->off, n->len) < 0 ? -2 : 0;
        else if (n->kind == K_VALUE) rc = value_text(x->d, n->vtype, n->off, n->len);
        else if (n->kind == K_ELEM && !skip_elements) rc = BAIL;
        if (rc) return rc;
    }
    return 0;
}

/* The text buffered from `mark` on as a new str, TB cut back to `mark` either way; NULL with
 * *bail set when the renderer returned BAIL, NULL with an error for any other non-zero rc. */
static PyObject *take_text(Py_ssize_t mark, int rc, int *bail) {
    if (rc) {
        TB.n = mark;
        if (rc == BAIL) *bail = 1;
        return NULL;
    }
    PyObject *s = buf_str(&TB, mark);
    TB.n = mark;
    return s;
}

/* A new str of one text node or one value node (not V_NULL), as fresh_text makes it. */
static PyObject *node_fresh(Ctx *x, const Node *n, int *bail) {
    if (n->kind == K_TEXT) return utf16_str(x->d, n->off, n->len);
    char tmp[64];
    if (n->vtype != V_BINARY && n->vtype != V_SID) {
        int len = value_ascii(x->d, n->vtype, n->off, tmp);
        if (len == BAIL) {
            *bail = 1;
            return NULL;
        }
        return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, tmp, len);
    }
    Py_ssize_t mark = TB.n;
    TB.max = 0;
    return take_text(mark, value_text(x->d, n->vtype, n->off, n->len), bail);
}

/* A new str of the text of a node list, NULL with *bail set or an error. */
static PyObject *fresh_text(Ctx *x, int first, int skip_elements, int *bail) {
    if (first >= 0 && x->rec->nodes[first].next < 0) { /* one node: no buffer */
        const Node *n = &x->rec->nodes[first];
        if (n->kind == K_TEXT || (n->kind == K_VALUE && n->vtype != V_BINARY && n->vtype != V_SID && n->vtype != V_NULL))
            return node_fresh(x, n, bail);
    }
    Py_ssize_t mark = TB.n;
    TB.max = 0;
    return take_text(mark, text_content(x, first, skip_elements), bail);
}

static inline uint64_t hash_mix(uint64_t h, const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 32);
}

/* The hash of the value and name caches. Longer than 48 bytes, a text is hashed by its length and
 * a sample of 48 of its bytes (the first, middle and last 16): every lookup compares all the
 * bytes before it takes a cached str, so sharing a sample costs a memcmp, never a wrong value
 * (at most ~1,300 texts that long fit in a chunk). On x5 (callgrind, 593k calls) every byte
 * hashed took ~100 instructions per call, the sample ~66. */
static uint64_t bytes_hash(const uint8_t *p, uint32_t n, uint8_t tag) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)n << 8) ^ tag;
    if (n > 48) {
        const uint8_t *mid = p + n / 2 - 8, *end = p + n - 16;
        h = hash_mix(hash_mix(h, p), p + 8);
        h = hash_mix(hash_mix(h, mid), mid + 8);
        return hash_mix(hash_mix(h, end), end + 8);
    }
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) h = hash_mix(h, p + i);
    if (i < n) {
        uint8_t w[8] = {0};
        memcpy(w, p + i, n - i);
        h = hash_mix(h, w);
    }
    return h;
}

/* The source of a value made from node ``n`` alone: its substitution when it has content, else
 * VS_CONST (an empty node renders by its type and place alone, which the plan's key fixes). */
static inline void from_node(Ctx *x, const Node *n) {
    x->vsrc = n->origin >= 0 && node_is_content(x, n) ? n->origin : VS_CONST;
}

static PyObject *cached_text(Ctx *x, const Node *n, int *bail);

/* New reference to the text, NULL with *bail set or an error. */
static PyObject *text_object(Ctx *x, int first, int skip_elements, int *bail) {
    if (first < 0 || x->rec->nodes[first].next >= 0) {
        x->vsrc = first < 0 ? VS_CONST : VS_OPAQUE;
        return fresh_text(x, first, skip_elements, bail);
    }
    const Node *n = &x->rec->nodes[first];
    from_node(x, n);
    if (n->kind != K_TEXT && (n->kind != K_VALUE || n->vtype == V_NULL)) return fresh_text(x, first, skip_elements, bail);
    return cached_text(x, n, bail);
}

/* The text of a single text or value node (not V_NULL), made once per chunk for the same
 * bytes: measured on the attack samples, 77 % of the str values of a chunk's events repeat one
 * made before (Provider names, Computer, Channel, user SIDs, Keywords, image paths), and a
 * repeat costs a hash and a memcmp where a new str costs an allocation, a copy, its own hash
 * later and a free. */
static PyObject *cached_text(Ctx *x, const Node *n, int *bail) {
    uint8_t tag = n->kind == K_TEXT ? TAG_TEXT : n->vtype;
    uint32_t len = n->kind == K_TEXT ? 2 * n->len : n->len;
    uint64_t h = bytes_hash(x->d + n->off, len, tag);
    uint32_t i = (uint32_t)h & (VAL_SLOTS - 1);
    for (; x->vals[i].obj != NULL; i = (i + 1) & (VAL_SLOTS - 1)) {
        const ValEntry *e = &x->vals[i];
        if (e->h == h && e->len == len && e->tag == tag && memcmp(x->d + e->off, x->d + n->off, len) == 0)
            return Py_NewRef(e->obj);
    }
    PyObject *s = node_fresh(x, n, bail);
    if (s != NULL && x->nvals < MAX_VALS) {
        ValEntry *e = &x->vals[i];
        e->h = h;
        e->off = n->off;
        e->len = len;
        e->tag = tag;
        e->obj = Py_NewRef(s);
        x->vused[x->nvals++] = (uint16_t)i;
    }
    return s;
}

/* try_write_as_number: a number object, or NULL (no error) when the nodes are not one number. */
static PyObject *as_number(Ctx *x, int first, int skip_elements) {
    const Node *single = NULL;
    for (int i = first; i >= 0; i = x->rec->nodes[i].next) {
        const Node *n = &x->rec->nodes[i];
        if (n->kind == K_ELEM) {
            if (skip_elements) continue;
            return NULL;
        }
        if (n->kind == K_TEXT) {
            if (skip_elements) {
                if (n->len) return NULL;
            } else if (single != NULL || n->len) {
                return NULL;
            } else {
                single = n;
            }
            continue;
        }
        if (skip_elements && value_empty(x->d, n->vtype, n->off, n->len)) continue;
        if (single != NULL) return NULL;
        single = n;
    }
    if (single == NULL || single->kind != K_VALUE) return NULL;
    PyObject *num = value_number(x->d, single->vtype, single->off);
    if (num != NULL) from_node(x, single);
    return num;
}

static PyObject *content_value(Ctx *x, int first, int skip_elements, int *bail) {
    PyObject *num = as_number(x, first, skip_elements);
    if (num != NULL || PyErr_Occurred()) return num;
    return text_object(x, first, skip_elements, bail);
}

/* try_write_leaf_value: 1 done (*out set), 0 not a leaf, -1 bail/error. */
static int leaf_value(Ctx *x, const Elem *e, int empty_as_string, PyObject **out, int *bail) {
    if (e->has_elem_child || e->nchildren != 1) return 0;
    const Node *n = &x->rec->nodes[e->child_first];
    if (n->kind == K_TEXT || (n->kind == K_VALUE && value_empty(x->d, n->vtype, n->off, n->len))) {
        if (n->kind == K_TEXT && n->len) {
            *out = text_object(x, e->child_first, 0, bail);
        } else {
            *out = Py_NewRef(empty_as_string ? S_empty : Py_None);
            x->vsrc = VS_CONST;
        }
        return *out ? 1 : -1;
    }
    if (n->kind != K_VALUE) return 0;
    *out = value_number(x->d, n->vtype, n->off);
    if (*out != NULL) from_node(x, n);
    else if (!PyErr_Occurred()) *out = text_object(x, e->child_first, 0, bail);
    return *out ? 1 : -1;
}

/* The key of a ``Data Name=`` element: one literal text is kept per chunk (interned).
 * ``space`` (optional): set to whether it has a space when that is known. */
static PyObject *data_key(Ctx *x, int first, int *space, int *bail) {
    const Node *n = &x->rec->nodes[first];
    if (n->kind != K_TEXT || n->next >= 0 || n->len == 0 || x->nnames >= MAX_NAMES) return text_object(x, first, 0, bail);
    NameEntry *slot = name_slot(x, n->off, n->len);
    if (slot->off == 0) {
        PyObject *s = kept_text(x->d, n->off, n->len, TAG_KEY);
        if (s == NULL) return NULL;
        slot->off = n->off;
        slot->len = n->len;
        slot->name = s;
        slot->space = PyUnicode_FindChar(s, ' ', 0, PyUnicode_GET_LENGTH(s), 1) != -1;
        x->used[x->nnames++] = (uint16_t)(slot - x->names);
    }
    if (space != NULL) *space = slot->space;
    return Py_NewRef(slot->name);
}

static PyObject *element_value(Ctx *x, int ei, int in_container, int *bail);
static PyObject *element_body(Ctx *x, int ei, int in_container, int omit_attrs, int has_text, int *bail);

static PyObject *data_value(Ctx *x, int ei, int *bail) {
    const Elem *e = &x->rec->elems[ei];
    PyObject *out = NULL;
    int rc = leaf_value(x, e, 1, &out, bail);
    if (rc) return out;
    int has_text, has_elem;
    content_layout(x, e, &has_text, &has_elem);
    if (!has_text && !has_elem) {
        x->vsrc = VS_CONST;
        return Py_NewRef(S_empty);
    }
    if (has_elem) return element_body(x, ei, 0, 1, has_text, bail);
    return content_value(x, e->child_first, 0, bail);
}

static PyObject *element_value(Ctx *x, int ei, int in_container, int *bail) {
    const Elem *e = &x->rec->elems[ei];
    if (e->attr_first < 0) {
        PyObject *out = NULL;
        int rc = leaf_value(x, e, 0, &out, bail);
        if (rc) return out;
    }
    int has_text, has_elem;
    content_layout(x, e, &has_text, &has_elem);
    int attr_text = attrs_have_text(x, e);
    if (!has_elem && !has_text && !attr_text) {
        x->vsrc = VS_CONST;
        Py_RETURN_NONE;
    }
    if (!has_elem && !attr_text) return content_value(x, e->child_first, 0, bail);
    return element_body(x, ei, in_container, 0, has_text, bail);
}

/* The first attribute called Name (its value list head), or -2 when there is none. */
static int name_attr(Ctx *x, const Elem *e) {
    for (int a = e->attr_first; a >= 0; a = x->rec->attrs[a].next)
        if (x->rec->attrs[a].name == S_Name) return x->rec->attrs[a].first;
    return -2;
}

/* Names are interned per chunk, so ours compare by identity. */
static inline int is_named(PyObject *name, PyObject *interned) { return name == interned; }

static int set_item(PyObject *dict, PyObject *key, PyObject *value) {
    if (value == NULL) return -1;
    int rc = PyDict_SetItem(dict, key, value);
    Py_DECREF(value);
    return rc;
}

/* ``brace_guids`` of normalize / _flatten, for one value: a bare upper-case GUID
 * (``0CCE9243-69AE-11D9-BED3-505054503030``, as evtx renders GUID values) gets the braces
 * Windows and Sigma rules write. Applied to every value put into the flat fields, it is the
 * same as the pass over the finished dict. Steals ``value``; new reference. */
static PyObject *braced(Ctx *x, PyObject *value) {
    if (value == NULL || !PyUnicode_CheckExact(value) || PyUnicode_GET_LENGTH(value) != 36 ||
        PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND)
        return value;
    size_t slot = ((uintptr_t)value >> 4) & (GUID_MEMO - 1);
    if (x->guids[slot].in == value) { /* a value cached for the chunk: the same GUID again */
        Py_DECREF(value);
        return Py_NewRef(x->guids[slot].out);
    }
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(value);
    for (int i = 0; i < 36; i++) {
        Py_UCS1 ch = s[i];
        int ok = (i == 8 || i == 13 || i == 18 || i == 23) ? ch == '-'
                                                          : (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F');
        if (!ok) return value;
    }
    PyObject *b = PyUnicode_New(38, 127);
    if (b != NULL) {
        Py_UCS1 *o = PyUnicode_1BYTE_DATA(b);
        o[0] = '{';
        memcpy(o + 1, s, 36);
        o[37] = '}';
        Py_XSETREF(x->guids[slot].in, Py_NewRef(value)); /* held: its address stays its own */
        Py_XSETREF(x->guids[slot].out, Py_NewRef(b));
    }
    Py_DECREF(value);
    return b;
}

/* Write down a step of the plan being recorded: out[key] = ``value`` (made from x->vsrc), or
 * with ``del`` the removal of out[key]. A value of several nodes or an object breaks the plan. */
static void record_op(Ctx *x, PyObject *key, PyObject *value, int del) {
    Plan *p = x->recording;
    if (p == NULL || p->broken) return;
    if (p->nops >= MAX_PLAN_OPS || (!del && (value == NULL || x->vsrc == VS_OPAQUE))) {
        p->broken = 1;
        return;
    }
    Op *o = &p->ops[p->nops++];
    o->key = Py_NewRef(key);
    o->del = (uint8_t)del;
    o->src = (int16_t)(del ? VS_CONST : x->vsrc);
    o->value = !del && x->vsrc == VS_CONST ? Py_NewRef(value) : NULL;
}

/* out[key] = value for the flat fields (steals value); the value's source is x->vsrc. */
static int put_flat(Ctx *x, PyObject *out, PyObject *key, PyObject *value) {
    record_op(x, key, value, 0);
    return set_item(out, key, braced(x, value));
}

#define MAX_SUFFIX_NAMES 64

static PyObject *element_body_in(Ctx *x, int ei, int in_container, int omit_attrs, int has_text, int *bail);

/* Elements nested deeper than this in one record (BinXml inside BinXml can stack streams) are
 * left to the package: the JSON parser of the old path gives up at 64 levels and the Python
 * fallback refuses past 100, which the exact result must reproduce. */
#define MAX_RENDER_DEPTH 30

static PyObject *element_body(Ctx *x, int ei, int in_container, int omit_attrs, int has_text, int *bail) {
    if (x->depth >= MAX_RENDER_DEPTH) {
        *bail = 1;
        return NULL;
    }
    x->depth++;
    PyObject *d = element_body_in(x, ei, in_container, omit_attrs, has_text, bail);
    x->depth--;
    x->vsrc = VS_OPAQUE;
    return d;
}

static PyObject *element_body_in(Ctx *x, int ei, int in_container, int omit_attrs, int has_text, int *bail) {
    Pool *r = x->rec;
    const Elem *e = &r->elems[ei];
    int flatten = 0;
    if (in_container) {
        for (int i = e->child_first; i >= 0 && !flatten; i = r->nodes[i].next) {
            if (r->nodes[i].kind != K_ELEM) continue;
            const Elem *c = &r->elems[r->nodes[i].elem];
            if (!is_named(c->name, S_Data)) continue;
            int na = name_attr(x, c);
            if (na != -2 && list_has_content(x, na)) flatten = 1;
        }
    }
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    if (!omit_attrs && attrs_have_text(x, e)) {
        PyObject *attrs = PyDict_New();
        if (attrs == NULL) goto fail;
        for (int a = e->attr_first; a >= 0; a = r->attrs[a].next) {
            if (!list_has_content(x, r->attrs[a].first)) continue;
            PyObject *v = as_number(x, r->attrs[a].first, 0);
            if (v == NULL && !PyErr_Occurred()) v = text_object(x, r->attrs[a].first, 0, bail);
            if (set_item(attrs, r->attrs[a].name, v) < 0) {
                Py_DECREF(attrs);
                goto fail;
            }
        }
        if (set_item(d, S_attributes, attrs) < 0) goto fail;
    }
    if (has_text && set_item(d, S_text, content_value(x, e->child_first, 1, bail)) < 0) goto fail;
    int positional = 0, emitted = 0;
    if (in_container && !flatten) {
        for (int i = e->child_first; i >= 0; i = r->nodes[i].next)
            if (r->nodes[i].kind == K_ELEM && is_named(r->elems[r->nodes[i].elem].name, S_Data)) positional++;
    }
    PyObject *seen_names[MAX_SUFFIX_NAMES];
    int seen_counts[MAX_SUFFIX_NAMES], nseen = 0;
    for (int i = e->child_first; i >= 0; i = r->nodes[i].next) {
        if (r->nodes[i].kind != K_ELEM) continue;
        int ci = r->nodes[i].elem;
        PyObject *cname = r->elems[ci].name;
        if (in_container && is_named(cname, S_Data)) {
            if (flatten) {
                int na = name_attr(x, &r->elems[ci]);
                if (na == -2 || !list_has_content(x, na)) continue;
                PyObject *key = data_key(x, na, NULL, bail);
                if (key == NULL) goto fail;
                int rc = set_item(d, key, data_value(x, ci, bail));
                Py_DECREF(key);
                if (rc < 0) goto fail;
            } else if (!emitted && positional > 0) {
                emitted = 1;
                PyObject *inner;
                if (positional == 1) {
                    inner = data_value(x, ci, bail);
                } else {
                    inner = PyList_New(0);
                    for (int j = e->child_first; inner != NULL && j >= 0; j = r->nodes[j].next) {
                        if (r->nodes[j].kind != K_ELEM || !is_named(r->elems[r->nodes[j].elem].name, S_Data))
                            continue;
                        PyObject *item = data_value(x, r->nodes[j].elem, bail);
                        if (item == NULL || PyList_Append(inner, item) < 0) Py_CLEAR(inner);
                        Py_XDECREF(item);
                    }
                }
                if (inner == NULL) goto fail;
                PyObject *wrap = PyDict_New();
                if (wrap == NULL || set_item(wrap, S_text, inner) < 0) {
                    Py_XDECREF(wrap);
                    goto fail;
                }
                if (set_item(d, S_Data, wrap) < 0) goto fail;
            }
            continue;
        }
        int suffix = 0, k;
        for (k = 0; k < nseen; k++)
            if (seen_names[k] == cname) break; /* names are interned per chunk */
        if (k < nseen) {
            suffix = seen_counts[k]++;
        } else {
            if (nseen >= MAX_SUFFIX_NAMES) {
                *bail = 1;
                goto fail;
            }
            seen_names[nseen] = cname;
            seen_counts[nseen++] = 1;
        }
        PyObject *key = suffix ? PyUnicode_FromFormat("%U_%d", cname, suffix) : Py_NewRef(cname);
        if (key == NULL) goto fail;
        int container = is_named(cname, S_EventData) || is_named(cname, S_UserData);
        int rc = set_item(d, key, element_value(x, ci, container, bail));
        Py_DECREF(key);
        if (rc < 0) goto fail;
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* ---- the flat fields straight from the tree --------------------------------------------
 *
 * ``from_evtx_dict(render_record(...))`` builds a nested dict per element only for the flattener
 * to take it apart. For the common shape (an Event with System and EventData, no UserData) the
 * same fields are written straight into the flat dict, following ``normalize.flatten_system``
 * and ``flatten_data`` step by step (System in two passes: plain children, then the children
 * that render as objects). Anything else -- UserData, text or attributes on System or
 * EventData, a repeated EventData key, an element inside a Data value, a non-integer EventID --
 * takes the nested path, whose result is exact by construction.
 */

static PyObject *SYSTEM_ATTRS = NULL; /* normalize.SYSTEM_ATTRS */
static PyObject *CORE = NULL;         /* frozenset of System names EventData may not overwrite */
static PyObject *S_prefix, *S_System;

#define GENERIC 1
#define MAX_PENDING 32
#define MAX_DATA_KEYS 256

/* Does element_value() make a dict of this element (else a plain value or None)? */
static int renders_object(Ctx *x, const Elem *e, int *has_text, int *attr_text) {
    int has_elem;
    content_layout(x, e, has_text, &has_elem);
    *attr_text = attrs_have_text(x, e);
    if (e->attr_first < 0 && !e->has_elem_child && e->nchildren == 1) {
        int k = x->rec->nodes[e->child_first].kind;
        if (k == K_TEXT || k == K_VALUE) return 0; /* a leaf */
    }
    return has_elem || *attr_text;
}

/* The key of a child element: its name, or ``name_N`` for the N-th repeat. */
static PyObject *suffixed(PyObject *name, PyObject **seen, int *counts, int *nseen) {
    int k;
    for (k = 0; k < *nseen; k++)
        if (seen[k] == name) break;
    if (k < *nseen) return PyUnicode_FromFormat("%U_%d", name, counts[k]++);
    if (*nseen >= MAX_SUFFIX_NAMES) return NULL;
    seen[*nseen] = name;
    counts[(*nseen)++] = 1;
    return Py_NewRef(name);
}

static int flat_system(Ctx *x, int si, PyObject *out, int *bail) {
    Pool *r = x->rec;
    const Elem *sys = &r->elems[si];
    int has_text, attr_text;
    if (!renders_object(x, sys, &has_text, &attr_text)) return GENERIC;
    if (has_text || attr_text) return GENERIC;
    PyObject *seen[MAX_SUFFIX_NAMES];
    int counts[MAX_SUFFIX_NAMES], nseen = 0;
    struct { PyObject *key; int elem, has_text, attr_text; } pending[MAX_PENDING];
    int npending = 0, rc = -1;
    for (int i = sys->child_first; i >= 0; i = r->nodes[i].next) {
        if (r->nodes[i].kind != K_ELEM) continue;
        int ci = r->nodes[i].elem;
        const Elem *c = &r->elems[ci];
        PyObject *key = suffixed(c->name, seen, counts, &nseen);
        if (key == NULL) {
            if (!PyErr_Occurred()) rc = GENERIC;
            goto done;
        }
        int ctext, cattr;
        if (renders_object(x, c, &ctext, &cattr)) {
            if (npending >= MAX_PENDING) {
                Py_DECREF(key);
                rc = GENERIC;
                goto done;
            }
            pending[npending].key = key;
            pending[npending].elem = ci;
            pending[npending].has_text = ctext;
            pending[npending].attr_text = cattr;
            npending++;
            x->vsrc = VS_CONST;
            record_op(x, key, Py_None, 0);
            if (PyDict_SetItem(out, key, Py_None) < 0) goto done; /* holds the position */
            continue;
        }
        int container = c->name == S_EventData || c->name == S_UserData;
        x->vsrc = VS_OPAQUE;
        PyObject *v = element_value(x, ci, container, bail);
        int set = put_flat(x, out, key, v);
        Py_DECREF(key);
        if (set < 0) goto done;
    }
    for (int k = 0; k < npending; k++) {
        const Elem *c = &r->elems[pending[k].elem];
        PyObject *key = pending[k].key;
        if (pending[k].has_text) {
            x->vsrc = VS_OPAQUE;
            if (put_flat(x, out, key, content_value(x, c->child_first, 1, bail)) < 0) goto done;
        } else if (pending[k].attr_text) {
            record_op(x, key, NULL, 1);
            if (PyDict_DelItem(out, key) < 0) goto done;
        } else {
            continue; /* stays None */
        }
        if (!pending[k].attr_text) continue;
        PyObject *names = PyDict_GetItemWithError(SYSTEM_ATTRS, key);
        if (names == NULL && PyErr_Occurred()) goto done;
        for (int a = c->attr_first; a >= 0; a = r->attrs[a].next) {
            if (!list_has_content(x, r->attrs[a].first)) continue;
            PyObject *name = names != NULL && PyDict_Check(names) ? PyDict_GetItemWithError(names, r->attrs[a].name)
                                                                  : NULL;
            if (name == NULL && PyErr_Occurred()) goto done;
            name = name != NULL ? Py_NewRef(name) : PyUnicode_FromFormat("%U_%U", key, r->attrs[a].name);
            if (name == NULL) goto done;
            x->vsrc = VS_OPAQUE;
            PyObject *v = as_number(x, r->attrs[a].first, 0);
            if (v == NULL && !PyErr_Occurred()) v = text_object(x, r->attrs[a].first, 0, bail);
            int set = put_flat(x, out, name, v);
            Py_DECREF(name);
            if (set < 0) goto done;
        }
    }
    rc = 0;
done:
    for (int k = 0; k < npending; k++) Py_DECREF(pending[k].key);
    return rc;
}

/* The EventData keys already written, to find a repeated one. */
typedef struct {
    PyObject *key[MAX_DATA_KEYS];
    Py_hash_t hash[MAX_DATA_KEYS];
    int n;
} Seen;

/* One EventData member into ``out`` (flatten_data's rules for a plain value); ``space``: whether
 * the key has a space, -1 when not known yet. */
static int flat_data_member(Ctx *x, PyObject *out, PyObject *key, int space, PyObject *value, Seen *seen) {
    if (value == NULL) return -1;
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1) {
        Py_DECREF(value);
        return -1;
    }
    for (int k = 0; k < seen->n; k++) {
        if (seen->key[k] == key || (seen->hash[k] == h && PyUnicode_Compare(seen->key[k], key) == 0)) {
            Py_DECREF(value);
            return GENERIC; /* a repeated key: the dict's last-wins rule, on the nested path */
        }
    }
    if (space < 0) space = PyUnicode_FindChar(key, ' ', 0, PyUnicode_GET_LENGTH(key), 1) != -1;
    if (seen->n >= MAX_DATA_KEYS || space) {
        Py_DECREF(value);
        return GENERIC;
    }
    seen->key[seen->n] = Py_NewRef(key); /* released by flat_event_data */
    seen->hash[seen->n++] = h;
    PyObject *v = braced(x, value);
    if (v == NULL) return -1;
    /* one lookup when the key is new (the common case); a key System also has goes under
     * ``EventData_`` when it is one of the core names, else replaces System's value */
    Py_ssize_t before = PyDict_GET_SIZE(out);
    PyObject *old = PyDict_SetDefault(out, key, v);
    if (old == NULL || PyDict_GET_SIZE(out) > before) {
        if (old != NULL) record_op(x, key, v, 0);
        Py_DECREF(v);
        return old == NULL ? -1 : 0;
    }
    int rc = PySet_Contains(CORE, key);
    if (rc == 0) {
        record_op(x, key, v, 0);
        rc = PyDict_SetItem(out, key, v);
    } else if (rc > 0) {
        PyObject *name = PyUnicode_Concat(S_prefix, key);
        if (name != NULL) record_op(x, name, v, 0);
        rc = name == NULL ? -1 : PyDict_SetItem(out, name, v);
        Py_XDECREF(name);
    }
    Py_DECREF(v);
    return rc;
}

/* A Data element's value when it has no element inside (else GENERIC through *generic). */
static PyObject *flat_data_value(Ctx *x, int ei, int *generic, int *bail) {
    int has_text, has_elem;
    content_layout(x, &x->rec->elems[ei], &has_text, &has_elem);
    if (has_elem) {
        *generic = 1;
        return NULL;
    }
    return data_value(x, ei, bail);
}

static int flat_event_data_in(Ctx *x, int di, PyObject *out, Seen *seen, int *bail) {
    Pool *r = x->rec;
    const Elem *e = &r->elems[di];
    int has_text, attr_text;
    if (!renders_object(x, e, &has_text, &attr_text)) {
        x->vsrc = VS_OPAQUE;
        PyObject *v = element_value(x, di, 1, bail);
        if (v == NULL) return -1;
        if (v == Py_None) {
            Py_DECREF(v);
            return 0;
        }
        return put_flat(x, out, S_Data, v);
    }
    if (has_text || attr_text) return GENERIC;
    int flatten = 0, positional = 0;
    for (int i = e->child_first; i >= 0; i = r->nodes[i].next) {
        if (r->nodes[i].kind != K_ELEM) continue;
        const Elem *c = &r->elems[r->nodes[i].elem];
        if (c->name != S_Data) return GENERIC; /* other children: the nested path */
        positional++;
        int na = name_attr(x, c);
        if (na != -2 && list_has_content(x, na)) flatten = 1;
    }
    int generic = 0;
    if (!flatten && positional == 0) return 0;
    if (!flatten) {
        PyObject *list = positional > 1 ? PyList_New(0) : NULL;
        PyObject *single = NULL;
        if (positional > 1 && list == NULL) return -1;
        for (int i = e->child_first; i >= 0; i = r->nodes[i].next) {
            if (r->nodes[i].kind != K_ELEM) continue;
            x->vsrc = VS_OPAQUE;
            PyObject *v = flat_data_value(x, r->nodes[i].elem, &generic, bail);
            if (v == NULL) {
                Py_XDECREF(list);
                return generic ? GENERIC : -1;
            }
            if (list == NULL) {
                single = v;
                break;
            }
            int rc = PyList_Append(list, v);
            Py_DECREF(v);
            if (rc < 0) {
                Py_DECREF(list);
                return -1;
            }
        }
        if (list != NULL) x->vsrc = VS_OPAQUE;
        return flat_data_member(x, out, S_Data, 0, list != NULL ? list : single, seen);
    }
    for (int i = e->child_first; i >= 0; i = r->nodes[i].next) {
        if (r->nodes[i].kind != K_ELEM) continue;
        int ci = r->nodes[i].elem;
        int na = name_attr(x, &r->elems[ci]);
        if (na == -2 || !list_has_content(x, na)) continue;
        int space = -1;
        if (x->recording != NULL && (r->nodes[na].next >= 0 || r->nodes[na].origin >= 0))
            x->recording->broken = 1; /* a key that is not the template's own text */
        PyObject *key = data_key(x, na, &space, bail);
        if (key == NULL) return -1;
        x->vsrc = VS_OPAQUE;
        PyObject *v = flat_data_value(x, ci, &generic, bail);
        int rc = v == NULL ? (generic ? GENERIC : -1) : flat_data_member(x, out, key, space, v, seen);
        Py_DECREF(key);
        if (rc) return rc;
    }
    return 0;
}

static int flat_event_data(Ctx *x, int di, PyObject *out, int *bail) {
    Seen seen;
    seen.n = 0;
    int rc = flat_event_data_in(x, di, out, &seen, bail);
    for (int k = 0; k < seen.n; k++) Py_DECREF(seen.key[k]);
    return rc;
}

static int gate_keeps(Ctx *x, PyObject *want, PyObject *decisions, PyObject *fields);

/* The flat fields of a record, Py_Ellipsis when the gate turns it away after System (only
 * when System set both Channel and an int EventID: EventData cannot change those, so *asked
 * is set when the gate kept it), or NULL: with an error, or with *generic set (the nested path). */
static PyObject *flat_record(Ctx *x, int root, PyObject *want, PyObject *decisions, int *asked, int *generic,
                             int *bail) {
    Pool *r = x->rec;
    const Elem *ev = &r->elems[root];
    int has_text, attr_text;
    if (ev->name != S_Event || !renders_object(x, ev, &has_text, &attr_text)) {
        *generic = 1;
        return NULL;
    }
    int sys = -1, data = -1;
    for (int i = ev->child_first; i >= 0; i = r->nodes[i].next) {
        if (r->nodes[i].kind != K_ELEM) continue;
        PyObject *name = r->elems[r->nodes[i].elem].name;
        if (name == S_UserData) {
            *generic = 1;
            return NULL;
        }
        if (name == S_System && sys < 0) sys = r->nodes[i].elem;
        if (name == S_EventData && data < 0) data = r->nodes[i].elem;
    }
    PyObject *out = _PyDict_NewPresized(32);
    if (out == NULL) return NULL;
    int rc = sys >= 0 ? flat_system(x, sys, out, bail) : 0;
    if (x->recording != NULL) x->recording->nsys = x->recording->nops;
    if (rc == 0 && want != NULL) {
        PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
        int known = eid != NULL && PyLong_CheckExact(eid) && PyDict_GetItemWithError(out, S_Channel) != NULL;
        int keep = PyErr_Occurred() ? -1 : known ? gate_keeps(x, want, decisions, out) : 1;
        *asked = known;
        if (keep <= 0) {
            Py_DECREF(out);
            return keep < 0 ? NULL : Py_NewRef(Py_Ellipsis);
        }
    }
    if (rc == 0 && data >= 0) rc = flat_event_data(x, data, out, bail);
    if (rc == 0) {
        PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
        if (eid != NULL && eid != Py_None && !PyLong_CheckExact(eid)) rc = GENERIC;
        else if (PyErr_Occurred()) rc = -1;
    }
    if (rc == 0) return out;
    Py_DECREF(out);
    if (rc == GENERIC && !PyErr_Occurred() && !*bail) *generic = 1;
    return NULL;
}

/* ---- plans: the flat fields of a template's records without the tree --------------------
 *
 * A record that is one template instance (nearly all) is rendered from the template's tree with
 * its substitutions put in. What ``flat_record`` then writes -- which keys, in which order,
 * which of them None or "" or a text of the template -- depends only on the template and on each
 * substitution's type and emptiness; the values themselves come one each from a substitution.
 * So the first record of each (template, types and emptiness) in a chunk is rendered as before
 * while its steps are written down (``record_op``), and the chunk's later records of the same
 * kind replay those steps on their own values, without the copy of the template's tree or the
 * walks over it. A plan is only kept when every value of the record came from one substitution
 * or was constant, every key was the template's own, and no value was BinXml; anything else is
 * rendered as before, record by record. On the attack samples 84 % of the records are replayed
 * (nearly all are an Event template with EventData as a nested instance in a BinXml value), and
 * the decoder went from 5.07 to 3.77 us per event (bench/evtx_decode.py --base, old and new
 * build alternately, load 3.6).
 */

/* The types and emptiness of the record's lazily read values into x->lsig. */
static void instance_sig(Ctx *x) {
    for (int i = 0; i < x->nlv; i++) {
        const Value *v = &x->lv[i];
        int empty = v->type == V_STRING ? v->units == 0 : value_empty(x->d, v->type, v->off, v->len);
        x->lsig[i] = (uint8_t)(v->type | (empty ? 0x80 : 0));
    }
}

static int same_frames(const Plan *p, const Ctx *x) {
    if (p->nframes != x->nframes || p->nlv != x->nlv) return 0;
    for (int f = 0; f < x->nframes; f++)
        if (p->keys[f] != x->frames[f].key || p->counts[f] != x->frames[f].count) return 0;
    return memcmp(p->sig, x->lsig, (size_t)x->nlv) == 0;
}

/* ---- plans kept across chunks -----------------------------------------------------------
 *
 * A chunk's plans are known by its templates' offsets, so every chunk (every small file) used
 * to render the first record of each kind again. A template's tree, and so every plan made of
 * it, depends only on its tokens and the names they refer to; ``template_key`` gives a template
 * the same key in every chunk where those are the same (its tokens with each name reference
 * replaced by the name's text, compared in full), and a plan whose templates all have such keys
 * is kept for the rest of the process. Both tables are bounded: past them a template is known
 * by its offset and its plans last for its chunk, as before. On x5 (1,385 files of one or a
 * few chunks, callgrind): the decoder over every chunk with a gate keeping every record
 * 1,015M -> 887M instructions, records rendered 6,215 -> 1,086 of 39,285; the whole hunt (--jobs 1)
 * 4,141M -> 4,015M. A template definition is then parsed into its tree only when a record of it
 * is rendered (``template_root``): x5 parses 760 of them, and the decoder 881M -> 850M
 * instructions, the hunt 4,015M -> 3,975M; with names not checked for the key (canon_name) the
 * decoder 850M -> 820M, the hunt (on a later main) 3,958M -> 3,926M. */
#define KEYED 0x80000000u  /* a template_key from the content table (else a chunk offset) */
#define CANON_SLOTS 4096   /* a power of two */
#define CANON_MAX 2048
#define CANON_BYTES (4 << 20)
#define CANON_LEN 16384    /* longer templates are known by their offset */
#define GPLAN_SLOTS 2048   /* a power of two */
#define GPLAN_MAX 1024

typedef struct {
    uint64_t h;
    uint32_t len;
    uint8_t *bytes; /* NULL: empty slot */
} Canon;
static Canon CANONS[CANON_SLOTS];
static int NCANON;
static size_t CANON_TOTAL;
static uint8_t CANON_BUF[CANON_LEN];

typedef struct {
    uint64_t h;
    Plan *p; /* NULL: empty slot */
} KeptPlan;
static KeptPlan GPLANS[GPLAN_SLOTS];
static int NGPLAN;
static Py_ssize_t N_RENDERED, N_REPLAYED; /* records of plannable kind, for counters() */

static int canon_put(uint32_t *n, const uint8_t *p, uint32_t len) {
    if (*n + len > CANON_LEN) return BAIL;
    memcpy(CANON_BUF + *n, p, len);
    *n += len;
    return 0;
}

/* The name at ``off``: its length and text (all its units, as stored). Not checked as name_at
 * checks a name: a template has a kept plan only if a template of the same tokens and names was
 * parsed, and whether a parse goes through depends on those alone, besides the chunk's room for
 * names and nodes (a chunk without room goes to the package, which gives the same events). The
 * offset 0, which name_at refuses wherever it points, is refused here too. Checking each
 * reference here cost ~30M of the decoder's 850M instructions on x5 (callgrind). */
static int canon_name(Ctx *x, uint32_t *n, uint32_t off) {
    if (off == 0 || !has(off, 8)) return BAIL;
    uint32_t units = u16at(x->d, off + 6);
    if (!has(off + 8, 2ull * units + 2)) return BAIL;
    return canon_put(n, x->d + off + 6, 2 + 2 * units);
}

/* The key plans know the template whose tokens are ``size`` bytes at ``start`` by: the same in
 * every chunk for the same tokens and names (KEYED | its slot in the content table), else its
 * chunk offset ``off``. Reads the tokens as parse_stream (MODE_TEMPLATE) does, every read
 * bounds-checked; whether they make a tree is parse_stream's to say when the tree is asked for. */
static uint32_t template_key(Ctx *x, uint32_t start, uint32_t size, uint32_t off) {
    const uint8_t *d = x->d;
    uint32_t pos = start, end = start + size, n = 0, name_off;
    while (pos < end) {
        uint8_t tok = d[pos++];
        if (canon_put(&n, &tok, 1) < 0) return off;
        switch (tok) {
        case 0x00:
            pos = end;
            break;
        case 0x01:
        case 0x41:
            pos += 6; /* dependency id, data size */
            if (pos > end || read_name(x, &pos, &name_off) < 0) return off;
            if (tok == 0x41) pos += 4; /* attribute list size */
            if (pos > end || canon_name(x, &n, name_off) < 0) return off;
            break;
        case 0x02:
        case 0x03:
        case 0x04:
            break;
        case 0x05:
        case 0x45: {
            if (!has(pos, 3)) return off;
            uint32_t len = 3 + 2u * u16at(d, pos + 1);
            if (pos + len > end || canon_put(&n, d + pos, len) < 0) return off;
            pos += len;
            break;
        }
        case 0x06:
        case 0x46:
            if (read_name(x, &pos, &name_off) < 0 || pos > end || canon_name(x, &n, name_off) < 0) return off;
            break;
        case 0x0d:
        case 0x0e:
        case 0x0f:
            if (pos + 3 > end || canon_put(&n, d + pos, 3) < 0) return off;
            pos += 3;
            break;
        default:
            return off;
        }
    }
    uint64_t h = bytes_hash(CANON_BUF, n, 0);
    uint32_t i = (uint32_t)h & (CANON_SLOTS - 1);
    for (; CANONS[i].bytes != NULL; i = (i + 1) & (CANON_SLOTS - 1))
        if (CANONS[i].h == h && CANONS[i].len == n && memcmp(CANONS[i].bytes, CANON_BUF, n) == 0) return KEYED | i;
    if (NCANON >= CANON_MAX || CANON_TOTAL + n > CANON_BYTES) return off;
    uint8_t *bytes = PyMem_Malloc(n ? n : 1);
    if (bytes == NULL) return off;
    memcpy(bytes, CANON_BUF, n);
    CANONS[i].h = h;
    CANONS[i].len = n;
    CANONS[i].bytes = bytes;
    NCANON++;
    CANON_TOTAL += n;
    return KEYED | i;
}

/* A plan's frames and value signature hashed, or 0 when a template has no content key. */
static uint64_t kept_plan_hash(int nframes, const uint32_t *keys, const int *counts, int nlv, const uint8_t *sig) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)nframes << 32) ^ (uint64_t)nlv;
    for (int f = 0; f < nframes; f++) {
        if (!(keys[f] & KEYED)) return 0;
        h = (h ^ (((uint64_t)keys[f] << 32) | (uint32_t)counts[f])) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    return (h ^ bytes_hash(sig, (uint32_t)nlv, 0)) | 1;
}

static Plan *find_plan(Ctx *x) {
    uint32_t keys[MAX_FRAMES];
    int counts[MAX_FRAMES];
    for (int f = 0; f < x->nframes; f++) {
        keys[f] = x->frames[f].key;
        counts[f] = x->frames[f].count;
    }
    uint64_t h = kept_plan_hash(x->nframes, keys, counts, x->nlv, x->lsig);
    if (h != 0)
        for (uint32_t i = (uint32_t)h & (GPLAN_SLOTS - 1); GPLANS[i].p != NULL; i = (i + 1) & (GPLAN_SLOTS - 1))
            if (GPLANS[i].h == h && same_frames(GPLANS[i].p, x)) return GPLANS[i].p;
    for (int k = x->nplans - 1; k >= 0; k--)
        if (same_frames(&x->plans[k], x)) return &x->plans[k];
    return NULL;
}

/* Keep the chunk's plan ``p``, just written down, for the rest of the process when its
 * templates have content keys and there is room: 1 kept (``p`` is then empty), 0 not. The copy
 * ends after its own steps (ops is Plan's last member and is read only up to nops): a whole Plan
 * is ~5 KB, and each page of it first written costs a page fault. */
static int keep_plan(Plan *p) {
    uint64_t h = kept_plan_hash(p->nframes, p->keys, p->counts, p->nlv, p->sig);
    if (h == 0 || NGPLAN >= GPLAN_MAX) return 0;
    Plan *kept = PyMem_Malloc(offsetof(Plan, ops) + (size_t)p->nops * sizeof p->ops[0]);
    if (kept == NULL) return 0;
    kept->nframes = p->nframes;
    kept->nlv = p->nlv;
    memcpy(kept->keys, p->keys, sizeof p->keys);
    memcpy(kept->counts, p->counts, sizeof p->counts);
    kept->nops = p->nops;
    kept->nsys = p->nsys;
    kept->broken = 0;
    memcpy(kept->sig, p->sig, (size_t)p->nlv);
    memcpy(kept->ops, p->ops, (size_t)p->nops * sizeof p->ops[0]); /* the references move */
    p->nops = 0;
    uint32_t i = (uint32_t)h & (GPLAN_SLOTS - 1);
    while (GPLANS[i].p != NULL) i = (i + 1) & (GPLAN_SLOTS - 1);
    GPLANS[i].h = h;
    GPLANS[i].p = kept;
    NGPLAN++;
    return 1;
}

static void release_ops(Plan *p) {
    for (int k = 0; k < p->nops; k++) {
        Py_DECREF(p->ops[k].key);
        Py_XDECREF(p->ops[k].value);
    }
    p->nops = 0;
}

/* Start writing down the plan of the record about to be rendered. */
static void begin_plan(Ctx *x) {
    Plan *p = &x->plans[x->nplans];
    p->nframes = x->nframes;
    p->nlv = x->nlv;
    for (int f = 0; f < x->nframes; f++) {
        p->keys[f] = x->frames[f].key;
        p->counts[f] = x->frames[f].count;
    }
    memcpy(p->sig, x->lsig, (size_t)x->nlv);
    p->nops = 0;
    p->nsys = 0;
    p->broken = 0;
    x->recording = p;
}

/* System's steps of a kept plan cut to the keys they leave, in the order they leave them: a
 * System element with attributes holds its key's place with None and is then removed for its
 * attributes' keys (Provider, TimeCreated, Execution, Security: ~8 of ~32 steps a record on
 * x5). The dict after these steps is the same, so the gate and EventData's steps see the same
 * dict; 0, or -1 when a step is not one this can follow (the plan is then kept as written).
 * On x5 (callgrind): the replays' dict work -42M instructions, this +16M for 5,435 plans. */
static int compact_system(Plan *p) {
    PyObject *keys[MAX_PLAN_OPS];
    Py_hash_t hashes[MAX_PLAN_OPS];
    int last[MAX_PLAN_OPS], n = 0;
    for (int k = 0; k < p->nsys; k++) {
        const Op *o = &p->ops[k];
        Py_hash_t h = PyObject_Hash(o->key); /* a str's, kept in it */
        if (h == -1) {
            PyErr_Clear();
            return -1;
        }
        int j = 0;
        for (; j < n; j++)
            if (hashes[j] == h && (keys[j] == o->key || PyUnicode_Compare(keys[j], o->key) == 0)) break;
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        if (!o->del && j < n) last[j] = k; /* the value changes, the place stays */
        else if (!o->del) {
            keys[n] = o->key;
            hashes[n] = h;
            last[n++] = k;
        } else if (j == n) {
            return -1;
        } else {
            memmove(keys + j, keys + j + 1, (size_t)(n - j - 1) * sizeof keys[0]);
            memmove(hashes + j, hashes + j + 1, (size_t)(n - j - 1) * sizeof hashes[0]);
            memmove(last + j, last + j + 1, (size_t)(n - j - 1) * sizeof last[0]);
            n--;
        }
    }
    if (n == p->nsys) return 0;
    Op kept[MAX_PLAN_OPS];
    for (int j = 0; j < n; j++) {
        const Op *o = &p->ops[last[j]];
        kept[j].key = Py_NewRef(keys[j]); /* the dict keeps the key object first put */
        kept[j].value = Py_XNewRef(o->value);
        kept[j].src = o->src;
        kept[j].del = 0;
    }
    for (int k = 0; k < p->nsys; k++) {
        Py_DECREF(p->ops[k].key);
        Py_XDECREF(p->ops[k].value);
    }
    memcpy(p->ops, kept, (size_t)n * sizeof kept[0]);
    memmove(p->ops + n, p->ops + p->nsys, (size_t)(p->nops - p->nsys) * sizeof p->ops[0]);
    p->nops -= p->nsys - n;
    p->nsys = n;
    return 0;
}

/* Keep the plan written down when the record rendered completely on the flat path. */
static void end_plan(Ctx *x, PyObject *fields) {
    Plan *p = x->recording;
    if (p == NULL) return;
    x->recording = NULL;
    if (fields != NULL && PyDict_CheckExact(fields) && !p->broken) {
        compact_system(p);
        if (!keep_plan(p)) x->nplans++;
    } else {
        release_ops(p);
    }
}

/* One substitution's value as the renderer makes it from the node it becomes. */
static PyObject *sub_value(Ctx *x, const Value *v, int *bail) {
    Node n;
    memset(&n, 0, sizeof n);
    n.off = v->off;
    if (v->type == V_STRING) {
        n.kind = K_TEXT;
        n.len = v->units;
        return cached_text(x, &n, bail);
    }
    PyObject *num = value_number(x->d, v->type, v->off);
    if (num != NULL || PyErr_Occurred()) return num;
    n.kind = K_VALUE;
    n.vtype = v->type;
    n.len = v->len;
    return cached_text(x, &n, bail);
}

static int replay_ops(Ctx *x, const Plan *p, int from, int to, PyObject *out, int *bail) {
    for (int k = from; k < to; k++) {
        const Op *o = &p->ops[k];
        if (o->del) {
            if (PyDict_DelItem(out, o->key) < 0) return -1;
            continue;
        }
        PyObject *v = o->src >= 0 ? sub_value(x, &x->lv[o->src], bail) : Py_NewRef(o->value);
        if (set_item(out, o->key, braced(x, v)) < 0) return -1;
    }
    return 0;
}

/* flat_record's result for the lazily read instance by plan ``p``: the fields, Py_Ellipsis
 * when the gate turns the record away, NULL with an error or *bail, or NULL with *declined
 * when the result would not be flat_record's (then the record is rendered). */
static PyObject *replay(Ctx *x, const Plan *p, PyObject *want, PyObject *decisions, int *asked, int *declined,
                        int *bail) {
    PyObject *out = _PyDict_NewPresized(32);
    if (out == NULL) return NULL;
    if (replay_ops(x, p, 0, p->nsys, out, bail) < 0) goto fail;
    if (want != NULL) {
        PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
        int known = eid != NULL && PyLong_CheckExact(eid) && PyDict_GetItemWithError(out, S_Channel) != NULL;
        int keep = PyErr_Occurred() ? -1 : known ? gate_keeps(x, want, decisions, out) : 1;
        *asked = known;
        if (keep < 0) goto fail;
        if (keep == 0) {
            Py_DECREF(out);
            return Py_NewRef(Py_Ellipsis);
        }
    }
    if (replay_ops(x, p, p->nsys, p->nops, out, bail) < 0) goto fail;
    PyObject *eid = PyDict_GetItemWithError(out, S_EventID);
    if (eid != NULL && eid != Py_None && !PyLong_CheckExact(eid)) *declined = 1;
    if (*declined || PyErr_Occurred()) goto fail;
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* ---- records --------------------------------------------------------------------------- */

/* The record's object as orjson would load the package's JSON: {root name: value}. */
static PyObject *render_record(Ctx *x, int root, int *bail) {
    PyObject *value = element_value(x, root, 0, bail);
    if (value == NULL) return NULL;
    PyObject *rec = PyDict_New();
    if (rec == NULL || PyDict_SetItem(rec, x->rec->elems[root].name, value) < 0) {
        Py_XDECREF(rec);
        rec = NULL;
    }
    Py_DECREF(value);
    return rec;
}

static int has_user_data(Ctx *x, int root) {
    for (int i = x->rec->elems[root].child_first; i >= 0; i = x->rec->nodes[i].next)
        if (x->rec->nodes[i].kind == K_ELEM && is_named(x->rec->elems[x->rec->nodes[i].elem].name, S_UserData))
            return 1;
    return 0;
}

/* want(channel, event_id) for the gate, asked once per pair: 1 keep, 0 skip, -1 error.
 * The answers for a str Channel and an int EventID are also kept for the chunk by the str's
 * identity (the value cache gives one str per Channel), sparing a tuple and its hash per record. */
static int gate_keeps(Ctx *x, PyObject *want, PyObject *decisions, PyObject *fields) {
    PyObject *channel = PyDict_GetItemWithError(fields, S_Channel);
    if (channel == NULL && PyErr_Occurred()) return -1;
    PyObject *eid = PyDict_GetItemWithError(fields, S_EventID);
    if (eid == NULL && PyErr_Occurred()) return -1;
    long long id = -1;
    int memo = channel != NULL && PyUnicode_CheckExact(channel) && eid != NULL && PyLong_CheckExact(eid);
    if (memo) {
        int overflow;
        id = PyLong_AsLongLongAndOverflow(eid, &overflow);
        memo = !overflow && !(id == -1 && PyErr_Occurred());
        PyErr_Clear();
        for (int i = 0; memo && i < x->ngate; i++)
            if (x->gate[i].channel == channel && x->gate[i].eid == id) return x->gate[i].keep;
    }
    PyObject *key = PyTuple_Pack(2, channel ? channel : Py_None, eid ? eid : Py_None);
    if (key == NULL) return -1;
    PyObject *answer = PyDict_GetItemWithError(decisions, key);
    if (answer == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(key);
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) return -1;
            PyErr_Clear();
            return 1;
        }
        PyObject *got = PyObject_Call(want, key, NULL);
        int truth = got == NULL ? -1 : PyObject_IsTrue(got);
        Py_XDECREF(got);
        if (truth < 0 || PyDict_SetItem(decisions, key, truth ? Py_True : Py_False) < 0) {
            Py_DECREF(key);
            return -1;
        }
        answer = truth ? Py_True : Py_False;
    }
    Py_DECREF(key);
    int keep = answer == Py_True;
    if (memo && x->ngate < GATE_MEMO) {
        x->gate[x->ngate].channel = Py_NewRef(channel); /* held: its address stays its own */
        x->gate[x->ngate].eid = id;
        x->gate[x->ngate++].keep = keep;
    }
    return keep;
}

static void release_names(Ctx *x) {
    for (int i = 0; i < x->nnames; i++) {
        NameEntry *e = &x->names[x->used[i]];
        Py_DECREF(e->name);
        e->off = 0;
    }
    x->nnames = 0;
    for (int i = 0; i < x->nvals; i++) Py_CLEAR(x->vals[x->vused[i]].obj);
    x->nvals = 0;
    for (int i = 0; i < GUID_MEMO; i++) {
        Py_CLEAR(x->guids[i].in);
        Py_CLEAR(x->guids[i].out);
    }
    for (int i = 0; i < x->ngate; i++) Py_DECREF(x->gate[i].channel);
    x->ngate = 0;
    if (x->recording != NULL) release_ops(x->recording);
    x->recording = NULL;
    for (int k = 0; k < x->nplans; k++) release_ops(&x->plans[k]);
    x->nplans = 0;
}

static Ctx CTX;

/* A chunk of zeros (preallocated): its first byte zero and every byte equal to the one before
   it, asked of libc's vectorised memcmp. Most small EVTX files end in one such chunk; an OR over
   its 8-byte words cost ~25k instructions per chunk (callgrind), ~1/10 of the hunt's whole
   per-file cost, against ~4k. */
static int all_zero(const uint8_t *d) {
    return d[0] == 0 && memcmp(d, d + 1, CHUNK_SIZE - 1) == 0;
}

/* decode_chunk(chunk, name, want, decisions) -> (events, skipped) or None (use the package). */
static PyObject *decode_chunk(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *source, *want, *decisions;
    if (!PyArg_ParseTuple(args, "y*OOO", &view, &source, &want, &decisions)) return NULL;
    if (FROM_DICT == NULL || EVENT.cls == NULL || CORE == NULL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "_evtx.configure() was not called");
        return NULL;
    }
    if (POOL_TPL == NULL) {
        POOL_TPL = PyMem_Calloc(1, sizeof(Pool));
        POOL_REC = PyMem_Calloc(1, sizeof(Pool));
        if (POOL_TPL == NULL || POOL_REC == NULL) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
    }
    int gated = want != Py_None && PyDict_Check(decisions);
    Ctx *x = &CTX;
    x->d = view.buf;
    x->tpl = POOL_TPL;
    x->rec = POOL_REC;
    x->tpl->nn = x->tpl->ne = x->tpl->na = 0;
    x->ntemplates = 0;
    x->nnames = 0;
    PyObject *events = NULL, *result = NULL;
    Py_ssize_t skipped = 0;
    const uint8_t *d = x->d;
    if (view.len > CHUNK_SIZE) goto unsure;
    END = (uint32_t)view.len;
    if (END < CHUNK_HEADER) goto past;
    if (memcmp(d, "ElfChnk\0", 8) != 0) {
        if (END < CHUNK_SIZE) goto past;
        if (!all_zero(d)) goto unsure;
        events = PyList_New(0); /* a preallocated chunk: the package skips it */
        if (events != NULL) result = Py_BuildValue("On", events, (Py_ssize_t)0);
        goto done;
    }
    int table = check_string_table(d);
    if (table == LOOPS) {
        result = PyUnicode_FromString("its string table loops");
        goto done;
    }
    if (table < 0) goto unsure;
    events = PyList_New(0);
    if (events == NULL) goto done;
    uint64_t last_id = u64at(d, 32);
    uint32_t free_space = u32at(d, 48);
    uint32_t limit = free_space < CHUNK_SIZE ? free_space : CHUNK_SIZE;
    uint32_t off = CHUNK_HEADER;
    int records = 0;
    while (off < limit) {
        if (!within((uint64_t)off + 4)) {
            if (END < CHUNK_SIZE) goto past;
            break;
        }
        uint32_t magic = u32at(d, off);
        if (magic == 0) break;
        if (!within((uint64_t)off + 24)) { /* a cut header: the package ends the chunk quietly */
            if (END < CHUNK_SIZE) goto past;
            break;
        }
        if (magic != 0x00002A2A) goto unsure;
        uint32_t size = u32at(d, off + 4);
        uint64_t rid = u64at(d, off + 8);
        if (!filetime_ok(u64at(d, off + 16)) || size < 28 || !within((uint64_t)off + size - 4))
            goto unsure;
        if (++records > 4096) goto unsure;
        x->rec->nn = x->rec->ne = x->rec->na = 0;
        x->depth = 0;
        x->nframes = x->nlv = 0;
        x->plannable = 1;
        int root = parse_stream(x, x->rec, off + 24, size - 28, MODE_RECORD_LAZY, 0);
        if (root < 0) goto unsure;
        int bail = 0, generic = 0, asked = 0, replayed = 0, plannable = root >= LAZY && x->plannable;
        PyObject *fields = NULL;
        if (root >= LAZY) {
            Plan *plan = NULL;
            if (plannable) {
                instance_sig(x);
                plan = find_plan(x);
            }
            if (plan != NULL) {
                int declined = 0;
                fields = replay(x, plan, gated ? want : NULL, decisions, &asked, &declined, &bail);
                replayed = !declined;
            }
            if (!replayed) {
                root = materialize(x, root - LAZY);
                if (root < 0) goto unsure;
                if (plan == NULL && x->plannable && x->nplans < MAX_PLANS) begin_plan(x);
            }
        }
        if (!replayed) {
            fields = flat_record(x, root, gated ? want : NULL, decisions, &asked, &generic, &bail);
            end_plan(x, fields);
        }
        if (plannable) {
            if (replayed) N_REPLAYED++;
            else N_RENDERED++;
        }
        if (fields == Py_Ellipsis) {
            Py_DECREF(fields);
            skipped++;
            goto next;
        }
        if (fields == NULL && generic) {
            PyObject *obj = render_record(x, root, &bail);
            if (obj != NULL) {
                fields = PyObject_CallOneArg(FROM_DICT, obj);
                Py_DECREF(obj);
            }
        }
        if (fields == NULL) {
            if (bail) PyErr_Clear();
            if (PyErr_Occurred()) goto done;
            goto unsure;
        }
        if (fields == Py_None) { /* no Event element: the package's path counts it */
            Py_DECREF(fields);
            goto unsure;
        }
        if (gated && !asked && (replayed || !has_user_data(x, root))) {
            int keep = gate_keeps(x, want, decisions, fields);
            if (keep <= 0) {
                Py_DECREF(fields);
                if (keep < 0) goto done;
                skipped++;
                goto next;
            }
        }
        PyObject *prid = PyLong_FromUnsignedLongLong(rid);
        if (prid == NULL) {
            Py_DECREF(fields);
            goto done;
        }
        PyObject *ev = event_new(&EVENT, fields, source, prid, S_evtx);
        Py_DECREF(fields);
        Py_DECREF(prid);
        if (ev == NULL || PyList_Append(events, ev) < 0) {
            Py_XDECREF(ev);
            goto done;
        }
        Py_DECREF(ev);
    next:
        off += size;
        if (rid == last_id) break;
    }
    result = Py_BuildValue("On", events, skipped);
    goto done;
unsure:
    result = Py_NewRef(END < CHUNK_SIZE ? Py_False : Py_None);
    goto done;
past:
    result = Py_NewRef(Py_False);
done:
    release_names(x);
    Py_XDECREF(events);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *from_dict, *event, *attrs, *core;
    if (!PyArg_ParseTuple(args, "OOO!O", &from_dict, &event, &PyDict_Type, &attrs, &core)) return NULL;
    PyObject *core_set = PyFrozenSet_New(core);
    if (core_set == NULL) return NULL;
    Py_XSETREF(CORE, core_set);
    Py_XSETREF(SYSTEM_ATTRS, Py_NewRef(attrs));
    Py_XSETREF(FROM_DICT, Py_NewRef(from_dict));
    event_class_set(&EVENT, event);
    Py_RETURN_NONE;
}

static PyObject *counters(PyObject *self, PyObject *noargs) {
    return Py_BuildValue("{sisisnsnsn}", "templates", NCANON, "plans", NGPLAN, "rendered", N_RENDERED, "replayed",
                         N_REPLAYED, "parsed", N_PARSED);
}

static PyMethodDef methods[] = {
    {"counters", counters, METH_NOARGS,
     "counters() -> {templates, plans, rendered, replayed, parsed}: the templates and plans kept across chunks so "
     "far, the records of one template instance rendered from its tree or replayed from a plan, and the template "
     "definitions parsed into trees."},
    {"decode_chunk", decode_chunk, METH_VARARGS,
     "decode_chunk(chunk, source, want, decisions) -> (events, skipped) (no events for a chunk of zeros, "
     "which the evtx package skips); None when the chunk is one to leave to the package; a str saying why "
     "the chunk cannot be read at all; False when ``chunk`` is a prefix of the chunk (fewer than 65536 "
     "bytes) that does not decide it: then pass the whole chunk."},
    {"configure", configure, METH_VARARGS,
     "configure(from_evtx_dict, event_type, system_attrs, core_names): normalize.py's function and tables."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_evtx", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__evtx(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(S_attributes, "#attributes");
    INTERN(S_text, "#text");
    INTERN(S_Data, "Data");
    INTERN(S_Event, "Event");
    INTERN(S_evtx, "evtx");
    INTERN(S_Channel, "Channel");
    INTERN(S_EventID, "EventID");
    INTERN(S_UserData, "UserData");
    INTERN(S_empty, "");
    INTERN(S_Name, "Name");
    INTERN(S_EventData, "EventData");
    INTERN(S_System, "System");
    INTERN(S_prefix, "EventData_");
#undef INTERN
    return PyModule_Create(&module);
}
