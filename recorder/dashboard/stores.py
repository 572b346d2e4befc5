"""Where the dashboard finds recordings: the local output directory or an S3 prefix.

Both stores list the manifests under their prefix, keep the entries of those whose media is
there too, and say where a listed recording's file can be read: a path for the local directory
(served by the dashboard itself), a presigned URL for S3 (the browser and PyAV read the object
straight from the store, so the dashboard never proxies media). Only keys of listed recordings
are ever served: a URL cannot name any other file or object.

Manifests never change once written, so each is read once and kept, keyed by what would change
if it were replaced (size and modification time on disk, the ETag on S3); a page load costs one
directory walk or one LIST plus the manifests that are new.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from recorder.dashboard.entries import RecordingEntry, entry_from_manifest, newest_first
from recorder.storage.keys import MANIFEST_EXTENSION, UnsafeKeyError, check_key, local_path_for

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # a day-long recording's timeline is ~100 kB; refuse more
PRESIGNED_URL_EXPIRES_S = 3600  # a page left open this long needs a reload before playing
S3_FETCH_CONCURRENCY = 4  # manifests read at once: within the S3 client's connection pool
# A request for a key not in the last listing lists again (a recording stored since the page
# loaded), but not more often than this: unknown keys must not turn into a LIST per request.
RELIST_MIN_INTERVAL_S = 5.0


class RecordingStore(Protocol):
    """The recordings under one prefix, and where each listed one's files can be read."""

    @property
    def description(self) -> str:
        """Where it reads, for the page and logs (never a credential)."""
        ...

    async def entries(self) -> list[RecordingEntry]:
        """Every recording with a manifest and its media, newest first (lists again)."""
        ...

    async def find(self, key: str) -> RecordingEntry | None:
        """The listed recording whose media or manifest has this key (lists again if unknown)."""
        ...

    async def source(self, key: str) -> Path | str:
        """Where to read `key` of a listed recording: a local path or a presigned URL."""
        ...

    async def media_origins(self) -> tuple[str, ...]:
        """Origins other than the dashboard's own that media is played from (for the CSP)."""
        ...


