"""JSONL: one ``Alert.to_dict()`` per line — the machine-readable contract (docs/architecture.md).

Values are written exactly as read (JSON escapes what needs escaping); only what JSON or UTF-8
cannot hold is changed, by :func:`json_line`'s fallback: lone surrogates become U+FFFD, integers
beyond 64 bits become their decimal string, nesting deeper than ``MAX_DEPTH`` a marker string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

import orjson

from scmwatch.alerts import Alert, HitLine
from scmwatch.escape import no_surrogates
from scmwatch.events.model import format_time

_MISSING = object()  # not in HitLines._given (None is a prefix there: orjson refused the rule's part)

# orjson refuses more than 254 levels; log values nested deeper are cut here
MAX_DEPTH = 200


def json_line(obj: Any, indent: bool = False) -> bytes:
    """``obj`` as JSON ending in ``\n`` (one line unless ``indent``); never raises for odd values."""
    option = orjson.OPT_INDENT_2 if indent else 0
    try:
        return orjson.dumps(obj, default=str, option=option) + b"\n"
    except TypeError:  # orjson.JSONEncodeError: surrogates, huge ints, too deep
        return orjson.dumps(_json_safe(obj, 0), default=str, option=option) + b"\n"


def _json_safe(v: Any, depth: int) -> Any:
    if v is None or isinstance(v, bool | float):
        return v
    if isinstance(v, str):
        return no_surrogates(v)
    if isinstance(v, int):
        return v if -(1 << 63) <= v < (1 << 64) else str(v)
    if depth >= MAX_DEPTH:
        return "(nested too deep)"
    if isinstance(v, dict):
        return {no_surrogates(str(k)): _json_safe(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x, depth + 1) for x in v]
    return no_surrogates(str(v))


def as_text(value: Any) -> str | None:
    """A log value as text (for formats that map every log field as a string): strings as they
    are, ``None`` as it is, everything else as its compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if type(value) is int:  # the common non-text value (EventID, record ids); a bool is not int here
        return str(value)
    return json_line(value).decode("utf-8").rstrip("\n")


# the keys Alert.to_dict writes for a single-event alert before its extra attributes
_HIT_KEYS = frozenset(("rule_id", "title", "level", "description", "tags", "timestamp", "host", "source",
                       "record_id", "event"))


