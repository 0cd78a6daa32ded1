"""What a subcommand's imports compile at every start, compiled once and kept: the code that
``dataclasses`` and ``collections.namedtuple`` generate, the string annotations of ``typing``
named tuples, and the module-level regexes.

``dataclasses`` and ``namedtuple`` build their methods as source text and compile it at every
class definition (``exec`` in ``dataclasses``, ``eval`` in ``namedtuple``). Importing what
``scmwatch hunt`` runs defines 41 dataclasses and 23 named tuples: 141 ``exec`` and 35 ``eval``
calls, 102M of the 658M instructions a hunt of the attack corpus x5 runs before its ``--jobs``
worker forks (callgrind; ~19 ms of ~73 ms of imports), nearly all of it parsing and compiling
that text. The same imports compile 49 regexes with ``re`` (~5 ms: parsing the pattern and
making its SRE code, in Python). Both are the same at every start, so :func:`remembered`
compiles each distinct text once and keeps the result in the cache directory (``marshal``, the
format of ``.pyc`` files; one file per subcommand and Python version): the code objects, and a
regex's SRE code with its flags and groups, which ``_sre.compile`` turns into the pattern object
as ``re`` itself does last. A later start uses those instead.

A code object is exactly what ``compile`` makes of its text (the key is the whole text and the
mode; no caller's ``__future__`` flags are inherited, as ``exec``/``eval`` of these two modules
inherit none), so classes defined through the memo are the classes defined without it; a
regex's key is its pattern, flags and the SRE format (``_sre.MAGIC``), and ``_sre.compile``
checks the code it is given. The file carries a CRC-32 of its payload and is trusted only when
owned by the current user (it holds code that runs); a damaged, foreign or unreadable file is
ignored and written again, an unwritable cache directory is skipped, and files are replaced
atomically.
"""

from __future__ import annotations

import _sre
import builtins
import marshal
import os
import struct
import sys
import types
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from re import _compiler as sre_compiler  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

from scmwatch.cachedir import cache_root

FORMAT = b"scmwatch-codememo-1\n"
_ORIGINAL_REGEX = sre_compiler.compile
_CRC = struct.Struct("<I")


KEEP = 4  # a memo file holds up to this many starts' worth of code objects


REGEX = f"re{_sre.MAGIC}:"  # a regex's mode: this SRE code format, then its flags

Key = tuple[str, str | bytes]  # (mode, source text or regex pattern)
Regex = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]  # _sre.compile's args


class Memo:
    """Code objects by (mode, source text) and SRE compilations by (REGEX + flags, pattern): the
    ones read from a memo file, the ones compiled since, and which of them this process used."""

    def __init__(self, known: dict[Key, Any] | None = None) -> None:
        self.known = known or {}
        self.used: dict[Key, Any] = {}
        self.compiled = 0

    def code(self, source: str, mode: str) -> types.CodeType:
        key = (mode, source)
        code = self.known.get(key)
        if code is None:
            code = compile(source, "<string>", mode, dont_inherit=True)
            self.known[key] = code
            self.compiled += 1
        self.used[key] = code
        return code

    def regex(self, pattern: Any, flags: int = 0) -> Any:
        """``re._compiler.compile`` as ``re`` calls it, with the parse and the SRE code of a
        pattern through the memo; a pattern object is its arguments to ``_sre.compile``."""
        if (not isinstance(pattern, str | bytes) or type(flags) is not int
                or flags & sre_compiler.SRE_FLAG_DEBUG):
            return _ORIGINAL_REGEX(pattern, flags)
        key = (f"{REGEX}{flags}", pattern)
        args = self.known.get(key)
        if args is None:
            parsed = sre_parser.parse(pattern, flags)
            code = list(map(int, sre_compiler._code(parsed, flags)))  # opcodes are int subclasses
            groupindex = dict(parsed.state.groupdict)
            indexgroup: list[str | None] = [None] * parsed.state.groups
            for name, i in groupindex.items():
                indexgroup[i] = name
            args = (flags | parsed.state.flags, code, parsed.state.groups - 1, groupindex, tuple(indexgroup))
            self.known[key] = args
            self.compiled += 1
        self.used[key] = args
        final, code, groups, groupindex, indexgroup = args
        return _sre.compile(pattern, final, code, groups, groupindex, indexgroup)

    def compile(self, source: Any, filename: str, mode: str, flags: int = 0, dont_inherit: bool = False,
                optimize: int = -1) -> Any:
        """``compile`` as ``typing.ForwardRef`` calls it (``compile(annotation, "<string>",
        "eval")``) for each string annotation of a ``NamedTuple`` class, through the memo. The
        first ``compile`` of a process also builds the ``ast`` node types (~9M instructions):
        the hunt's imports define 17 such classes, 81 annotations, 12.9M of the ~450M
        instructions before the worker forks (callgrind), none of it needed when the memo
        holds their code. The caller's ``__future__`` flags are never inherited: ``typing``
        has none."""
        if (isinstance(source, str) and filename == "<string>" and mode == "eval" and not flags
                and optimize == -1):
            return self.code(source, mode)
        return builtins.compile(source, filename, mode, flags, dont_inherit=True, optimize=optimize)

    def exec(self, source: Any, globals: Any = None, locals: Any = None) -> None:
        """``exec`` as ``dataclasses`` calls it, with ``source`` compiled through the memo."""
        if isinstance(source, str) and isinstance(globals, dict):
            source = self.code(source, "exec")
        builtins.exec(source, globals, locals)

    def eval(self, source: Any, globals: Any = None, locals: Any = None) -> Any:
        """``eval`` as ``namedtuple`` calls it, with ``source`` compiled through the memo."""
        if isinstance(source, str) and isinstance(globals, dict):
            source = self.code(source, "eval")
        return builtins.eval(source, globals, locals)


