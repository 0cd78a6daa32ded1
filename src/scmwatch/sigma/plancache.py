"""A cache of each bucket's static atom plan (``tagged.plan`` without a sample), kept between runs.

Why: choosing the gates and writing the Hyperscan patterns of a bucket costs ~78 ms for Sysmon
process creation with all SigmaHQ (1,184 units, 1,726 patterns) and ~0.13 s of CPU per
``--jobs`` worker on the dev corpus x5, paid again by every worker of every run although the
static plan depends on the rules alone. Read back from here it costs ~1 ms.

The key names the bucket's units in order, each by the rule-cache entry its rule came from
(``cache.py``: that key covers the rule files, the versions and the source of the compiler,
``tagged.py`` included), the rule's index in it and the unit's source label. A bucket with a
unit of no entry (the cache off) is not cached. A plan is stored with ``marshal`` (plain tuples,
ints, strings and one dict; no pickle: nothing in it runs code) after a line with its format and
CRC-32, atomically; an entry that is altered, does not parse or does not fit the bucket is
planned again and rewritten; a cache directory that cannot be written is ignored. Entries are
small (a few kB, ~0.2 MB for Sysmon process creation); the KEEP most recently written are kept.
With the plan comes the name of its patterns' Hyperscan database (``index._db_name``), so that a
warm start finds the database without hashing the patterns again. The 17 plans an x5 hunt reads
took ~1.6 ms of each process as JSON (parsing, then lists made tuples and checked) and 0.8 MB of
patterns hashed for their databases' names; marshal reads them in ~0.35 ms.

Repeated gate tuples (most literals and patterns open the gates of one unit) are written once
and referenced (``marshal`` keeps the identity of an object it meets twice): the 68 layouts of an
x5 hunt hold 18,249 such tuples, 2,984 of them distinct, and read in 1.1 instead of 2.2 ms.

Beside a plan, under the same key, the prefilter its bucket's trials kept (``Engine._trial``:
atoms or literal), so that the next run's bucket starts on it instead of timing both again on
its first 400 events (``Engine._warm_start``); stored the same way, one file per flavour of the
matchers timed (C or Python).

Under the key with ``index.REPLANNED`` appended, the plan of the bucket's last replan that
compiled its database (gates chosen from a sample of its events, ``Engine._replan``) and the
prefilter its trials kept: a later replan whose own database is not cached takes them.

Beside them, under the same key, the bucket's literal-prefilter layout (:class:`Layout`: which
literals gate which units, the fields its text is joined from), stored with ``marshal`` (plain
tuples, ints and strings; the CRC line guards it as it does a plan): working it out from the
units cost each process 17-20 ms for the 68 buckets of an x5 hunt with all SigmaHQ (20,000
literal gates walked), reading it back ~8 ms (x5 ``--jobs 1``, callgrind, the same cached trial
choices: 5,658M -> 5,599M instructions with the layouts cached, 5,570M with this reading).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import tempfile
import zlib
from collections.abc import Sequence
from itertools import chain
from typing import Any, NamedTuple

from scmwatch.native import pure_python
from scmwatch.sigma.cache import cache_root
from scmwatch.sigma.tagged import GATE_BITS, Plan

try:  # optional C extension (sigma/_text.c): checks a stored layout's ids as it reads them
    from scmwatch.sigma._text import Gather
except ImportError:  # pragma: no cover - built without a C compiler
    Gather = None
if pure_python():
    Gather = None

FORMAT = "scmwatch-plan-1"  # of the key and the trial choices
PLAN_FORMAT = f"scmwatch-plan-2 marshal-{marshal.version}"
KEEP = 3_000  # files kept (all SigmaHQ has ~340 distinct buckets, up to 4 files each)
MISSING = object()  # not in the cache (None is a plan: the bucket cannot have one)
LAYOUT_FORMAT = f"scmwatch-layout-2 marshal-{marshal.version}"


class Layout(NamedTuple):
    """A bucket's literal prefilter as its units give it (``index.layout``): what is cached."""

    always: tuple[int, ...]  # positions of units evaluated on every event
    need: tuple[int, ...]  # per unit: how many of its gates must be hit
    single_gate: bool  # every gated unit has one gate: ``lit_units`` holds positions
    literals: tuple[str, ...]  # sorted
    lit_units: tuple[tuple[int, ...], ...]  # per literal: unit positions (single_gate) or gate ids
    text_fields: tuple[str, ...] | None  # fields the prefilter text is joined from; None: all ...
    text_skip: tuple[str, ...]  # ... but these
    anchors: tuple[str, ...] | None  # keyword anchors (``index.keyword_anchors``)
    lit_db: str  # the cache name of the literals' Hyperscan database ("": none)


