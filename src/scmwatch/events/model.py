"""The normalized event and the bookkeeping every reader shares.

Every reader (EVTX, JSON, XML, Zeek) yields :class:`Event` objects whose ``fields`` use the
names Windows itself writes (``EventID``, ``Channel``, ``Computer``, ``Image``,
``ServiceName`` ...), because those are the names Sigma rules use. Keeping the fields in a
plain ``dict`` (rather than attributes) lets the Sigma engine look fields up by the name a
rule gives without any translation on the hot path. Provenance (which file, which record or
line, which format) travels beside the fields, never inside them, so rules cannot match on it
by accident.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scmwatch.escape import terminal
from scmwatch.native import pure_python


@dataclass(slots=True)
class Event:
    """One normalized log record.

    ``fields`` is flat: System fields (``EventID`` int, ``Channel``, ``Provider_Name``,
    ``Computer``, ``EventRecordID``, ``TimeCreated`` ISO-8601 UTC string, ``ProcessID``,
    ``ThreadID``, ``UserID``, ...) and EventData/UserData fields at top level under their own
    names. Values are kept exactly as written (no trimming).

    ``source`` is the input file (``archive.zip!member`` for archive members), ``record_id``
    the EVTX record id or the 1-based line/object number in text formats, ``fmt`` the reader
    that produced it (``evtx``, ``json``, ``xml``, ``zeek``).
    """

    fields: dict[str, Any]
    source: str
    record_id: int | None
    fmt: str
    _epoch: float | None = field(default=None, repr=False, compare=False)

    @property
    def time(self) -> float:
        """Event time as POSIX seconds (UTC); 0.0 when the record carries no usable time.

        Parsed lazily and cached: most events are never asked (only alerts and correlations
        need it), and parsing ISO strings for every event would be wasted work.
        """
        if self._epoch is None:
            self._epoch = parse_time(self.fields.get("TimeCreated"))
        return self._epoch

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


# The times an event may carry: datetime's own range (years 1..9999), one day in from each end so
# that no offset or rounding can push a parsed time out of it. Anything outside (``1e20``, ``-1e20``,
# ``inf``, ``NaN``, an ISO time whose offset crosses year 9999) is "no usable time".
MIN_EPOCH = datetime(1, 1, 2, tzinfo=UTC).timestamp()
MAX_EPOCH = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


def parse_time(value: Any) -> float:
    """Parse the timestamps our readers emit (ISO 8601, any fraction length, ``Z``/offset).

    0.0 for anything that is not a usable time: never an exception, never a value
    :func:`format_time` cannot print.
    """
    if not value:
        return 0.0
    if value.__class__ is str and len(value) == 27:
        if _canonical_epoch is not None:  # the C twin of the canonical text's path: 0.1 us, not 0.7
            epoch = _canonical_epoch(value)
            if epoch is not None:
                return epoch if MIN_EPOCH <= epoch <= MAX_EPOCH else 0.0
        if not _CANONICAL(value):
            return _parse_general(value)
        # what every reader writes (``2019-03-03T09:20:28.621489Z``): the general path below
        # would hand fromisoformat this very text with ``+00:00`` for ``Z``; 0.7 us, not 3.6
        try:
            epoch = _fromiso(value).timestamp()
        except (ValueError, OverflowError):  # not a date (month 13): the general path says so
            pass
        else:
            return epoch if MIN_EPOCH <= epoch <= MAX_EPOCH else 0.0
    return _parse_general(value)


def _parse_general(value: Any) -> float:
    """:func:`parse_time` of anything but the canonical text (tests compare both on that too)."""
    if isinstance(value, int | float):
        try:
            epoch = float(value)
        except OverflowError:  # an int of hundreds of digits
            return 0.0
        return epoch if MIN_EPOCH <= epoch <= MAX_EPOCH else 0.0  # also False for NaN
    text = str(value).strip()
    if text.endswith(" UTC"):
        text = text[:-4]
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python's fromisoformat accepts at most 6 fractional digits; EVTX writes 7.
    dot = text.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        text = text[: dot + 1] + text[dot + 1 : min(end, dot + 7)] + text[end:]
    text = text.replace(" ", "T", 1) if "T" not in text else text
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        epoch = dt.timestamp()
    except (ValueError, OverflowError):
        return 0.0
    return epoch if MIN_EPOCH <= epoch <= MAX_EPOCH else 0.0


_fromiso = datetime.fromisoformat

try:  # events/_flatten.c, when it was compiled at install time (scmwatch.native)
    from scmwatch.events._flatten import canonical_epoch as _canonical_epoch
except ImportError:
    _canonical_epoch = None
if pure_python():
    _canonical_epoch = None
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z").fullmatch


def format_time(epoch: float) -> str:
    """POSIX seconds to the ISO 8601 UTC form used in alerts (``2019-03-03T09:20:28.621489Z``).

    A time outside what :func:`parse_time` returns (only a caller's own arithmetic makes one)
    is printed as the nearest end of the range rather than raising. ``isoformat`` writes the
    same text as ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` from year 1000 on, in 2.3 us per call
    instead of 3.7 (every alert's timestamp is formatted once).
    """
    epoch = min(max(epoch, MIN_EPOCH), MAX_EPOCH) if epoch == epoch else 0.0
    if epoch >= _YEAR_1000:
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    # strftime writes years before 1000 with fewer than 4 digits; isoformat pads them
    return (_EPOCH0 + timedelta(microseconds=round(epoch * 1e6))).isoformat(timespec="microseconds") + "Z"


_EPOCH0 = datetime(1970, 1, 1)  # naive: isoformat then writes no offset
_YEAR_1000 = datetime(1000, 1, 1, tzinfo=UTC).timestamp()


class ReadGate:
    """Lets a reader skip records nobody will look at (used by ``hunt``).

    ``want(channel, event_id) -> bool`` is asked once per distinct pair and file; the EVTX
    reader and the NDJSON reader of evtx_dump lines (with the C extension) do not parse a
    record past its System part when the answer is no, and do not yield it. Skipped records
    still count as events read.
    ``skipped`` says how many records of the current file were skipped so far, so a caller
    can number events as if it had seen every one. Readers that cannot skip ignore the gate.
    ``decisions`` holds the EVTX decoder's answers per pair: a hunt whose ``want`` answers the
    same for every file shares one dict over its files, so ``want`` is asked once per pair.
    """

    def __init__(self, want: Any) -> None:
        self.want = want
        self.decisions: dict = {}
        self.reader: Any = None  # set by the reader that honours the gate

    @property
    def skipped(self) -> int:
        return self.reader.skipped if self.reader is not None else 0


@dataclass(slots=True)
class ReadError:
    """One problem with one input: reported as a single line, counted by ``kind``."""

    source: str
    kind: str  # e.g. "unreadable", "evtx-record", "json-line", "encoding", "empty", "format"
    message: str
    record: int | None = None

    def line(self) -> str:
        """One stderr line; names and messages quote attacker-controlled text, so they are
        escaped (a member name with a newline must not forge a second line)."""
        where = terminal(self.source) + (f" (record {self.record})" if self.record is not None else "")
        return f"scmwatch: {where}: {self.kind}: {terminal(self.message)}"


def odd_event_id(stats: ReadStats, source: str, eid: str, record: Any, first: bool) -> None:
    """Count an ``EventID`` that is not a plain decimal (kept as written, see
    ``normalize._int``); the first one of a file is also reported as a line."""
    if first:
        stats.error(source, "eventid-not-decimal",
                    f"EventID {ascii(eid)[:40]} is not a plain decimal: kept as written, so rules for "
                    "numeric EventIDs do not match it (further ones counted only)", record)
    else:
        stats.errors["eventid-not-decimal"] += 1


MAX_LINES_PER_KIND = 100  # problem lines per input and kind; the rest are counted only


@dataclass
class ReadStats:
    """What a read produced: the numbers that go into every closing summary.

    Readers never raise for bad input; they call :meth:`error`, which counts the problem and
    forwards it to ``on_error`` (the CLI prints it as one line on stderr).
    """

    files: int = 0
    events: int = 0
    bytes: int = 0
    errors: Counter = field(default_factory=Counter)
    files_failed: int = 0
    named_failed: int = 0  # of those, inputs the user named: these make the exit code 1
    files_skipped: int = 0  # in directory walks: files whose extension is not a log format
    on_error: Any = None  # Callable[[ReadError], None] | None
    first_errors: list[ReadError] = field(default_factory=list)
    max_kept_errors: int = 200
    lines: Counter = field(default_factory=Counter, repr=False)  # lines reported per (input, kind)

    def error(self, source: str, kind: str, message: str, record: int | None = None) -> None:
        """Count one problem and report it -- up to MAX_LINES_PER_KIND lines per input and kind,
        so that a file of a million broken lines cannot flood stderr; the count stays exact."""
        self.errors[kind] += 1
        shown = self.lines[source, kind] = self.lines[source, kind] + 1
        if shown > MAX_LINES_PER_KIND:
            return
        if shown == MAX_LINES_PER_KIND:
            message += f" (further {kind} problems of this input are counted only)"
        err = ReadError(source, kind, message, record)
        if len(self.first_errors) < self.max_kept_errors:
            self.first_errors.append(err)
        if self.on_error is not None:
            self.on_error(err)

    def merge(self, other: ReadStats) -> None:
        """Add another worker's counts (used by ``--jobs``)."""
        self.files += other.files
        self.events += other.events
        self.bytes += other.bytes
        self.files_failed += other.files_failed
        self.files_skipped += other.files_skipped
        self.named_failed += other.named_failed
        self.errors.update(other.errors)
        room = self.max_kept_errors - len(self.first_errors)
        if room > 0:
            self.first_errors.extend(other.first_errors[:room])

    @property
    def exit_code(self) -> int:
        """1 when an input the user named could not be read at all (docs/architecture.md), else 0."""
        return 1 if self.named_failed else 0
