"""Zeek logs in TSV and JSON form, read as Zeek writes them.

Zeek field names are kept as Zeek writes them (``id.orig_h``, ``endpoint``, ``operation``,
``path``, ``name``) because Sigma's zeek rules use them. Added for the event model:
``Channel`` = ``zeek:<log>`` (e.g. ``zeek:dce_rpc``), ``TimeCreated`` from ``ts``, and
``Computer`` = the responder address ``id.resp_h`` (the host whose SCM or share was used).

The same row gives the same event from TSV and from JSON:

* TSV: Zeek's escapes are undone (``\\\\`` is one backslash, ``\\xHH`` a byte, so UTF-8 written
  byte by byte with ``enable_utf_8=F`` comes back as text and ``\\x2d`` is a literal ``-``);
  the unset mark (``-``) leaves the field out as JSON does; ``(empty)`` is ``[]`` for a set or
  vector and ``""`` for a string; ``T``/``F`` are booleans; counts and ports ints, times floats.
* JSON: ``_`` as the scope separator (``id_resp_h``, ``Log::default_scope_sep="_"``) is mapped to
  Zeek's ``.`` names (``ZEEK_SCOPED`` in ``normalize``); ``ts`` as epoch seconds, epoch millis
  (``JSON::TS_MILLIS``) or ISO-8601 (``JSON::TS_ISO8601``) becomes epoch seconds; the sensor
  keys of JSON shippers (``@stream``, ``@system``, ``@proc``) and ``_path`` are not fields.

The log type comes from ``_path``, ``@stream``, the ``#path`` header, or the file name, also
with a sensor prefix (``HOST1_dce_rpc.log``). A time that is no time (``1e300``) and a line whose
log type cannot be told are counted problems (kind ``zeek``); the rest of the file is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from scmwatch.events.model import MAX_EPOCH, MIN_EPOCH, Event, ReadStats, format_time, parse_time
from scmwatch.events.normalize import ZEEK_SCOPED

# Zeek's own log names (base scripts and common policy scripts): a file or stream with one of
# these names is that log, also behind a sensor prefix (``HOST1_dce_rpc.log``).
ZEEK_LOGS = frozenset(
    {
        "analyzer", "analyzer_debug", "broker", "capture_loss", "cluster", "config", "conn", "conn_long",
        "dce_rpc", "dhcp", "dnp3", "dns", "dpd", "files", "ftp", "http", "intel", "irc", "kerberos",
        "known_certs", "known_hosts", "known_services", "ldap", "ldap_search", "loaded_scripts", "modbus",
        "mqtt_connect", "mqtt_publish", "mqtt_subscribe", "mysql", "netcontrol", "notice", "notice_alarm",
        "ntlm", "ntp", "ocsp", "openflow", "packet_filter", "pe", "print", "quic", "radius", "rdp",
        "reporter", "rfb", "signatures", "sip", "smb_cmd", "smb_files", "smb_mapping", "smtp", "snmp",
        "socks", "software", "ssh", "ssl", "stats", "syslog", "traceroute", "tunnel", "weird",
        "weird_stats", "websocket", "x509",
    }
)  # fmt: skip
_INT_TYPES = frozenset({"count", "int", "port"})
_FLOAT_TYPES = frozenset({"time", "interval", "double"})
# Types of a header without #types (``zeek-cut -m``): the fields every log has; the rest is text.
_UNTYPED = {"ts": "time", "id.orig_p": "port", "id.resp_p": "port"}
_NOT_FIELDS = ("_path", "_write_ts", "@stream", "@system", "@proc")
_ESCAPE = re.compile(rb"\\(\\|x[0-9A-Fa-f]{2})")
_MILLIS = 1e11  # an epoch in seconds this large is past year 5000: it is JSON::TS_MILLIS


def zeek_log_type(name: str) -> str | None:
    """The Zeek log a file holds, by its name: ``/x/dce_rpc.00:00:00-01:00:00.log.gz``,
    ``HOST1_dce_rpc.log`` and ``test__dce_rpc.log`` are ``dce_rpc``; None when no known log."""
    base = os.path.basename(name.split("!")[-1])
    for stem in (base.split(".", 1)[0], base.split(".log", 1)[0]):
        if stem in ZEEK_LOGS:
            return stem
        for i in range(1, len(stem)):
            if stem[i - 1] in "_.-" and stem[i:] in ZEEK_LOGS:
                return stem[i:]
    return None


def zeek_time(value: Any) -> float | None:
    """``ts`` in any form Zeek writes it (epoch seconds or millis, number or text, ISO-8601) →
    epoch seconds; None when it is no representable time."""
    if type(value) is str:
        try:
            value = float(value)
        except ValueError:
            try:
                epoch = parse_time(value)
            except (ValueError, OverflowError):
                return None
            return epoch or None
    if type(value) not in (int, float):
        return None
    seconds = value / 1000.0 if abs(value) >= _MILLIS else float(value)
    return seconds if MIN_EPOCH <= seconds <= MAX_EPOCH else None  # also None for NaN


def normalize_zeek(record: dict[str, Any], path: str) -> tuple[dict[str, Any], str | None]:
    """One Zeek row (TSV values typed, or a JSON object) → event fields, and a problem (text) or None."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in _NOT_FIELDS:
            continue
        out[ZEEK_SCOPED.get(key, key)] = value
    out["Channel"] = f"zeek:{path}"
    problem = None
    ts = out.get("ts")
    if ts is not None:
        seconds = zeek_time(ts)
        if seconds is None:
            if type(ts) is not str or _looks_numeric(ts):
                problem = f"ts {str(ts)[:40]!r} is out of the range of times"
            if type(ts) is int and not -(1 << 63) <= ts < (1 << 64):
                out["ts"] = str(ts)  # kept as written; no JSON writer takes an integer this large
        else:
            out["ts"] = seconds
            out["TimeCreated"] = format_time(seconds)
    resp = out.get("id.resp_h")
    if resp is None and type(out.get("id")) is dict:
        resp = out["id"].get("resp_h")
    if resp is not None:
        out.setdefault("Computer", resp)
    return out, problem


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Problems:
    """Counts problems of one file; only the first of each kind is printed (the count tells the rest)."""

    def __init__(self, name: str, stats: ReadStats) -> None:
        self.name = name
        self.stats = stats
        self.seen: set[str] = set()

    def __call__(self, kind: str, message: str, line: int | None = None) -> None:
        if kind in self.seen:
            self.stats.errors[kind] += 1
            return
        self.seen.add(kind)
        self.stats.error(self.name, kind, message + " (further ones in this file counted only)", line)


