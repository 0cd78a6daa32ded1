"""The matcher: (Channel, EventID) index → necessary-literal prefilter → predicates.

Per event the engine does only what depends on the event: one dict lookup for its bucket (built
once per distinct (Channel, EventID) and cached), one lower-cased join of the values of the
fields the bucket's literals come from, one multi-literal scan of it, and the predicates of the
rules whose literals occurred (plus the few rules without a necessary-literal set).

The scan uses Hyperscan when it is installed (one pass, each literal reported once: measured
8 us per Sysmon process-creation event against 4,300 literals) and falls back to pyahocorasick
(40 us on the same events: its per-node child lookup is linear in the fan-out, and it reports
every occurrence). The effect of each stage is measured by ``bench/hunt_throughput.py``.

A bucket that moves to Hyperscan also gets the *atom prefilter* (``tagged.py``): one scan of the
event's field-tagged text evaluates the field-scoped string tests all its rules share and lets
through only the rules whose chosen selection holds (on Sysmon process creation 17.6 rules per
event instead of 36). Its scan costs more than the literal one, so each bucket times both on
its first events and keeps the faster (``Engine._trial``); after tens of thousands of events
it chooses its atom gates again from a sample of them and times the two again (``_replan``).
Events whose text is not clean (a value with a frame character, or of an unusual type) take the
literal prefilter; both give exactly the same matches.

With the C extension the atom path runs as one call per event (``_text.Matcher``: tagged text,
scan, candidates, predicates) and the literal path's predicate loop as another
(``_text.evaluate``): the three Python frames around the C pieces cost 0.15-0.5 us of the
6.6-7.4 us an event's matching took with all SigmaHQ (NDJSON copy of the attack corpus, warm
engines, interleaved runs). A bucket whose literal scanner is Hyperscan's for good matches
through ``_text.LiteralMatcher`` (text, scan with the C match handler, candidates, predicates in
one call): 1.58 -> 1.19 us per event of such buckets on the same corpus.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import ahocorasick

from scmwatch.events.model import Event
from scmwatch.native import pure_python
from scmwatch.sigma.cache import cache_root
from scmwatch.sigma.compile import SYSTEM_FIELDS, Low
from scmwatch.sigma.plancache import (
    MISSING,
    Layout,
    plan_key,
    read_choice,
    read_layout,
    read_plan,
    write_choice,
    write_layout,
    write_plan,
)
from scmwatch.sigma.ruleset import CompiledRule, RuleSet, Unit, hot_predicates
from scmwatch.sigma.tagged import (
    GATE_BITS,
    PREFILTER,
    Plan,
    candidates,
    gated,
    non_ascii,
    plan,
    tagged_join,
    tagged_text,
)

try:  # optional accelerator; the engine is complete without it
    import hyperscan
except ImportError:  # pragma: no cover - depends on the environment
    hyperscan = None

try:  # optional C extension (sigma/_text.c): the prefilter text without the Python join
    from scmwatch.sigma._text import Gather, LiteralMatcher, Matcher, evaluate, has_anchor, lower_join
except ImportError:  # pragma: no cover - built without a C compiler
    Gather = LiteralMatcher = Matcher = evaluate = has_anchor = lower_join = None
if pure_python():
    Gather = LiteralMatcher = Matcher = evaluate = has_anchor = lower_join = None


def prefilter_text(f: dict, names: tuple[str, ...] | None, skip: frozenset[str] = frozenset()) -> str:
    """The values of ``names`` (None: all fields but those in ``skip``) joined with NUL and
    lower-cased: the text the literal scan runs on. A NUL cannot occur in a literal, so no
    literal spans two values."""
    if lower_join is not None:
        text = lower_join(f, names, skip)
        if text is not None:
            return text
    return "\x00".join([
        v if v.__class__ is str else _as_text(v)
        for v in ((v for k, v in f.items() if k not in skip) if names is None else map(f.get, names))
        if v is not None
    ]).lower()


def any_anchor(f: dict, names: tuple[str, ...] | None, skip: frozenset[str],
               anchors: tuple[str, ...]) -> bool:
    """Does a value :func:`prefilter_text` joins hold one of ``anchors`` (lower-case ASCII), case
    ignored? A non-ASCII value answers True: its lower-casing is left to the scan."""
    if has_anchor is not None:
        return has_anchor(f, names, skip, anchors)
    values = (v for k, v in f.items() if k not in skip) if names is None else map(f.get, names)
    for v in values:
        if v is None:
            continue
        for x in v if v.__class__ is list else (v,):  # type: ignore[attr-defined]
            text = x if x.__class__ is str else str(x)
            if not text.isascii():
                return True
            text = text.lower()
            for a in anchors:
                if a in text:
                    return True
    return False


# Two-character anchors: a doubled character that ordinary values seldom double ("::" in every
# Mimikatz command, "sekurlsa::"); other anchors are four characters of a literal.
PAIR_ANCHORS = frozenset(c * 2 for c in ":^|`~{}$@!#=<>&")
MAX_ANCHORS = 8


def keyword_anchors(literals: list[str]) -> tuple[str, ...] | None:
    """A few short strings, each literal holding one (so a text without any of them holds no
    literal), picked greedily by how many literals they cover, pairs of PAIR_ANCHORS first; None
    when a literal has no ASCII anchor or more than MAX_ANCHORS would be needed.

    Why: a bucket whose only gated rules are keyword searches (the Mimikatz keyword rule is on
    every Windows channel) joined and lower-cased every value of every event for its literal
    scan; looking for "::", "kiwi" and "mimi" in the values costs less (``has_anchor``), and only
    events holding one are scanned: 1.05 -> 0.75 us per event of such buckets (2,773 of the
    attack corpus' 8,255 events, warm engines, interleaved runs)."""
    options: list[set[str]] = []
    for lit in literals:
        grams = {lit[i:i + 4] for i in range(len(lit) - 3)} | {lit[i:i + 2] for i in range(len(lit) - 1)
                                                               if lit[i:i + 2] in PAIR_ANCHORS}
        grams = {g for g in grams if g.isascii() and g == g.lower()}
        if not grams:
            return None
        options.append(grams)
    chosen: list[str] = []
    left = list(range(len(options)))
    while left:
        counts: dict[str, int] = {}
        for i in left:
            for g in options[i]:
                counts[g] = counts.get(g, 0) + 1
        best = max(counts, key=lambda g: (g in PAIR_ANCHORS, counts[g], g))
        chosen.append(best)
        if len(chosen) > MAX_ANCHORS:
            return None
        left = [i for i in left if best not in options[i]]
    return tuple(sorted(chosen))


@functools.lru_cache(maxsize=256)
def _keyword_anchors(literals: tuple[str, ...]) -> tuple[str, ...] | None:
    """:func:`keyword_anchors`, once per literal set: the Mimikatz keyword rule alone is the
    literal set of every Windows channel's bucket (8 of the attack corpus' 68, ~1 ms each)."""
    return keyword_anchors(list(literals))


def _as_text(v: object) -> str:
    """A non-str field value as prefilter text (list items joined, numbers as digits)."""
    if v.__class__ is list:
        return "\x00".join(x if x.__class__ is str else str(x) for x in v)  # type: ignore[union-attr]
    return str(v)


def _hs_collect(lit_id: int, start: int, end: int, flags: int, hits: list) -> None:
    hits.append(lit_id)


def _hs_escape(lit: str) -> bytes:
    return b"".join(b"\\x%02x" % c for c in lit.encode("utf-8", "surrogatepass"))


def hyperscan_cache_dir() -> str | None:
    """Where compiled Hyperscan databases are kept between runs (None: no cache).

    ``SCMWATCH_CACHE_DIR`` (empty: off), else ``$XDG_CACHE_HOME/scmwatch`` or
    ``~/.cache/scmwatch``. Compiling costs ~12 us per literal (0.5 s for all SigmaHQ
    buckets), paid again by every ``--jobs`` worker; loading a cached database takes ~0.1 ms.
    """
    root = cache_root()
    return os.path.join(root, "hyperscan") if root else None


def _hs_compile(literals: list[str]) -> Any:
    n = len(literals)
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:  # pure-literal compiler (Hyperscan >= 5.2): half the compile time
        db.compile(expressions=[x.encode("utf-8", "surrogatepass") for x in literals],
                   ids=list(range(n)), elements=n, flags=[hyperscan.HS_FLAG_SINGLEMATCH] * n,
                   literal=True)
    except Exception:  # noqa: BLE001 - older Hyperscan: escaped byte regexes
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=[_hs_escape(x) for x in literals], ids=list(range(n)), elements=n,
                   flags=[hyperscan.HS_FLAG_SINGLEMATCH] * n)
    return db


