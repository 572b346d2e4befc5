"""Thumbnails: one frame of a recording, decoded with PyAV, scaled, saved as JPEG and cached.

The frame is taken `THUMBNAIL_AT_S` into the file (or at half of a shorter one): a live
recording starts on the empty room while the worker joins, so its very first frame says little.
Decoding runs from the start to that point, reading only the first seconds of the file, which
for S3 is a few ranged GETs on a presigned URL (FFmpeg's own HTTP client), never the whole
object. Extraction is CPU work and runs in a thread, at most `THUMBNAIL_WORKERS` at a time;
results are cached on disk under a name derived from the entry's fingerprint (key, size,
checksum, duration), so a recording is decoded once and a replaced file gets a new thumbnail.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import av

from recorder.dashboard.entries import RecordingEntry
from recorder.storage.atomic import write_atomically

log = logging.getLogger(__name__)

THUMBNAIL_AT_S = 5.0  # past a live recording's empty start; not so far that decoding is long
THUMBNAIL_WIDTH_PX = 320
THUMBNAIL_JPEG_QUALITY = 80
THUMBNAIL_WORKERS = 2  # decodes at once (each one core)
OPEN_TIMEOUT_S = 10.0  # FFmpeg's network timeout for a presigned URL
MAX_DECODED_FRAMES = 600  # a bound on work whatever the file's timestamps say (20 s at 30 fps)
JPEG_CONTENT_TYPE = "image/jpeg"


class ThumbnailError(Exception):
    """The file has no video frame that could be decoded."""


def thumbnail_time_s(duration_s: float | None) -> float:
    """Where in the file the thumbnail is taken."""
    if duration_s is None:
        return THUMBNAIL_AT_S
    return min(THUMBNAIL_AT_S, duration_s / 2)


def extract_thumbnail(source: Path | str, at_s: float, width_px: int = THUMBNAIL_WIDTH_PX) -> bytes:
    """The first video frame at or after `at_s` (or the last one before), as a JPEG.

    `source` is a local path or a URL PyAV can open (a presigned S3 URL). The height keeps the
    frame's aspect ratio (rounded to even pixels).
    """
    try:
        with av.open(str(source), timeout=OPEN_TIMEOUT_S) as container:
            if not container.streams.video:
                raise ThumbnailError(f"{source} has no video stream")
            chosen: av.VideoFrame | None = None
            for count, frame in enumerate(container.decode(video=0)):
                chosen = frame
                if (frame.time is not None and frame.time >= at_s) or count >= MAX_DECODED_FRAMES:
                    break
            if chosen is None:
                raise ThumbnailError(f"{source} has no video frame")
            height_px = max(2, round(width_px * chosen.height / chosen.width / 2) * 2)
            image = chosen.to_image(width=width_px, height=height_px, interpolation="AREA")
    except (av.FFmpegError, OSError) as error:
        raise ThumbnailError(f"cannot decode {source}: {error}") from error
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    return out.getvalue()


class ThumbnailCache:
    """Thumbnails on disk, made on first request; one extraction per recording at a time."""

    def __init__(self, directory: Path, *, workers: int = THUMBNAIL_WORKERS) -> None:
        self.directory = directory
        self._workers = asyncio.Semaphore(workers)
        self._locks: dict[str, asyncio.Lock] = {}
        self.extracted = 0  # thumbnails decoded (not served from the cache), for tests and logs

    def path_for(self, entry: RecordingEntry) -> Path:
        name = hashlib.sha256(f"{entry.fingerprint}\0{THUMBNAIL_WIDTH_PX}".encode()).hexdigest()
        return self.directory / f"{name}.jpg"

    async def get(
        self, entry: RecordingEntry, source: Callable[[], Awaitable[Path | str]]
    ) -> bytes:
        """The thumbnail of `entry`, from the cache or extracted from `await source()`."""
        path = self.path_for(entry)
        lock = self._locks.setdefault(path.name, asyncio.Lock())
        async with lock:  # a page asks twice at once (image and poster): decode once
            try:
                return await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                pass
            where = await source()
            async with self._workers:
                jpeg = await asyncio.to_thread(
                    extract_thumbnail, where, thumbnail_time_s(entry.duration_s)
                )
            self.extracted += 1
            try:
                await asyncio.to_thread(write_atomically, path, jpeg)
            except OSError as error:  # a read-only cache still serves, it just decodes again
                log.warning("cannot cache the thumbnail of %s: %s", entry.media_key, error)
            return jpeg
