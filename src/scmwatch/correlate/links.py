"""Entity links: derived fields that let one correlation join events from different hosts.

A remote service install is logged on the *target* (5145 svcctl, 4624, 4697/7045) while the
tool that drove it ran on the *source* (``psexec \\\\B``, ``sc \\\\B create``). No single
field names both ends, so the correlator learns three small maps from the event stream, in
event-time order, and exposes their answers as derived fields that ``group-by`` and
``aliases`` can name like any other field:

``link.host``
    the event's own host, short lower-case name (``WIN-7.example.corp`` -> ``win-7``).
``link.source_ip``
    the remote address behind the event: its own ``IpAddress``/``SourceIp`` (inbound), else
    the address of its logon session -- 4697/4688 ``SubjectLogonId`` equals the
    ``TargetLogonId`` of the network logon 4624 and the ``SubjectLogonId`` of 5140/5145 from
    the same client (detections.md §0.2).
``link.source_host``
    the name of that source: the 4624 ``WorkstationName`` of the session, else the name the
    logs tie to the address (4624 ``WorkstationName``+``IpAddress``, Sysmon 3 source/destination
    host+IP, Sysmon 22 ``QueryName``->``QueryResults``).
``link.target_host``
    the remote host named on a source-side command line (``psexec \\\\B``, ``sc \\\\B create``,
    ``paexec \\\\10.0.0.5``); an address is turned into a name when the logs tie it to one.

``link.service``
    the service key name an event is about: ``...\\Services\\<name>\\...`` in ``TargetObject``
    (Sysmon 12/13) or ``ObjectName`` (4657), else ``ServiceName`` (7045/4697; 7045 may carry the
    display name, detections.md §0.1), lower-case.
``link.target_dir``
    the directory of ``TargetFilename`` (Sysmon 11), lower-case: "many files in one directory".

All names are short and lower-case so an FQDN ``Computer`` meets a NetBIOS ``WorkstationName``.
The maps are LRU-bounded (``max_entries``) so memory stays flat on endless streams.

Only a few event kinds teach the maps (:data:`LINK_EVENT_IDS`); the hunt loop forwards those
to the correlator as compact :func:`extract_fact` tuples rather than whole events, so the cost
on the full stream is one integer set lookup per event.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from functools import lru_cache
from typing import Any

# 4624 network logon, 5140/5145 share access (SubjectLogonId + IpAddress), Sysmon 3 network
# connection, Sysmon 22 DNS query.
LINK_EVENT_IDS = frozenset({4624, 5140, 5145, 3, 22})
SESSION_EVENT_IDS = frozenset({4624, 5140, 5145})  # teach (host, logon id) -> source
NAME_EVENT_IDS = frozenset({4624, 3, 22})  # teach address -> host name
# which maps each derived field needs (the others are computed from the event alone)
NEEDS = {
    "link.source_ip": ("sessions",),
    "link.source_host": ("sessions", "names"),
    "link.target_host": ("names",),
}
DERIVED_FIELDS = (
    "link.host",
    "link.source_ip",
    "link.source_host",
    "link.target_host",
    "link.service",
    "link.target_dir",
)

_LOCAL_IPS = frozenset({"", "-", "127.0.0.1", "::1", "0.0.0.0", "::", "localhost"})
_UNC_HOST = re.compile(r"""(?:^|[\s"'=])\\\\([^\s\\"']+)""")
_SERVICE_KEY = re.compile(r"(?i)\\services\\([^\\]+)")
# Runs of address characters in Sysmon 22 QueryResults (``type:  5 x.corp;::ffff:10.0.0.8;``),
# each validated by norm_ip: one linear scan, where a backtracking address pattern took
# 3.9 s on 20,000 colons (quadratic) in an attacker-controlled DNS answer.
_ADDR_RUN = re.compile(r"[0-9a-fA-F:.]+")


def short_host(name: Any) -> str | None:
    """``WIN-7.example.corp`` -> ``win-7``; IP addresses are kept whole."""
    if name is None:
        return None
    return _short_host(str(name))


@lru_cache(maxsize=65536)  # host names and addresses repeat endlessly in logs
def _short_host(name: str) -> str | None:
    text = name.strip().strip("\\").lower()
    if not text or text in _LOCAL_IPS:
        return None
    if _is_ip(text):
        return text
    return text.split(".", 1)[0] or None


def norm_ip(value: Any) -> str | None:
    """Normalize an address field; local/placeholder values give ``None``."""
    if value is None:
        return None
    return _norm_ip(str(value))


@lru_cache(maxsize=65536)
def _norm_ip(value: str) -> str | None:
    text = value.strip().lower()
    if text.startswith("::ffff:"):
        text = text[7:]
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text in _LOCAL_IPS or not _is_ip(text):
        return None
    return text


_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.%")


def _is_ip(text: str) -> bool:
    if _IPV4.fullmatch(text):
        return all(int(part) < 256 for part in text.split("."))
    if ":" not in text or not _IPV6_CHARS.issuperset(text):
        return False  # the common case (a host name) without the slow parser
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _int_id(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value).strip(), 0)
    except ValueError:
        return None


def _event_id(fields: dict[str, Any]) -> int | None:
    eid = fields.get("EventID")
    if isinstance(eid, int):
        return eid
    try:
        return int(str(eid))
    except (TypeError, ValueError):
        return None


def extract_fact(fields: dict[str, Any], sessions: bool = True, names: bool = True) -> tuple | None:
    """What a link-teaching event contributes, as a small picklable tuple (or ``None``).

    Kinds: ``("session", host, logon_id, ip, workstation)`` (wanted when ``sessions``) and
    ``("ipname", ip, name)`` (wanted when ``names``). Several facts from one event come back as
    ``("multi", fact, ...)``.
    """
    eid = _event_id(fields)
    if eid not in LINK_EVENT_IDS:
        return None
    host = short_host(fields.get("Computer"))
    facts: list[tuple] = []
    if eid == 4624:
        ip = norm_ip(fields.get("IpAddress"))
        ws = short_host(fields.get("WorkstationName"))
        if sessions and (ip or ws):
            lid = _int_id(fields.get("TargetLogonId"))
            if lid is not None and host:
                facts.append(("session", host, lid, ip, ws))
        if names and ip and ws and not _is_ip(ws):
            facts.append(("ipname", ip, ws))
    elif eid in (5140, 5145):
        if not sessions or str(fields.get("Channel", "Security")).lower() != "security":
            return None
        ip = norm_ip(fields.get("IpAddress"))
        lid = _int_id(fields.get("SubjectLogonId"))
        if ip and lid is not None and host:
            facts.append(("session", host, lid, ip, None))
    elif eid == 3:
        if not names or "sysmon" not in str(fields.get("Channel", "")).lower():
            return None
        for ip_f, name_f in (("SourceIp", "SourceHostname"), ("DestinationIp", "DestinationHostname")):
            ip = norm_ip(fields.get(ip_f))
            name = short_host(fields.get(name_f))
            if ip and name and not _is_ip(name):
                facts.append(("ipname", ip, name))
        if str(fields.get("Initiated", "")).lower() == "true" and host:
            ip = norm_ip(fields.get("SourceIp"))
            if ip:
                facts.append(("ipname", ip, host))
    elif eid == 22:
        if not names or "sysmon" not in str(fields.get("Channel", "")).lower():
            return None
        name = short_host(fields.get("QueryName"))
        results = str(fields.get("QueryResults") or "")
        if name and results and not _is_ip(name):
            for token in _ADDR_RUN.findall(results):
                ip = norm_ip(token) if len(token) <= 45 else None  # 45: longest textual IPv6
                if ip:
                    facts.append(("ipname", ip, name))
    if not facts:
        return None
    return facts[0] if len(facts) == 1 else ("multi", *facts)


def service_name(fields: dict[str, Any]) -> str | None:
    """Service key name from a registry path (Sysmon 13 / 4657), else ``ServiceName``."""
    for name in ("TargetObject", "ObjectName"):
        path = fields.get(name)
        if path:
            m = _SERVICE_KEY.search(str(path))
            if m:
                return m.group(1).lower()
    svc = fields.get("ServiceName")
    return str(svc).strip().lower() or None if svc else None


class _LRU(OrderedDict):
    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def __reduce__(self) -> tuple:
        # pickled with the correlator into a watch checkpoint (scmwatch.live): keep the cap
        return (_LRU, (self.cap,), None, None, iter(self.items()))

    def put(self, key: Any, value: Any) -> None:
        if key in self:
            self.move_to_end(key)
        self[key] = value
        if len(self) > self.cap:
            self.popitem(last=False)


class EntityLinks:
    """The learned maps plus the derived-field resolver the correlator calls."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self.sessions: _LRU = _LRU(max_entries)  # (host, logon id) -> (ip, workstation)
        self.ip_names: _LRU = _LRU(max_entries)  # ip -> short host name
        self.facts = 0

    def size(self) -> int:
        return len(self.sessions) + len(self.ip_names)

    def apply(self, fact: tuple) -> None:
        kind = fact[0]
        if kind == "multi":
            for f in fact[1:]:
                self.apply(f)
            return
        self.facts += 1
        if kind == "session":
            _, host, lid, ip, ws = fact
            old = self.sessions.get((host, lid))
            if old is not None:  # keep what we knew if the newer fact is partial
                ip = ip or old[0]
                ws = ws or old[1]
            self.sessions.put((host, lid), (ip, ws))
        elif kind == "ipname":
            self.ip_names.put(fact[1], fact[2])

    # -- derived fields -------------------------------------------------------------------

    def derive(self, fields: dict[str, Any], name: str) -> str | None:
        if name == "link.host":
            return short_host(fields.get("Computer"))
        if name == "link.source_ip":
            return self._source(fields)[0]
        if name == "link.source_host":
            ip, ws = self._source(fields)
            if ws:
                return ws
            return self.ip_names.get(ip) if ip else None
        if name == "link.target_host":
            return self.target_host(fields)
        if name == "link.service":
            return service_name(fields)
        if name == "link.target_dir":
            path = fields.get("TargetFilename")
            if not path:
                return None
            text = str(path).replace("/", "\\").lower()
            cut = text.rfind("\\")
            return text[:cut] if cut > 0 else None
        return None

    def _source(self, fields: dict[str, Any]) -> tuple[str | None, str | None]:
        ws = short_host(fields.get("WorkstationName"))
        if ws is not None and _is_ip(ws):
            ws = None
        ip = norm_ip(fields.get("IpAddress"))
        if ip is None and str(fields.get("Initiated", "")).lower() == "false":
            ip = norm_ip(fields.get("SourceIp"))
        if ip is not None:
            return ip, ws
        host = short_host(fields.get("Computer"))
        lid = _int_id(fields.get("SubjectLogonId"))
        if host and lid is not None:
            known = self.sessions.get((host, lid))
            if known is not None:
                return known[0], ws or known[1]
        return None, ws

    def target_host(self, fields: dict[str, Any]) -> str | None:
        cmd = fields.get("CommandLine") or fields.get("ScriptBlockText")
        if not cmd:
            return None
        for m in _UNC_HOST.finditer(str(cmd)):
            token = m.group(1).strip().lower()
            if token in (".", "?") or token in _LOCAL_IPS:
                continue
            ip = norm_ip(token)
            if ip is not None:
                return self.ip_names.get(ip, ip)
            return short_host(token)
        return None