def _scan_function(db: Any) -> Callable[[str], list[int]]:
    scan_db = db.scan

    def hs_scan(text: str) -> list[int]:
        hits: list[int] = []
        scan_db(text.encode("utf-8", "surrogatepass"), _hs_collect, 0, hits)  # positional: see _match
        return hits

    hs_scan.scan_db = scan_db  # type: ignore[attr-defined] # for a C match handler (Gather)
    return hs_scan


def _hs_compile_regex(patterns: list[str]) -> Any:
    """Regexes (ASCII); those marked ``tagged.PREFILTER`` in Hyperscan's prefilter mode (it may
    match more than the regex, never less: what a gate needs, and it accepts any size)."""
    n = len(patterns)
    marked = [x.startswith(PREFILTER) for x in patterns]
    single, prefilter = hyperscan.HS_FLAG_SINGLEMATCH, hyperscan.HS_FLAG_PREFILTER
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    texts = [x[len(PREFILTER):] if m else x for x, m in zip(patterns, marked, strict=True)]
    db.compile(expressions=[x.encode("ascii") for x in texts], ids=list(range(n)), elements=n,
               flags=[single | prefilter if m else single for m in marked])
    return db


class Busy(Exception):
    """Another process is compiling this Hyperscan database right now (:func:`_claim`)."""


LOCK_NAME = "compiling.lock"


def _db_name(literals: list[str], regex: bool) -> str:
    """The cache file name of the database for this list (and the Hyperscan version)."""
    digest = hashlib.sha256()
    flavour = "re-1" if regex else "1"
    digest.update(f"scmwatch-hs-{flavour} {getattr(hyperscan, '__version__', '?')}\n".encode())
    digest.update("\x00\x01".join(literals).encode("utf-8", "surrogatepass"))
    if literals:
        digest.update(b"\x00\x01")
    return digest.hexdigest()


def _claim(cache: str, name: str) -> int | None:
    """An open lock file holding an exclusive lock on the byte of database ``name`` (one lock
    file for all, a byte range per name: no file per database), or None when the cache has no
    lock file to offer (read-only: compile without). Raises :class:`Busy` when another process
    holds it. The lock goes with the file descriptor, also when its process dies."""
    try:
        os.makedirs(cache, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(os.path.join(cache, LOCK_NAME), flags, 0o600)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(name[:12], 16))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise Busy(name) from None
        return None  # no locks here (ENOLCK on some network file systems): compile without
    return fd


