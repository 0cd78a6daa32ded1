"""A cache of the compiled rule set, kept between runs: the rules, their predicates, lazily.

Why: all 3,754 SigmaHQ rules cost ~3.9 s to parse (YAML, pySigma objects, conditions) and
~1.9 s to compile, on every run. An entry holds:

* the rule set's *skeleton*, pickled: every ``CompiledRule`` with what a hunt reads of every
  rule (id, title, level, its units' sources and (Channel, EventID) keys), plus rejections,
  warnings and the correlations flattened (``CorrSpec``); but no predicate and no pySigma
  object. It unpickles in ~12 ms (0.9 MB for SigmaHQ).
* each rule's details (description, tags, flags ...) and its units' prefilter literals and
  requirements, one piece per rule (``CompiledRule.stored_parts``), read on first use: a hunt
  reads the details of the rules that hit, and literals or requirements only where a bucket's
  layout or plan is not cached (``CompiledRule.entry_state``).
* each rule's compiled predicates (``predpickle``: generated code and closures by value), one
  piece per event source, unpickled on first use (``Unit.pred``) in ~0.1 ms where compiling the
  rule again took ~0.6 ms: the engine asks only for the rules of the (Channel, EventID) buckets
  the input has, and every ``--jobs`` worker asks for the ones it meets. A piece per source, not
  per rule, because most rules a bucket meets run on two sources (1,060 of the 1,184 of Sysmon
  process creation also run on Security 4688) and a bucket needs one: the 977 a hunt of the
  attack corpus ×5 reads took 30 instead of 41 ms and 3.4 instead of 4.9 MB
  (``bench/worker_warmup.py`` (2), CPU, minimum of 5 passes). A
  predicate that could not be stored (3% of SigmaHQ: an RE2 matcher's compiled object) makes its
  rule compiled on first use from:
* each rule's pySigma objects (rule, parsed condition trees), pickled one by one (16 MB for
  SigmaHQ), also what ``CompiledRule.sigma`` gives (``rules check``, explanations).
* the pySigma correlations, in one piece (a correlation may reference another), read only
  when ``RuleSet.correlations`` is asked for (a tuning file, ``rules`` commands): a hunt needs
  only the flattened ones. In the skeleton they imported pySigma's correlations module,
  pyparsing and YAML at every start with the built-in pack (~80 ms).

The pieces are read from the open entry one by one (``os.pread``), not held in memory.

The key covers what changes the result: the scmwatch, pySigma and Python versions, the source of
the compiler (``sigma/*.py`` and the correlation spec, so an edited compiler is a miss too), the
placeholder values, the paths as given and every rule file's path and SHA-256 of its content
(editing, adding or removing a rule file is a miss). The content hashes come stat first from a
*stamp* per list of rule paths (``file_digests``: a file whose size, times, inode and device are
unchanged is not read again; git's index does the same, with the same care for files changed
in the tick they were stamped), so a warm start reads no rule file; the list of rule files
comes from the stamp too while no directory it was made from changed, so it lists none either.
A warm start reads the entry the stamp's files select while a thread stats them, and keeps it
when none changed (``open_entry``).
Entries are written atomically (temp file + ``os.replace``), so concurrent writers never leave
half a file. An entry is checked against its length and its skeleton against a CRC-32 in
the header when it is opened, so an entry that is truncated or whose skeleton is altered is
rebuilt from the files and rewritten; each piece is checked against its own CRC-32 (in the
skeleton's tables) when it is read, ~1 us for a predicate's 2.7 KB: a damaged piece makes its
rule compiled again from the rule files (loaded again) and removes the entry, so the next run
writes it anew. The CRCs guard against truncation and damage, not an attacker (see below). A
check of the whole 27 MB entry at every start cost ~8 ms of CPU (in a thread beside the
skeleton's unpickling) and mapped the rule part (peak RSS 57 -> 75 MiB) to read the ~2 MB of
pieces a hunt of the attack corpus x5 reads. A cache directory that cannot be written is
ignored. Only files owned by the current user are trusted (a pickle runs
code when loaded). The KEEP most recently used entries are kept, older ones removed when a new
one is written.
"""

from __future__ import annotations

import copyreg
import gc
import hashlib
import importlib.util
import io
import json
import marshal
import mmap
import os
import pickle
import struct
import sys
import tempfile
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from scmwatch import __version__
from scmwatch.cachedir import cache_root
from scmwatch.native import pure_python
from scmwatch.sigma import predpickle
from scmwatch.sigma.files import normalized, rule_paths

try:
    from scmwatch.sigma import _stat
except ImportError:  # built without the C extensions
    _stat = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from scmwatch.sigma.load import LoadedSigma

