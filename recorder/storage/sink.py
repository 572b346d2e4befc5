"""Where recordings end up: the interface both sinks (S3, local directory) implement.

`recorder.storage.from_env.sink_from_env()` picks the one the deployment configured.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from recorder.storage.spool import SpoolProgress

S3_BUCKET_ENV_VAR = "RECORDER_S3_BUCKET"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object at its final place, after verification."""

    key: str
    url: str  # s3 or https URL of the object, or a file:// URL for the local sink
    size_bytes: int
    sha256_hex: str  # of the whole content, computed from the bytes that were sent
    content_type: str
    verified: tuple[str, ...]  # what was compared: "size", "sha256", "etag", "spool"


class Sink(Protocol):
    """A place that stores a growing spool and small documents under keys."""

    @property
    def description(self) -> str:
        """Where it stores, for logs (never a credential)."""
        ...

    async def store_spool(
        self,
        spool: Path,
        progress: SpoolProgress,
        key: str,
        *,
        content_type: str,
        hurry: threading.Event | None = None,
    ) -> StoredObject:
        """Store the spool under `key` as it grows, finish once `progress` is finished, verify.

        Raises `StorageError` (naming the spool) when it cannot; never removes the spool.
        `hurry`, once set, cuts retries short.
        """
        ...

    async def store_bytes(self, data: bytes, key: str, *, content_type: str) -> StoredObject:
        """Store a small document (the manifest) under `key` and verify it."""
        ...

    async def find(self, key: str) -> StoredObject | None:
        """The object at `key` if there is one (size and type; `sha256_hex` may be empty)."""
        ...
