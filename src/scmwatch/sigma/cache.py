"""A cache of loaded Sigma rule files (the pySigma parse), kept between runs.

Why: parsing all 3,754 SigmaHQ rules (YAML, pySigma objects, condition parsing) took ~3.9 s of
every run; unpickling the same objects takes ~0.36 s, *provided the cyclic garbage collector is
off while it runs* (with it on: 3.8 s, the collector rescans the growing heap again and again).
Compiled predicates are closures and cannot be pickled, so only the load stage is cached;
compilation runs on every start.

The key is the scmwatch, pySigma and Python versions, the paths as given and every rule file's
path and SHA-256 of its content: editing, adding or removing a rule file is a miss. Entries are
written atomically (temp file + ``os.replace``), so concurrent writers never leave half a
file; an entry that does not unpickle is loaded from the files again and rewritten; a cache
directory that cannot be written is ignored. Only files owned by the current user are trusted
(a pickle runs code when loaded).
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

from scmwatch import __version__
from scmwatch.sigma.load import LoadedSigma, load_sigma, rule_files

FORMAT = "scmwatch-rules-1"


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


@contextmanager
def no_gc(freeze: bool = False) -> Iterator[None]:
    """Cyclic GC off for a burst of long-lived allocations (it only rescans them).

    ``freeze``: for what lives until the process ends (a CLI's rule set), move everything
    allocated so far out of the collector's sight (``gc.freeze``) before it is switched on again:
    otherwise the first collection after loading all SigmaHQ walks the whole new heap (~0.7 s
    measured, profiled) and every later full collection does it again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was:
            gc.enable()


def _pysigma_version() -> str:
    try:
        return version("pysigma")
    except PackageNotFoundError:
        return "?"


def cache_key(paths: list[str | os.PathLike]) -> str | None:
    """SHA-256 over versions, the given paths and each rule file's path and content.

    None when a file cannot be read (then the plain load reports it)."""
    digest = hashlib.sha256()
    digest.update(f"{FORMAT} {__version__} {_pysigma_version()} {sys.version}\n".encode())
    for p in paths:
        digest.update(b"arg\x00" + os.fsencode(p) + b"\x00")
    for f in rule_files(paths, []):
        try:
            data = f.read_bytes()
        except OSError:
            return None
        digest.update(b"file\x00" + os.fsencode(f) + b"\x00" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _read(path: str) -> LoadedSigma | None:
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_uid != os.getuid():
                return None
            data = fh.read()
        with no_gc():
            loaded = pickle.loads(data)  # noqa: S301 - our own cache file, owner checked
    except Exception:  # noqa: BLE001 - absent, truncated, garbage, another build: load again
        return None
    return loaded if isinstance(loaded, LoadedSigma) else None


def _write(cache: str, path: str, loaded: LoadedSigma) -> None:
    tmp = None
    try:  # best effort: a read-only cache must not fail a run
        data = pickle.dumps(loaded, protocol=pickle.HIGHEST_PROTOCOL)
        os.makedirs(cache, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old entry or the new one
        tmp = None
    except (OSError, pickle.PicklingError, RecursionError, TypeError, AttributeError):
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def load_sigma_cached(paths: Iterable[str | os.PathLike]) -> LoadedSigma:
    """:func:`load_sigma`, from the cache when the rule files are unchanged."""
    paths = list(paths)
    root = cache_root()
    key = cache_key(paths) if root is not None else None
    if root is None or key is None:
        return load_sigma(paths)
    cache = os.path.join(root, "rules")
    path = os.path.join(cache, key + ".pickle")
    loaded = _read(path)
    if loaded is not None:
        return loaded
    loaded = load_sigma(paths)
    _write(cache, path, loaded)
    return loaded