class _Listing:
    """The entries last listed, by media and manifest key, and when they were listed."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._by_key: dict[str, RecordingEntry] = {}
        self._clock = clock
        self._listed_at: float | None = None

    def replace(self, entries: list[RecordingEntry]) -> list[RecordingEntry]:
        by_key: dict[str, RecordingEntry] = {}
        for entry in entries:
            by_key[entry.media_key] = entry
            by_key[entry.manifest_key] = entry
        self._by_key = by_key
        self._listed_at = self._clock()
        return newest_first(entries)

    def get(self, key: str) -> RecordingEntry | None:
        return self._by_key.get(key)

    def may_relist(self) -> bool:
        listed_at = self._listed_at
        return listed_at is None or self._clock() - listed_at >= RELIST_MIN_INTERVAL_S


async def _find(store: RecordingStore, listing: _Listing, key: str) -> RecordingEntry | None:
    if listing.get(key) is None and listing.may_relist():
        await store.entries()
    return listing.get(key)


def _prefix_key(prefix: str) -> str:
    prefix = prefix.strip("/")
    return check_key(prefix) if prefix else ""


def _parse(key: str, data: bytes) -> RecordingEntry | None:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        log.warning("%s is not JSON: skipped", key)
        return None
    return entry_from_manifest(key, document)


@dataclass(frozen=True, slots=True)
class _Seen:
    version: tuple[Any, ...]  # what changes when the file or object is replaced
    entry: RecordingEntry | None


class LocalStore:
    """The recordings under a local directory (the worker's `RECORDER_OUTPUT_DIR`)."""

    def __init__(
        self, root: Path, prefix: str = "", *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = root
        self.prefix = _prefix_key(prefix)
        self._seen: dict[str, _Seen] = {}
        self._listing = _Listing(clock)

    @property
    def description(self) -> str:
        where = os.fspath(self.root)
        return f"{where}/{self.prefix}" if self.prefix else where

    async def entries(self) -> list[RecordingEntry]:
        return self._listing.replace(await asyncio.to_thread(self._scan))

    async def find(self, key: str) -> RecordingEntry | None:
        return await _find(self, self._listing, key)

    async def source(self, key: str) -> Path:
        if await self.find(key) is None:
            raise UnsafeKeyError(f"{key!r} is not a listed recording's file")
        return local_path_for(self.root, key)

    async def media_origins(self) -> tuple[str, ...]:
        return ()

    def _scan(self) -> list[RecordingEntry]:
        root = self.root.resolve()
        base = local_path_for(root, self.prefix) if self.prefix else root
        entries: list[RecordingEntry] = []
        seen: dict[str, _Seen] = {}
        # os.walk does not follow symlinked directories; hidden names are partial files.
        for directory, subdirectories, files in os.walk(base):
            subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
            for name in files:
                if name.startswith(".") or not name.endswith(MANIFEST_EXTENSION):
                    continue
                key = Path(directory, name).relative_to(root).as_posix()
                entry = self._read(root, key, seen)
                if entry is not None and _is_file(root, entry.media_key):
                    entries.append(entry)
        self._seen = seen
        return entries

    def _read(self, root: Path, key: str, seen: dict[str, _Seen]) -> RecordingEntry | None:
        try:
            path = local_path_for(root, key)
            stat = path.stat()
        except (OSError, UnsafeKeyError):
            return None
        version = (stat.st_size, stat.st_mtime_ns)
        known = self._seen.get(key)
        if known is None or known.version != version:
            entry = None
            if stat.st_size <= MAX_MANIFEST_BYTES:
                try:
                    entry = _parse(key, path.read_bytes())
                except OSError:
                    return None
            else:
                log.warning("%s is larger than %d bytes: skipped", key, MAX_MANIFEST_BYTES)
            known = _Seen(version, entry)
        seen[key] = known
        return known.entry


def _is_file(root: Path, key: str) -> bool:
    try:
        return local_path_for(root, key).is_file()
    except UnsafeKeyError:
        return False


class S3Store:
    """The recordings under a prefix of an S3 bucket (the worker's `RECORDER_S3_BUCKET`)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client  # a boto3 S3 client; thread-safe, used through asyncio.to_thread
        self.bucket = bucket
        self.prefix = _prefix_key(prefix)
        self._seen: dict[str, _Seen] = {}
        self._listing = _Listing(clock)

    @property
    def description(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    async def entries(self) -> list[RecordingEntry]:
        objects = await asyncio.to_thread(self._list)
        manifests = [key for key in objects if key.endswith(MANIFEST_EXTENSION)]
        fetching = asyncio.Semaphore(S3_FETCH_CONCURRENCY)

        async def read(key: str) -> tuple[str, _Seen | None]:
            known = self._seen.get(key)
            if known is not None and known.version == objects[key]:
                return key, known
            async with fetching:
                return key, await asyncio.to_thread(self._read, key, objects[key])

        results = await asyncio.gather(*(read(key) for key in manifests))
        # A manifest that could not be read is not remembered: the next listing tries again.
        self._seen = {key: seen for key, seen in results if seen is not None}
        entries = [
            seen.entry
            for seen in self._seen.values()
            if seen.entry is not None and seen.entry.media_key in objects
        ]
        return self._listing.replace(entries)

    async def find(self, key: str) -> RecordingEntry | None:
        return await _find(self, self._listing, key)

    async def source(self, key: str) -> str:
        if await self.find(key) is None:
            raise UnsafeKeyError(f"{key!r} is not a listed recording's file")
        return await asyncio.to_thread(self._presign, key)

    async def media_origins(self) -> tuple[str, ...]:
        # Presigned URLs of one bucket share their origin (path- or virtual-hosted style).
        parts = urlsplit(await asyncio.to_thread(self._presign, "origin-probe"))
        return (f"{parts.scheme}://{parts.netloc}",)

    def _presign(self, key: str) -> str:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=PRESIGNED_URL_EXPIRES_S,
            )
        )

    def _list(self) -> dict[str, tuple[Any, ...]]:
        """Every key under the prefix, with (ETag, size): what changes when it is replaced."""
        paginator = self.client.get_paginator("list_objects_v2")
        objects: dict[str, tuple[Any, ...]] = {}
        prefix = f"{self.prefix}/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                objects[item["Key"]] = (item.get("ETag"), item.get("Size"))
        return objects

    def _read(self, key: str, version: tuple[Any, ...]) -> _Seen | None:
        """The manifest's entry (None inside when it is not one); None when it could not be read."""
        size = version[1]
        if isinstance(size, int) and size > MAX_MANIFEST_BYTES:
            log.warning("%s is larger than %d bytes: skipped", key, MAX_MANIFEST_BYTES)
            return _Seen(version, None)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            data = body.read(MAX_MANIFEST_BYTES)
        except Exception as error:  # botocore's errors: a listing must not fail on one object
            log.warning("could not read %s: %s", key, error)
            return None
        return _Seen(version, _parse(key, data))