FORMAT = b"scmwatch-rules-10\n"
STAMP_FORMAT = f"scmwatch-stamp-3 marshal-{marshal.version}"
STAMP_SUFFIX = ".stamp"
# A stored content hash is trusted only for a file last changed this long before its stamp was
# taken (file_digests): coarser than any file system's timestamps (FAT: 2 s).
RACY_NS = 2_000_000_000
HEADER = struct.Struct("<QQI")  # skeleton length, rule part length, CRC-32 of the skeleton
KEEP = 8  # entries kept, most recently used first (all of SigmaHQ: ~30 MB each)


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
            freeze_gc()
        if was:
            gc.enable()


_frozen = False  # has the process moved its long-lived objects out of the collector's sight?


def freeze_gc() -> None:
    """``gc.freeze()``, remembered for :func:`lasting` (``gc.get_freeze_count`` walks every
    frozen object: ~30 ms with all SigmaHQ loaded, too slow to ask per compiled rule)."""
    global _frozen
    gc.freeze()
    _frozen = True


def unfreeze_gc() -> None:
    """``gc.unfreeze()``: the frozen objects are the collector's again."""
    global _frozen
    gc.unfreeze()
    _frozen = False


class lasting:  # noqa: N801 - used as a function: ``with lasting():``
    """Cyclic GC off while a rule is compiled on first use (``Unit.pred``), mid-hunt.

    Compiling leaves ~40 objects of cyclic garbage per rule, and what it keeps (the pySigma
    objects, the predicate) lives as long as the rule set. Left to the collector, every full
    collection walked all rules compiled so far: 5 of them cost 0.6 s of a 3.3 s hunt of the
    dev corpus with all SigmaHQ (2,183 rules compiled). So on exit the young generation is
    collected (the garbage: only what was allocated since, ~0.1 ms) and, when the process has
    frozen its rule set (``gc.freeze``: the CLI, ``run_hunt``), the survivors join it.

    ``collect=False``: no collection on exit, for what leaves next to no garbage: reading a
    rule's stored predicates (``RuleSource.predicates``) left 30 unreachable objects over the
    809 reads of an x5 hunt, and collecting the young generation after each read (it holds
    the batch of events in flight too) cost ~8 ms of each process (measured in place).

    A class, not a ``contextlib.contextmanager`` generator: entering and leaving took ~4 us
    that way, ~1 us this way, for each of the ~680 predicates each x5 process reads."""

    __slots__ = ("collect", "was")

    def __init__(self, collect: bool = True) -> None:
        self.collect = collect
        self.was = False

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.collect:
            gc.collect(0)
        if _frozen:
            gc.freeze()
        if self.was:
            gc.enable()


def _pysigma_version() -> str:
    """pySigma's version, from the ``pysigma-*.dist-info`` directory beside its package, found
    without importing it (a warm start with all SigmaHQ needs no pySigma object):
    ``importlib.metadata`` (and the email package it imports) cost ~10 ms of every start."""
    spec = importlib.util.find_spec("sigma")
    where = spec.submodule_search_locations if spec is not None else None
    site = os.path.dirname(list(where)[0]) if where else ""
    try:
        names = os.listdir(site)
    except OSError:
        names = []
    for name in names:
        if name.startswith("pysigma-") and name.endswith(".dist-info"):
            return name[len("pysigma-"):-len(".dist-info")]
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pysigma")
    except PackageNotFoundError:
        return "?"


def _compiler_digest() -> bytes:
    """SHA-256 of the code that turns rule files into the cached state."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for src in [*sorted(here.glob("*.py")), here.parent / "correlate" / "spec.py"]:
        try:
            digest.update(src.name.encode() + b"\x00" + src.read_bytes())
        except OSError:
            digest.update(src.name.encode() + b"\x00?")
    return digest.digest()


def cache_key(paths: Sequence[str | os.PathLike],
              placeholders: dict[str, list[str]] | None = None) -> str | None:
    """SHA-256 over versions, the compiler, placeholder values, the given paths and each rule
    file's path and content. None when a file cannot be read (then the plain load reports it).

    The rule files, and each one's content hash, come from the stamp (:func:`file_digests`)
    when nothing they depend on changed: hashing the 3,754 SigmaHQ files took ~0.1 s of every
    start, walking their 144 directories ~9 ms."""
    files = file_digests(paths, _stamp_path(paths))
    return None if files is None else _key(paths, placeholders, files)


def _key(paths: Sequence[str | os.PathLike], placeholders: dict[str, list[str]] | None,
         files: bytes) -> str:
    """The cache key, given what :func:`file_digests` says of the rule files."""
    digest = hashlib.sha256()
    digest.update(FORMAT + f"{__version__} {_pysigma_version()} {sys.version}\n".encode())
    digest.update(_compiler_digest())
    digest.update(json.dumps(placeholders or {}, sort_keys=True).encode() + b"\n")
    for p in paths:
        digest.update(b"arg\x00" + os.fsencode(p) + b"\x00")
    digest.update(files)
    return digest.hexdigest()


def open_entry(paths: Sequence[str | os.PathLike], placeholders: dict[str, list[str]] | None = None
               ) -> tuple[str | None, tuple[Any, RuleSource] | None]:
    """The cache key of ``paths`` (:func:`cache_key`) and its entry (:func:`read_entry`; None
    when not cached).

    When the stamp's list of rule files holds and every file is old enough to trust
    (:func:`file_digests`), the key is what it was when the stamp was written unless a file
    changed. So the entry of that key is read while a thread stats the files and directories
    (``_stat.c``: the GIL released for all of them), and kept when none changed; otherwise the
    key is made again as :func:`cache_key` makes it. With all SigmaHQ the 3,316 stats (12-20 ms
    on this kind of VM) overlap the skeleton's unpickling on the second core."""
    stamp = _stamp_path(paths)
    old = _read_stamp(stamp) if stamp is not None else None
    if old is not None and old.kinds == [_kind(normalized(p)) for p in paths] \
            and old.newest < old.stamped - RACY_NS:
        now = _Signatures(old.looked + old.files)
        key = _key(paths, placeholders, old.digest)
        entry = read_entry(key)
        if now.result() == old.sigs:
            return key, entry
        del entry  # a file changed: the entry of another key, if any
    key = cache_key(paths, placeholders)
    return key, read_entry(key) if key is not None else None


