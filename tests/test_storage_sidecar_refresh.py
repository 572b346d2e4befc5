"""The sidecar's draft kept current while recording (`recorder.storage.sidecar_refresh`).

The policy, step by step through `refresh_once()` (no clock, no sleeps): nothing written while
nothing changed, changes coalesced into one write, a failing write (a full disk) counted, logged
once and never raised, the previous sidecar left whole. Then the task itself and its closing: a
draft write in flight is waited for, none starts after `close()`, so the final manifest written
next is never replaced by a draft. And through `RecordingDelivery`: refreshed while it runs, a
last refresh when it is abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from servers import GrowingSpool

from recorder.errors import StorageError
from recorder.job import validate_job
from recorder.lifecycle import RecordingIds
from recorder.presets import KEYFRAME_INTERVAL_S
from recorder.storage.delivery import RecordingDelivery
from recorder.storage.keys import DeliveryTarget
from recorder.storage.local import LocalSink
from recorder.storage.manifest import ManifestBuilder, TimelineKind
from recorder.storage.sidecar import Sidecar, read_sidecar, sidecar_path, write_sidecar
from recorder.storage.sidecar_refresh import SIDECAR_REFRESH_S, SidecarRefresher
from recorder.storage.spool import SpoolProgress

T0 = datetime(2026, 11, 24, 14, 0, 0, tzinfo=UTC)
TARGET = DeliveryTarget.for_media_key("team/rec-1.mp4")
FAST_PERIOD_S = 0.05  # the task's period in these tests: many periods within the wait below
WAIT_S = 5.0  # bound on waiting for the task's write (many periods, on two loaded cores)
BLOCKED_CHECK_S = 0.2  # how long close() is watched to stay blocked behind a write in flight
POLL_S = 0.01


def builder() -> ManifestBuilder:
    job = validate_job(
        {
            "recordingId": "rec-1",
            "awsDirPath": "team",
            "room": {"connector": "loopback", "url": "ws://127.0.0.1:1/", "roomId": "r"},
        }
    )
    manifest = ManifestBuilder(job, RecordingIds(recording_id="rec-1", meeting_id="r"))
    manifest.recording_started(T0)
    return manifest


class CountingWriter:
    """`write_sidecar`, counted, failing with ENOSPC (as `write_sidecar` reports it) while
    `full` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.full = False

    def __call__(self, spool: Path, sidecar: Sidecar) -> Path:
        self.calls += 1
        if self.full:
            error = OSError(errno.ENOSPC, "No space left on device")
            path = sidecar_path(spool)
            raise StorageError(f"cannot write {path}: {error}", local_path=str(spool))
        return write_sidecar(spool, sidecar)


def participants_in(spool: Path) -> dict[str, dict[str, Any]]:
    sidecar = read_sidecar(spool)
    assert sidecar is not None and sidecar.manifest is not None
    return {p["id"]: p for p in sidecar.manifest["participants"]}


def refresher_at_start(
    spool: Path,
    manifest: ManifestBuilder,
    write: Callable[[Path, Sidecar], object],
    period_s: float = SIDECAR_REFRESH_S,
) -> SidecarRefresher:
    """A refresher whose sidecar holds the draft as of now (as `RecordingDelivery.start` does)."""
    revision, draft = manifest.draft()
    write_sidecar(spool, Sidecar(TARGET, draft))
    return SidecarRefresher(
        spool, TARGET, manifest, written_revision=revision, write=write, period_s=period_s
    )


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_S} s")
        await asyncio.sleep(POLL_S)


def test_the_revision_moves_only_when_the_document_does() -> None:
    manifest = builder()
    first = manifest.revision
    manifest.participant_joined("p1", "Ann", 1.0)
    joined = manifest.revision
    assert joined != first
    manifest.participant_joined("p1", "Ann", 1.5)  # the same again: nothing new
    manifest.mark("p1", TimelineKind.SPEAKING, False, 2.0)  # not speaking: already so
    manifest.participant_left("p2", 2.0)  # never seen
    assert manifest.revision == joined
    manifest.mark("p1", TimelineKind.SPEAKING, True, 2.0)
    assert manifest.revision != joined
    revision, draft = manifest.draft()
    assert revision == manifest.revision
    assert draft["participants"][0]["speaking"] == [[2.0, None]]  # open: a draft


