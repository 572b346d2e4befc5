"""Delivering one recording: the media while it is recorded, then the manifest, then cleanup.

`RecordingDelivery` is what the recording owns: `start()` when the spool is created (it writes
the sidecar and starts the named task that streams the spool into the sink; given the manifest's
builder, it also keeps the sidecar's draft current, `recorder.storage.sidecar_refresh`),
`finish(manifest)` once the encoder has closed the file (it stops the refresh, waits for the
media to be stored and verified, stores the manifest, and only then removes the spool and its
sidecar). Any failure leaves the spool and a sidecar holding the final manifest in place and
raises `StorageError` naming the spool, which `recorder upload <spool>` (`recover_spool`)
finishes later, as many times as needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder.errors import StorageError
from recorder.media.fmp4 import durable_length
from recorder.storage.keys import MANIFEST_CONTENT_TYPE, DeliveryTarget
from recorder.storage.manifest import recovered_manifest, with_stored_media
from recorder.storage.sidecar import Sidecar, read_sidecar, sidecar_path, write_sidecar
from recorder.storage.sidecar_refresh import (
    SIDECAR_REFRESH_S,
    DraftSource,
    RefreshStats,
    SidecarRefresher,
)
from recorder.storage.sink import Sink, StoredObject
from recorder.storage.spool import SpoolProgress, spool_size

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 5.0  # how long `abandon()` waits for the media task (and the draft's last refresh)


@dataclass(frozen=True, slots=True)
class DeliveredRecording:
    """A recording at its final place: the media, the manifest, and the manifest's content."""

    media: StoredObject
    manifest: StoredObject
    manifest_document: Mapping[str, Any]


class RecordingDelivery:
    """Stores one recording's spool and manifest in a sink; the spool goes only when both are."""

    def __init__(
        self,
        sink: Sink,
        spool: Path,
        target: DeliveryTarget,
        progress: SpoolProgress,
        *,
        hurry: threading.Event | None = None,
        sidecar_optional: bool = False,
    ) -> None:
        self.sink = sink
        self.spool = spool
        self.target = target
        self.progress = progress
        self.hurry = hurry
        # Recovery sets it: the spool is complete and the sidecar only mirrors what the command
        # already knows, so a sidecar that cannot be written (the disk that filled up and killed
        # the recording is still full) must not stop the upload that frees the disk.
        self.sidecar_optional = sidecar_optional
        self._media_task: asyncio.Task[StoredObject] | None = None
        self._refresher: SidecarRefresher | None = None

    async def start(
        self,
        draft_manifest: Mapping[str, Any] | None = None,
        *,
        refresh: DraftSource | None = None,
        refresh_s: float = SIDECAR_REFRESH_S,
    ) -> None:
        """Write the sidecar (so recovery knows where this goes) and start storing the media.

        With `refresh` (the recording's `ManifestBuilder`), the draft is taken from it and
        rewritten whenever it changed, at most every `refresh_s`, until `finish()` or `abandon()`:
        a killed worker's recovered manifest then ends near the kill, not at the start.
        """
        if self._media_task is not None:
            raise RuntimeError("the delivery has already started")
        if refresh is not None and draft_manifest is not None:
            raise ValueError("pass a draft manifest or a source to refresh it from, not both")
        revision: int | None = None
        if refresh is not None:
            revision, draft_manifest = refresh.draft()  # read together: no change slips between
        await self._write_sidecar(draft_manifest)
        self._media_task = asyncio.create_task(
            self.sink.store_spool(
                self.spool,
                self.progress,
                self.target.media_key,
                content_type=self.target.content_type,
                hurry=self.hurry,
            ),
            name=f"store-media-{self.target.recording_id}",
        )
        if refresh is not None:
            self._refresher = SidecarRefresher(
                self.spool, self.target, refresh, written_revision=revision, period_s=refresh_s
            )
            self._refresher.start()

    @property
    def refresh_stats(self) -> RefreshStats | None:
        """What the draft's refresh did (None when the draft is not refreshed)."""
        return self._refresher.stats if self._refresher is not None else None

    async def stop_refreshing(self, *, last_refresh: bool = False) -> None:
        """Stop rewriting the draft (idempotent); no draft write is in flight after this."""
        if self._refresher is not None:
            await self._refresher.close(last_refresh=last_refresh)

    async def finish(self, manifest: Mapping[str, Any]) -> DeliveredRecording:
        """Wait for the media, store the manifest, remove the spool; `StorageError` if not."""
        if self._media_task is None:
            raise RuntimeError("finish() before start()")
        # The final manifest goes into the sidecar first: if anything below fails, or the worker
        # is killed, recovery writes this manifest and not the draft. The refresh stops before,
        # so that no draft can replace it.
        await self.stop_refreshing()
        await self._write_sidecar(manifest)
        try:
            media = await self._media_task
            document = with_stored_media(manifest, media)
            body = json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")
            stored_manifest = await self.sink.store_bytes(
                body, self.target.manifest_key, content_type=MANIFEST_CONTENT_TYPE
            )
        except StorageError as error:
            raise StorageError(
                f"{error.message}; the recording is kept at {self.spool}: finish it with "
                f"`recorder upload {self.spool}`",
                local_path=str(self.spool),
            ) from error
        await asyncio.to_thread(self._remove_local_copy)
        return DeliveredRecording(media, stored_manifest, document)

    async def _write_sidecar(self, manifest: Mapping[str, Any] | None) -> None:
        try:
            await asyncio.to_thread(write_sidecar, self.spool, Sidecar(self.target, manifest))
        except StorageError as error:
            if not self.sidecar_optional:
                raise
            log.warning("%s; storing the spool without updating it", error.message)

    async def abandon(self) -> None:
        """Stop storing (the run is frozen or failed); the spool and sidecar stay.

        The draft gets a last refresh (unless the final manifest is in the sidecar already):
        without a final manifest, it is what `recorder upload` will have.
        """
        try:
            await asyncio.wait_for(self.stop_refreshing(last_refresh=True), CANCEL_WAIT_S)
        except TimeoutError:  # a write that hangs (the disk): the spool and a sidecar stay anyway
            log.warning("the sidecar's last refresh did not end within %g s", CANCEL_WAIT_S)
        task = self._media_task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_WAIT_S)

    def _remove_local_copy(self) -> None:
        # The spool first: a sidecar without a spool means "delivered", which recovery checks.
        self.spool.unlink(missing_ok=True)
        sidecar_path(self.spool).unlink(missing_ok=True)
        log.info("%s delivered; the spool is removed", self.target.media_key)


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(os.stat(path).st_mtime, UTC)


