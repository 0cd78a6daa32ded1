"""Where scmwatch keeps what it caches between runs: a module of its own, importable before
anything heavy (``scmwatch.codememo`` needs it before the subcommand's modules load)."""

from __future__ import annotations

import os


def cache_root() -> str | None:
    """The scmwatch cache directory (None: caching off).

    ``SCMWATCH_CACHE_DIR`` (empty: off), else ``$XDG_CACHE_HOME/scmwatch`` or
    ``~/.cache/scmwatch``.
    """
    root = os.environ.get("SCMWATCH_CACHE_DIR")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "scmwatch")
    return root or None