async def test_nothing_is_written_while_nothing_changes_and_changes_are_coalesced(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "rec-1.mp4"
    manifest = builder()
    writer = CountingWriter()
    refresher = refresher_at_start(spool, manifest, writer)

    assert await refresher.refresh_once() is False
    assert writer.calls == 0  # the sidecar already holds this draft

    # Five changes within one period: one write, holding all of them.
    manifest.participant_joined("p1", "Ann", 1.0)
    manifest.participant_joined("p2", "Bob", 1.2)
    manifest.mark("p1", TimelineKind.SPEAKING, True, 1.5)
    manifest.mark("p1", TimelineKind.SPEAKING, False, 2.5)
    manifest.participant_left("p2", 3.0)
    assert await refresher.refresh_once() is True
    assert writer.calls == 1 and refresher.stats.written == 1
    people = participants_in(spool)
    assert people["p1"]["present"] == [[1.0, None]]  # still present: open-ended
    assert people["p1"]["speaking"] == [[1.5, 2.5]]
    assert people["p2"]["present"] == [[1.2, 3.0]]
    assert await refresher.refresh_once() is False and writer.calls == 1
    # Reports of states already known (the media thread repeats them) change nothing.
    manifest.mark("p1", TimelineKind.SPEAKING, False, 3.5)
    manifest.participant_joined("p1", "Ann", 3.6)
    assert await refresher.refresh_once() is False and writer.calls == 1


async def test_a_failing_write_is_counted_logged_once_and_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="recorder.storage.sidecar_refresh")
    spool = tmp_path / "rec-1.mp4"
    manifest = builder()
    writer = CountingWriter()
    refresher = refresher_at_start(spool, manifest, writer)
    before = sidecar_path(spool).read_bytes()

    writer.full = True
    for at_s in (1.0, 2.0, 3.0):
        manifest.participant_joined(f"p{at_s:g}", "Someone", at_s)
        assert await refresher.refresh_once() is False  # no exception
    assert writer.calls == 3 and refresher.stats.failed == 3 and refresher.stats.written == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "No space left on device" in warnings[0].getMessage()
    assert sidecar_path(spool).read_bytes() == before  # the previous draft, whole

    writer.full = False  # space again: the next refresh catches up with every change
    assert await refresher.refresh_once() is True
    assert set(participants_in(spool)) == {"p1", "p2", "p3"}
    assert any("current again" in r.getMessage() for r in caplog.records)
    writer.full = True  # a new run of failures is logged again, once
    manifest.participant_left("p1", 4.0)
    assert await refresher.refresh_once() is False
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


async def test_the_task_refreshes_by_itself_and_close_stops_it(tmp_path: Path) -> None:
    spool = tmp_path / "rec-1.mp4"
    manifest = builder()
    writer = CountingWriter()
    refresher = refresher_at_start(spool, manifest, writer, FAST_PERIOD_S)
    refresher.start()
    manifest.participant_joined("p1", "Ann", 1.0)
    await until(lambda: "p1" in participants_in(spool), "Ann in the sidecar")
    calls = writer.calls
    assert calls == 1  # one change, one write, however many periods went by

    await refresher.close()
    manifest.participant_left("p1", 2.0)
    assert await refresher.refresh_once() is False  # sealed
    assert writer.calls == calls
    assert participants_in(spool)["p1"]["present"] == [[1.0, None]]
    await refresher.close()  # idempotent


