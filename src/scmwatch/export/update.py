"""``scmwatch rules update``: install a SigmaHQ rule release into the user's data directory.

A release package (the rule zip SigmaHQ attaches to each release) is downloaded, or read from a
file, into a temporary file beside the installed sets and checked before anything changes:

* size: at most :data:`MAX_DOWNLOAD` bytes downloaded, :data:`MAX_UNPACKED` bytes and
  :data:`MAX_MEMBERS` members unpacked (a zip bomb stops at the limit, not at the disk's end);
  a download shorter than its ``Content-Length`` is an interrupted download;
* the archive: a readable zip whose members pass their CRC check;
* every member name: relative, no ``..``, no drive or backslash, no symbolic link;
* every rule loads with pySigma (the loader ``hunt`` uses); one that does not fails the update.

The rule files are unpacked into a new directory ``rules/sets/<sha256 prefix>``; the name
``rules/sigmahq`` is a symbolic link switched with one ``os.replace``, so a reader sees the old
set or the new one, never half of either, and a failed update leaves the previous set in place.
The version (release tag from the URL, else the sha256 prefix), source, channel, digest and rule
count go to ``rules/sigmahq.json``.

The data directory is ``$SCMWATCH_DATA_DIR``, else ``$XDG_DATA_HOME/scmwatch``, else
``~/.local/share/scmwatch``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import zipfile

SET_NAME = "sigmahq"
RELEASE_URL = "https://github.com/SigmaHQ/sigma/releases/latest/download/{asset}"
CHANNELS = {"core": "sigma_core.zip", "core+": "sigma_core+.zip", "all": "sigma_all_rules.zip"}
MAX_DOWNLOAD = 64 << 20  # SigmaHQ's all-rules zip is ~4 MB; room for growth, not for abuse
MAX_UNPACKED = 256 << 20
MAX_MEMBERS = 20000
TIMEOUT = 60.0
RULE_SUFFIXES = (".yml", ".yaml")
_TAG = re.compile(r"/download/([^/]+)/[^/]+$")


class UpdateError(Exception):
    """The update failed; the previously installed set is unchanged."""


class RulesNotInstalled(Exception):
    """``--rules sigmahq`` before any ``rules update``."""


@dataclass
class Installed:
    """The record of the installed SigmaHQ set (``rules/sigmahq.json``)."""

    version: str
    source: str
    channel: str | None
    sha256: str
    rule_files: int
    rules: int
    installed_at: str
    path: str


def data_dir() -> Path:
    env = os.environ.get("SCMWATCH_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "scmwatch"


def rules_root() -> Path:
    return data_dir() / "rules"


def installed() -> Installed | None:
    """The recorded installed set, or None."""
    try:
        data = json.loads((rules_root() / f"{SET_NAME}.json").read_text(encoding="utf-8"))
        return Installed(**data)
    except (OSError, ValueError, TypeError):
        return None


def resolve_rule_paths(paths: Iterable[str], builtin: str) -> list[str]:
    """Rule arguments with the named sets replaced: ``builtin`` and ``sigmahq``."""
    out: list[str] = []
    for p in paths:
        if p == "builtin":
            out.append(builtin)
        elif p == SET_NAME:
            link = rules_root() / SET_NAME
            if not link.is_dir():
                raise RulesNotInstalled(f"no SigmaHQ rules installed under {rules_root()}: run "
                                        "'scmwatch rules update' first")
            out.append(str(link))
        else:
            out.append(p)
    return out


def _tag(source: str) -> str | None:
    m = _TAG.search(source)
    return m.group(1) if m and m.group(1) != "latest" else None


def fetch(source: str, dest: Path, progress: Callable[[int, int | None], None] | None = None) -> None:
    """Copy ``source`` (http(s) URL, file URL or path) to ``dest``, at most MAX_DOWNLOAD bytes."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source):
        if not source.startswith(("http://", "https://", "file://")):
            raise UpdateError(f"unsupported source scheme: {source.split(':', 1)[0]}")
        # imported here: urllib.request (http.client, ssl, email) costs ~10 ms, and `hunt`
        # imports this module for the rule-set names alone
        import urllib.error
        import urllib.request

        try:
            resp = urllib.request.urlopen(source, timeout=TIMEOUT)  # noqa: S310 (scheme checked above)
        except urllib.error.HTTPError as exc:
            raise UpdateError(f"download failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise UpdateError(f"download failed: {getattr(exc, 'reason', exc)}") from exc
        with resp:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > MAX_DOWNLOAD:
                raise UpdateError(f"package is {expected:,} bytes, over the {MAX_DOWNLOAD:,} byte limit")
            _copy(resp, dest, expected, progress)
        return
    try:
        size = os.path.getsize(source)
        if size > MAX_DOWNLOAD:
            raise UpdateError(f"package is {size:,} bytes, over the {MAX_DOWNLOAD:,} byte limit")
        with open(source, "rb") as fh:
            _copy(fh, dest, size, progress)
    except OSError as exc:
        raise UpdateError(f"cannot read {source}: {exc.strerror or exc}") from exc


def _copy(src, dest: Path, expected: int | None, progress) -> None:
    got = 0
    try:
        with open(dest, "wb") as out:
            while chunk := src.read(1 << 16):
                got += len(chunk)
                if got > MAX_DOWNLOAD:
                    raise UpdateError(f"package exceeds the {MAX_DOWNLOAD:,} byte limit")
                out.write(chunk)
                if progress:
                    progress(got, expected)
    except UpdateError:
        raise
    except Exception as exc:  # connection reset, http.client.IncompleteRead, timeout: all "interrupted"
        raise UpdateError(f"download interrupted after {got:,} bytes: {type(exc).__name__}") from exc
    if expected is not None and got != expected:
        raise UpdateError(f"download interrupted: {got:,} of {expected:,} bytes")


def _safe_name(name: str) -> PurePosixPath:
    if "\\" in name or "\x00" in name or re.match(r"^[A-Za-z]:", name):
        raise UpdateError(f"unsafe member name in package: {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        raise UpdateError(f"member escapes the package directory (path traversal): {name!r}")
    return p


def check_zip(path: Path) -> list[zipfile.ZipInfo]:
    """The rule members of a verified package (see module doc); raises UpdateError."""
    import zipfile  # here: `hunt` imports this module for the rule-set names alone

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpdateError(f"not a valid zip package: {exc}") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UpdateError(f"package has {len(infos):,} members, over the {MAX_MEMBERS:,} limit")
        total = 0
        rules = []
        for info in infos:
            _safe_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UpdateError(f"package member is a symbolic link: {info.filename!r}")
            total += info.file_size
            if total > MAX_UNPACKED:
                raise UpdateError(f"package unpacks to over {MAX_UNPACKED:,} bytes")
            if not info.is_dir() and info.filename.lower().endswith(RULE_SUFFIXES):
                rules.append(info)
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise UpdateError(f"corrupt zip package: {exc}") from exc
        if bad is not None:
            raise UpdateError(f"corrupt zip package: bad CRC in {bad!r}")
        if not rules:
            raise UpdateError("package holds no Sigma rule files (.yml)")
        return rules


def _unpack(path: Path, members: list[zipfile.ZipInfo], dest: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        for info in members:
            target = dest.joinpath(*_safe_name(info.filename).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 16):
                    written += len(chunk)
                    if written > info.file_size:  # a lying header: stop at what it declared
                        raise UpdateError(f"member {info.filename!r} is larger than declared")
                    out.write(chunk)


def update(source: str | None = None, channel: str = "core",
           progress: Callable[[int, int | None], None] | None = None) -> Installed:
    """Fetch, verify and install a release package; raises UpdateError (nothing changed)."""
    from scmwatch.sigma.load import load_sigma

    if channel not in CHANNELS:
        raise UpdateError(f"unknown channel '{channel}' (one of {', '.join(CHANNELS)})")
    src = source or RELEASE_URL.format(asset=CHANNELS[channel])
    root = rules_root()
    sets = root / "sets"
    try:
        sets.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UpdateError(f"cannot create {sets}: {exc.strerror or exc}") from exc
    work = Path(tempfile.mkdtemp(prefix=".update-", dir=root))
    try:
        package = work / "package.zip"
        fetch(src, package, progress)
        members = check_zip(package)
        digest = hashlib.sha256(package.read_bytes()).hexdigest()
        unpacked = work / "set"
        unpacked.mkdir()
        _unpack(package, members, unpacked)
        loaded = load_sigma([unpacked])
        if loaded.rejected:
            path, reason = loaded.rejected[0]
            rel = os.path.relpath(path, unpacked) if path.startswith(str(unpacked)) else path
            raise UpdateError(f"{len(loaded.rejected)} rule(s) do not load, e.g. {rel}: {reason}")
        rules = len(loaded.rules) + len(loaded.correlations)
        final = sets / digest[:16]
        if final.exists():
            shutil.rmtree(final)
        os.replace(unpacked, final)
        link = root / SET_NAME
        tmp_link = root / f".{SET_NAME}.link-{os.getpid()}"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(os.path.join("sets", final.name), tmp_link)
        os.replace(tmp_link, link)  # the switch: atomic on POSIX
        record = Installed(
            version=_tag(src) or f"sha256:{digest[:16]}", source=src, channel=None if source else channel,
            sha256=digest, rule_files=len(members), rules=rules,
            installed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), path=str(final))
        tmp_rec = root / f".{SET_NAME}.json.tmp"
        tmp_rec.write_text(json.dumps(asdict(record), indent=1), encoding="utf-8")
        os.replace(tmp_rec, root / f"{SET_NAME}.json")
        for old in sets.iterdir():
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
        return record
    except OSError as exc:
        raise UpdateError(f"install failed: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
