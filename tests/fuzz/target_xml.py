"""Windows event XML (``wevtutil qe /f:xml``, Event Viewer "Save as XML"): read, then hunt."""

from __future__ import annotations

from fuzzlib import read_and_hunt


def target(data: bytes) -> None:
    read_and_hunt(data, "fuzz.xml")