class _Signatures:
    """:func:`_packed_signatures` of ``paths`` in a thread (see :func:`open_entry`)."""

    def __init__(self, paths: list[str]) -> None:
        self.sigs = b""
        self._thread = threading.Thread(target=self._run, args=(paths,), daemon=True)
        self._thread.start()

    def _run(self, paths: list[str]) -> None:
        self.sigs = _packed_signatures(paths)

    def result(self) -> bytes:
        self._thread.join()
        return self.sigs


def _stamp_path(paths: Sequence[str | os.PathLike]) -> str | None:
    """The stamp file of this list of rule paths (by absolute path), or None (caching off)."""
    root = cache_root()
    if root is None:
        return None
    name = hashlib.sha256(b"\x00".join(os.fsencode(os.path.abspath(p)) for p in paths)).hexdigest()
    return os.path.join(root, "rules", name + STAMP_SUFFIX)


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _looked_at(path: str) -> tuple[int, ...] | None:
    try:
        return _signature(os.stat(path))
    except OSError:
        return None


def _py_signatures(paths: Sequence[str]) -> list[tuple[int, ...] | None]:
    """Each path's :func:`_signature`, None where it cannot be stat'ed: the Python twin of
    ``_stat.signatures``."""
    return [_looked_at(p) for p in paths]


_c_signatures = None if _stat is None or pure_python() else _stat.signatures
_signatures = _py_signatures if _c_signatures is None else _c_signatures
SIG = struct.Struct("=qqqQQ")  # a packed signature: size, mtime, ctime, inode, device
GONE = b"\xff" * SIG.size  # the packed signature of a path that cannot be stat'ed
OLDEST = -(1 << 63)


def _pack(sigs: Sequence[tuple[int, ...] | None]) -> bytes:
    """Signatures as a stamp keeps them: SIG each, GONE for None (``_stat.packed``'s form)."""
    return b"".join(GONE if sig is None else SIG.pack(*sig) for sig in sigs)


def _unpack(packed: bytes) -> list[tuple[int, ...] | None]:
    """:func:`_pack` undone."""
    step = SIG.size
    return [None if packed[i:i + step] == GONE else SIG.unpack_from(packed, i)
            for i in range(0, len(packed), step)]


def _packed_signatures(paths: list[str]) -> bytes:
    """``_pack(_signatures(paths))``: made in C (``_stat.packed``, no tuple per path) when
    ``_signatures`` is the C one."""
    if _stat is not None and _signatures is _c_signatures:
        return _stat.packed(paths)
    return _pack(_signatures(paths))


def _newest(sigs: Sequence[tuple[int, ...] | None]) -> int:
    """The latest mtime or ctime of ``sigs`` (OLDEST: none): all are trusted (:func:`_trusted`)
    when it is."""
    return max((max(sig[1], sig[2]) for sig in sigs if sig is not None), default=OLDEST)


def _kind(path: str) -> str:
    return "d" if os.path.isdir(path) else "f" if os.path.isfile(path) else "-"


class _Stamp(NamedTuple):
    """What a stamp file remembers of the rule files of one list of rule paths.

    Signatures and hashes are kept packed, as one bytes object each: a warm start compares the
    signatures of all SigmaHQ (3,141 files, 144 directories) with one ``==`` of two bytes
    objects and needs no hash. The stamp of all SigmaHQ was a 573 kB pickle of lists of tuples,
    ~0.9 ms to read and ~0.4 more to check and compare; now ~0.3 ms in all (measured apart)."""

    stamped: int  # time.time_ns() before any of the stats below
    # each rule path's kind, and what ``rule_paths`` looked at (directories, entries left out):
    # the list of files holds while their signatures do
    kinds: list[str]
    looked: list[str]
    files: list[str]  # the rule files, in load order
    sigs: bytes  # the signatures (``_pack``) of ``looked``, then of ``files``
    newest: int  # ``_newest`` of those signatures
    hashes: bytes  # each file's SHA-256, one after another
    digest: bytes  # SHA-256 over each file's path and hash: what the cache key takes of them


