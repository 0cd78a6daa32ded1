"""A plain hunt starts without importing what it does not use: the case store (DuckDB), the
cluster (Dask), the web console, the table renderer (Rich), the network listeners (asyncio),
the audit and the simulator. Checked in a fresh interpreter with a warm rule cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from scmwatch.cli import COMMANDS, build_parser

EVENTS = (
    '{"Channel": "System", "EventID": 7045, "Computer": "h1", "ServiceName": "x",'
    ' "ImagePath": "C:\\\\Windows\\\\PSEXESVC.exe", "TimeCreated": "2024-01-01T00:00:00Z"}\n'
)

# Run in a new interpreter: a hunt, then the names of the modules it imported.
PROBE = """
import json, sys
from scmwatch.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

NOT_FOR_A_HUNT = ("duckdb", "dask", "distributed", "jinja2", "sigma.pipelines", "rich", "asyncio",
                  "starlette", "uvicorn", "fsspec",
                  "urllib.request", "importlib.metadata", "scmwatch.audit", "scmwatch.simulate",
                  "scmwatch.live", "scmwatch.case", "scmwatch.web", "scmwatch.cluster",
                  "scmwatch.sinks.table", "scmwatch.dedup", "scmwatch.sinks.explain")


def _hunt(tmp_path: Path, *extra: str) -> tuple[int, set[str]]:
    events = tmp_path / "two.jsonl"
    events.write_text(EVENTS)
    env = dict(os.environ, SCMWATCH_CACHE_DIR=str(tmp_path / "cache"))
    args = ["hunt", str(events), "--format", "jsonl", "-o", os.devnull, *extra]
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["code"], set(got["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in NOT_FOR_A_HUNT))


def test_warm_hunt_imports_only_what_it_runs(tmp_path: Path) -> None:
    _hunt(tmp_path)  # fills the rule cache
    code, modules = _hunt(tmp_path)
    assert code == 0
    assert "scmwatch.hunt" in modules  # the probe does see what the hunt imported
    assert _heavy(modules) == []


RULE = """title: PsExec service
id: 5f6e1b5a-0000-4000-8000-000000000001
level: high
logsource:
  product: windows
  service: system
detection:
  selection:
    EventID: 7045
    ImagePath|contains: psexesvc
  condition: selection
"""


def test_warm_hunt_without_correlation_rules_needs_no_pysigma_parsing(tmp_path: Path) -> None:
    """From the rule cache, rules without correlations need neither YAML nor pySigma's
    condition grammar (pyparsing) nor its correlation and rule classes: ~60 ms of every start;
    nor ``textwrap`` (only the table's results summary wraps; pyparsing's traceback imports it)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "psexec.yml").write_text(RULE)
    _hunt(tmp_path, "--rules", str(rules))  # fills the rule cache
    code, modules = _hunt(tmp_path, "--rules", str(rules))
    assert code == 0 and "scmwatch.hunt" in modules
    heavy = ("yaml", "pyparsing", "sigma.conditions", "sigma.correlations", "sigma.rule", "sigma.collection",
             "textwrap")
    assert sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy)) == []


def test_table_output_still_imports_rich(tmp_path: Path) -> None:
    code, modules = _hunt(tmp_path, "--format", "table")
    assert code == 0
    assert "rich" in modules and "scmwatch.sinks.table" in modules


def test_parser_for_one_command_or_all() -> None:
    full = build_parser()
    only = build_parser(["hunt", "x.evtx"])
    names = lambda p: set(p._subparsers._group_actions[0].choices)  # noqa: E731
    assert names(full) == set(COMMANDS)
    assert names(only) == {"hunt"}
    assert names(build_parser(["--help"])) == set(COMMANDS)
    assert names(build_parser(["hnut"])) == set(COMMANDS)  # a typo gets argparse's full message


FROZEN = """
import gc, json, sys
import scmwatch.cli as cli
before = gc.get_freeze_count()
parser = cli._build_lasting(["hunt"]) if sys.argv[1] == "own" else cli.build_parser(["hunt"])
import scmwatch.hunt
print(json.dumps({"frozen": gc.get_freeze_count() - before, "enabled": gc.isenabled(),
                  "hunt_tracked": gc.is_tracked(scmwatch.hunt.run_hunt)}))
"""


def test_own_process_freezes_what_the_command_imports() -> None:
    """In the command's own process (``entry``) the subcommand's modules are imported with the
    collector off and then frozen (gc.freeze); the collector is on again afterwards. A library
    call of ``main`` leaves the collector as it was."""
    got = {}
    for how in ("own", "library"):
        out = subprocess.run([sys.executable, "-c", FROZEN, how], capture_output=True, text=True, timeout=120,
                             check=True)
        got[how] = json.loads(out.stdout)
    assert got["own"]["frozen"] > 10_000 and got["own"]["enabled"]
    assert got["library"]["frozen"] == 0 and got["library"]["enabled"]
    assert got["own"]["hunt_tracked"] and got["library"]["hunt_tracked"]


def test_console_entry_flushes_runs_atexit_and_keeps_the_exit_code(tmp_path: Path) -> None:
    """``scmwatch hunt`` ends with ``os._exit`` (no interpreter teardown): everything written to
    stdout arrives, ``atexit`` handlers still run, and the exit code is the hunt's."""
    events = tmp_path / "two.jsonl"
    events.write_text(EVENTS * 3)
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
             "sys.argv = ['scmwatch', *sys.argv[1:]]\n"
             "from scmwatch.cli import entry\n"
             "entry()\n")
    env = dict(os.environ, SCMWATCH_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", probe, "hunt", str(events), "--format", "jsonl"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    alerts = int(re.search(r"([0-9,]+) alerts from", out.stderr).group(1).replace(",", ""))
    lines = out.stdout.splitlines()
    assert alerts >= 3 and len(lines) == alerts and all(json.loads(line) for line in lines)
    assert "atexit ran" in out.stderr
    bad = subprocess.run([sys.executable, "-c", probe, "hunt", str(tmp_path / "absent.jsonl")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "atexit ran" in bad.stderr


OWN = """
import json, sys
sys.argv = ["scmwatch", *sys.argv[1:]]
import scmwatch.cli as cli
code = cli.main(own_process=True)
modules = sorted(m for m, v in sys.modules.items() if not isinstance(v, cli._Deferred))
import dataclasses
@dataclasses.dataclass
class Late:
    a: int
    b: str = "x"
print(json.dumps({"code": code, "modules": modules, "doc": Late.__doc__}))
"""


def test_hunt_defers_inspect_and_archive_readers(tmp_path: Path) -> None:
    """A hunt in its own process (``entry``) does not import ``inspect`` (nor ``ast``, ``dis``,
    ``tokenize``), which ``dataclasses`` imports for the docstring of a class without one:
    the classes it runs have theirs. A class defined later without one still gets it, as
    ``inspect`` is imported at that first use. Nor are ``zipfile`` and ``gzip`` imported when no
    input is an archive, nor ``zstandard`` when no result is spilled to disk. (Rules without
    correlations: pySigma's condition grammar, which correlation rules need, uses ``inspect``
    at its import.)"""
    events = tmp_path / "two.jsonl"
    events.write_text(EVENTS)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "psexec.yml").write_text(RULE)
    env = dict(os.environ, SCMWATCH_CACHE_DIR=str(tmp_path / "cache"))
    args = ["hunt", str(events), "--rules", str(rules), "--format", "jsonl", "-o", os.devnull]
    for _ in range(2):  # the second start: warm rule cache and code memo
        out = subprocess.run([sys.executable, "-c", OWN, *args], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["code"] == 0 and "scmwatch.hunt" in got["modules"]
    assert not {"inspect", "ast", "dis", "tokenize", "zipfile", "gzip", "zstandard"} & set(got["modules"])
    assert got["doc"] == "Late(a: int, b: str = 'x')"


def test_a_deferred_module_is_the_real_one_at_first_use() -> None:
    """``import inspect`` of a deferred module runs nothing; its first attribute lookup imports
    the real module, which takes its place in ``sys.modules`` and answers through the stand-in."""
    probe = ("import sys\n"
             "from scmwatch.cli import _defer\n"
             "_defer('inspect')\n"
             "import inspect\n"
             "assert 'ast' not in sys.modules\n"
             "real = sys.modules['inspect']\n"
             "print(inspect.signature(lambda x, y=2: 0), inspect.isfunction(len), 'ast' in sys.modules,\n"
             "      sys.modules['inspect'] is not real,\n"
             "      sys.modules['inspect'].signature is inspect.signature)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.split() == ["(x,", "y=2)", "False", "True", "True", "True"]
