"""The spool: the local fragmented-MP4 file the encoder writes, read while it grows.

The encoder appends fragments and, after each one is complete on disk, reports how many bytes
from the start of the file are durable (`SpoolProgress.advance`, callable from the media thread
or any other); when the file is closed it reports the final size (`finish`). Bytes below the
reported watermark must never change afterwards: the muxer runs without options that seek back
(no `faststart`, no global `sidx`). The uploader reads only below the watermark, in order, and
hashes as it reads; before the spool may be removed, `rehash` checks that the file still is what
was uploaded.

Back-pressure: the reader reads a chunk only when its consumer asks for one, so a slow store
slows the reading of the spool, never the media thread, and memory stays bounded by the chunks
in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from recorder.errors import StorageError

log = logging.getLogger(__name__)

REHASH_BLOCK_BYTES = 4 * 1024 * 1024


class SpoolProgress:
    """How much of the spool is durable, reported by the encoder and awaited by the uploader.

    Thread-safe: `advance` and `finish` may be called from any thread; `wait_until` is awaited on
    an event loop and woken through `call_soon_threadsafe`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._durable_bytes = 0
        self._finished = False
        self._stored_bytes = 0  # reported by the sink: how much is at the final place already
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @classmethod
    def complete(cls, size_bytes: int) -> SpoolProgress:
        """The progress of a spool that is already closed (recovery, tests)."""
        progress = cls()
        progress.finish(size_bytes)
        return progress

    @property
    def durable_bytes(self) -> int:
        return self._durable_bytes

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def stored_bytes(self) -> int:
        """How many bytes the sink has stored so far (sent parts, copied chunks)."""
        return self._stored_bytes

    @property
    def upload_lag_bytes(self) -> int:
        """Durable bytes not stored yet: how far the upload is behind the recording."""
        return max(0, self._durable_bytes - self._stored_bytes)

    def stored(self, size_bytes: int) -> None:
        """The sink stored `size_bytes` more of the spool (for the upload-lag metric only)."""
        with self._lock:
            self._stored_bytes += size_bytes

    def advance(self, durable_bytes: int) -> None:
        """The first `durable_bytes` of the file are complete fragments and will not change."""
        with self._lock:
            if self._finished or durable_bytes <= self._durable_bytes:
                return  # stale or repeated report: the watermark only rises
            self._durable_bytes = durable_bytes
        self._wake()

    def finish(self, final_size_bytes: int | None = None) -> None:
        """The file is closed: `final_size_bytes` (default: the watermark) is all there is."""
        with self._lock:
            if self._finished:
                return
            final = self._durable_bytes if final_size_bytes is None else final_size_bytes
            if final < self._durable_bytes:
                raise ValueError(
                    f"final size {final} is below the durable watermark {self._durable_bytes}"
                )
            self._durable_bytes = final
            self._finished = True
        self._wake()

    async def wait_until(self, min_bytes: int) -> tuple[int, bool]:
        """Wait until at least `min_bytes` are durable or the file is closed.

        Returns `(durable_bytes, finished)` at that moment.
        """
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._durable_bytes >= min_bytes or self._finished:
                    return self._durable_bytes, self._finished
                event = asyncio.Event()
                self._waiters.append((loop, event))
            await event.wait()

    async def wait_finished(self) -> int:
        """Wait until the file is closed; its final size."""
        durable, _ = await self.wait_until(2**63)
        return durable

    def _wake(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(event.set)


@dataclass(frozen=True, slots=True)
class SpoolChunk:
    """`data` read from `offset` of the spool, with its own digests (for parts)."""

    offset: int
    data: bytes
    sha256: bytes
    md5: bytes


class SpoolReader:
    """Reads the durable bytes of a spool in order, in chunks, hashing the whole as it goes."""

    def __init__(self, path: Path, progress: SpoolProgress) -> None:
        self.path = path
        self.progress = progress
        self._sha256 = hashlib.sha256()
        self.bytes_read = 0

    @property
    def sha256_hex(self) -> str:
        """The SHA-256 of everything read so far."""
        return self._sha256.hexdigest()

    async def chunks(self, size_bytes: int) -> AsyncIterator[SpoolChunk]:
        """Chunks of exactly `size_bytes` as they become durable, then the shorter tail.

        An empty spool gives one empty chunk, so a store always receives an object.
        """
        if size_bytes <= 0:
            raise ValueError(f"chunk size must be positive, not {size_bytes}")
        offset = 0
        while True:
            durable, finished = await self.progress.wait_until(offset + size_bytes)
            if durable >= offset + size_bytes:
                length = size_bytes
            elif finished:
                length = durable - offset
                if length == 0 and offset > 0:
                    return
            else:  # woken without enough bytes: wait again
                continue
            chunk = await asyncio.to_thread(self._read, offset, length)
            offset += length
            yield chunk
            if finished and offset >= durable:
                return

    def _read(self, offset: int, length: int) -> SpoolChunk:
        data = read_range(self.path, offset, length)
        self._sha256.update(data)
        self.bytes_read += len(data)
        return SpoolChunk(
            offset=offset,
            data=data,
            sha256=hashlib.sha256(data).digest(),
            md5=hashlib.md5(data, usedforsecurity=False).digest(),
        )


def read_range(path: Path, offset: int, length: int) -> bytes:
    """`length` bytes of `path` at `offset`; `StorageError` if the file is shorter than that."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read(length)
    except OSError as error:
        raise StorageError(f"cannot read the spool {path}: {error}", local_path=str(path)) from None
    if len(data) != length:
        raise StorageError(
            f"the spool {path} holds {offset + len(data)} bytes, fewer than the "
            f"{offset + length} reported durable",
            local_path=str(path),
        )
    return data


def rehash(path: Path, limit_bytes: int | None = None) -> tuple[int, str]:
    """`(size, sha256 hex)` of the file as it is now on disk, or of its first `limit_bytes`.

    Blocking: run it in a thread.
    """
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while True:
            want = (
                REHASH_BLOCK_BYTES
                if limit_bytes is None
                else min(REHASH_BLOCK_BYTES, limit_bytes - size)
            )
            block = file.read(want) if want > 0 else b""
            if not block:
                break
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


async def check_unchanged(path: Path, *, size_bytes: int, sha256_hex: str) -> None:
    """`StorageError` unless the file on disk still starts with the bytes that were stored.

    Catches a spool rewritten below the watermark (a muxer that seeks back) or cut short, which
    would make the stored object differ from the local copy that is about to be removed. Bytes
    past `size_bytes` (the incomplete fragment a dead worker left) are not part of the recording.
    """
    try:
        size, digest = await asyncio.to_thread(rehash, path, size_bytes)
    except OSError as error:
        raise StorageError(
            f"cannot re-read the spool {path}: {error}", local_path=str(path)
        ) from None
    if size != size_bytes or digest != sha256_hex:
        raise StorageError(
            f"the spool {path} changed while it was stored (its first {size_bytes} bytes differ "
            "from what was stored): the stored copy is not trusted",
            local_path=str(path),
        )


def spool_size(path: Path) -> int:
    """The spool's size on disk, or `StorageError` naming it."""
    try:
        return os.stat(path).st_size
    except OSError as error:
        raise StorageError(f"cannot find the spool {path}: {error}", local_path=str(path)) from None