def _trusted(sig: tuple[int, ...] | None, trust_before: int) -> bool:
    return sig is None or (sig[1] < trust_before and sig[2] < trust_before)


def _listing_holds(args: list[str], old: _Stamp, trust_before: int) -> bool:
    """Is ``old.files`` what ``rule_paths(args)`` would list now? Yes when every rule path has
    its kind and every directory listed (and odd entry left out) its signature of then, each
    unchanged for RACY_NS before the stamp: a file added, removed or renamed changes its
    directory's mtime, a chmod its ctime."""
    if old.kinds != [_kind(a) for a in args]:
        return False
    then = old.sigs[:len(old.looked) * SIG.size]
    return all(_trusted(sig, trust_before) for sig in _unpack(then)) \
        and _packed_signatures(old.looked) == then


def file_digests(paths: Sequence[str | os.PathLike], stamp: str | None) -> bytes | None:
    """SHA-256 over every rule file's path and content hash, in load order (None when a file
    cannot be read), stat first.

    The stamp (``stamp``, a file in the cache) remembers the list of rule files with what it
    depends on (:func:`_listing_holds`), and per file its ``stat`` signature (size, mtime and
    ctime in ns, inode, device) and content hash; a file whose signature is unchanged is not
    read again. The ctime catches what keeps size and mtime (``touch -d``, ``cp -p``, an edit
    whose mtime was put back): the kernel sets it on every change and no call can set it. The
    trade-off is git's "racily clean" entries: on a file system with coarse timestamps, a file
    changed in the same tick as it was stamped could keep its signature; so a hash (or a
    directory's listing) is trusted only for a file whose mtime and ctime are at least RACY_NS
    older than the stamp (otherwise it is hashed again on every run until it is). What is left
    is an edit that forges the ctime (changing the clock) or a file system that reports no
    times, where the cache is as trustworthy as git's index.

    A warm start with all SigmaHQ stats its 3,141 files and 144 directories and compares the
    signatures as one list: 11-13 ms where walking the directories and comparing per file took
    21-23 ms (measured)."""
    old = _read_stamp(stamp) if stamp is not None else None
    trust_before = (old.stamped if old is not None else 0) - RACY_NS
    now = time.time_ns()  # before any stat: a file changed from now on is younger
    args = [normalized(p) for p in paths]
    reuse = old is not None and _listing_holds(args, old, trust_before)
    got = _digests(paths, args, old, trust_before, now, reuse)
    if got is None and reuse:  # a listed file became something else: list again
        got = _digests(paths, args, old, trust_before, now, False)
    if got is None:
        return None
    fresh, changed = got
    if stamp is not None and changed:
        _write_stamp(stamp, fresh)
    return fresh.digest


def _digests(paths: Sequence[str | os.PathLike], args: list[str], old: _Stamp | None,
             trust_before: int, now: int, reuse: bool) -> tuple[_Stamp, bool] | None:
    """The stamp as of ``now`` and whether to write it (it is not ``old``); None: a file cannot
    be read. ``reuse``: ``old``'s list of files holds."""
    if reuse and old is not None:
        kinds, looked, files = old.kinds, old.looked, old.files
        looked_sigs = _unpack(old.sigs[:len(looked) * SIG.size])
    else:
        listing: list[tuple[str, tuple[int, ...] | None]] = []
        kinds = [_kind(a) for a in args]
        files = rule_paths(paths, [], lambda path: listing.append((path, _looked_at(path))))
        looked, looked_sigs = [path for path, _ in listing], [sig for _, sig in listing]
    got = _signatures(files)
    if None in got:
        return None
    sigs: list[tuple[int, ...]] = got  # type: ignore[assignment]
    packed = _pack([*looked_sigs, *sigs])
    if old is not None and reuse and packed == old.sigs and old.newest < trust_before:
        return old, False
    known = {}
    if old is not None:
        step = len(old.looked) * SIG.size
        old_hashes = (old.hashes[i:i + 32] for i in range(0, len(old.hashes), 32))
        known = dict(zip(old.files, zip(_unpack(old.sigs[step:]), old_hashes, strict=True), strict=True))
    hashes: list[bytes] = []
    for f, sig in zip(files, sigs, strict=True):
        was = known.get(f)
        if was is not None and was[0] == sig and _trusted(sig, trust_before):
            hashes.append(was[1])
            continue
        h = content_hash(f)
        if h is None:
            return None
        hashes.append(h)
    digest = hashlib.sha256()
    for f, h in zip(files, hashes, strict=True):
        digest.update(b"file\x00" + os.fsencode(f) + b"\x00" + h)
    # written again also when only listed again: a listing too young to trust becomes trusted
    # once a stamp taken RACY_NS after its last change says it is unchanged
    return _Stamp(now, kinds, looked, files, packed, _newest([*looked_sigs, *sigs]), b"".join(hashes),
                  digest.digest()), True


