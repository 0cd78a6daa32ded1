"""Progress bar and closing summary line, shared by every command that reads logs.

The bar goes to stderr and only when stderr is a terminal and the input is large enough to
make waiting noticeable; pipes and CI logs get only the one-line summary.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from scmwatch.events.model import ReadStats

LARGE_INPUT = 32 << 20  # bytes; below this a run finishes before a bar is worth drawing


def unit_bytes(inp: Any) -> int:
    """Bytes behind one input for the bar: a local file's size, a URL's as its fsspec backend
    reports it (a remote listing's, else ``HEAD``'s Content-Length), 0 when unknown."""
    if getattr(inp, "size", None) is not None and getattr(inp, "member", None) is None:
        return inp.size  # a walk's or a remote listing's: known without asking (first, per file)
    if getattr(inp, "url", False):
        return inp.compressed_size() or 0
    try:
        return os.path.getsize(getattr(inp, "path", inp))
    except OSError:
        return 0


def input_size(paths: Sequence[Any]) -> int:
    return sum(unit_bytes(inp) for inp in paths)


class Progress:
    """``with Progress(inputs) as bar: ... bar.file_done(inp); bar.events(n)``; a no-op off-terminal."""

    def __init__(self, inputs: Sequence[Any], enabled: bool | None = None, growing: bool = False) -> None:
        """``growing``: more inputs come while the bar runs (:meth:`grow`); the bar is then drawn
        on a terminal whatever the bytes known at the start."""
        total = input_size(inputs)
        if enabled is None:
            enabled = sys.stderr.isatty() and (growing or total >= LARGE_INPUT)
        self._bar = None
        self._task = None
        self._done = 0
        self._events = 0
        self._total = total
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("reading", total=self._total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def grow(self, nbytes: int) -> None:
        """``nbytes`` more to read: inputs found since the bar started."""
        self._total += nbytes
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=self._total)

    def file_done(self, inp: Any, events: int) -> None:
        if self._bar is None:
            return
        self._done += unit_bytes(inp)
        self._bar.update(self._task, completed=self._done, description=f"{events:,} events")

    def advance(self, nbytes: int, events: int) -> None:
        """``nbytes`` more read (a file, or a range of one), with ``events`` more events."""
        self._events += events
        if self._bar is None:
            return
        self._done += nbytes
        self._bar.update(self._task, completed=self._done, description=f"{self._events:,} events")


def summary_line(stats: ReadStats, seconds: float, extra: str = "", wall: float | None = None) -> str:
    """``scmwatch: 278 files, 8,255 events in 0.26 s (31,750 events/s); errors: format 1``.

    With ``wall`` (the whole command, rule loading and output included) ``seconds`` is told
    apart as the match time: ``... events in 2.10 s wall, match 0.26 s (31,750 events/s)``.
    """
    rate = stats.events / seconds if seconds > 0 else 0.0
    took = f"{seconds:.2f} s" if wall is None else f"{wall:.2f} s wall, match {seconds:.2f} s"
    text = f"scmwatch: {stats.files:,} files, {stats.events:,} events in {took} ({rate:,.0f} events/s)"
    if stats.files_skipped:
        text += f"; {stats.files_skipped} non-log files skipped"
    if extra:
        text += f"; {extra}"
    if stats.errors:
        text += "; errors: " + ", ".join(f"{kind} {n}" for kind, n in sorted(stats.errors.items()))
    else:
        text += "; no errors"
    return text
