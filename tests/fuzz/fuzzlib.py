"""What every fuzz target checks, and the input mutations they share.

A target (``tests/fuzz/target_<name>.py``) defines ``target(data: bytes) -> None`` that raises
:class:`Violation` (or lets any other exception escape) only when a property of issue 11 fails:

* no exception escapes a reader or the hunt (``reader-error`` is the readers' last-resort
  report of one, so it counts as an escape here);
* every input is either events or a counted problem: a non-blank input that gives neither is
  a silent drop;
* the time stays linear in the input (``MAX_SECONDS`` plus ``SECONDS_PER_BYTE``; generous,
  because CI machines are shared -- it catches hangs and blow-ups, benchmarks measure speed);
* every event survives every output: hunt's sinks (table, jsonl, csv) and ``events``' JSONL.

Optionally a target defines ``strategy()`` returning a Hypothesis strategy of ``bytes``;
without one, :func:`mutated` over its seeds (``tests/fuzz/seeds/<name>/``) is used.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from scmwatch.alerts import event_dict
from scmwatch.events import Event, ReadStats, discover, read_input

MAX_SECONDS = 5.0
SECONDS_PER_BYTE = 20e-6  # 20 s per MB: two orders of magnitude above the readers' real speed
FUZZ_DIR = Path(__file__).resolve().parent
SEEDS = FUZZ_DIR / "seeds"

# A rule that fires on every event with an EventID, and a correlation over it, so that fuzzed
# events go through matching, correlation, sorting and every alert sink.
CATCH_ALL = """\
title: fuzz catch-all
id: 5f0c3f8e-3c61-4d55-9d0e-2a8f5b7f0001
name: fuzz_catch_all
status: test
logsource:
    product: windows
detection:
    selection:
        EventID|exists: true
    condition: selection
level: high
---
title: fuzz catch-all count
id: 5f0c3f8e-3c61-4d55-9d0e-2a8f5b7f0002
status: test
correlation:
    type: event_count
    rules:
        - fuzz_catch_all
    group-by:
        - Computer
    timespan: 1h
    condition:
        gte: 1
