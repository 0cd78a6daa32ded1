"""JSON / NDJSON exports (evtx_dump, Winlogbeat/ECS, NXLog flat, Zeek JSON): read, then hunt."""

from __future__ import annotations

from fuzzlib import read_and_hunt


def target(data: bytes) -> None:
    read_and_hunt(data, "fuzz.json")