async def test_close_waits_for_a_write_in_flight_and_no_draft_follows_it(tmp_path: Path) -> None:
    """The final manifest is written right after `close()`: a draft write still running then
    would replace it. `close()` returns only once that write is over, and seals the rest."""
    spool = tmp_path / "rec-1.mp4"
    manifest = builder()
    entered, release = threading.Event(), threading.Event()

    def slow_write(path: Path, sidecar: Sidecar) -> Path:
        entered.set()
        if not release.wait(WAIT_S):
            raise AssertionError("never released")
        return write_sidecar(path, sidecar)

    refresher = refresher_at_start(spool, manifest, slow_write)
    manifest.participant_joined("p1", "Ann", 1.0)
    refreshing = asyncio.create_task(refresher.refresh_once())
    await until(entered.is_set, "the draft write started")
    refreshing.cancel()  # what cancelling the task does: its thread goes on writing
    closing = asyncio.create_task(refresher.close())
    _, pending = await asyncio.wait({closing}, timeout=BLOCKED_CHECK_S)
    assert pending == {closing}  # held behind the write in flight
    release.set()
    await asyncio.wait_for(closing, WAIT_S)
    with contextlib.suppress(asyncio.CancelledError):
        await refreshing
    assert "p1" in participants_in(spool)  # the write in flight completed before close() ended

    final = manifest.build(stopped_at=T0)
    write_sidecar(spool, Sidecar(TARGET, final))  # what finish() does next
    manifest.participant_left("p1", 2.0)
    assert await refresher.refresh_once() is False
    sidecar = read_sidecar(spool)
    assert sidecar is not None and sidecar.manifest == final


async def test_a_delivery_keeps_its_draft_current(tmp_path: Path) -> None:
    spool_path = tmp_path / "rec-1.mp4"
    spool = GrowingSpool(spool_path, SpoolProgress(), seed=3)
    spool.header()
    manifest = builder()
    delivery = RecordingDelivery(LocalSink(tmp_path / "out"), spool_path, TARGET, spool.progress)
    with pytest.raises(ValueError, match="not both"):
        await delivery.start({"recordingId": "rec-1"}, refresh=manifest)
    await delivery.start(refresh=manifest, refresh_s=FAST_PERIOD_S)
    assert participants_in(spool_path) == {}  # the draft as of the start
    manifest.participant_joined("p1", "Ann", 1.0)
    await until(lambda: "p1" in participants_in(spool_path), "Ann in the sidecar")
    await delivery.abandon()
    stats = delivery.refresh_stats
    assert stats is not None and stats.written == 1 and stats.failed == 0
    assert json.loads(sidecar_path(spool_path).read_bytes())["mediaKey"] == TARGET.media_key


async def test_an_abandoned_delivery_refreshes_its_draft_once_more(tmp_path: Path) -> None:
    """A recording that fails writes no final manifest: what changed since the last refresh is
    written when the delivery is abandoned (the period here is too long for the task to)."""
    spool_path = tmp_path / "rec-1.mp4"
    spool = GrowingSpool(spool_path, SpoolProgress(), seed=4)
    spool.header()
    manifest = builder()
    delivery = RecordingDelivery(LocalSink(tmp_path / "out"), spool_path, TARGET, spool.progress)
    await delivery.start(refresh=manifest, refresh_s=3600.0)
    manifest.participant_joined("p1", "Ann", 1.0)
    manifest.participant_left("p1", 2.0)
    await delivery.abandon()
    assert participants_in(spool_path)["p1"]["present"] == [[1.0, 2.0]]
    manifest.participant_joined("p2", "Bob", 3.0)
    await delivery.abandon()  # again: nothing more is written
    assert set(participants_in(spool_path)) == {"p1"}


def test_the_refresh_bound_is_the_media_loss_bound() -> None:
    """A killed worker loses at most the torn fragment of media (`KEYFRAME_INTERVAL_S`); the
    timeline should not lose more (docs/reliability.md)."""
    assert 0 < SIDECAR_REFRESH_S <= KEYFRAME_INTERVAL_S
