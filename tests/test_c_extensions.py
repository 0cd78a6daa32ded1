"""The optional C extensions are really built wherever a compiler and Python's headers exist.

setup.py marks them optional so that installation never fails; a C file that stopped
compiling would then silently fall back to the (slower) Python code. This test catches that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


def _can_compile() -> bool:
    include = sysconfig.get_paths().get("include")
    return bool(shutil.which("cc") or shutil.which("gcc")) and bool(include) and (
        Path(include) / "Python.h"
    ).exists()


@pytest.mark.skipif(not _can_compile(), reason="no C compiler or Python headers here")
def test_c_extensions_are_built() -> None:
    from scmwatch.events import _evtx, _flatten, _xml  # noqa: F401
    from scmwatch.sigma import _text  # noqa: F401


@pytest.mark.parametrize(
    ("value", "pure"),
    [(None, False), ("", False), ("0", False), ("false", False), ("Off", False), ("no", False),
     ("1", True), ("true", True), ("YES", True), ("on", True), ("2", True)],
)
def test_pure_python_switch_is_a_boolean(monkeypatch, value, pure) -> None:
    from scmwatch.native import pure_python

    if value is None:
        monkeypatch.delenv("SCMWATCH_PURE_PYTHON", raising=False)
    else:
        monkeypatch.setenv("SCMWATCH_PURE_PYTHON", value)
    assert pure_python() is pure


@pytest.mark.skipif(not _can_compile(), reason="no C compiler or Python headers here")
@pytest.mark.parametrize(("value", "expect"), [("0", "C C"), ("1", "py py")])
def test_pure_python_zero_keeps_the_c_code(value, expect) -> None:
    """``SCMWATCH_PURE_PYTHON=0`` means C, as its name read as a boolean says (a fresh process:
    the modules decide at import)."""
    code = ("from scmwatch.events import normalize as n; from scmwatch.sigma import index as i; "
            "print('C' if n.EvtxEvents else 'py', 'C' if i.lower_join else 'py')")
    env = dict(os.environ, SCMWATCH_PURE_PYTHON=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expect


_SYSTEM = '"System":{"Channel":"Security","EventID":%d,"EventRecordID":%d}'
_RECORDS = [
    '{"Event":{' + _SYSTEM % (4624, 1) + ',"EventData":{"A":"b"}}}',
    '{"Event":{' + _SYSTEM % (4624, 2) + ',"UserData":{"Log":{"A":"\\"UserData\\""}}}}',
    '{"Event":{' + _SYSTEM % (7045, 3) + ',"EventData":{"UserData":"x"}}}',
    '{"Event":{' + _SYSTEM % (4624, 4) + ',"EventData":{"A":"UserDat"}}}',
]


def _gated_ids(flatten) -> list[int]:
    """Record ids the C record loop yields when the gate wants only 7045: a record turned away
    is still read whole when its text holds ``"UserData"`` (the search memmem does)."""
    from scmwatch.events import normalize
    from scmwatch.events.model import Event

    n = normalize
    flatten.configure(n.SYSTEM_ATTRS, n._CORE, n._int, n.from_evtx_json_py, Event)
    records = iter([{"data": t, "event_record_id": i + 1} for i, t in enumerate(_RECORDS)])
    return [ev.record_id for ev in flatten.EvtxEvents(records, "t.evtx", lambda ch, eid: eid == 7045)]


@pytest.mark.skipif(not _can_compile(), reason="no C compiler or Python headers here")
def test_flatten_builds_and_gates_the_same_without_memmem(tmp_path) -> None:
    """MSVC has no memmem: _flatten.c then uses its own search (-DSCMWATCH_NO_MEMMEM forces it)."""
    import importlib.util

    from scmwatch.events import _flatten

    cc = shutil.which("cc") or shutil.which("gcc")
    src = Path(_flatten.__file__).with_name("_flatten.c")
    out = tmp_path / ("_flatten" + sysconfig.get_config_var("EXT_SUFFIX"))
    include = sysconfig.get_paths()["include"]
    cmd = [cc, "-O0", "-shared", "-fPIC", "-DSCMWATCH_NO_MEMMEM", f"-I{include}", str(src), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    spec = importlib.util.spec_from_file_location("_flatten", out)
    portable = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(portable)
    assert _gated_ids(portable) == _gated_ids(_flatten) == [2, 3]
