"""Small written rule sets as two engines (atom prefilter on, Hyperscan off) and the
brute-force answer every fast path is held to: each unit's predicate on every event."""
from __future__ import annotations

import textwrap
from pathlib import Path

from scmwatch.sigma import Engine, load_rules
from scmwatch.sigma.compile import Low


def engine_pair(tmp: Path, rules: dict[str, str], category: str, id_prefix: str) -> tuple[Engine, Engine]:
    """Write one rule per ``rules`` item (title -> detection YAML) under ``category`` and return
    ``(atom engine, literal engine)``; ``id_prefix`` keeps ids apart between test modules."""
    for n, (name, det) in enumerate(rules.items()):
        body = textwrap.indent(det, "  ")
        (tmp / f"{name}.yml").write_text(
            f"title: {name}\nid: {id_prefix}-0000-4000-8000-{n:012d}\nstatus: test\nlevel: high\n"
            f"logsource:\n  category: {category}\n  product: windows\ndetection:\n{body}\n",
            encoding="utf-8")
    rs = load_rules([tmp])
    assert not rs.rejected and len(rs.rules) == len(rules), rs.rejected
    return Engine(rs, hyperscan_after=0, atoms=True), Engine(rs, use_hyperscan=False)


SYSMON = ("Microsoft-Windows-Sysmon/Operational", 1)
TOOL_RULE = """title: Tool {n}
id: 8e0b6a54-0000-4000-8000-{n:012d}
status: test
level: high
logsource:
  category: process_creation
  product: windows
detection:
  sel:
    Image|endswith: '\\\\tool{n}.exe'
    CommandLine|contains: ['{needle}', ' -x{n} ']
  condition: sel
"""


def tool_rules(d: Path, needle: str = "--run") -> Path:
    """Six Sysmon process-creation rules written into ``d`` (made if missing): one bucket with
    enough literals for a Hyperscan database and an atom plan, small enough to reason about.
    ``needle``: the command-line literal they share (changing it edits every rule)."""
    d.mkdir(exist_ok=True)
    for n in range(6):
        (d / f"t{n}.yml").write_text(TOOL_RULE.format(n=n, needle=needle), encoding="utf-8")
    return d


def brute(engine: Engine, f: dict) -> list[str]:
    """The ids of the rules whose predicate holds on ``f``, no prefilter asked."""
    b = engine.bucket(f.get("Channel"), f.get("EventID"))
    low = Low(f)
    return [u.rule.id for u in b.units if u.pred is True or (u.pred is not False and u.pred(f, low))]


class StandInUnit:
    """A rule unit with only a requirement, for planning the atom scan without a rule."""

    def __init__(self, req: object) -> None:
        self.pred = lambda f, low: True
        self.never = False  # as ruleset.Unit.never: its predicate is not known to be False
        self.requirement = req
        self.literals = ()
        self.literal_fields = frozenset()