def content_hash(path: str) -> bytes | None:
    """SHA-256 of a file's content; None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).digest()
    except OSError:
        return None


def _read_stamp(path: str) -> _Stamp | None:
    """The stamp at ``path``, or None (absent, not ours, damaged, another format): every file is
    hashed then. Its first line holds the format, the CRC-32 and the length of the small part
    (times, kinds, directories, digest); the file list, signatures and hashes after it are not
    checksummed (~1 ms for 400 kB): a damaged signature or path only fails to match a stat, and
    a damaged hash only makes a key no entry has."""
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_uid != os.getuid():
                return None
            data = fh.read()
        nl = data.find(b"\n")
        form, crc, size = data[:nl].decode("ascii").rsplit(" ", 2)
        start, end = nl + 1, nl + 1 + int(size)
        if nl < 0 or form != STAMP_FORMAT or len(data) < end or zlib.crc32(data[start:end]) != int(crc, 16):
            return None
        stamped, newest, kinds, looked, digest = marshal.loads(data[start:end])
        files, sigs, hashes = marshal.loads(memoryview(data)[end:])
        looked = looked.split("\0") if looked else []
        files = files.split("\0") if files else []
        stamp = _Stamp(stamped, kinds, looked, files, sigs, newest, hashes, digest)
    except Exception:  # noqa: BLE001 - absent, damaged, another format: every file is hashed
        return None
    if (not isinstance(stamped, int) or not isinstance(newest, int) or type(kinds) is not list
            or not all(type(k) is str for k in kinds) or type(sigs) is not bytes or type(hashes) is not bytes
            or type(digest) is not bytes or len(sigs) != SIG.size * (len(looked) + len(files))
            or len(hashes) != 32 * len(files)):
        return None
    return stamp


def _write_stamp(path: str, stamp: _Stamp) -> None:
    """Atomically, best effort: a stamp that cannot be written only costs the hashing."""
    small = marshal.dumps((stamp.stamped, stamp.newest, stamp.kinds, "\0".join(stamp.looked), stamp.digest))
    bulk = marshal.dumps(("\0".join(stamp.files), stamp.sigs, stamp.hashes))
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(f"{STAMP_FORMAT} {zlib.crc32(small):08x} {len(small)}\n".encode() + small + bulk)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


class RuleSource:
    """The pieces of a cached rule set, unpickled one rule at a time on demand.

    ``data[offsets[i]:offsets[i + 1]]`` is rule ``i``'s pySigma objects (CRC-32 ``crcs[i]``),
    ``data[a:b]`` with ``(a, b, crc) = preds[i][source]`` its compiled predicate on that source
    (``preds[i]`` None or without the source: not stored), and ``progs[i][source]`` the same
    way its program's parts (``compile.program_parts``). ``rule(i)`` is
    ``LoadedSigma.rules[i]`` of the load the entry was made from. Should a piece not match its
    CRC or fail to unpickle, the entry (``entry``: its path and ``(st_dev, st_ino)``) is removed
    if it is still the file this source reads, the rule files are loaded again once and used
    from then on, and predicates are compiled."""

    def __init__(self, data: Any, offsets: Sequence[int], paths: list[str | os.PathLike],
                 placeholders: dict[str, list[str]],
                 preds: list[dict[str, tuple[int, int, int]] | None] | None = None,
                 crcs: Sequence[int] | None = None, entry: tuple[str, tuple[int, int]] | None = None,
                 parts: tuple[Sequence[int], Sequence[int]] | None = None,
                 corrs: tuple[int, int, int] | None = None,
                 progs: list[dict[str, tuple[int, int, int]] | None] | None = None) -> None:
        self.data = data
        self.offsets = offsets
        self.paths = paths
        self.placeholders = placeholders
        self.preds = preds
        self.crcs = crcs
        self.entry = entry
        self.parts = parts
        self.corrs = corrs
        self.progs = progs
        self._reloaded: LoadedSigma | None = None

    def _piece(self, start: int, end: int, crc: int | None) -> bytes:
        data = self.data[start:end]
        if crc is not None and zlib.crc32(data) != crc:
            self._drop()
            raise ValueError("rule cache piece does not match its CRC")
        return data

    def _drop(self) -> None:
        """Remove the damaged entry (once), unless another process replaced it meanwhile."""
        entry, self.entry = self.entry, None
        if entry is None:
            return
        path, ident = entry
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == ident:
                os.unlink(path)
        except OSError:
            pass

    def rule(self, i: int) -> tuple[Any, str, list]:
        if self._reloaded is None:
            try:
                crc = self.crcs[i] if self.crcs is not None else None
                data = self._piece(self.offsets[i], self.offsets[i + 1], crc)
                with no_gc():
                    got = pickle.loads(data)  # noqa: S301
                if isinstance(got, tuple) and len(got) == 3:
                    return got
            except Exception:  # noqa: BLE001 - see the class docstring
                pass
            from scmwatch.sigma.load import load_sigma  # YAML and pySigma: only on this rare path

            self._drop()
            self._reloaded = load_sigma(self.paths)
        return self._reloaded.rules[i]

    def correlations(self) -> list[Any]:
        """The rule set's pySigma correlations as the entry stores them (``corrs``: their
        piece's span and CRC-32) or, should that piece be damaged, from the rule files loaded
        again."""
        if self._reloaded is None and self.corrs is not None:
            try:
                with no_gc():
                    got = pickle.loads(self._piece(*self.corrs))  # noqa: S301
                if isinstance(got, list):
                    return got
            except Exception:  # noqa: BLE001 - see the class docstring
                pass
        if self._reloaded is None:
            from scmwatch.sigma.load import load_sigma  # YAML and pySigma: only on this rare path

            self._drop()
            self._reloaded = load_sigma(self.paths)
        from scmwatch.sigma.ruleset import _runnable_correlations

        return _runnable_correlations(self._reloaded.correlations, [])[0]

    def stored(self, i: int) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]] | None:
        """Rule ``i``'s ``CompiledRule.stored_parts`` as the entry holds them (``parts``: their
        offsets and CRC-32s), or None when they are not there or unreadable (the caller
        compiles the rule again)."""
        if self.parts is None or self._reloaded is not None:
            return None
        offsets, crcs = self.parts
        try:
            got = pickle.loads(self._piece(offsets[i], offsets[i + 1], crcs[i]))  # noqa: S301
        except Exception:  # noqa: BLE001 - see the class docstring
            self._drop()
            return None
        return got if isinstance(got, tuple) and len(got) == 2 else None

    def program(self, i: int, source: str) -> tuple[str, dict[str, Any], tuple[str, ...]] | None:
        """Rule ``i``'s program on ``source`` as ``compile.program_parts`` gave it when the entry
        was made, or None when it is not stored or unreadable (the caller reads the predicate)."""
        spans = self.progs[i] if self.progs is not None and i < len(self.progs) else None
        span = spans.get(source) if spans is not None else None
        if span is None or self._reloaded is not None:
            return None
        try:
            got = pickle.loads(self._piece(*span))  # noqa: S301 - the checksum holds
        except Exception:  # noqa: BLE001 - see the class docstring
            self._drop()
            return None
        if type(got) is not tuple or len(got) != 3 or type(got[0]) is not str or type(got[1]) is not dict \
                or type(got[2]) is not tuple:
            return None
        return got

    def predicates(self, i: int, sources: Sequence[str]) -> dict[str, Any] | None:
        """Rule ``i``'s ``{source label: predicate}`` for ``sources`` as compiled when the entry
        was made, or None when one of them is not stored or unreadable (the caller compiles the
        rule)."""
        spans = self.preds[i] if self.preds is not None and i < len(self.preds) else None
        if spans is None or self._reloaded is not None:
            return None
        out = {}
        for source in sources:
            span = spans.get(source)
            if span is None:
                return None
            try:
                out[source] = predpickle.loads(self._piece(*span))
            except Exception:  # noqa: BLE001 - see the class docstring
                self._drop()
                return None
        return out


def _skeleton(fd: int, at: int, length: int, check: int) -> tuple | None:
    """The entry's skeleton tuple, unpickled from the file's pages as mapped (None: its CRC-32 is
    not ``check``). Mapped, not read: reading it allocated a 4.8 MB copy (all SigmaHQ), ~1,200
    page faults of a fresh process at ~3 us each on this kind of VM (a 2-event hunt takes
    ~10,000 in all), where the page cache's pages come in ~16 per fault. Safe because entries
    are only ever replaced (``os.replace``), never truncated in place, and the size was checked
    against the header before; nothing of the mapping is kept."""
    with mmap.mmap(fd, at + length, prot=mmap.PROT_READ) as mm, memoryview(mm) as view:
        skel = view[at:]
        try:
            if zlib.crc32(skel) != check:
                return None
            with no_gc():
                return pickle.loads(skel)  # noqa: S301 - the checksum holds
        finally:
            skel.release()


class _FileRegion:
    """The rule part of an open entry: ``region[a:b]`` reads those bytes with ``os.pread``
    (no shared file position, so forked ``--jobs`` workers may read at once). The open file
    stays valid when the entry is replaced or pruned meanwhile; it is closed with the region."""

    def __init__(self, fd: int, base: int) -> None:
        self.fd = fd
        self.base = base

    def __getitem__(self, s: slice) -> bytes:
        n = s.stop - s.start
        data = os.pread(self.fd, n, self.base + s.start)
        if len(data) != n:
            raise EOFError("cache entry shorter than its table")
        return data

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def read_entry(key: str) -> tuple[Any, RuleSource] | None:
    """The cached skeleton (a ``RuleSet`` without predicates) and its rule source, or None."""
    root = cache_root()
    if root is None:
        return None
    path = os.path.join(root, "rules", key + ".pickle")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    region = _FileRegion(fd, 0)  # closes the file whatever happens next
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            return None
        try:  # the access time says "recently used" (pruning keeps it); the mtime stays
            os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
        except OSError:
            pass
        head = os.pread(fd, len(FORMAT) + HEADER.size, 0)
        if not head.startswith(FORMAT) or len(head) != len(FORMAT) + HEADER.size:
            return None
        skel_len, rules_len, check = HEADER.unpack_from(head, len(FORMAT))
        region.base = start = len(head) + skel_len
        if st.st_size != start + rules_len:
            return None
        got = _skeleton(fd, len(head), skel_len, check)
        if got is None:
            return None
        skeleton, offsets, crcs, preds, progs, paths, placeholders, parts, corrs = got
    except Exception:  # noqa: BLE001 - absent, truncated, garbage, another build: load again
        return None
    entry = (path, (st.st_dev, st.st_ino))
    return skeleton, RuleSource(region, offsets, paths, placeholders, preds, crcs, entry, parts, corrs, progs)


def _unit_pieces(skeleton: Any, count: int, at: int, dump: Callable[[Any], bytes | None]
                 ) -> tuple[list[bytes], list[dict[str, tuple[int, int, int]] | None]]:
    """Each rule's units as ``dump(unit)`` gives them, and their spans from ``at`` with their
    CRC-32 by source; a unit that ``dump`` gives None for or cannot store is left out (what
    reads it then makes it from the rule instead)."""
    pieces: list[bytes] = []
    spans: list[dict[str, tuple[int, int, int]] | None] = [None] * count
    for cr in skeleton.rules:
        i = getattr(cr, "_source_index", None)
        if i is None or not 0 <= i < count:
            continue
        got: dict[str, tuple[int, int, int]] = {}
        for u in cr.units:
            try:
                data = dump(u)
            except Exception:  # noqa: BLE001 - not storable: see above
                continue
            if data is None:
                continue
            got[u.source] = (at, at + len(data), zlib.crc32(data))
            pieces.append(data)
            at += len(data)
        spans[i] = got or None
    return pieces, spans


def _program_pieces(skeleton: Any, count: int,
                    at: int) -> tuple[list[bytes], list[dict[str, tuple[int, int, int]] | None]]:
    """Each rule's predicate per source as its ``Prog``'s parts (``compile.program_parts``)
    plainly pickled, where it has a program (read by :meth:`RuleSource.program`; without one
    the whole predicate is read)."""
    from scmwatch.sigma.compile import program_parts  # writing only

    def dump(u: Any) -> bytes | None:
        parts = program_parts(u.pred)
        return None if parts is None else pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)

    return _unit_pieces(skeleton, count, at, dump)


def _predicate_pieces(skeleton: Any, count: int,
                      at: int) -> tuple[list[bytes], list[dict[str, tuple[int, int, int]] | None]]:
    """Each rule's compiled predicate per source pickled (``predpickle``; one that is not
    storable is compiled on first use instead)."""
    by_ref = predpickle.module_attributes()
    return _unit_pieces(skeleton, count, at, lambda u: predpickle.dumps(u.pred, by_ref))


def _table(pieces: list[bytes], at: int) -> tuple[array, array]:
    """Where ``pieces``, laid end to end from ``at``, start and end (piece ``i`` is
    ``offsets[i]:offsets[i + 1]``), and their CRC-32s."""
    offsets = array("Q", [at])
    for p in pieces:
        offsets.append(offsets[-1] + len(p))
    return offsets, array("I", [zlib.crc32(p) for p in pieces])


def _stored_pieces(skeleton: Any, count: int, at: int) -> tuple[list[bytes], tuple[array, array]]:
    """Each rule's ``stored_parts`` pickled, and their offsets from ``at`` (rule ``i``'s piece
    is ``offsets[i]:offsets[i + 1]``, empty for an index no rule has) with their CRC-32s."""
    by_index: dict[int, bytes] = {}
    for cr in skeleton.rules:
        i = getattr(cr, "_source_index", None)
        if i is not None and 0 <= i < count:
            by_index[i] = pickle.dumps(cr.stored_parts(), protocol=pickle.HIGHEST_PROTOCOL)
    pieces = [by_index.get(i, b"") for i in range(count)]
    return pieces, _table(pieces, at)


class _SkeletonPickler(pickle.Pickler):
    """Pickles rules and units in the state the skeleton stores (``entry_state``), with equal
    strings, tuples and frozensets in it as one object each, which the pickle's memo then
    stores once: the rules' levels and statuses, the units' sources, keys and literal fields.
    The skeleton of all SigmaHQ went from 23,273 strings and 3,466 frozensets, each unpickled
    as an object of its own at every start, to 9,682 and 318 (925 -> 752 KB); it unpickled in
    3.9 instead of 5.4-6.4 ms in a warm process, and an x5 hunt's start ran 472M instead of
    490M instructions before its worker forked (callgrind)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._same: dict[Any, Any] = {}
        self._made: set[int] = set()  # ids of the tuples and frozensets in _same

    def reducer_override(self, obj: Any) -> Any:
        state = getattr(type(obj), "entry_state", None)
        if state is None:
            return NotImplemented
        got = state(obj)
        if type(got) is dict:
            got = {k: self._shared(v) for k, v in got.items()}
        elif type(got) is tuple:
            got = tuple(map(self._shared, got))
        return copyreg.__newobj__, (type(obj),), got

    def _shared(self, value: Any) -> Any:
        """``value`` as the first equal one seen, when it is a string, or a tuple or frozenset of
        such values, numbers and None; a list of only such values as a list of the shared ones;
        anything else as it is."""
        kind = type(value)
        if kind is str:
            return self._same.setdefault(value, value)
        if kind is list:
            items = list(map(self._shared, value))
            return items if value and all(self._plain(i) for i in items) else value
        if kind is tuple or kind is frozenset:
            items = list(map(self._shared, value))
            if all(self._plain(i) for i in items):
                # 1 and True are equal, not the same; a nested tuple or set is a shared one, so
                # its identity says what it holds, types included
                typed = tuple((type(i), i if type(i) in _PLAIN else id(i)) for i in items)
                got = self._same.setdefault((kind, typed if kind is tuple else frozenset(typed)), kind(items))
                self._made.add(id(got))  # held by _same: the id stays its own
                return got
        return value

    def _plain(self, item: Any) -> bool:
        """Whether ``item`` (as :meth:`_shared` gave it) may be part of a shared value: a string,
        number or None, or a tuple or frozenset that is itself shared."""
        return type(item) in _PLAIN or id(item) in self._made