def _unescape(raw: bytes) -> bytes:
    return _ESCAPE.sub(lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(1)[1:], 16)]), raw)


def _header_value(raw: bytes) -> bytes | None:
    """The value of a ``#separator`` line: Zeek writes it escaped (``\\x09``). None if invalid."""
    if re.fullmatch(rb"(\\x[0-9A-Fa-f]{2}|[^\\])+", raw) is None:
        return None
    return _unescape(raw)


class _TsvFile:
    """Header state of one TSV file (a file may restart its header, e.g. concatenated logs)."""

    def __init__(self, path: str | None) -> None:
        self.sep = b"\t"
        self.set_sep = b","
        self.empty = b"(empty)"
        self.unset = b"-"
        self.path = path
        self.fields: list[str] = []
        self.types: list[str] = []
        self.bad_text = False

    def header(self, line: bytes, problem: _Problems, lineno: int) -> None:
        if line.startswith(b"#separator"):
            value = _header_value(line[len(b"#separator") :].lstrip(b" "))
            if not value:
                problem("zeek", "#separator is empty or not a valid escape: kept the tab", lineno)
                return
            self.sep = value
            return
        key, *parts = line[1:].split(self.sep)
        if not parts:
            return  # #open/#close without a separator, a btest banner, a comment
        value = _unescape(parts[0])
        if key == b"set_separator" and value:
            self.set_sep = value
        elif key == b"empty_field":
            self.empty = value
        elif key == b"unset_field":
            self.unset = value
        elif key == b"path":
            self.path = self._text(value)
        elif key == b"fields":
            self.fields = [self._text(p) for p in parts]
        elif key == b"types":
            self.types = [self._text(p) for p in parts]

    def _text(self, value: bytes) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_text = True
            return value.decode("utf-8", errors="replace")

    def value(self, raw: bytes, kind: str) -> Any:
        if kind.startswith(("set", "vector")):
            if raw == self.empty:
                return []
            inner = kind[kind.find("[") + 1 : -1] if "[" in kind else "string"
            return [self._scalar(item, inner) for item in raw.split(self.set_sep)]
        if raw == self.empty and kind in ("string", "enum", ""):
            return ""
        return self._scalar(raw, kind)

    def _scalar(self, raw: bytes, kind: str) -> Any:
        if kind == "bool" and raw in (b"T", b"F"):
            return raw == b"T"
        if kind in _INT_TYPES or kind in _FLOAT_TYPES:
            try:
                return int(raw) if kind in _INT_TYPES else float(raw)
            except ValueError:
                pass
        if b"\\" in raw:
            raw = _unescape(raw)
        return self._text(raw)

    def row(self, line: bytes) -> dict[str, Any] | str:
        values = line.split(self.sep)
        if len(values) != len(self.fields):
            return f"row has {len(values)} columns, header has {len(self.fields)}"
        types = self.types
        record: dict[str, Any] = {}
        for i, (field, raw) in enumerate(zip(self.fields, values, strict=True)):
            if raw == self.unset:
                continue
            record[field] = self.value(raw, types[i] if i < len(types) else "string")
        return record


