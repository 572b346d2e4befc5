"""Keeping the sidecar's draft manifest current while the recording runs.

A worker killed with SIGKILL has no last word: what `recorder upload` knows of the timeline
(who joined, left, spoke, was pinned, which layout changes were made) is what the sidecar held
at the kill. Written once at the join, that draft stopped there; `SidecarRefresher` rewrites it
while the recording runs, so a recovered manifest misses at most the last `SIDECAR_REFRESH_S`.

The policy:

* **Only when something changed**: the source's `revision` (`ManifestBuilder.revision`) is
  compared with the one last written; a quiet room costs one integer comparison per period and
  no write.
* **Coalesced**: changes are written at most once per `SIDECAR_REFRESH_S`, however many there
  were, so a busy room (speaking turns every few hundred ms) does not turn into a write storm.
* **Off the loop and off the media thread**: the draft is built and written (atomically, like
  every sidecar: temporary file, fsync, rename, fsync of the folder) on a worker thread through
  `asyncio.to_thread`; the media thread never waits for it beyond the builder's short lock.
* **Never fatal**: a write that fails (a full disk) leaves the previous sidecar whole (the atomic
  write removes its temporary file), is counted in `stats`, and is logged once per run of
  failures (a warning at the first, a line when a write succeeds again). The recording goes on;
  the media's own failure, if the disk stays full, is what ends it (docs/reliability.md).
* **Closed before the final manifest**: `close()` stops the task and then seals the refresher
  under the write lock, waiting for a write in flight, so no draft can land on top of the final
  manifest that `RecordingDelivery.finish` writes next.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from recorder.storage.keys import DeliveryTarget
from recorder.storage.sidecar import Sidecar, write_sidecar

log = logging.getLogger(__name__)

# How often, at most, the draft is rewritten, and so how much of the timeline a SIGKILL can cost.
# 2 s matches what the media itself loses to a kill (the torn fragment, KEYFRAME_INTERVAL_S = 2 s),
# so the manifest ends no earlier than the file does. The cost is bounded by the rate, not by the
# room's activity: one atomic write every 2 s at most. Measured (one core, ext4): a 4-person room's
# draft is 3 kB, ~1 ms to build and write; an hour of 50 people speaking every few seconds is
# 0.35 MB, 30-45 ms on a worker thread (under 2.5% of a core), of which the builder's lock (the
# media thread's `mark`) is held 0.5 ms. A shorter period would buy little against the 2 s of
# media a kill loses anyway; a longer one would let the manifest end before the file does.
SIDECAR_REFRESH_S = 2.0
REFRESH_STOP_TIMEOUT_S = 5.0  # close(): how long the task may take to finish a write in flight

SidecarWriter = Callable[[Path, Sidecar], object]


class DraftSource(Protocol):
    """What the refresher reads: a revision that changes with the document, and the document."""

    @property
    def revision(self) -> int: ...

    def draft(self) -> tuple[int, Mapping[str, Any]]: ...


@dataclass(slots=True)
class RefreshStats:
    """What the refresher did, for the run's summary line."""

    written: int = 0  # drafts written after the first one
    failed: int = 0  # rewrites that failed (each left the previous sidecar in place)


class SidecarRefresher:
    """Rewrites the sidecar of `spool` with `source`'s draft when it changed; see the module
    docstring. `start()` once from the event loop, `close()` before the final manifest."""

    def __init__(
        self,
        spool: Path,
        target: DeliveryTarget,
        source: DraftSource,
        *,
        written_revision: int | None,
        period_s: float = SIDECAR_REFRESH_S,
        write: SidecarWriter = write_sidecar,
    ) -> None:
        """`written_revision` is the revision of the sidecar already on disk (None: unknown, the
        first check writes); `write` is replaceable so that tests can make it fail."""
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, not {period_s}")
        self.spool = spool
        self.target = target
        self.period_s = period_s
        self.stats = RefreshStats()
        self._source = source
        self._write = write
        self._written_revision = written_revision
        self._failing = False  # the last write failed (its failure was logged)
        self._write_lock = threading.Lock()  # held by the worker thread while it writes
        self._sealed = False  # set under the write lock by close(): no write after it
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the named task that refreshes every `period_s` (on the running loop)."""
        if self._task is not None:
            raise RuntimeError("the sidecar refresher has already started")
        self._task = asyncio.create_task(
            self._run(), name=f"sidecar-refresh-{self.target.recording_id}"
        )
        self._task.add_done_callback(_log_failure)

    async def refresh_once(self) -> bool:
        """Write the draft if it changed since the last write; True when one was written.

        A failed write is counted and logged (once per run of failures), never raised.
        """
        if self._sealed or self._source.revision == self._written_revision:
            return False
        try:
            revision = await asyncio.to_thread(self._write_current)
        except Exception as error:  # a refresh must never stop the recording
            self._failed(error)
            return False
        if revision is None:  # sealed meanwhile: the final manifest is being written
            return False
        self._written_revision = revision
        self.stats.written += 1
        if self._failing:
            self._failing = False
            log.info(
                "the sidecar of %s is current again (%d refreshes failed so far)",
                self.spool,
                self.stats.failed,
            )
        return True

    async def close(
        self, *, last_refresh: bool = False, timeout_s: float = REFRESH_STOP_TIMEOUT_S
    ) -> None:
        """Stop refreshing; once this returns no draft is being or will be written (idempotent).

        `last_refresh` writes what changed since the last refresh first (the recording failed
        and no final manifest follows: the sidecar is all that recovery will have).
        """
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            _, pending = await asyncio.wait({task}, timeout=timeout_s)
            if pending:
                log.warning("the sidecar refresh did not stop within %g s; cancelled", timeout_s)
                task.cancel()
        if last_refresh:
            await self.refresh_once()
        await asyncio.to_thread(self._seal)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.period_s)
            except TimeoutError:
                await self.refresh_once()

    def _write_current(self) -> int | None:
        """Worker thread: build and write the draft; its revision (None when sealed)."""
        with self._write_lock:
            if self._sealed:
                return None
            revision, document = self._source.draft()
            self._write(self.spool, Sidecar(self.target, document))
            return revision

    def _seal(self) -> None:
        with self._write_lock:  # waits for a write in flight (a cancelled task's thread goes on)
            self._sealed = True

    def _failed(self, error: Exception) -> None:
        self.stats.failed += 1
        if self._failing:
            return
        self._failing = True
        message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
        log.warning(
            "cannot refresh the sidecar of %s (%s); the recording goes on, and a recovered "
            "manifest would end at the last refresh that succeeded (tried again every %g s, "
            "logged again only once it succeeds)",
            self.spool,
            message,
            self.period_s,
        )


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("task %r failed", task.get_name(), exc_info=error)
