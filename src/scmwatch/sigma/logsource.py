"""Sigma ``logsource`` → which events a rule may see. ONE table, documented here.

Gating is a correctness requirement, not only speed: without it raw_access_thread rules fire on
Sysmon file events and process_creation rules on registry events (tests/test_sigma_sigmahq.py
checks every hit of all SigmaHQ rules on the attack corpus against its rule's sources).

Every compiled rule becomes one or more *sources*. A source says which event keys it listens
to — ``(channel, event_id)`` with ``channel`` lower-cased and ``None`` meaning "any EventID" — and,
for alternate sources, how Sigma's field names map onto the names that source writes.

The table
---------
* ``product: windows`` + ``category``: :data:`CATEGORY_SOURCES` (Sysmon channel + EventIDs from
  the Sigma taxonomy, PowerShell channels for ``ps_*``). ``registry_add`` and ``registry_delete``
  additionally require Sysmon's ``EventType`` (CreateKey / DeleteKey, DeleteValue), as THOR does.
* ``process_creation`` also runs on ``Security``/4688 with :data:`PROC_CREATION_4688` field
  renames (``Image→NewProcessName``, ``ParentImage→ParentProcessName``, ``ProcessId→NewProcessId``,
  ``ParentProcessId→ProcessId``; PIDs there are hex strings). Sysmon-only fields
  (:data:`SYSMON_ONLY_4688`) are *unavailable*: the compiler folds them so that a rule whose
  positive selection needs them cannot fire on 4688 and is flagged; a filter on them under
  ``not`` makes the rule not fire rather than over-fire (Kleene "certainly true").
* ``product: windows`` + ``service``: pySigma core's ``windows_logsource_mapping`` (service →
  channel), every EventID of that channel (the condition's own ``EventID`` test still applies,
  and the index narrows on EventIDs it can derive from the condition).
* ``product: windows`` only: every Windows event (any channel).
* ``product: zeek`` + ``service: <log>``: channel ``zeek:<log>`` as the Zeek reader names it
  (``zeek:dce_rpc``, ``zeek:smb_files``, ...), any record of that log.
* categories without a channel (``file_access``, ``file_rename`` are ETW Kernel-File) and
  products other than Windows and Zeek: no event source here → the rule is loaded and compiled but not
  run; a warning says why (never silently run on unrelated events).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SYSMON = "Microsoft-Windows-Sysmon/Operational"
PS_OPERATIONAL = ("Microsoft-Windows-PowerShell/Operational", "PowerShellCore/Operational")
PS_CLASSIC = ("Windows PowerShell",)

# category -> (channels, EventIDs): the Sysmon EventID that records each Sigma category.
CATEGORY_SOURCES: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "process_creation": ((SYSMON,), (1,)),
    "file_change": ((SYSMON,), (2,)),
    "network_connection": ((SYSMON,), (3,)),
    "sysmon_status": ((SYSMON,), (4, 16)),
    "process_termination": ((SYSMON,), (5,)),
    "driver_load": ((SYSMON,), (6,)),
    "image_load": ((SYSMON,), (7,)),
    "create_remote_thread": ((SYSMON,), (8,)),
    "raw_access_thread": ((SYSMON,), (9,)),
    "process_access": ((SYSMON,), (10,)),
    "file_event": ((SYSMON,), (11,)),
    "registry_add": ((SYSMON,), (12,)),
    "registry_delete": ((SYSMON,), (12,)),
    "registry_set": ((SYSMON,), (13,)),
    "registry_rename": ((SYSMON,), (14,)),
    "registry_event": ((SYSMON,), (12, 13, 14)),
    "create_stream_hash": ((SYSMON,), (15,)),
    "pipe_created": ((SYSMON,), (17, 18)),
    "wmi_event": ((SYSMON,), (19, 20, 21)),
    "dns_query": ((SYSMON,), (22,)),
    "file_delete": ((SYSMON,), (23,)),
    "clipboard_capture": ((SYSMON,), (24,)),
    "process_tampering": ((SYSMON,), (25,)),
    "file_delete_detected": ((SYSMON,), (26,)),
    "file_block_executable": ((SYSMON,), (27,)),
    "file_block_shredding": ((SYSMON,), (28,)),
    "file_executable_detected": ((SYSMON,), (29,)),
    "sysmon_error": ((SYSMON,), (255,)),
    "ps_module": (PS_OPERATIONAL, (4103,)),
    "ps_script": (PS_OPERATIONAL, (4104,)),
    "ps_classic_start": (PS_CLASSIC, (400,)),
    "ps_classic_provider_start": (PS_CLASSIC, (600,)),
    "ps_classic_script": (PS_CLASSIC, (800,)),
}

# Extra constraints some categories put on the event beyond channel/EventID (THOR's config).
CATEGORY_EXTRA: dict[str, dict[str, frozenset[str]]] = {
    "registry_add": {"EventType": frozenset({"createkey"})},
    "registry_delete": {"EventType": frozenset({"deletekey", "deletevalue"})},
}

# Security 4688 as a process_creation source: Sigma (Sysmon) name -> 4688 name.
PROC_CREATION_4688: dict[str, str] = {
    "Image": "NewProcessName",
    "ParentImage": "ParentProcessName",
    "ProcessId": "NewProcessId",
    "ParentProcessId": "ProcessId",
    "CommandLine": "CommandLine",
}
# Sysmon EID 1 fields 4688 does not carry (or carries in another form, e.g. MandatoryLabel SID
# instead of IntegrityLevel, split SubjectUserName/SubjectDomainName instead of User).
SYSMON_ONLY_4688: frozenset[str] = frozenset({
    "OriginalFileName", "Hashes", "md5", "sha1", "sha256", "Imphash", "ParentCommandLine",
    "Description", "Product", "Company", "FileVersion", "CurrentDirectory", "IntegrityLevel",
    "User", "ParentUser", "LogonGuid", "LogonId", "ProcessGuid", "ParentProcessGuid",
    "TerminalSessionId", "UtcTime", "RuleName",
})
# 4688 writes PIDs as hex strings ("0x378"): numeric comparisons on these parse base 16.
HEX_FIELDS_4688: frozenset[str] = frozenset({"NewProcessId", "ProcessId"})


@dataclass(frozen=True)
class FieldMap:
    """How a rule's field names translate for one alternate source."""

    name: str
    rename: dict[str, str] = field(default_factory=dict)
    unavailable: frozenset[str] = frozenset()
    hex_fields: frozenset[str] = frozenset()


