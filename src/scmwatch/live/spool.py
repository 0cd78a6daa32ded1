"""The durable landing place of events received over the network: NDJSON segment files.

A listener acknowledges a batch only after :meth:`Spool.append` returned, that is after the
bytes are written *and fsynced* to ``STATE_DIR/spool/<name>/<sequence>.ndjson``. The watcher then
follows the spool directory like any other followed directory (positions checkpointed as for a
file), so a received event is either on disk before the shipper hears "200" or the shipper
retries it: nothing acknowledged is lost across a crash.

Group commit: appends that arrive while an fsync is running are written together and share the
next fsync, so many concurrent senders cost one fsync per round, not one each.

Every line in a segment is one complete JSON object (listeners validate before appending).
A crash in the middle of a ``write`` can leave a torn last line (never acknowledged); opening the
spool again cuts it off, so a follower never sees half an object as an event.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

SEGMENT_BYTES = 64 << 20  # a new segment file after this many bytes
_NAME = re.compile(r"^(\d{12})\.ndjson$")


@dataclass(slots=True)
class SpoolStats:
    appends: int = 0  # batches made durable
    lines: int = 0
    bytes: int = 0
    fsyncs: int = 0
    segments: int = 0  # segment files created by this process
    errors: int = 0  # appends that failed (disk full, I/O error)


def segment_name(seq: int) -> str:
    return f"{seq:012d}.ndjson"


def segments(directory: str) -> list[str]:
    """The segment files of a spool directory, oldest first (full paths)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in sorted(n for n in names if _NAME.match(n))]


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_torn_tail(path: str) -> int:
    """Truncate ``path`` after its last newline; returns the bytes removed."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        pos = size
        block = 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            data = f.read(pos - start)
            nl = data.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        if keep != size:
            f.truncate(keep)
            os.fsync(f.fileno())
    return size - keep


class Spool:
    """Append-only, fsynced NDJSON segments in one directory (one spool per listener).

    Used from one asyncio loop: :meth:`append` is a coroutine; the blocking write and fsync run
    in the loop's default executor so the loop keeps accepting connections meanwhile.
    """

    def __init__(self, directory: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.stats = SpoolStats()
        self.torn_bytes = 0  # cut from the last segment when opened (an unacknowledged torn write)
        os.makedirs(directory, exist_ok=True)
        existing = segments(directory)
        if existing:
            last = existing[-1]
            self.torn_bytes = cut_torn_tail(last)
            self._seq = int(os.path.basename(last)[:12])
            self._path = last
        else:
            self._seq = 0
            self._path = os.path.join(directory, segment_name(0))
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size
        if not existing:
            self.stats.segments += 1
            _fsync_dir(directory)
        self._pending: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        """The segment being appended to."""
        return self._path

    async def append(self, lines: list[bytes]) -> None:
        """Make ``lines`` (each one JSON object, without newline) durable; raises OSError if the
        disk refused them (then nothing of the batch was acknowledged)."""
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((data, len(lines), fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await loop.run_in_executor(None, self._write_sync, [b[0] for b in batch])
            except OSError as exc:
                self.stats.errors += len(batch)
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for data, n, fut in batch:
                self.stats.appends += 1
                self.stats.lines += n
                self.stats.bytes += len(data)
                if not fut.done():
                    fut.set_result(None)

    def _write_sync(self, blobs: list[bytes]) -> None:
        if self._size >= self.segment_bytes:
            self._roll()
        data = b"".join(blobs)
        start = self._size
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except OSError:
            # nothing of this round is acknowledged: cut what may have been written of it, so a
            # follower never reads events the senders will send again
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            raise
        self.stats.fsyncs += 1
        self._size = start + len(data)

    def _roll(self) -> None:
        os.close(self._fd)
        self._seq += 1
        self._path = os.path.join(self.directory, segment_name(self._seq))
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        self.stats.segments += 1
        _fsync_dir(self.directory)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def prune(self, consumed_up_to: str) -> int:
        """Delete the segments before ``consumed_up_to`` (a segment path the follower has moved
        past), never the one being appended to; returns how many were deleted."""
        keep = os.path.basename(consumed_up_to)
        n = 0
        for path in segments(self.directory):
            name = os.path.basename(path)
            if name >= keep or path == self._path:
                break
            os.unlink(path)
            n += 1
        return n
