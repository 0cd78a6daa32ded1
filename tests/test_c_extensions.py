"""The optional C extensions are really built wherever a compiler and Python's headers exist.

setup.py marks them optional so that installation never fails; a C file that stopped
compiling would then silently fall back to the (slower) Python code. This test catches that.
"""

from __future__ import annotations

import shutil
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
    from scmwatch.events import _flatten  # noqa: F401
    from scmwatch.sigma import _text  # noqa: F401
