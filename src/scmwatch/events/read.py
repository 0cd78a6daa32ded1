"""Input discovery and reader dispatch (work in progress: real readers land next)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from scmwatch.events.model import Event, ReadStats


@dataclass(frozen=True, slots=True)
class InputFile:
    """One readable unit: a file on disk, or one member of a ``.zip`` archive."""

    name: str  # provenance name: the path, or ``archive.zip!member``
    path: str  # the file on disk
    member: str | None = None


def discover(paths: Iterable[str], stats: ReadStats) -> Iterator[InputFile]:
    raise NotImplementedError


def read_input(inp: InputFile, stats: ReadStats) -> Iterator[Event]:
    raise NotImplementedError


def iter_events(paths: Iterable[str], stats: ReadStats) -> Iterator[Event]:
    for inp in discover(paths, stats):
        yield from read_input(inp, stats)