def read_zeek_tsv(name: str, stream: Iterable[bytes], stats: ReadStats, *, header: Iterable[bytes] = (),
                  first_line: int = 1) -> Iterator[Event]:
    """Yield events from a Zeek TSV log (see the module docstring).

    A follower (:mod:`scmwatch.live`) reads a growing log in pieces: it passes the ``#`` header
    lines read before and the line number of the piece's first line.
    """
    problem = _Problems(name, stats)
    tsv = _TsvFile(zeek_log_type(name))
    for raw in header:
        tsv.header(raw.rstrip(b"\r\n"), problem, 0)
    rows = 0
    for lineno, raw in enumerate(stream, first_line):
        stats.bytes += len(raw)
        line = raw.rstrip(b"\r\n")
        if not line:
            continue
        if line.startswith(b"#"):
            tsv.header(line, problem, lineno)
            continue
        if not tsv.fields:
            if line.startswith(b"ts" + tsv.sep):  # ``zeek-cut -m`` output: a names line, no #types
                tsv.fields = [tsv._text(f) for f in line.split(tsv.sep)]
                tsv.types = [_UNTYPED.get(f, "string") for f in tsv.fields]
                continue
            stats.files_failed += 1
            stats.error(name, "zeek", "data before the #fields header: not a Zeek TSV log", lineno)
            return
        rows += 1
        record = tsv.row(line)
        if type(record) is str:
            problem("zeek", record, lineno)
            continue
        if tsv.bad_text:
            tsv.bad_text = False
            problem("encoding", "invalid UTF-8 in a value (replaced with U+FFFD)", lineno)
        if not tsv.path:
            problem("zeek", "log type unknown: no #path header and the file name names no Zeek log", lineno)
            continue
        fields, trouble = normalize_zeek(record, tsv.path)  # type: ignore[arg-type]
        if trouble:
            problem("zeek", trouble, lineno)
        stats.events += 1
        yield Event(fields, name, lineno, "zeek")
    if not rows and first_line == 1:
        stats.error(name, "empty", "Zeek log with a header and no rows")