def memo_path(name: str) -> str | None:
    """The memo file of ``name`` (a subcommand) for this Python (None: caching off)."""
    root = cache_root()
    if root is None:
        return None
    return os.path.join(root, "codememo", f"{name}.{sys.implementation.cache_tag}.marshal")


def _valid(key: Any, value: Any) -> bool:
    if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)):
        return False
    if key[0] in ("exec", "eval"):
        return isinstance(key[1], str) and isinstance(value, types.CodeType)
    return (key[0].startswith(REGEX) and isinstance(key[1], str | bytes) and isinstance(value, tuple)
            and len(value) == 5 and isinstance(value[1], list) and isinstance(value[3], dict))


def read_memo(path: str) -> dict[Key, Any]:
    """The code objects stored at ``path``; empty when it is missing, damaged, not ours or not
    of this format."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            return {}
        data = os.read(fd, st.st_size)
    except OSError:
        return {}
    finally:
        os.close(fd)
    head = len(FORMAT) + _CRC.size
    if len(data) < head or not data.startswith(FORMAT):
        return {}
    payload = memoryview(data)[head:]
    if _CRC.unpack_from(data, len(FORMAT))[0] != zlib.crc32(payload):
        return {}
    try:
        stored = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if _valid(k, v)}


def write_memo(path: str, codes: dict[Key, Any]) -> None:
    """Store ``codes`` at ``path`` atomically (temp file + ``os.replace``); an unwritable cache
    directory is skipped."""
    import tempfile  # only when writing: a warm start does not need it

    payload = marshal.dumps(codes)
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(FORMAT + _CRC.pack(zlib.crc32(payload)) + payload)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


@contextmanager
def remembered(name: str) -> Iterator[Memo]:
    """While the block runs (importing subcommand ``name``'s modules), ``dataclasses`` and
    ``collections.namedtuple`` compile their generated code, ``typing`` its forward references,
    and ``re`` its patterns, through a :class:`Memo` read from ``name``'s memo file; afterwards
    all four are as before. When the
    block compiled anything the file is written again with what it held and what was compiled
    (installs of two versions of scmwatch sharing a cache directory do not replace each other's
    code at every start), or with only what was used once that is more than ``KEEP`` times as
    many texts."""
    import collections
    import dataclasses
    import typing
    path = memo_path(name)
    memo = Memo(read_memo(path) if path else None)
    dataclasses.exec = memo.exec  # type: ignore[attr-defined]
    collections.eval = memo.eval  # type: ignore[attr-defined]
    typing.compile = memo.compile  # type: ignore[attr-defined]
    sre_compiler.compile = memo.regex
    try:
        yield memo
    finally:
        del dataclasses.exec  # type: ignore[attr-defined]
        del collections.eval  # type: ignore[attr-defined]
        del typing.compile  # type: ignore[attr-defined]
        sre_compiler.compile = _ORIGINAL_REGEX
    if path and memo.compiled:
        keep = memo.known if len(memo.known) <= KEEP * len(memo.used) else memo.used
        write_memo(path, keep)