def plan_key(units: Sequence[Any]) -> str | None:
    """The cache key of a bucket's units (``ruleset.Unit``), or None when one of them came from
    no rule-cache entry."""
    parts = [FORMAT]
    for u in units:
        origin = u.rule.__dict__.get("_origin")
        if origin is None:
            return None
        parts.append(f"{origin[0]} {origin[1]} {u.source}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _path(key: str, suffix: str) -> str | None:
    root = cache_root()
    return os.path.join(root, "plans", key + suffix) if root else None


def read_plan(key: str, units: int) -> tuple[Plan | None, str] | object:
    """The stored plan of a bucket of ``units`` units (None: it has none) and the name of its
    patterns' Hyperscan database ("": none), or MISSING."""
    body = _read(_path(key, ".plan"), PLAN_FORMAT)
    if body is MISSING:
        return MISSING
    try:
        name, p = marshal.loads(body)  # type: ignore[arg-type]
        if type(name) is not str:
            return MISSING
        return (None if p is None else _checked(p, units)), name
    except Exception:  # noqa: BLE001 - another format, or not this bucket's: planned again
        return MISSING


def read_choice(key: str, flavour: str) -> bool | None:
    """Which prefilter the bucket's last trials kept (``Engine._trial``) on this build's
    ``flavour`` of the matchers (the C ones or the Python ones time differently): True the atom
    prefilter, False the literal one, None not known."""
    body = _read(_path(key, f".{flavour}.trial"))
    if body == b"atoms":
        return True
    return False if body == b"literal" else None


def read_layout(key: str, units: int) -> Layout | None:
    """The stored layout of a bucket of ``units`` units, or None (absent, damaged, or not one
    such a bucket can have)."""
    body = _read(_path(key, ".layout"), LAYOUT_FORMAT)
    if body is MISSING:
        return None
    try:
        got = Layout._make(marshal.loads(body))  # type: ignore[arg-type]
        return got if _fits(got, units) else None
    except Exception:  # noqa: BLE001 - another format, or not this bucket's: laid out again
        return None


def _fits(got: Layout, units: int) -> bool:
    """Whether every position and gate id of ``got`` names one of ``units`` units. With the C
    extension its match handler checks them as it reads them (``_text.Gather``, what the bucket's
    C literal path is built on: ~0.3 ms for the 68 layouts of an x5 hunt, where the same checks
    in Python, types as sets and bounds by min/max, took 4-5 ms of each process)."""
    names = (*(got.text_fields or ()), *got.text_skip, *(got.anchors or ()))
    ids = got.lit_units
    if type(got.single_gate) is not bool or len(got.need) != units or len(got.literals) != len(ids) \
            or not set(map(type, chain(got.literals, names, (got.lit_db,)))) <= {str}:
        return False
    if Gather is not None:
        try:
            Gather(ids, got.always, got.need, GATE_BITS if got.single_gate else 0)
        except (TypeError, ValueError, OverflowError):
            return False
        return max(got.need, default=0) < 1 << GATE_BITS
    if not set(map(type, (got.always, got.need, *ids))) <= {tuple} \
            or not set(map(type, chain(got.always, got.need, chain.from_iterable(ids)))) <= {int}:
        return False
    top = units if got.single_gate else units << GATE_BITS
    return all(0 <= min(xs, default=0) and max(xs, default=-1) < bound
               for xs, bound in ((got.always, units), (got.need, 1 << GATE_BITS))) \
        and 0 <= min(chain.from_iterable(ids), default=0) and max(chain.from_iterable(ids), default=-1) < top


def write_layout(key: str, layout: Layout) -> None:
    """Store a bucket's layout (:func:`read_layout`); best effort."""
    _write(_path(key, ".layout"), marshal.dumps(tuple(layout._replace(lit_units=_shared(layout.lit_units)))),
           LAYOUT_FORMAT)


def _read(path: str | None, form: str = FORMAT) -> memoryview | object:
    """The body of the cache file at ``path`` when its header line holds, else MISSING. Read with
    one ``os.read`` and kept as a view (no file object, no copy of the body): an x5 hunt reads
    ~110 of these files in each process, 2.6 -> 1.3 ms."""
    if path is None:
        return MISSING
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # absent or unreadable
        return MISSING
    try:
        st = os.fstat(fd)
        data = os.read(fd, st.st_size) if st.st_uid == os.getuid() else b""
    except OSError:
        return MISSING
    finally:
        os.close(fd)
    nl = data.find(b"\n")
    if nl < 0 or len(data) != st.st_size:
        return MISSING
    body = memoryview(data)[nl + 1:]
    return body if data[:nl] == _header(body, form) else MISSING


def _checked(p: tuple, units: int) -> Plan:
    """A Plan from its stored fields (``Plan``'s, in order), each unit position and gate id
    checked to be one of the bucket's."""
    index, rest, patterns, gates, always, need, ascii_only = p
    if type(index) is not dict or not set(map(type, (patterns, gates, always, need, ascii_only))) <= {tuple} \
            or not set(map(type, chain(gates, ascii_only))) <= {tuple} \
            or not all(type(x) is str and type(us) is tuple for x, us in ascii_only) \
            or not set(map(type, chain(index, patterns))) <= {str} \
            or not set(map(type, index.values())) <= {int}:
        raise ValueError("not a plan of this build")
    # Checked as flat sequences (types as a set made in C, bounds by min/max): one generator step
    # per gate id cost ~10 ms of the 68 plans an x5 hunt reads (all SigmaHQ), a set comprehension
    # ~0.3 ms of the 17 plans it has.
    ids = list(chain.from_iterable(gates))
    positions = [*always, *chain.from_iterable(us for _, us in ascii_only)]
    if not set(map(type, chain(ids, positions, need))) <= {int} or type(rest) is not int \
            or not all(0 <= x < units for x in (min(positions, default=0), max(positions, default=0))) \
            or (ids and not (min(ids) >= 0 and max(ids) >> GATE_BITS < units)) \
            or len(gates) != len(patterns) or len(need) not in (0, units):
        raise ValueError("does not fit the bucket")
    return Plan(index=index, rest=rest, patterns=patterns, pattern_gates=gates, always=always, need=need,
                ascii_only=ascii_only)


def _header(body: bytes | memoryview, form: str = FORMAT) -> bytes:
    """The first line of a cache file: the format and the CRC-32 of the body after it (a plan
    altered in place, say one pattern's byte, would silently let rules go unscanned)."""
    return f"{form} {zlib.crc32(body):08x}".encode()


def write_plan(key: str, plan: Plan | None, name: str) -> None:
    """Store a bucket's plan and the name of its patterns' Hyperscan database ("": none); best
    effort (a cache that cannot be written is skipped)."""
    body = None
    if plan is not None:
        body = (dict(plan.index), plan.rest, tuple(plan.patterns), _shared(plan.pattern_gates),
                tuple(plan.always), tuple(plan.need), tuple((x, tuple(us)) for x, us in plan.ascii_only))
    try:
        data = marshal.dumps((name, body))
    except ValueError:  # not plain data: not stored
        return
    _write(_path(key, ".plan"), data, PLAN_FORMAT)


def _shared(groups: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """``groups`` as tuples, equal ones one object: ``marshal`` then writes each once."""
    seen: dict[tuple[int, ...], tuple[int, ...]] = {}
    return tuple(seen.setdefault(t, t) for t in map(tuple, groups))


def write_choice(key: str, flavour: str, atoms: bool) -> None:
    """Store the prefilter a bucket's trials kept (:func:`read_choice`); best effort."""
    _write(_path(key, f".{flavour}.trial"), b"atoms" if atoms else b"literal")


def _write(path: str | None, data: bytes, form: str = FORMAT) -> None:
    """``data`` after its header line, written atomically at ``path``; best effort."""
    if path is None:
        return
    tmp = None
    try:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(_header(data, form) + b"\n" + data)
        os.replace(tmp, path)  # atomic: concurrent --jobs workers see the old file or the new
        tmp = None
        _prune(folder)
    except OSError:
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _prune(folder: str) -> None:
    """Keep the KEEP most recently written plans, trial choices and layouts: every edit of a rule
    file makes new keys."""
    with os.scandir(folder) as it:
        found = []
        for e in it:
            if e.name.endswith((".plan", ".trial", ".layout", ".json")):  # .json: plans of format 1
                try:
                    found.append((e.stat().st_mtime_ns, e.path))
                except OSError:
                    continue
    if len(found) <= KEEP:
        return
    for _, path in sorted(found, reverse=True)[KEEP:]:
        try:
            os.unlink(path)
        except OSError:
            pass
