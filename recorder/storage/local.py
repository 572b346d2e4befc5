"""The local directory sink: the same keys under `RECORDER_OUTPUT_DIR`, written atomically.

Used when no bucket is configured (local runs, the demo, small deployments with a shared volume).
The spool is copied as it grows into a hidden temporary file next to the final name, and only
when the recording stops and the copy is complete is it fsynced and renamed into place, so a
reader never sees a partial recording under the final name. Verified like the S3 sink: the
final file is re-read and must hash to what was copied, and the spool must not have changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO

from recorder.errors import StorageError
from recorder.storage.atomic import fsync_directory, temp_path_for, write_atomically
from recorder.storage.keys import content_type_for, local_path_for
from recorder.storage.sink import StoredObject
from recorder.storage.spool import SpoolProgress, SpoolReader, check_unchanged, rehash

log = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 1024 * 1024


class LocalSink:
    """Stores recordings as files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def description(self) -> str:
        return f"directory {os.fspath(self.root)!r}"

    async def store_spool(
        self,
        spool: Path,
        progress: SpoolProgress,
        key: str,
        *,
        content_type: str,
        hurry: threading.Event | None = None,  # nothing to retry locally
    ) -> StoredObject:
        final = local_path_for(self.root, key)
        temp = temp_path_for(final)
        reader = SpoolReader(spool, progress)
        try:
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            file = await asyncio.to_thread(temp.open, "xb")
            try:
                async for chunk in reader.chunks(COPY_CHUNK_BYTES):
                    await asyncio.to_thread(file.write, chunk.data)
                    progress.stored(len(chunk.data))
                await asyncio.to_thread(_flush_and_sync, file)
            finally:
                file.close()
            await check_unchanged(spool, size_bytes=reader.bytes_read, sha256_hex=reader.sha256_hex)
            await asyncio.to_thread(_publish, temp, final)
            await _check_file(final, size_bytes=reader.bytes_read, sha256_hex=reader.sha256_hex)
        except OSError as error:
            raise StorageError(f"could not store {final}: {error}", local_path=str(spool)) from None
        except StorageError as error:
            raise StorageError(
                f"could not store {final}: {error.message}", local_path=str(spool)
            ) from error
        finally:
            temp.unlink(missing_ok=True)
        log.info("stored %s: %d bytes, verified by size, sha256, spool", final, reader.bytes_read)
        return StoredObject(
            key=key,
            url=final.as_uri(),
            size_bytes=reader.bytes_read,
            sha256_hex=reader.sha256_hex,
            content_type=content_type,
            verified=("size", "sha256", "spool"),
        )

    async def store_bytes(self, data: bytes, key: str, *, content_type: str) -> StoredObject:
        final = local_path_for(self.root, key)
        sha256_hex = hashlib.sha256(data).hexdigest()
        try:
            await asyncio.to_thread(write_atomically, final, data)
            await _check_file(final, size_bytes=len(data), sha256_hex=sha256_hex)
        except OSError as error:
            raise StorageError(f"could not store {final}: {error}") from None
        return StoredObject(
            key=key,
            url=final.as_uri(),
            size_bytes=len(data),
            sha256_hex=sha256_hex,
            content_type=content_type,
            verified=("size", "sha256"),
        )

    async def find(self, key: str) -> StoredObject | None:
        final = local_path_for(self.root, key)
        try:
            size = (await asyncio.to_thread(final.stat)).st_size
        except FileNotFoundError:
            return None
        return StoredObject(
            key=key,
            url=final.as_uri(),
            size_bytes=size,
            sha256_hex="",
            content_type=content_type_for(key),
            verified=(),
        )


def _flush_and_sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


def _publish(temp: Path, final: Path) -> None:
    os.replace(temp, final)
    fsync_directory(final.parent)


async def _check_file(path: Path, *, size_bytes: int, sha256_hex: str) -> None:
    size, digest = await asyncio.to_thread(rehash, path)
    if size != size_bytes or digest != sha256_hex:
        raise StorageError(f"{path} does not hold what was written ({size} of {size_bytes} bytes)")
