"""Process lineage for logs without parent fields (events.lineage via events.enrich), by hand."""

from __future__ import annotations

from scmwatch.events.enrich import Enricher, classify
from scmwatch.events.lineage import SERVICES_EXE, LineageTable
from scmwatch.events.model import Event, parse_time

HOST = "WIN7-01.corp.local"


def _4688(t: str, pid: str, image: str, creator: str, cmd: str = "", **extra) -> dict:
    return {"EventID": 4688, "Channel": "Security", "Computer": HOST, "TimeCreated": t,
            "NewProcessId": pid, "NewProcessName": image, "ProcessId": creator, "CommandLine": cmd,
            **extra}


def _scm(t: str, pid: int, eid: int = 7036) -> dict:
    return {"EventID": eid, "Channel": "System", "Computer": HOST, "TimeCreated": t, "ProcessID": pid,
            "Provider_Name": "Service Control Manager", "param1": "Windows Update", "param2": "running"}


def _boot(t: str) -> dict:
    return {"EventID": 4608, "Channel": "Security", "Computer": HOST, "TimeCreated": t}


def _enrich(e: Enricher, fields: dict):
    return e.enrich(Event(fields, "t", 1, "json"), classify(fields.get("Channel"), fields.get("EventID")))


def _run(events: list[dict]) -> list[str | None]:
    """Enrich in order, as the hunt does; the parent each 4688 got."""
    e = Enricher()
    out = []
    for ev in events:
        had = "ParentProcessName" in ev
        _enrich(e, ev)
        if ev["EventID"] == 4688 and not had:
            out.append(ev.get("ParentProcessName"))
    return out


def test_parent_known_from_an_earlier_4688():
    got = _run([
        _4688("2024-05-01T10:00:00Z", "0x1f0", "C:\\Windows\\System32\\services.exe", "0x1c4"),
        _4688("2024-05-01T10:05:00Z", "0x9c4", "C:\\Windows\\System32\\cmd.exe", "0x1f0", "cmd /c x"),
    ])
    assert got == [None, "C:\\Windows\\System32\\services.exe"]


def test_parent_known_from_a_system_event_execution_pid_even_when_read_later():
    # the System 7036 comes after the 4688 in read order: the unit cannot tell, the merge step can
    e = Enricher()
    child = _4688("2024-05-01T10:05:00Z", "0x9c4", "C:\\Windows\\System32\\cmd.exe", "0x1f0")
    derived, pending = _enrich(e, child)
    assert derived == () and pending == ("ParentProcessName", HOST.lower(), 0x1F0)
    _enrich(e, _scm("2024-05-01T11:00:00Z", 0x1F0))
    assert e.table.image(HOST.lower(), 0x1F0, parse_time(child["TimeCreated"])) == SERVICES_EXE
    assert e.facts.scm == {(HOST.lower(), 0x1F0, parse_time("2024-05-01T11:00:00Z"))}


def test_unknown_parent_stays_missing():
    got = _run([_4688("2024-05-01T10:05:00Z", "0x9c4", "C:\\Windows\\System32\\cmd.exe", "0x2a0")])
    assert got == [None]


def test_pid_reused_after_a_reboot_is_not_the_old_image():
    got = _run([
        _scm("2024-05-01T09:00:00Z", 0x1F0),
        _boot("2024-05-01T12:00:00Z"),
        _4688("2024-05-01T12:10:00Z", "0x9c4", "C:\\Windows\\System32\\cmd.exe", "0x1f0"),
    ])
    assert got == [None]
    # ...but the SCM fact seen after the reboot resolves it
    got = _run([
        _scm("2024-05-01T09:00:00Z", 0x1F0),
        _boot("2024-05-01T12:00:00Z"),
        _4688("2024-05-01T12:01:00Z", "0x1f0", "C:\\Windows\\System32\\lsass.exe", "0x1c4"),
        _4688("2024-05-01T12:10:00Z", "0x9c4", "C:\\Windows\\System32\\cmd.exe", "0x1f0"),
    ])
    assert got == [None, "C:\\Windows\\System32\\lsass.exe"]


def test_pid_reused_within_a_boot_takes_the_newest_process():
    got = _run([
        _4688("2024-05-01T10:00:00Z", "0x200", "C:\\a.exe", "0x4"),
        _4688("2024-05-01T10:10:00Z", "0x200", "C:\\b.exe", "0x4"),
        _4688("2024-05-01T10:05:00Z", "0x300", "C:\\child1.exe", "0x200"),
        _4688("2024-05-01T10:15:00Z", "0x300", "C:\\child2.exe", "0x200"),
    ])
    assert got[2:] == ["C:\\a.exe", "C:\\b.exe"]


def test_events_with_a_parent_or_odd_values_are_left_alone():
    ev = _4688("2024-05-01T10:05:00Z", "0x9c4", "C:\\x.exe", "0x1f0", ParentProcessName="C:\\p.exe")
    assert _enrich(Enricher(), ev) == ((), None) and ev["ParentProcessName"] == "C:\\p.exe"
    for bad in (None, "", "zz", -1, True, [1]):
        assert _enrich(Enricher(), _4688("2024-05-01T10:05:00Z", "0x9c4", "C:\\x.exe", bad)) == ((), None)
    odd = {"EventID": 7036, "Channel": "System", "Provider_Name": "Service Control Manager", "ProcessID": [1]}
    assert _enrich(Enricher(), odd) == ((), None)  # no host, list PID: ignored, no exception


def test_memory_is_bounded():
    table = LineageTable(max_hosts=3, max_pids=10)
    e = Enricher()
    e.table = table
    for h in range(10):
        for p in range(100):
            t = f"2024-05-01T10:00:{p % 60:02d}Z"
            _enrich(e, {"EventID": 4688, "Channel": "Security", "Computer": f"h{h}", "NewProcessId": hex(p),
                        "NewProcessName": "x", "ProcessId": "0x4", "TimeCreated": t})
    assert len(table._hosts) == 3 and all(len(h.pids) <= 10 for h in table._hosts.values())
