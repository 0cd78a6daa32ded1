"""Input files as the case knows them: by content (sha256), not by path."""

from __future__ import annotations

import hashlib
import zipfile
from typing import Any

from scmwatch.events.evtx_reader import MAGIC as EVTX_MAGIC

__all__ = ["EVTX_MAGIC", "file_sha256"]


def file_sha256(inp: Any) -> tuple[str | None, int | None, bytes]:
    """(sha256, size, first bytes) of an input (a file or an archive member); (None, None, b"")
    if unreadable."""
    h = hashlib.sha256()
    size = 0
    head = b""
    try:
        with inp.open() as fh:
            while chunk := fh.read(1 << 20):
                if not size:
                    head = chunk[:16]
                h.update(chunk)
                size += len(chunk)
    except (OSError, zipfile.BadZipFile):
        return None, None, b""
    return h.hexdigest(), size, head