level: high
"""


class Violation(AssertionError):
    """A property of issue 11 does not hold for this input."""


def seeds(name: str) -> list[bytes]:
    """The checked-in seed inputs of target ``name``, sorted by file name."""
    folder = SEEDS / name
    return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []


def check_time(seconds: float, size: int, what: str) -> None:
    limit = MAX_SECONDS + SECONDS_PER_BYTE * size
    if seconds > limit:
        raise Violation(f"{what}: {seconds:.2f} s for {size} bytes (limit {limit:.2f} s): not linear")


def read_file(path: str, size: int) -> tuple[list[Event], ReadStats]:
    """Read one file as ``events`` and ``hunt`` do; check the reader properties."""
    stats = ReadStats()
    events: list[Event] = []
    start = time.perf_counter()
    for inp in discover([path], stats):
        events.extend(read_input(inp, stats))
    check_time(time.perf_counter() - start, size, "read")
    check_stats(stats, events, size)
    return events, stats


def check_stats(stats: ReadStats, events: Sequence[Event], size: int) -> None:
    if stats.errors.get("reader-error"):
        first = next(e for e in stats.first_errors if e.kind == "reader-error")
        raise Violation(f"an exception escaped a reader: {first.message}")
    if size and not events and not stats.errors and not stats.files_skipped:
        raise Violation("input is neither an event nor a counted problem")
    if len(events) != stats.events - _skipped(stats):
        raise Violation(f"{len(events)} events yielded, {stats.events} counted")
    for ev in events:
        check_event(ev)


def _skipped(stats: ReadStats) -> int:
    return 0  # no gate in read_file: every counted event is yielded


def check_event(ev: Event) -> None:
    """What the hunt and the outputs rely on: sortable provenance, a finite time, printable."""
    if ev.record_id is not None and type(ev.record_id) is not int:
        raise Violation(f"record_id {ev.record_id!r} is not an int: alerts could not be sorted")
    t = ev.time
    if type(t) is not float or not math.isfinite(t):
        raise Violation(f"event time {t!r} is not a finite float")
    orjson.dumps(event_dict(ev), default=str)  # `scmwatch events` JSONL


@lru_cache(maxsize=1)
def _hunt_setup() -> tuple[Any, Any]:
    from scmwatch.sigma import Engine, load_rules

    folder = tempfile.mkdtemp(prefix="scmwatch-fuzz-rules-")
    path = os.path.join(folder, "catch_all.yml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(CATCH_ALL)
    ruleset = load_rules([path])
    assert not ruleset.rejected, ruleset.rejected
    return ruleset, Engine(ruleset)


def hunt_file(path: str, size: int) -> None:
    """Hunt one file with the catch-all rules; every alert goes to every sink."""
    from scmwatch.hunt import run_hunt
    from scmwatch.sinks import FORMATS, open_sink

    ruleset, engine = _hunt_setup()
    rules = ruleset.by_id()
    sinks = [open_sink(fmt, io.StringIO(), rules, color=False) for fmt in FORMATS]

    def emit(alert: Any) -> None:
        for sink in sinks:
            sink.write(alert)

    start = time.perf_counter()
    result = run_hunt([path], ruleset, engine=engine, sink=emit)
    for sink in sinks:
        sink.close()
    check_time(time.perf_counter() - start, size, "hunt")
    if result.summary["errors"].get("reader-error"):
        raise Violation("an exception escaped a reader during the hunt")


def read_and_hunt(data: bytes, filename: str) -> tuple[list[Event], ReadStats]:
    """Write ``data`` as ``filename`` in a fresh directory, read it, then hunt it."""
    with tempfile.TemporaryDirectory(prefix="scmwatch-fuzz-") as folder:
        path = os.path.join(folder, filename)
        with open(path, "wb") as fh:
            fh.write(data)
        events, stats = read_file(path, len(data))
        hunt_file(path, len(data))
    return events, stats


# ---------------------------------------------------------------------------------------------
# mutations: a seed with a few edits, the byte-level moves a fuzzer makes, plus tokens that
# have broken readers before (issue 11)

TOKENS: tuple[bytes, ...] = (
    b"\\ud800", b"\\udfff", b"\\ud83d\\ude00", b"1e400", b"-1e20", b"1e20", b"NaN", b"Infinity",
    b"-Infinity", b"9" * 5000, b"{" * 200, b"[" * 200, b"\x00", b"\xff\xfe", b"\xef\xbb\xbf",
    b"\xed\xa0\x80", b'"', b"\\", b"\n", b"\r\n", b"}", b"]", b",", b"0001-01-01T00:00:00+05:00",
    b"9999-12-31T23:59:59-05:00", b"<", b">", b"</Event>", b"<Event>", b"&#xD800;", b"]]>",
    b"\x1b]52;c;AAAA\x07", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"**\x00\x00",
)


def apply_edits(seed: bytes, edits: Sequence[tuple[int, int, bytes]]) -> bytes:
    """Apply (position, op, payload) edits: 0 overwrite, 1 insert, 2 delete, 3 duplicate a span,
    4 insert a token, 5 flip one bit."""
    data = bytearray(seed)
    for pos, op, payload in edits:
        at = pos % (len(data) + 1)
        if op == 0:
            data[at:at + len(payload)] = payload
        elif op == 1:
            data[at:at] = payload
        elif op == 2:
            del data[at:at + 1 + (payload[0] if payload else 0)]
        elif op == 3:
            span = bytes(data[at:at + 1 + (payload[0] * 4 if payload else 16)])
            data[at:at] = span * (1 + (payload[1] % 4 if len(payload) > 1 else 1))
        elif op == 4:
            data[at:at] = TOKENS[(payload[0] if payload else 0) % len(TOKENS)]
        elif data and op == 5:
            i = at % len(data)
            data[i] ^= 1 << ((payload[0] if payload else 0) % 8)
    return bytes(data)


def mutated(seed_list: Sequence[bytes]) -> Any:
    """Hypothesis strategy: raw bytes, or a seed with up to eight edits."""
    from hypothesis import strategies as st

    edit = st.tuples(st.integers(0, 1 << 20), st.integers(0, 5), st.binary(max_size=8))
    raw = st.binary(max_size=1024)
    if not seed_list:
        return raw
    edited = st.builds(apply_edits, st.sampled_from(list(seed_list)), st.lists(edit, max_size=8))
    return st.one_of(edited, edited, edited, raw)


def strategy_for(module: Any, name: str) -> Any:
    make: Callable[[], Any] | None = getattr(module, "strategy", None)
    return make() if make is not None else mutated(seeds(name))
