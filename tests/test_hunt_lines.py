"""Hits written as their JSON lines where they are matched (``run_hunt(lines=True)``, what
``hunt --format jsonl`` does) give byte for byte the lines the parent wrote from Alerts before,
and the same counts and results summary: hostile values still escaped, odd ones still take the
slow path, rules' custom attributes and derived fields in their places."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.test_hunt_lineage import _4688, _scm, _write

from scmwatch import rules as pack
from scmwatch.alerts import Alert, HitLine
from scmwatch.correlate.lateral import Link
from scmwatch.hunt import CorrelationHit, alerts_from_hits, line_blocks, run_hunt
from scmwatch.results import MAX_KEYS, Results, Tally, rule_key, tally_sum
from scmwatch.sigma import load_rules
from scmwatch.simulate import Options, simulate
from scmwatch.sinks import open_sink
from scmwatch.sinks.jsonl import HitLines, json_line

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"


@dataclass
class Rule:
    """The rule attributes an alert takes (those of a CompiledRule)."""

    id: str
    title: str = "Service installed"
    level: str = "high"
    description: str = "A service was installed"
    tags: list[str] = field(default_factory=lambda: ["attack.execution", "attack.t1569.002"])
    custom: dict[str, Any] = field(default_factory=dict)


RULES = [
    Rule("r-plain"),
    Rule("r-plain-2", title="Second \x1b]52;c;AAAA\x07 rule", tags=[]),
    # custom attributes: some collide with the contract's keys, a dict is not carried
    Rule("r-custom", custom={"maxpatrol_rule": "MP-1", "title": "spoofed", "derived": "custom", "count": 3,
                             "nested": {"a": 1}, "list": [1, "x"], "ratio": 0.5}),
    Rule("r-surrogate", description="bad \ud800 text"),  # the rule's own part needs the slow path
]
BY_ID = {r.id: r for r in RULES}

def _deep(n: int) -> Any:
    v: Any = "bottom"
    for _ in range(n):
        v = [v]
    return v


FIELDS = [
    {"EventID": 7045, "Channel": "System", "Computer": "DC01", "ServiceName": "evil\x1b[2J\u202e",
     "ImagePath": "C:\\Windows\\Temp\\x.exe\r\nscmwatch: forged",
     "TimeCreated": "2024-05-01T10:00:00.000000Z"},
    {"EventID": 7045, "Channel": "System", "ServiceName": "lone \udc80 surrogate"},  # no Computer either
    {"EventID": 7045, "Channel": "System", "Computer": 12, "Big": 1 << 70, "Neg": -(1 << 65)},
    {"EventID": 7045, "Channel": "System", "Computer": "WS1", "Deep": _deep(300)},
    {"EventID": 7045, "Channel": "System", "Computer": "WS1", "source": "own", "record_id": "own"},
]


def _hits(fields: dict[str, Any], t: float, rid: int | None, derived: tuple[str, ...]) -> tuple[list, list]:
    """The plain hits and the line hits of every rule on one event."""
    key = (t, "C:\\logs\\a.evtx", rid if rid is not None else -1)
    plain = [(key + (r.id, 0, 0, n), fields, rid, "evtx", derived) for n, r in enumerate(RULES)]
    bodies = HitLines().bodies(RULES, t, key[1], rid, fields, derived)
    lined = [(key + (r.id, 0, 0, n), body, "", None)
             for n, (r, body) in enumerate(zip(RULES, bodies, strict=True))]
    return plain, lined


@pytest.mark.parametrize("fields", FIELDS, ids=["escapes", "surrogate", "huge-int", "deep", "own-provenance"])
@pytest.mark.parametrize(("t", "rid", "derived"), [(1714557600.123456, 7, ()), (0.0, None, ("ParentImage",))])
def test_hit_lines_are_the_alerts_lines(fields: dict[str, Any], t: float, rid: int | None,
                                        derived: tuple[str, ...]) -> None:
    plain, lined = _hits(fields, t, rid, derived)
    want = [json_line(a.to_dict()) for a in alerts_from_hits(plain, BY_ID)]
    got = [a.line for a in alerts_from_hits(lined, BY_ID, HitLines())]
    assert got == want
    for line in got:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert b"\x1b" not in line and b"\r" not in line  # JSON escapes them
        line.decode("utf-8")  # surrogates replaced: always writable
        json.loads(line)


@pytest.mark.parametrize("size", [1, 2, 3, 1024])
def test_line_blocks_are_the_alerts_lines_in_order(size: int) -> None:
    """Blocks of joined lines (the rule's part and the body; whole lines as they are) with
    their counts, broken where a record is not a line hit: the lines and alerts, in order, of
    :func:`alerts_from_hits`."""
    records: list = []
    for n, fields in enumerate(FIELDS):
        records += _hits(fields, 1714557600.0 + n, n, ())[1]
        if n in (1, 3):  # a correlation alert between line hits
            corr = next(alerts_from_hits(_hits(fields, 1.0, n, ())[0][:1], BY_ID))
            records.append(CorrelationHit(records[-1][0] + (1,), corr))
    want = [a.line if type(a) is HitLine else a for a in alerts_from_hits(records, BY_ID, HitLines())]
    got: list = []
    blocks = 0
    for item in line_blocks(records, BY_ID, HitLines(), size):
        if type(item) is tuple:
            block, count = item
            assert 0 < count <= size and block.count(b"\n") == count
            got += block.splitlines(keepends=True)
            blocks += 1
        else:
            got.append(item)
    assert got == want
    assert sum(type(a) is Alert for a in got) == 2
    assert blocks >= (len(records) - 2) // size


@pytest.mark.parametrize("binary", [True, False])
def test_sink_writes_a_block_as_its_lines(binary: bool) -> None:
    """``JsonlSink.write_lines``: the bytes of a block, or its text on a stream without a
    binary buffer, and its lines counted."""
    lined = _hits(FIELDS[0], 1.0, 1, ())[1]
    lines = [a.line for a in alerts_from_hits(lined, BY_ID, HitLines())]
    out = io.StringIO()
    if binary:
        out.buffer = io.BytesIO()  # type: ignore[attr-defined]
    sink = open_sink("jsonl", out, BY_ID)
    sink.write_lines(b"".join(lines[:2]), 2)
    sink.write(next(alerts_from_hits(lined[2:3], BY_ID, HitLines())))
    sink.close()
    written = out.buffer.getvalue() if binary else out.getvalue().encode("utf-8")  # type: ignore[attr-defined]
    assert written == b"".join(lines[:3]) and sink.count == 3


def test_rules_without_custom_attributes_share_one_body_per_event() -> None:
    lines = HitLines()
    a, b, custom, _ = lines.bodies(RULES, 1.0, "x", 1, dict(FIELDS[0]))
    assert a is b and custom is not a
    assert json.loads(lines.line(RULES[2], custom))["maxpatrol_rule"] == "MP-1"


class _Unreadable(Rule):
    """A rule whose details cannot be read here (they would be read to encode its part)."""

    @property
    def description(self) -> str:  # type: ignore[override]
        raise AssertionError("the rule's part was encoded again")

    @description.setter
    def description(self, value: str) -> None:
        pass


def test_rule_parts_encoded_in_one_process_serve_another() -> None:
    """What a worker encodes (``new_prefixes``: each rule's part once, since its last call) the
    parent adopts: its lines come out whole without the rule's part encoded there again; a rule
    whose part orjson refused (None) stays whole-line only."""
    worker = HitLines()
    bodies = worker.bodies(RULES[:2], 1.0, "x", 1, dict(FIELDS[0]))
    sent = worker.new_prefixes()
    assert sent == {r.id: worker.prefix(r) for r in RULES[:2]} and all(sent.values())
    assert worker.new_prefixes() == {}
    worker.bodies(RULES, 2.0, "x", 2, dict(FIELDS[0]))
    later = worker.new_prefixes()
    assert set(later) == {"r-custom", "r-surrogate"} and later["r-surrogate"] is None
    parent = HitLines()
    parent.adopt(sent)
    parent.adopt(later)
    for r, body in zip(RULES[:2], bodies, strict=True):
        unreadable = _Unreadable(r.id, r.title, r.level, "", r.tags)
        assert parent.line(unreadable, body) == worker.line(r, body)
    assert parent.prefix(_Unreadable("r-surrogate")) is None


def _run(paths: list[str], ruleset: Any, jobs: int, lines: bool, tallied: bool = True,
         max_keys: int = MAX_KEYS, blocks: bool = False, **options: Any) -> tuple[bytes, str, str, set]:
    """Output, summary and results summary (as JSON text: their key order counts too) and the
    kinds of alert the sink saw; the results summary fed by run_hunt (``tallied``: the line
    hits' tallies when it can) or by the sink, alert by alert. ``blocks``: the sink also takes
    blocks of lines (``write_lines``), seen as the kind ``bytes``."""
    out = io.StringIO()
    buf = io.BytesIO()
    out.buffer = buf  # type: ignore[attr-defined]
    sink = open_sink("jsonl", out, ruleset.by_id())
    results = _Counting(max_keys)
    kinds: set = set()

    def emit(a: Alert | HitLine) -> None:
        kinds.add(type(a))
        if not tallied:
            results.add(a)
        sink.write(a)

    def emit_lines(block: bytes, count: int) -> None:
        kinds.add(bytes)
        sink.write_lines(block, count)

    r = run_hunt(paths, ruleset, jobs=jobs, sink=emit, lines=lines, results=results if tallied else None,
                 write_lines=emit_lines if blocks else None, **options)
    assert sink.count == r.summary["alerts"]
    sink.close()
    summary = {k: v for k, v in r.summary.items() if "second" not in k and k != "memory"}
    summary["parallelism"].pop("ranges_timeline", None)  # when the ranges came in: times
    summary["parallelism"].pop("ranges_here", None)  # which process took which range: timing
    if tallied and kinds & {HitLine}:
        kinds.add("fed one by one" if results.added else "tallied")
    return buf.getvalue(), json.dumps(summary), json.dumps(results.to_dict()), kinds


class _Counting(Results):
    added = 0

    def add(self, a: Alert | HitLine) -> None:
        self.added += 1
        super().add(a)


@pytest.mark.parametrize("jobs", [1, 2])
def test_demo_lines_equal_alerts_with_correlations_and_links(jobs: int) -> None:
    ruleset = load_rules([str(pack.PACK_DIR)])
    assert ruleset.correlations
    before = _run([str(DEMO)], ruleset, jobs, lines=False, tallied=False)
    after = _run([str(DEMO)], ruleset, jobs, lines=True)
    assert before[3] == {Alert}
    assert after[3] == {Alert, HitLine, "tallied"}  # correlations are still Alerts
    assert after[:3] == before[:3]
    assert json.loads(before[2])["lateral_movement"]  # the results' links were built from the line hits too
    assert json.loads(after[1])["alerts"] == before[0].count(b"\n") > 50
    # fed alert by alert (the lines' own fields) or from the workers' tallies: the same
    assert _run([str(DEMO)], ruleset, jobs, lines=True, tallied=False)[:3] == before[:3]
    # written in blocks of lines (hunt --format jsonl): the same bytes, correlations still Alerts
    written = _run([str(DEMO)], ruleset, jobs, lines=True, blocks=True)
    assert written[:3] == before[:3]
    assert written[3] == {Alert, bytes}


class _Checks(Results):
    checks = 0

    def absorbable(self, tally: Tally) -> bool:
        self.checks += 1
        return super().absorbable(tally)


def test_the_tally_is_checked_once_and_absorbed() -> None:
    """The hunt asks :meth:`Results.absorbable` once and absorbs the tally without asking
    again; a tally not checked is still refused when it does not fit."""
    ruleset = load_rules([str(pack.PACK_DIR)])
    results = _Checks()
    r = run_hunt([str(DEMO)], ruleset, jobs=2, sink=lambda a: None, lines=True, results=results)
    assert results.checks == 1 and results.total == r.summary["alerts"] > 50
    over = Tally(max_keys=1)
    for n in range(2):
        over.add((1.0, "x", n, "r", 0, 0, n), rule_key(f"r{n}", "T", "high", []), "a", 1.0)
    with pytest.raises(ValueError):
        Results().absorb(over)  # overflow: not absorbable


def test_split_files_tallies_are_their_ranges_tallies(tmp_path: Path) -> None:
    """A file hunted as ranges (scmwatch.split): its tally is its ranges' added up."""
    sim = tmp_path / "sim"
    simulate(Options(scenarios=["all"], out=sim, events=3000, seed=21, hosts=6, labels=tmp_path / "l.jsonl"))
    path = tmp_path / "all.jsonl"
    with path.open("wb") as fh:  # logs whose process parents are all in them: ranges stand
        for p in sorted(sim.rglob("*.jsonl")):
            data = p.read_bytes()
            lines = data.splitlines()
            if not any(b'"EventID":4688' in ln and b'"ParentProcessName"' not in ln for ln in lines):
                fh.write(data)
    ruleset = load_rules([str(pack.PACK_DIR)])
    before = _run([str(path)], ruleset, 2, lines=False, tallied=False, split_bytes=1 << 12)
    after = _run([str(path)], ruleset, 2, lines=True, split_bytes=1 << 12)
    par = json.loads(after[1])["parallelism"]
    assert par["ranges"] > 1 and not par["files_reread_whole"]
    assert after[:3] == before[:3] and "tallied" in after[3]
    assert json.loads(after[1])["alerts"] > 20


@pytest.mark.parametrize("max_keys", [1, 3])
def test_tallies_too_many_keys_fall_back_to_alert_by_alert(max_keys: int) -> None:
    """Beyond ``max_keys`` which keys are tracked depends on the order: then the summary is fed
    alert by alert in merge order, as without tallies."""
    ruleset = load_rules([str(pack.PACK_DIR)])
    before = _run([str(DEMO)], ruleset, 2, lines=False, tallied=False, max_keys=max_keys)
    after = _run([str(DEMO)], ruleset, 2, lines=True, max_keys=max_keys)
    assert after[:3] == before[:3]
    assert json.loads(after[2])["untracked"] > 0
    assert "fed one by one" in after[3]
    # the results summary needs each alert: the sink gets them one by one, not in blocks
    written = _run([str(DEMO)], ruleset, 2, lines=True, max_keys=max_keys, blocks=True)
    assert written[:3] == before[:3] and bytes not in written[3]


def test_lineage_lines_equal_alerts(tmp_path: Path) -> None:
    """Derived parents, and process creations only the merge step decides (deferred hits)."""
    cmd, services = "C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\System32\\services.exe"
    paths = [
        _write(tmp_path / "Security.jsonl", [
            _4688("2024-05-01T10:05:00Z", "0x9c4", cmd, "0x1f0", "cmd.exe /c whoami"),
            _4688("2024-05-01T10:07:00Z", "0x300", services, "0x1c4", "services.exe"),
            _4688("2024-05-01T10:08:00Z", "0x9cc", cmd, "0x300", "cmd.exe /c dir"),
        ]),
        _write(tmp_path / "System.jsonl", [_scm("2024-05-01T11:00:00Z", 0x1F0)]),
    ]
    ruleset = load_rules([str(pack.PACK_DIR)])
    before = _run(paths, ruleset, 1, lines=False, tallied=False)
    for jobs in (1, 2):
        after = _run(paths, ruleset, jobs, lines=True)
        assert after[0] == before[0] and after[2] == before[2]
        assert after[1] == before[1] or jobs > 1
    alerts = [json.loads(x) for x in before[0].splitlines()]
    assert sum(a.get("derived") == ["ParentProcessName"] for a in alerts) == 2
    assert json.loads(before[1])["lineage"]["resolved_by_merge"] == 1


def test_filters_and_dedup_still_get_alerts() -> None:
    ruleset = load_rules([str(pack.PACK_DIR)])
    kinds: set = set()
    run_hunt([str(DEMO)], ruleset, sink=lambda a: kinds.add(type(a)), lines=True, keep=lambda a: True)
    assert kinds == {Alert}


def test_tallies_in_any_parts_and_order_count_as_alerts_in_merge_order() -> None:
    """Alerts with links (many addresses and services per link, so which come first matters)
    tallied in random parts, each in random order, then added up in random order: the same
    results summary as every alert added in merge order."""
    rng = random.Random(7)
    hosts = ["dc01", "ws1", "ws2", "fs01"]
    alerts = []
    for n in range(400):
        t = 1714557600.0 + rng.randrange(50)
        key = (t, "a.evtx", n, f"r{n % 7}", 0, 0, n)
        pairs = {tuple(rng.sample(hosts, 2)) for _ in range(rng.randrange(3))}  # a link per pair (links_of)
        links = tuple(Link(t, src, rng.choice([None, *(f"10.0.0.{i}" for i in range(12))]), dst,
                           rng.choice([None, "svc-a", "svc-b", *(f"s{i}" for i in range(10))]), "inbound")
                      for src, dst in sorted(pairs))
        rule = RULES[n % 2]
        alerts.append(HitLine(b"", f"r{n % 7}", rule.title, ["low", "high"][n % 2], rule.tags, t,
                              rng.choice([*hosts, ""]), "a.evtx", links or None))
        alerts[-1] = (key, alerts[-1])
    want = Results()
    for _, a in sorted(alerts, key=lambda ka: ka[0]):
        want.add(a)
    for _ in range(5):
        rng.shuffle(alerts)
        cuts = sorted(rng.sample(range(1, len(alerts)), 4))
        parts = []
        for lo, hi in zip([0, *cuts], [*cuts, len(alerts)], strict=True):
            part = Tally()
            for key, a in alerts[lo:hi]:
                part.add(key, rule_key(a.rule_id, a.title, a.level, a.tags), a.host, a.time, a.links)
            parts.append(part)
        rng.shuffle(parts)
        got = Results()
        got.absorb(tally_sum(parts))
        assert json.dumps(got.to_dict()) == json.dumps(want.to_dict())
        assert got.lines() == want.lines()  # the first two addresses of a link are shown


def test_tally_overflows_beyond_max_keys_and_with_an_untallied_part() -> None:
    t = Tally(max_keys=2)
    for n, host in enumerate(["a", "b", "a", "c"]):
        t.add((1.0, "x", n, "r", 0, 0, n), rule_key("r", "T", "high", []), host, 1.0)
    assert t.overflow and not t.hosts
    assert not Results().absorbable(t)
    ok = Tally()
    ok.add((1.0, "x", 1, "r", 0, 0, 1), rule_key("r", "T", "high", []), "a", 1.0)
    assert not tally_sum([ok]).overflow
    assert tally_sum([ok, None]).overflow
    assert tally_sum([None, None]) is None