class HitLines:
    """The JSON lines of single-event alerts, from the hit, without building the Alerts.

    Byte for byte ``json_line(alert.to_dict())`` of the alert :func:`scmwatch.hunt.alerts_from_hits`
    would build. A line is two JSON objects joined: the rule's part (id, title, level,
    description, tags), encoded once per rule (:meth:`line`), and the hit's *body* (time, host,
    provenance, the event, the rule's custom attributes and derived fields; :meth:`bodies`),
    each without the brace where they meet. Rules without custom attributes share one body per
    event, so a spill block pickles it once. Whatever orjson refuses (surrogates, huge
    integers, deep nesting) takes :func:`json_line`'s path for the whole alert, as before: such
    a hit's "body" is its whole line.

    ``--jobs`` workers make the bodies while hunting (``HuntContext.lines``) and the parent
    only joins and copies bytes in merge order: measured on all SigmaHQ over the dev corpus,
    building the Alert, ``to_dict`` and encoding cost the parent ~8.5 us per alert.
    """

    def __init__(self) -> None:
        self._rules: dict[str, tuple[bytes | None, dict[str, Any]]] = {}
        self._time: tuple[float, str | None] = (0.0, None)
        self._handed = 0  # how many of ``_rules`` (in insertion order) new_prefixes gave out
        self._given: dict[str, bytes | None] = {}  # rule id -> its prefix, from another process

    def _rule(self, rule: Any) -> tuple[bytes | None, dict[str, Any]]:
        try:
            prefix: bytes | None = orjson.dumps(_head(rule), default=str)[:-1] + b","
        except TypeError:
            prefix = None
        entry = self._rules[rule.id] = (prefix, rule_extra(rule))
        return entry

    def bodies(self, rules: list[Any], time: float, source: str, record_id: int | None,
               fields: dict[str, Any], derived: tuple[str, ...] = ()) -> list[bytes]:
        """Each rule's body for its alert on this event (or its whole line, see above)."""
        if not time:
            stamp = None
        elif time == self._time[0]:
            stamp = self._time[1]
        else:
            stamp = format_time(time)
            self._time = (time, stamp)
        base = {"timestamp": stamp, "host": str(fields.get("Computer") or ""), "source": source,
                "record_id": record_id, "event": fields}
        if derived:
            base["derived"] = list(derived)
        shared = None
        out = []
        for rule in rules:
            prefix, extra = self._rules.get(rule.id) or self._rule(rule)
            body = base
            if extra:
                more = dict(extra)
                if derived:
                    more["derived"] = list(derived)
                body = {k: v for k, v in base.items() if k != "derived"}
                body.update((k, v) for k, v in more.items() if k not in _HIT_KEYS)
            elif prefix is not None and shared is not None:
                out.append(shared)
                continue
            encoded = _body(rule, prefix, body)
            if body is base and encoded[:1] != b"{":
                shared = encoded
            out.append(encoded)
        return out

    def line(self, rule: Any, body: bytes) -> bytes:
        """The whole line of ``rule``'s alert from its body."""
        if body[:1] == b"{":
            return body
        prefix = self.prefix(rule)
        assert prefix is not None, "a rule whose part orjson refuses has whole lines only"
        return prefix + body

    def prefix(self, rule: Any) -> bytes | None:
        """``rule``'s part of its alerts' lines, joined to each body that is not a whole line
        (None: orjson refuses it, so its bodies are all whole lines)."""
        entry = self._rules.get(rule.id)
        if entry is not None:
            return entry[0]
        given = self._given.get(rule.id, _MISSING)
        if given is not _MISSING:
            return given  # type: ignore[return-value]
        return self._rule(rule)[0]

    def new_prefixes(self) -> dict[str, bytes | None]:
        """The prefixes encoded here since the last call, by rule id: a ``--jobs`` worker sends
        them with its results (:meth:`adopt`)."""
        new = {rid: entry[0] for rid, entry in list(self._rules.items())[self._handed:]}
        self._handed = len(self._rules)
        return new

    def adopt(self, prefixes: dict[str, bytes | None]) -> None:
        """Take the prefixes another process encoded (:meth:`new_prefixes`) for :meth:`prefix`,
        so that the parent does not encode them again after the workers' last result, when it
        alone runs: x5 (all SigmaHQ, ``--jobs 2``) had it encode 47-137 rules there, each
        reading its rule's stored details."""
        self._given.update(prefixes)


def _head(rule: Any) -> dict[str, Any]:
    return {"rule_id": rule.id, "title": rule.title, "level": rule.level, "description": rule.description,
            "tags": list(rule.tags)}


def _body(rule: Any, prefix: bytes | None, body: dict[str, Any]) -> bytes:
    """The body to join to ``prefix``, or the whole line when either cannot be encoded as is."""
    if prefix is not None:
        try:
            return orjson.dumps(body, default=str)[1:] + b"\n"
        except TypeError:
            pass
    return json_line({**_head(rule), **body})


def rule_extra(rule: Any) -> dict[str, Any]:
    """The rule's custom attributes that travel with its alerts (e.g. ``maxpatrol_rule``)."""
    if not rule.custom:
        return {}
    return {k: v for k, v in rule.custom.items() if isinstance(v, str | int | float | bool | list)}


class JsonlSink:
    """Writes each alert as it arrives (hunt streams them: nothing is collected here), as the
    JSON of ``shape(alert)``: ``Alert.to_dict`` (the contract), or a Timesketch / ECS shape."""

    def __init__(self, stream: IO[Any], shape: Callable[[Alert], Any] = Alert.to_dict) -> None:
        self.stream = stream
        self.shape = shape
        self._buf = getattr(stream, "buffer", None)
        self.count = 0
        # the contract's shape: hunt may hand it single-event alerts as their lines (HitLine)
        self.takes_lines = shape is Alert.to_dict

    def write(self, a: Alert | HitLine) -> None:
        """Write one alert; a :class:`HitLine` (hunt's workers wrote its line) as it is."""
        self.write_lines(a.line if type(a) is HitLine else json_line(self.shape(a)), 1)

    def write_lines(self, block: bytes, count: int) -> None:
        """Write ``count`` whole lines at once (``run_hunt``'s blocks of line hits)."""
        if self._buf is not None:
            self._buf.write(block)
        else:
            self.stream.write(block.decode("utf-8"))
        self.count += count

    def close(self) -> None:
        if self._buf is not None:
            self._buf.flush()
