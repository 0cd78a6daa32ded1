"""The loaded rule files are cached on disk: reused when unchanged, reloaded when edited,
rebuilt when corrupt, shared safely by concurrent writers, skipped when unwritable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scmwatch.sigma import cache
from scmwatch.sigma.ruleset import load_rules

RULE = """title: Service installed {n}
id: 5f6e1b5a-0000-4000-8000-00000000000{n}
status: test
level: high
logsource:
  product: windows
  service: system
detection:
  selection:
    EventID: 7045
    ImagePath|contains: '{needle}'
  condition: selection
"""


def _rules(d: Path, needle: str = "psexesvc") -> Path:
    d.mkdir(exist_ok=True)
    (d / "a.yml").write_text(RULE.format(n=1, needle=needle))
    (d / "b.yml").write_text(RULE.format(n=2, needle="evil.exe"))
    (d / "broken.yml").write_text("title: [unclosed\n")
    return d


def _entries(root: Path) -> list[Path]:
    return sorted((root / "rules").glob("*.pickle"))


def _fires(rs, image: str) -> list[str]:
    fields = {"Channel": "System", "EventID": 7045, "ImagePath": image}
    low = {k: str(v).lower() for k, v in fields.items()}
    return sorted(u.rule.title for r in rs.rules for u in r.units
                  if (u.pred if isinstance(u.pred, bool) else u.pred(fields, low)))


def test_second_load_comes_from_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    first = load_rules(rules)
    (entry,) = _entries(tmp_path / "c")
    stamp = entry.stat().st_mtime_ns
    second = load_rules(rules)
    assert entry.stat().st_mtime_ns == stamp
    assert [r.id for r in second.rules] == [r.id for r in first.rules]
    assert second.rejected == first.rejected and len(second.rejected) == 1
    assert _fires(second, r"c:\windows\psexesvc.exe") == ["Service installed 1"]


def test_edited_rule_is_reloaded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    assert _fires(load_rules(rules), r"c:\x\newname.exe") == []
    _rules(rules, needle="newname")  # same paths, new content
    assert _fires(load_rules(rules), r"c:\x\newname.exe") == ["Service installed 1"]
    assert len(_entries(tmp_path / "c")) == 2
    (rules / "b.yml").unlink()  # a removed file is a miss too
    assert [r.title for r in load_rules(rules).rules] == ["Service installed 1"]


def test_corrupt_entry_is_rebuilt(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(tmp_path / "c"))
    rules = _rules(tmp_path / "r")
    load_rules(rules)
    (entry,) = _entries(tmp_path / "c")
    for garbage in (b"garbage" * 10, b"", entry.read_bytes()[:1000]):
        entry.write_bytes(garbage)
        rs = load_rules(rules)
        assert _fires(rs, r"c:\windows\psexesvc.exe") == ["Service installed 1"]
        assert entry.read_bytes() != garbage  # replaced by a good entry
    assert "Traceback" not in capsys.readouterr().err


def test_unwritable_or_disabled_cache_still_loads(tmp_path: Path, monkeypatch) -> None:
    rules = _rules(tmp_path / "r")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(blocker))  # cannot create a directory here
    assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    ro = tmp_path / "ro"
    (ro / "rules").mkdir(parents=True)
    (ro / "rules").chmod(0o500)  # read-only for a normal user (root writes anyway)
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", str(ro))
    assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]
    assert not list((ro / "rules").glob("*.tmp"))
    monkeypatch.setenv("SCMWATCH_CACHE_DIR", "")
    assert cache.cache_root() is None
    assert _fires(load_rules(rules), r"c:\windows\psexesvc.exe") == ["Service installed 1"]


def test_concurrent_writers_leave_one_good_entry(tmp_path: Path) -> None:
    rules = _rules(tmp_path / "r")
    root = tmp_path / "c"
    code = ("import sys; from scmwatch.sigma.ruleset import load_rules; "
            "rs = load_rules(sys.argv[1]); print(len(rs.rules), len(rs.rejected))")
    env = {**os.environ, "SCMWATCH_CACHE_DIR": str(root)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(rules)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o for o, _ in outs] == ["2 1\n", "2 1\n"]
    assert len(_entries(root)) == 1 and not list((root / "rules").glob("*.tmp"))
    again = subprocess.run([sys.executable, "-c", code, str(rules)], env=env, text=True,
                                     capture_output=True, timeout=120)
    assert again.stdout == "2 1\n"  # read from the entry they left
