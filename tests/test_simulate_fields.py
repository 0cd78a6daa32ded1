"""The simulator cannot drift from reality: every kind of event it writes has the field set of
real recordings of that Channel/EventID in the shared EVTX corpus (skipped when absent).

Real records are normalized with the readers' own ``from_evtx_dict`` (what ``scmwatch`` sees
when it reads an .evtx); simulated ones are read back from the flat NDJSON the simulator
writes. Kinds with no recording in the corpus (4697, 7040, 7009, 7000, 4674, MSSQL 15457 ...)
cannot be checked this way and are listed by the test.
"""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from paths import ATTACK_SAMPLES, evtx_files, evtx_records, need_shared
from scmwatch.events import ReadStats, iter_events
from scmwatch.events.normalize import from_evtx_dict
from scmwatch.simulate import Options, simulate


@pytest.fixture(scope="module")
def real_field_sets() -> dict[tuple[str, int], set[frozenset[str]]]:
    sets: dict[tuple[str, int], set[frozenset[str]]] = defaultdict(set)
    for path in evtx_files(need_shared(ATTACK_SAMPLES)):
        for rec in evtx_records(path):
            fields = from_evtx_dict(orjson.loads(rec["data"]))
            if fields and fields.get("Channel") and isinstance(fields.get("EventID"), int):
                sets[(fields["Channel"], fields["EventID"])].add(frozenset(fields))
    return sets


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> dict[tuple[str, int], set[frozenset[str]]]:
    out = tmp_path_factory.mktemp("sim-fields")
    simulate(
        Options(scenarios=["all"], out=out, events=6000, seed=7, labels=out.parent / "fields-labels.jsonl")
    )
    sets: dict[tuple[str, int], set[frozenset[str]]] = defaultdict(set)
    for ev in iter_events([str(out)], ReadStats()):
        if ev.fmt != "zeek":
            sets[(ev.fields["Channel"], ev.fields["EventID"])].add(frozenset(ev.fields))
    return sets


def test_every_simulated_kind_has_a_real_field_set(real_field_sets, simulated) -> None:
    checked, unverifiable, wrong = [], [], []
    for kind, variants in sorted(simulated.items()):
        real = real_field_sets.get(kind)
        if not real:
            unverifiable.append(kind)
            continue
        checked.append(kind)
        for fields in variants:
            if fields not in real:
                # report the nearest real variant to make the drift readable
                nearest = min(real, key=lambda r: len(r ^ fields))
                wrong.append(f"{kind}: extra {sorted(fields - nearest)}, missing {sorted(nearest - fields)}")
    assert not wrong, "simulated field sets differ from the real recordings:\n" + "\n".join(wrong)
    # the kinds the detections rest on must be among the checked ones
    for kind in [
        ("Security", 4624),
        ("Security", 4688),
        ("Security", 5140),
        ("Security", 5145),
        ("System", 7045),
        ("System", 7036),
        ("Microsoft-Windows-Sysmon/Operational", 1),
        ("Microsoft-Windows-Sysmon/Operational", 13),
        ("Microsoft-Windows-Sysmon/Operational", 17),
        ("Microsoft-Windows-Sysmon/Operational", 18),
        ("Application", 33205),
    ]:
        assert kind in checked, kind
    print(f"checked {len(checked)} kinds; no real recording for {unverifiable}")