SECURITY_4688 = FieldMap("Security/4688", PROC_CREATION_4688, SYSMON_ONLY_4688, HEX_FIELDS_4688)

Key = tuple[str | None, int | None]  # (lower-cased channel or None = any, EventID or None = any)


@dataclass
class SourceSpec:
    """One event source a rule runs on."""

    label: str
    keys: list[Key]
    fieldmap: FieldMap | None = None
    extra: dict[str, frozenset[str]] | None = None  # field -> allowed lower-cased values
    needs_eventid_narrowing: bool = False  # service rules: narrow keys with the condition's EventIDs


def sources_for(logsource) -> tuple[list[SourceSpec], str | None]:
    """Event sources for a pySigma ``SigmaLogSource``; ``(specs, None)`` or ``([], reason)``."""
    product = (logsource.product or "").lower()
    category = (logsource.category or "").lower()
    service = (logsource.service or "").lower()
    if product == "zeek":
        # The Zeek reader names each log's events Channel "zeek:<log>" (events/zeek_reader.py).
        if not service:
            return [], "logsource product 'zeek' without a service (log name) cannot be gated"
        return [SourceSpec(f"zeek {service}", [(f"zeek:{service}", None)])], None
    if product != "windows":
        what = product or category or service or "none"
        return [], f"logsource product '{what}' has no event source in scmwatch (Windows and Zeek logs only)"
    if category:
        if category not in CATEGORY_SOURCES:
            return [], f"logsource category '{category}' has no Windows event-log channel to gate on"
        channels, eids = CATEGORY_SOURCES[category]
        keys = [(ch.lower(), eid) for ch in channels for eid in eids]
        specs = [SourceSpec(f"{category}", keys, extra=CATEGORY_EXTRA.get(category))]
        if category == "process_creation":
            specs.append(SourceSpec("process_creation/Security 4688", [("security", 4688)],
                                    fieldmap=SECURITY_4688))
        return specs, None
    if service:
        # imported here: pySigma's pipeline package (and jinja2 under it) costs ~25 ms at every
        # start, and a rule set from the cache never gets here
        from sigma.pipelines.common import windows_logsource_mapping

        channels = windows_logsource_mapping.get(service)
        if channels is None:
            return [], f"logsource service '{service}' is not in the Windows channel mapping"
        if isinstance(channels, str):
            channels = [channels]
        return [SourceSpec(f"service {service}", [(ch.lower(), None) for ch in channels],
                           needs_eventid_narrowing=True)], None
    return [SourceSpec("windows", [(None, None)], needs_eventid_narrowing=True)], None