_PLAIN = frozenset({str, int, type(None), bool})


def write_entry(key: str, skeleton: Any, loaded: LoadedSigma, paths: list[str | os.PathLike],
                placeholders: dict[str, list[str]]) -> None:
    """Store ``skeleton`` (pickling a ``RuleSet`` leaves predicates and pySigma rules out), every
    rule of ``loaded`` and the predicates ``skeleton``'s rules were compiled to. Best effort: a
    cache that cannot be written is skipped."""
    import pickletools  # here: only writing needs it (~0.5 ms of every start otherwise)

    root = cache_root()
    if root is None:
        return
    cache = os.path.join(root, "rules")
    tmp = None
    try:
        pieces = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in loaded.rules]
        offsets, crcs = _table(pieces, 0)
        pred_pieces, spans = _predicate_pieces(skeleton, len(pieces), offsets[-1])
        at = offsets[-1] + sum(map(len, pred_pieces))
        prog_pieces, progs = _program_pieces(skeleton, len(pieces), at)
        part_pieces, parts = _stored_pieces(skeleton, len(pieces), at + sum(map(len, prog_pieces)))
        corr_piece = pickle.dumps(list(skeleton.correlations), protocol=pickle.HIGHEST_PROTOCOL)
        at = parts[0][-1]
        corrs = (at, at + len(corr_piece), zlib.crc32(corr_piece))
        rules = b"".join(pieces + pred_pieces + prog_pieces + part_pieces + [corr_piece])
        # without the memo entries nothing fetches again (``pickletools.optimize``, ~0.27 s of a
        # cold load of all SigmaHQ): its skeleton then unpickled in 12.4 instead of 18.1 ms, the
        # first load of a process (CPU, 4 alternate runs)
        buf = io.BytesIO()
        _SkeletonPickler(buf).dump((skeleton, offsets, crcs, spans, progs,
                                    [str(p) for p in paths], placeholders, parts, corrs))
        skel = pickletools.optimize(buf.getvalue())
        os.makedirs(cache, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(FORMAT + HEADER.pack(len(skel), len(rules), zlib.crc32(skel)))
            fh.write(skel)
            fh.write(rules)
        os.replace(tmp, os.path.join(cache, key + ".pickle"))  # atomic: readers see old or new
        tmp = None
        _prune(cache)
    except (OSError, pickle.PicklingError, RecursionError, TypeError, AttributeError):
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _prune(cache: str) -> None:
    """Keep the KEEP most recently used entries, and as many stamps: every edit of a rule file,
    every new rule set and every upgrade makes a new entry (each list of rule paths a stamp). An
    entry removed under a concurrent reader is only a miss for it (an open file stays readable)."""
    entries: dict[str, list[tuple[int, str]]] = {".pickle": [], STAMP_SUFFIX: []}
    with os.scandir(cache) as it:
        for e in it:
            kind = os.path.splitext(e.name)[1]
            if kind in entries:
                try:
                    entries[kind].append((e.stat().st_atime_ns, e.path))
                except OSError:
                    continue
    for found in entries.values():
        for _, path in sorted(found, reverse=True)[KEEP:]:
            try:
                os.unlink(path)
            except OSError:
                pass