async def recover_spool(
    sink: Sink,
    spool: Path,
    *,
    target: DeliveryTarget | None = None,
    modified_at: Callable[[Path], datetime] = _mtime,
) -> DeliveredRecording | None:
    """Finish the delivery of a spool left behind; None when it was already delivered.

    The keys come from `target` (`--job` or `--key`) or the sidecar; the manifest from the
    sidecar (final, or a draft completed as `recovered`). Idempotent: run again after a failure,
    it uploads again; run again after success, it finds the objects and does nothing.
    """
    sidecar = read_sidecar(spool)
    spool_exists = await asyncio.to_thread(spool.exists)
    if target is None:
        if sidecar is None and not spool_exists:
            raise StorageError(f"there is no spool at {spool}, and no sidecar: nothing to upload")
        if sidecar is None:
            raise StorageError(
                f"no sidecar {sidecar_path(spool)} says where {spool} goes: pass --job or --key",
                local_path=str(spool),
            )
        target = sidecar.target
    elif sidecar is not None and sidecar.target != target:
        log.warning(
            "the sidecar says %s, the command line %s: using the command line",
            sidecar.target.media_key,
            target.media_key,
        )
        sidecar = None  # its manifest describes another key
    if not spool_exists:
        media = await sink.find(target.media_key)
        manifest = await sink.find(target.manifest_key)
        if media is not None and manifest is not None:
            sidecar_path(spool).unlink(missing_ok=True)
            log.info("%s is already delivered", target.media_key)
            return None
        raise StorageError(f"there is no spool at {spool} and {target.media_key} is not stored")
    size = spool_size(spool)
    durable = await asyncio.to_thread(durable_length, spool)
    if durable == 0:
        raise StorageError(
            f"{spool} holds no complete MP4 box: it is not a recording", local_path=str(spool)
        )
    if durable < size:
        log.warning(
            "%s ends with %d bytes of an incomplete fragment (the worker died while writing it); "
            "storing the %d bytes that play",
            spool,
            size - durable,
            durable,
        )
    manifest_document = recovered_manifest(
        sidecar.manifest if sidecar else None,
        recording_id=target.recording_id,
        media_key=target.media_key,
        manifest_key=target.manifest_key,
        stopped_at=modified_at(spool),
    )
    delivery = RecordingDelivery(
        sink, spool, target, SpoolProgress.complete(durable), sidecar_optional=True
    )
    await delivery.start(manifest_document)
    return await delivery.finish(manifest_document)