def _hs_load(path: str) -> Any:
    """The database stored at ``path``, with its scratch. Read with one ``os.read`` of the size
    ``fstat`` gives (a short read, a file replaced meanwhile, fails in ``loadb``): a file object
    added a buffered reader, a tty check and a second read to find the end, 1.1 -> 0.75 ms
    for the ~60 databases an x5 process loads (warm page cache)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        data = os.read(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    db = hyperscan.loadb(data, hyperscan.HS_MODE_BLOCK)
    db.scratch = hyperscan.Scratch(db)  # a loaded database has none
    return db


def _hs_database(literals: list[str], regex: bool = False, claim: bool = False) -> Any:
    """The compiled database for these literals (``regex``: these ASCII regexes): from the
    cache when it has it, else compiled (and stored). The key is the list itself (and the
    Hyperscan version), so a cached database can only ever be the one the list compiles to; a
    file that does not load is simply compiled again.

    ``claim``: compile only under the database's lock (:func:`_claim`), raising :class:`Busy`
    when another process holds it, so that ``--jobs`` workers meeting the same new bucket do
    not each compile it: the caller goes on without it and asks again later, when it is
    usually in the cache. Both workers of a cold 100k-event hunt compiled the Sysmon
    process-creation atom database (1.1 s of CPU each, measured) and the 10 others they met."""
    compile_db = _hs_compile_regex if regex else _hs_compile
    cache = hyperscan_cache_dir()
    if cache is None:
        return compile_db(literals)
    name = _db_name(literals, regex)
    path = os.path.join(cache, name + ".hsdb")
    try:
        return _hs_load(path)
    except Exception:  # noqa: BLE001 - absent, truncated, or from another build: compile
        pass
    lock = _claim(cache, name) if claim else None
    try:
        if lock is not None:
            try:  # stored by the process that held the lock a moment ago?
                return _hs_load(path)
            except Exception:  # noqa: BLE001 - no: this process compiles it
                pass
        db = compile_db(literals)
        tmp = None
        try:  # best effort: a read-only home must not fail a hunt
            os.makedirs(cache, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(hyperscan.dumpb(db))
            os.replace(tmp, path)  # atomic: concurrent --jobs workers never see half a file
        except OSError:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        return db
    finally:
        if lock is not None:
            os.close(lock)


def cached_scanner(literals: list[str], regex: bool = False,
                   name: str = "") -> Callable[[str], list[int]] | None:
    """The Hyperscan scanner of these literals (``regex``: these atom patterns) when their
    database is in the cache, else None (nothing compiled): a bucket starts on it instead of
    building a pyahocorasick automaton, ~0.4 ms per 100 literals (measured: 97 automatons,
    26 ms of CPU per --jobs worker on the dev corpus x5). ``name``: their database's name as a
    stored layout or plan gives it (``_db_name`` hashes every literal or pattern: ~2 ms of each
    x5 process for the literals, 0.5-3 for the plans' 0.8 MB of patterns), tried first; the name
    is worked out when it is not there (another Hyperscan version's)."""
    cache = hyperscan_cache_dir() if hyperscan is not None else None
    if cache is None:
        return None
    for given in (name, "") if name else ("",):
        try:
            db = _hs_load(os.path.join(cache, (given or _db_name(literals, regex)) + ".hsdb"))
        except Exception:  # noqa: BLE001 - absent or unreadable: the caller builds its own
            continue
        return _scan_function(db)
    return None


class _LazyScan:
    """The Hyperscan scanner of a literal set whose database is in the cache, loaded when it is
    first used: a bucket whose warm start keeps the atom prefilter (``Engine._warm_start``) does
    not scan its literals unless it times both prefilters again after choosing its gates from
    its sample (``Engine._replan``). On the attack corpus x5 three such buckets loaded literal
    databases they never used in every process (Sysmon process creation's 570 KB among them:
    ~1.5 ms and ~400 page faults). A database gone meanwhile is compiled (``make_scanner``)."""

    __slots__ = ("literals", "name", "_scan")

    def __init__(self, literals: list[str], name: str) -> None:
        self.literals = literals
        self.name = name
        self._scan: Callable[[str], list[int]] | None = None

    def _load(self) -> Callable[[str], list[int]]:
        scan = self._scan = cached_scanner(self.literals, name=self.name) or make_scanner(self.literals)
        return scan

    def __call__(self, text: str) -> list[int]:
        return (self._scan or self._load())(text)

    @property
    def scan_db(self) -> Any:
        return getattr(self._scan or self._load(), "scan_db", None)


def _has_db(scan: Any) -> bool:
    """Whether ``scan`` is (or loads, :class:`_LazyScan`) a Hyperscan database, not loading it."""
    return type(scan) is _LazyScan or getattr(scan, "scan_db", None) is not None


def is_cached(literals: list[str], regex: bool = False, name: str = "") -> bool:
    """Whether the cache holds a database for these literals (``regex``: atom patterns), not
    loading it; ``name`` as for :func:`cached_scanner`."""
    return _cached_name(literals, regex, name) is not None


def _cached_name(literals: list[str], regex: bool = False, name: str = "") -> str | None:
    """The name under which the cache holds the database of these literals (None: it does not),
    ``name`` tried first (:func:`cached_scanner`)."""
    cache = hyperscan_cache_dir() if hyperscan is not None else None
    if cache is None:
        return None
    for given in (name, "") if name else ("",):
        given = given or _db_name(literals, regex)
        if os.path.isfile(os.path.join(cache, given + ".hsdb")):
            return given
    return None


def make_scanner(literals: list[str], use_hyperscan: bool = True) -> Callable[[str], list[int]]:
    """``scan(lower_text) -> ids`` of the literals occurring in it (ids index ``literals``)."""
    if use_hyperscan and hyperscan is not None:
        try:
            return _scan_function(_hs_database(literals))
        except Exception:  # noqa: BLE001 - any Hyperscan trouble: fall back, never fail a hunt
            pass
    automaton = ahocorasick.Automaton()
    for i, lit in enumerate(literals):
        automaton.add_word(lit, i)
    automaton.make_automaton()
    iterate = automaton.iter

    def ac_scan(text: str) -> list[int]:
        return [i for _, i in iterate(text)]

    return ac_scan


def _compiled_once(literals: list[str]) -> Callable[[str], list[int]] | None:
    """The Hyperscan scanner of a large literal set (COMPILE_AT_ONCE), compiled now and stored in
    the cache; None (the caller builds its own automaton) when there is no cache to keep it in
    (it would be compiled again in every run) or another process is compiling it."""
    cache = hyperscan_cache_dir()
    try:
        if cache is None:
            return None
        os.makedirs(cache, exist_ok=True)
        if not os.access(cache, os.W_OK):
            return None
        return _scan_function(_hs_database(literals, claim=True))
    except Exception:  # noqa: BLE001 - Busy, or any file system or Hyperscan trouble
        return None


def make_small_scanner(literals: list[str]) -> Callable[[str], list[int]]:
    """``scan`` for a handful of literals: one ``in`` (a C substring search) per literal.

    Measured on the attack corpus: for 1 literal 0.30 us per event against 0.53 (Aho-Corasick)
    and 0.77 (Hyperscan: encoding the text and the callback cost more than the search).
    """
    pairs = tuple(enumerate(literals))

    def small_scan(text: str) -> list[int]:
        return [i for i, lit in pairs if lit in text]

    return small_scan


@dataclass(slots=True)
class Bucket:
    """Everything the rules of one (Channel, EventID) need, built once."""

    units: tuple[Unit, ...]
    always: tuple[int, ...]  # positions of units evaluated on every event of this key
    scan: Callable[[str], list[int]] | None  # lower-cased text -> literal ids
    # literal id -> gate ids (unit position * GATE_SLOTS + k); unit positions when single_gate
    lit_units: tuple[tuple[int, ...], ...]
    empty: bool
    text_fields: tuple[str, ...] | None = None  # fields scanned by the prefilter; None: all ...
    text_skip: frozenset[str] = frozenset()  # ... but these (System fields no literal comes from)
    upgrade_in: int = -1  # scans left before switching to Hyperscan; -1: final scanner
    literals: tuple[str, ...] = ()
    # all its gated rules search keywords: no literal without one of these in a value (None: no such gate)
    anchors: tuple[str, ...] | None = None
    # per unit position: its predicate (hot-loop copy of units[i].pred, read on first use)
    preds: list | tuple = ()
    rules: tuple = ()  # per unit position: its CompiledRule
    need: tuple[int, ...] = ()  # per unit: how many gates must be hit
    single_gate: bool = True  # every gated unit has one gate: no counting needed
    atoms: Plan | None = None  # the atom prefilter (tagged.py), used when ``atom_scan`` is set
    atom_scan: Callable[[str], list[int]] | None = None  # tagged text -> pattern ids of ``atoms``
    # with the C extension: Hyperscan's scan of the tagged text's bytes, and the C match handler
    # that turns the patterns matched into the sorted candidate units (``_text.Gather``)
    atom_scan_db: Callable[..., Any] | None = None
    gather: Any = None
    # with the C extension: the whole atom path of ``Engine._match`` in one call (``_text.Matcher``),
    # and the literal path once its scanner is Hyperscan's for good (``_text.LiteralMatcher``)
    matcher: Any = None
    lit_matcher: Any = None
    trials: int = 0  # events left to time both prefilters on (``Engine._trial``)
    timings: tuple[list[float], list[float]] = ((), ())  # seconds per event: literal, atoms
    # events seen until the atom gates are chosen from data, every ``stride``-th kept (at most
    # 2 * SAMPLE): what ``Engine._replan`` chooses them by (``tagged.plan``)
    sample: list[dict] | None = None
    stride: int = 1
    seen: int = 0
    replan_at: int = -1  # events seen when ``Engine._replan`` runs; -1: not yet known
    keep_at: int = 1  # events seen when ``Engine._keep`` next has something to do
    # the plan-cache key under which the running trials' choice is stored (None: not stored, as
    # for a plan chosen from this run's events)
    trial_key: str | None = None
    key: str | None = None  # the units' plan-cache key (``plan_key``; None: not cached)


EMPTY = Bucket((), (), None, (), True)
HS_MIN_SCANS = 256  # never compile Hyperscan for a bucket before this many events
# Scans a bucket makes on its literal prefilter before it looks again for the atom database
# another process was compiling (``Busy``): ~20 us to look, ~256 x 30 us of matching between.
BUSY_RETRY = 256
# gate ids: unit position * GATE_SLOTS + gate index (``compile.MAX_GATES`` = 3 fit): the numbering
# of the C match handler (``_text.Gather``, ``tagged.GATE_BITS``), so the literal path's gates go
# to it as they are
GATE_SLOTS = 1 << GATE_BITS
SMALL_SET = 4  # literal sets this small are searched with ``in``, not an automaton
# A bucket on the ramp whose literal database is not in the cache builds a pyahocorasick
# automaton in every run, ~5 us per literal: 29 ms for the 5,627 (hash) literals of Sysmon driver
# loads, whose 40 events on the attack corpus x5 never reach the ramp's end, so its database was
# never compiled and each hunt built the automaton again (and matched in Python). From this many
# literals the database is compiled at first sight instead (~24 us per literal, once: the cache
# keeps it), and the bucket's events take the C literal path.
COMPILE_AT_ONCE = 2_000
# Events per prefilter a bucket times before it keeps the faster one. The atom prefilter wins
# where many rules share a bucket (Sysmon process creation: 32 against 37 us per event) and
# loses where few do (a one-rule bucket: 4.5 against 2.9 us): its scan costs more.
TRIALS = 200
SAMPLE = 64  # events a bucket keeps to choose its atom gates by (tagged.plan)
# A bucket chooses its atom gates from its sample only after this many events per pattern of its
# static plan (at least REPLAN_MIN): the new Hyperscan database is seldom in the cache (it depends
# on the data), and compiling it costs ~0.35 ms per pattern (Sysmon process creation with all
# SigmaHQ: 0.7-1.1 s for ~2,500 patterns, measured), which the ~10 us it saves per event repay
# only over tens of thousands of events.
REPLAN_PER_PATTERN = 30
REPLAN_MIN = 5_000
# The plan-cache key suffix of a bucket's last replan (``Engine._replan``): its plan, stored when
# it compiled its database, and the prefilter its trials kept.
REPLANNED = "-replan"
# Trials time the C matchers or, without them, the Python path: their choices are stored apart.
TRIAL_FLAVOUR = "c" if Matcher is not None else "py"
MAX_BUCKETS = 50_000  # distinct (Channel, EventID) pairs cached; real logs have hundreds
# Above this many distinct literal fields, joining every value is as cheap as picking fields.
MAX_TEXT_FIELDS = 24


def _spread(sample: list[dict]) -> list[dict]:
    """At most SAMPLE events of ``sample``, evenly spaced."""
    if len(sample) <= SAMPLE:
        return sample
    return [sample[i * len(sample) // SAMPLE] for i in range(SAMPLE)]


def _use_atoms(b: Bucket, p: Plan | None, scan: Callable[[str], list[int]] | None) -> None:
    """Give bucket ``b`` the atom prefilter ``p`` with its scanner (None, None: take it away)."""
    b.atoms, b.atom_scan = p, scan
    scan_db = getattr(scan, "scan_db", None)
    if p is not None and scan_db is not None and Gather is not None and tagged_join is not None:
        b.atom_scan_db, b.gather = scan_db, Gather(p.pattern_gates, p.always, p.need)
        b.matcher = Matcher(b.gather, scan_db, p.index, p.rest, SYSTEM_FIELDS, p.ascii_only, b.preds, b.rules)
    else:
        b.atom_scan_db = b.gather = b.matcher = None


def _literal_path(b: Bucket) -> None:
    """Make bucket ``b``'s C literal path if it was left unmade while the atom prefilter its
    warm start kept ran alone (``Engine._upgrade``: its literal database not loaded yet)."""
    if b.lit_matcher is None:
        b.lit_matcher = _literal_matcher(b)


def _literal_matcher(b: Bucket) -> Any:
    """The C literal path of bucket ``b`` (None: not available, or its scanner not Hyperscan's):
    a Gather over the literals' gates (a single-gate bucket keeps unit positions: gate 0 of each)."""
    scan_db = getattr(b.scan, "scan_db", None)
    if LiteralMatcher is None or scan_db is None:
        return None
    try:  # a single-gate bucket's positions are gate 0 of each: shifted in C
        gather = Gather(b.lit_units, b.always, b.need, GATE_BITS if b.single_gate else 0)
    except ValueError:  # more gates than the C handler has slots: the Python path
        return None
    return LiteralMatcher(gather, scan_db, b.text_fields, b.text_skip, b.preds, b.rules, b.anchors)


def layout(units: tuple[Unit, ...], preds: list) -> Layout:
    """The literal prefilter of a bucket of ``units`` (``preds``: their ``hot_predicates``; a unit
    whose predicate is False is left out): per literal the gates it opens, the units without
    literals, the fields its text is joined from. Stored in the plan cache (``plancache.Layout``)."""
    always = []
    by_lit: dict[str, list[int]] = {}
    need = [0] * len(units)
    fields: set[str] | None = set()
    named: set[str] = set()  # fields literals come from by name
    single_gate = all(p is False or len(u.literals) <= 1 for u, p in zip(units, preds, strict=True))
    # Units in order, each gate once per literal: every list of ``by_lit`` comes out sorted
    # and without repeats. Sorting and deduplicating each list again, with the steps made
    # cheaper beside it, cost every process 94-140 ms of CPU for the 68 buckets of the attack
    # corpus (all SigmaHQ, warm caches); now 58-100.
    for i, u in enumerate(units):
        if preds[i] is False:
            continue
        if not u.literals:
            always.append(i)
            continue
        need[i] = len(u.literals)
        if single_gate:  # gate id = position * GATE_SLOTS: store positions, no shift per event
            for lit in u.literals[0]:
                by_lit.setdefault(lit, []).append(i)
        else:
            for k, gate in enumerate(u.literals):
                for lit in gate:
                    by_lit.setdefault(lit, []).append(i * GATE_SLOTS + k)
        if u.literal_fields is None:
            fields = None
        else:
            named |= u.literal_fields
            if fields is not None:
                fields |= u.literal_fields
    lits = tuple(sorted(by_lit))
    text_fields = tuple(sorted(fields)) if fields is not None and len(fields) <= MAX_TEXT_FIELDS else None
    # A keyword's literals (``literal_fields`` None) only count in the fields a keyword search
    # looks at, so the System fields no other literal names stay out of the text: measured on
    # the 3,137 attack-sample events of buckets scanning all fields (channel-wide keyword
    # rules), text and scan 3.0 -> 2.0 us per event.
    text_skip = tuple(sorted(SYSTEM_FIELDS - named)) if text_fields is None else ()
    lit_units = tuple(map(tuple, map(by_lit.__getitem__, lits)))
    anchors = _keyword_anchors(lits) if lits and fields is None and not named else None
    lit_db = _db_name(list(lits), False) if len(lits) > SMALL_SET and hyperscan is not None else ""
    return Layout(tuple(always), tuple(need), single_gate, lits, lit_units, text_fields, text_skip, anchors,
                  lit_db)


class Engine:
    """Single-event matching over a :class:`RuleSet`. ``match(event)`` → matching rules."""

    def __init__(self, ruleset: RuleSet, use_hyperscan: bool = True,
                 hyperscan_after: int | None = None, atoms: bool | None = None,
                 replan_after: int | None = None) -> None:
        """``hyperscan_after``: scans before a bucket compiles Hyperscan (None: adaptive, 0: at
        once). ``atoms``: the atom prefilter of buckets on Hyperscan: None (the default) where it
        measured faster than the literal prefilter on the bucket's first ``TRIALS`` events,
        True always, False never. ``replan_after``: events a bucket sees before it chooses its
        atom gates again from a sample of them (None: adaptive, see REPLAN_PER_PATTERN; 0: at
        the move to Hyperscan, from the events seen until then)."""
        self.ruleset = ruleset
        self.use_hyperscan = use_hyperscan
        self.hyperscan_after = hyperscan_after
        self.atoms = atoms
        self.replan_after = replan_after
        self.by_key: dict[tuple, list[Unit]] = {}
        for rule in ruleset.rules:
            for u in rule.units:
                for k in u.keys:
                    self.by_key.setdefault(k, []).append(u)
        self._buckets: dict[tuple, Bucket] = {}  # raw (Channel, EventID) as events carry them
        self._normalized: dict[tuple, Bucket] = {}  # (lower-cased channel, int EventID)
        self._scanners: dict[tuple[str, ...], Callable[[str], list[int]]] = {}
        self._by_units: dict[tuple[int, ...], Bucket] = {}  # ids of a bucket's units -> the bucket
        # id(bucket) -> (bucket, (its static plan, its key)) while another process compiles the
        # plan's database
        self._waiting: dict[int, tuple[Bucket, tuple[Plan | None, str | None]]] = {}
        # the tuning file's exclusions (sigma/tune.py), per rule; ``excluded`` counts the
        # (rule, event) matches they took away
        excl = ruleset.exclusions  # without a tuning file none: the rules are not walked for them
        self.exclusions = {r: excl[r.id] for r in ruleset.rules if r.id in excl} if excl else {}
        self.excluded = 0

    # ------------------------------------------------------------------ index
    def bucket(self, channel: object, eid: object) -> Bucket:
        key = (channel, eid)
        b = self._buckets.get(key)
        if b is None:
            ch = channel.lower() if isinstance(channel, str) else None
            try:
                e = int(eid) if eid is not None and not isinstance(eid, bool) else None
            except (TypeError, ValueError):
                e = None
            b = self._normalized.get((ch, e))
            if b is None:
                b = self._build(ch, e)
                if len(self._normalized) < MAX_BUCKETS:  # garbage inputs must not grow memory
                    self._normalized[(ch, e)] = b
            if len(self._buckets) < MAX_BUCKETS:
                self._buckets[key] = b
        return b

    def _build(self, ch: str | None, e: int | None) -> Bucket:
        """The bucket of (``ch``, ``e``): the one already built for the same units when there
        is one. Channel-wide rules give many (Channel, EventID) pairs the same units (the
        attack corpus' 142 pairs have 68 distinct unit sets, 58 pairs only the one keyword
        rule of every Windows channel), and each build cost ~0.4 ms and moving to Hyperscan
        once more."""
        seen: dict[int, Unit] = {}
        for k in ((ch, e), (ch, None), (None, e), (None, None)):
            for u in self.by_key.get(k, ()):
                seen[id(u)] = u
        if not seen:
            return EMPTY
        units = tuple(sorted(seen.values(), key=lambda u: u.order))
        same = tuple(id(u) for u in units)
        b = self._by_units.get(same)
        if b is None:
            b = self._by_units[same] = self._new_bucket(units)
        return b

    def _new_bucket(self, units: tuple[Unit, ...]) -> Bucket:
        preds = hot_predicates(units)
        key = plan_key(units)
        # a unit already known never to match (its predicate read and False) is left out of the
        # layout: such a layout is not the cached one
        cached = key is not None and False not in preds
        lay = read_layout(key, len(units)) if cached else None
        if lay is None:
            lay = layout(units, preds)
            if cached:
                write_layout(key, lay)
        scan = None
        lits = list(lay.literals)
        upgrade_in = -1
        if lits:
            # Buckets often share one literal set (PowerShell's two channels, channel-wide
            # service rules): compile each distinct set once. A bucket starts on pyahocorasick
            # (cheap to build) and moves to Hyperscan once it has scanned enough events to
            # repay the compilation (~12 us per literal; saves ~0.5-1 us per literal-scan):
            # rare (Channel, EventID) pairs never pay for it, and --jobs workers only
            # compile what their files need.
            lit_key = lay.literals
            scan = self._scanners.get(lit_key)
            hs_ready = self.use_hyperscan and hyperscan is not None
            if len(lits) <= SMALL_SET:
                if scan is None:
                    scan = self._scanners[lit_key] = make_small_scanner(lits)
            elif hs_ready:
                # the atom prefilter (tagged.py) comes with the move to Hyperscan, also for a
                # bucket whose literal scanner another bucket compiled
                after = self.hyperscan_after
                upgrade_in = max(HS_MIN_SCANS, len(lits) // 2) if after is None else after
                if scan is None and upgrade_in > 0:
                    found = _cached_name(lits, name=lay.lit_db)
                    scan = _LazyScan(lits, found) if found is not None else None
                    if scan is None and len(lits) >= COMPILE_AT_ONCE:
                        scan = _compiled_once(lits)
                    if scan is not None:
                        self._scanners[lit_key] = scan
                    else:
                        scan = make_scanner(lits, use_hyperscan=False)
            elif scan is None:
                scan = self._scanners[lit_key] = make_scanner(lits, use_hyperscan=False)
        b = Bucket(units, lay.always, scan, lay.lit_units, False, text_fields=lay.text_fields,
                   text_skip=frozenset(lay.text_skip), need=lay.need, single_gate=lay.single_gate,
                   upgrade_in=upgrade_in, literals=lay.literals, preds=preds,
                   rules=tuple(u.rule for u in units), anchors=lay.anchors, key=key)
        if upgrade_in >= 0 and self.atoms is not False:
            b.sample = []
        if upgrade_in == 0:
            self._upgrade(b)
        elif upgrade_in > 0:
            self._warm_start(b)
            if b.upgrade_in > 0:
                # Still on the ramp (the atom side not cached) but maybe on a cached literal
                # database: its events take the C literal path and are counted there. Measured
                # on the attack corpus x5, warm caches: 1,865 events of such buckets took the
                # Python path at 13-17 us each.
                b.lit_matcher = _literal_matcher(b)
        return b

    def _warm_start(self, b: Bucket) -> None:
        """Move bucket ``b`` to Hyperscan at once when its literal database, its static plan
        and that plan's atom database are all in the caches (nothing to compile), with the
        prefilter its last trials kept (none known: trials as on the ramp).

        Why: the ramp exists so that rare buckets never pay for a compilation; a cached
        database loads in ~0.1 ms. On the attack corpus x5 (41,275 events, 142 buckets, most
        seeing a few hundred events) 8,220 events took the ramp's Python path and 5,338 the
        trials' (~20 and ~14 us per event against ~2-13 in C for the same buckets): with warm
        caches every event of such a bucket takes the C path from the first."""
        if self.hyperscan_after is not None or self.replan_after == 0 or not _has_db(b.scan):
            return  # told when to move, gates to choose from this run's events, or no cached database
        if self.atoms is False:
            self._upgrade(b)
            return
        key = b.key
        got = read_plan(key, len(b.units)) if key is not None else MISSING
        if got is MISSING:
            return
        static, name = got  # type: ignore[misc]
        patterns = static.patterns if static is not None else ()
        choice = read_choice(key, TRIAL_FLAVOUR) if self.atoms is None else None
        if patterns and patterns not in self._scanners:
            if choice is False:  # the literal prefilter kept: its atom database is not loaded
                if not is_cached(list(patterns), regex=True, name=name):
                    return
            else:
                scan = cached_scanner(list(patterns), regex=True, name=name)
                if scan is None:
                    return
                self._scanners[patterns] = scan
        self._upgrade(b, (static, key), choice)

    def _keep(self, b: Bucket, f: dict) -> None:
        """Systematic sample of the bucket's events until its gates are chosen from it: every
        ``stride``-th, the stride doubling (and every other kept event dropped) whenever
        2 * SAMPLE are kept, so the sample spans all of them, not only the first. Called only
        when the ``seen`` count (kept by ``match_in``) reaches ``keep_at``: the next event to
        keep or the replan. On the attack corpus x5 (every bucket samples, one reaches its
        replan) 32,395 calls became 7,193, and sampling costs ~0.05 instead of ~0.10 us per event
        (measured apart, the loop's own 0.04 us taken off)."""
        seen = b.seen
        if seen % b.stride == 0:
            sample = b.sample
            sample.append(f)
            if len(sample) >= 2 * SAMPLE:
                del sample[::2]
                b.stride *= 2
        if 0 <= b.replan_at <= seen:
            if not b.trials:
                self._replan(b)
                return
            b.keep_at = seen + 1  # replan once the trials are over
            return
        b.keep_at = (seen // b.stride + 1) * b.stride
        if b.replan_at >= 0:
            b.keep_at = min(b.keep_at, b.replan_at)

    def _atom_scanner(self, p: Plan, claim: bool = False) -> Callable[[str], list[int]] | None:
        """The scanner of plan ``p``; ``claim``: raise :class:`Busy` while another process
        compiles it (``_hs_database``)."""
        scan = self._scanners.get(p.patterns)
        if scan is None:
            try:
                scan = _scan_function(_hs_database(list(p.patterns), regex=True, claim=claim))
            except Busy:
                raise
            except Exception:  # noqa: BLE001 - any Hyperscan trouble: the literal path stays
                return None
            self._scanners[p.patterns] = scan
        return scan

    def _replan(self, b: Bucket) -> None:
        """Choose the bucket's atom gates again, from its sample (``tagged.plan``), and time
        them against the literal prefilter again (also when the static ones lost); the sampling
        ends here.

        A replan whose database is not cached takes the bucket's last compiled replan instead
        (stored under REPLANNED; any plan is exact), and the prefilter that replan's trials kept
        is kept without timing again (the literal one: nothing is planned). Why: each process of
        a split hunt samples other ranges of the file in every run, so its plan, and the database
        it compiled, differed from run to run: 1 GB of EVTX, built-in pack, ``--jobs 2``, warm
        cache: 1-3 replan databases compiled per run in 3 of 4 runs (0.03-0.24 s of CPU each at
        load 5-6), whose trials then kept the literal prefilter in 2 of 3 buckets; none after."""
        sample, b.sample, b.replan_at = b.sample or [], None, -1
        if not sample:
            return
        key = b.key + REPLANNED if b.key is not None else None
        choice = read_choice(key, TRIAL_FLAVOUR) if key is not None and self.atoms is None else None
        if choice is False:  # the literal prefilter its last replan's trials kept: nothing planned
            if b.atoms is not None:
                _literal_path(b)
                _use_atoms(b, None, None)
            return
        p = plan(b.units, _spread(sample))
        if p is None or not p.patterns:
            return
        compiled = False  # whether this replan compiles its database
        if key is not None and not is_cached(list(p.patterns), regex=True):
            got = read_plan(key, len(b.units))
            last = got[0] if got is not MISSING else None  # type: ignore[index]
            if last is not None and last.patterns and is_cached(list(last.patterns), regex=True,
                                                                name=got[1]):  # type: ignore[index]
                p = last
            else:
                compiled = True
        if b.atoms is not None and p.patterns == b.atoms.patterns:
            return
        scan = self._atom_scanner(p)
        if scan is None:
            return
        if compiled:
            write_plan(key, p, _db_name(list(p.patterns), True))  # type: ignore[arg-type]
        _use_atoms(b, p, scan)
        if self.atoms is None and choice is None:
            _literal_path(b)  # timed against the atoms: made now if the atoms ran alone so far
            b.trials, b.timings = 2 * TRIALS, ([], [])
            b.trial_key = key

    def _static_plan(self, b: Bucket) -> tuple[Plan | None, str | None]:
        """``tagged.plan(b.units)``, from the plan cache (``plancache.py``) when it has it, and
        its key there (None: not cached)."""
        key = b.key
        if key is not None:
            got = read_plan(key, len(b.units))
            if got is not MISSING:
                return got[0], key  # type: ignore[index]
        p = plan(b.units)
        if key is not None:
            has_db = p is not None and p.patterns and hyperscan is not None
            write_plan(key, p, _db_name(list(p.patterns), True) if has_db else "")  # type: ignore[union-attr]
        return p, key

    def _upgrade(self, b: Bucket, static: tuple[Plan | None, str | None] | None = None,
                 choice: bool | None = None) -> None:
        """Move a bucket to Hyperscan: its literal scanner and its atom prefilter (``static``:
        its static plan and plan-cache key when the caller has them; ``choice``: the prefilter
        its last trials kept, None: time them again)."""
        key = b.literals
        scan = self._scanners.get(key)
        if scan is None:
            scan = self._scanners[key] = make_scanner(list(key), use_hyperscan=True)
        b.scan = scan
        b.upgrade_in = -1
        # the atom prefilter kept by the last trials: the literal path waits until it is used
        lazy = choice is True and type(scan) is _LazyScan
        b.lit_matcher = None if lazy else _literal_matcher(b)
        if self.atoms is False:
            return
        if self.replan_after == 0:  # gates from the events seen so far
            sample, b.sample = b.sample or [], None
            p = plan(b.units, _spread(sample))
            atom_scan = self._atom_scanner(p) if p is not None and p.patterns else None
        else:  # static gates: the database is the same for every input (cached)
            waiting = self._waiting.pop(id(b), None)
            if static is None:
                static = waiting[1] if waiting is not None and waiting[0] is b else self._static_plan(b)
            p, b.trial_key = static
            if choice is False and p is not None and p.patterns:
                # the literal prefilter its last trials kept: nothing of the atom side is loaded
                # (11 atom databases and their C matchers per x5 process, each dropped at once)
                self._replan_later(b, p)
                b.trial_key = None
                return
            try:
                atom_scan = self._atom_scanner(p, claim=True) if p is not None and p.patterns else None
            except Busy:  # another worker compiles it: the literal prefilter until it is stored
                self._waiting[id(b)] = (b, static)
                b.upgrade_in = BUSY_RETRY
                if lazy:
                    _literal_path(b)
                return
        if atom_scan is None:
            b.sample = b.trial_key = None
            if lazy:
                _literal_path(b)
            return
        _use_atoms(b, p, atom_scan)
        self._replan_later(b, p)
        if self.atoms is not None or choice is not None:
            b.trial_key = None
        else:
            b.trials, b.timings = 2 * TRIALS, ([], [])

    def _replan_later(self, b: Bucket, p: Plan) -> None:
        """When a sampling bucket chooses its gates from its sample (``_replan``), static plan
        ``p`` taken."""
        if b.sample is not None:
            after = self.replan_after
            if after is None:
                after = max(REPLAN_MIN, REPLAN_PER_PATTERN * len(p.patterns))
            b.replan_at = b.seen + after
            b.keep_at = min(b.keep_at, b.replan_at)

    # ------------------------------------------------------------------ matching
    def match(self, event: Event) -> list[CompiledRule]:
        return self.match_fields(event.fields)

    def match_fields(self, f: dict) -> list[CompiledRule]:
        b = self.bucket(f.get("Channel"), f.get("EventID"))
        if b.empty:
            return []
        return self.match_in(b, f)

    def match_in(self, b: Bucket, f: dict) -> list[CompiledRule]:
        """The rules of bucket ``b`` (not empty) that match ``f``: for callers that looked the
        bucket up themselves (hunt keeps a per-file bucket cache that is also its record of
        the (Channel, EventID) pairs seen).

        A bucket sampling its events for ``_replan`` keeps the sample beside the C call: 10,769
        events of the attack corpus x5 went through the Python frame of ``_match`` for it."""
        if b.sample is not None:
            b.seen += 1
            if b.seen >= b.keep_at:
                self._keep(b, f)
        if b.trials:
            return self._trial(b, f)
        m = b.matcher if b.atom_scan is not None else b.lit_matcher
        if m is not None:  # the path in C (``_text.Matcher``, ``LiteralMatcher``)
            out = m(f)
            if out is not None:
                if b.upgrade_in >= 0:  # on the ramp, or waiting for another process' database
                    b.upgrade_in -= 1
                    if b.upgrade_in < 0:
                        self._upgrade(b)
                return self._tuned(out, f) if out and self.exclusions else out
        return self._match(b, f, b.atom_scan is not None)

    def _trial(self, b: Bucket, f: dict) -> list[CompiledRule]:
        """Match ``f`` while the bucket times its two prefilters, alternately; after the last
        trial it keeps the atom prefilter only if its median time per event was lower, and
        the trials of a static plan store the choice for the next run's warm start."""
        b.trials -= 1
        atoms = b.trials & 1
        start = perf_counter()
        out = self._match(b, f, bool(atoms))
        b.timings[atoms].append(perf_counter() - start)
        if not b.trials:
            lit_times, atom_times = (sorted(t) for t in b.timings)
            keep_atoms = atom_times[len(atom_times) // 2] < lit_times[len(lit_times) // 2]
            if not keep_atoms:
                _use_atoms(b, None, None)
            b.timings = ([], [])
            if b.trial_key is not None:
                write_choice(b.trial_key, TRIAL_FLAVOUR, keep_atoms)
                b.trial_key = None
        return out

    def _match(self, b: Bucket, f: dict, use_atoms: bool) -> list[CompiledRule]:
        cand: set[int] | list[int]
        text = None
        if use_atoms:
            atoms = b.atoms
            if b.matcher is not None:
                out = b.matcher(f)
                if out is not None:
                    return self._tuned(out, f) if out and self.exclusions else out
            text = tagged_text(f, atoms.index, atoms.rest)
        if text is not None:
            cand = candidates(atoms, b.atom_scan(text))
            if atoms.ascii_only:
                cand |= non_ascii(f, atoms.ascii_only)
            if not cand:
                return []
            order = sorted(cand)
        elif b.scan is not None:
            if b.anchors is not None and not any_anchor(f, b.text_fields, b.text_skip, b.anchors):
                return self._evaluate(b, f, b.always) if b.always else []
            if b.lit_matcher is not None:
                out = b.lit_matcher(f)
                if out is not None:
                    return self._tuned(out, f) if out and self.exclusions else out
            text = prefilter_text(f, b.text_fields, b.text_skip)
            if b.upgrade_in >= 0:
                b.upgrade_in -= 1
                if b.upgrade_in < 0:
                    self._upgrade(b)
            lit_units = b.lit_units
            if b.single_gate:
                cand = set()
                for i in b.scan(text):
                    cand.update(lit_units[i])
            else:
                cand = gated(lit_units, b.scan(text), b.need, GATE_BITS)
            if b.always:
                cand.update(b.always)
            if not cand:
                return []
            order = sorted(cand)
        else:
            order = b.always
        return self._evaluate(b, f, order)

    def _evaluate(self, b: Bucket, f: dict, order: list[int] | tuple[int, ...]) -> list[CompiledRule]:
        """The rules of ``b`` at positions ``order`` (ascending) whose predicates hold for ``f``."""
        if evaluate is not None:  # the same loop in C (``_text.evaluate``)
            out = evaluate(f, order, b.preds, b.rules)
            return self._tuned(out, f) if out and self.exclusions else out
        low = Low(f)
        preds = b.preds
        out = []
        for i in order:
            p = preds[i]
            if p is True or p(f, low):
                out.append(b.rules[i])
        if len(out) > 1:
            # One rule, several sources can never both apply to one event, but stay safe.
            out = list(dict.fromkeys(out))
        if out and self.exclusions:
            return self._tuned(out, f)
        return out

    def _tuned(self, rules: list[CompiledRule], f: dict) -> list[CompiledRule]:
        """``rules`` without those whose tuning exclusion holds for ``f``: inside the engine, so
        the event neither alerts nor feeds their correlations."""
        keep = []
        for r in rules:
            test = self.exclusions.get(r)
            if test is not None and test(f):
                self.excluded += 1
            else:
                keep.append(r)
        return keep
