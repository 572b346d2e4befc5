"""Bench publishers in their own processes (`recorder.bench.publisher`), and what the soak makes
of their reports.

Real children against the embedded room: they join in the order given, and whatever happens in
the bench they leave and report; a child that does not answer is killed within its timeout; a
child whose parent stops talking to it (end of input) leaves on its own. And the soak's verdict:
the A/V drift is the recorder's only if the clapper's pts never moved.
"""

from __future__ import annotations

import asyncio
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest

from recorder.bench.publisher import (
    KEPT_REAL_TIME_FRACTION,
    PublisherError,
    PublisherProcess,
    PublisherReport,
    TrackReport,
    publishing,
)
from recorder.bench.soak import CLAPPER_NAME, format_table, publisher_figures
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID
from recorder.embedded_room.server import RoomServer

CLOSE_TIMEOUT_S = 1.0  # for the children that are killed: they ignore their input
EXIT_TIMEOUT_S = 30.0  # a real child leaving: bounded, generous for a loaded machine


class _Silent(PublisherProcess):
    """A child that never says anything and ignores its input."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(120)"]


class _Gone(PublisherProcess):
    """A child that exits at once."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "pass"]


async def test_publishers_join_in_order_and_leave_with_reports_when_the_bench_fails() -> None:
    held: list[PublisherProcess] = []
    async with RoomServer() as server:
        with pytest.raises(RuntimeError, match="the bench failed"):
            async with publishing(
                server.url, [("Tone 1", "tone:1"), (CLAPPER_NAME, "clapper")], max_s=120.0
            ) as room:
                held.extend(room)
                assert server.participant_names(DEFAULT_ROOM_ID) == ["Tone 1", CLAPPER_NAME]
                assert all(p.participant_id for p in room)
                raise RuntimeError("the bench failed")
        assert server.participant_names(DEFAULT_ROOM_ID) == []  # they left before exiting
    assert [p.name for p in held] == ["Tone 1", CLAPPER_NAME]
    for process in held:
        assert process.report is not None and process.report.exit_code == 0
        assert set(process.report.tracks) == {"audio", "camera"}
        # No recorder joined: their senders took nothing, which is not keeping real time.
        assert all(t.frames == 0 for t in process.report.tracks.values())
        assert not process.report.kept_real_time


async def test_a_publisher_whose_input_ends_leaves_and_reports() -> None:
    """The bench died (its end of the pipe closed): the child does not outlive it."""
    process = PublisherProcess("Tone 1", "tone:1", "ws://127.0.0.1:9/ws", max_s=120.0)
    await process.launch()
    try:
        await process.ready()
        assert process._process is not None and process._process.stdin is not None
        process._process.stdin.close()
        assert await asyncio.wait_for(process._process.wait(), EXIT_TIMEOUT_S) == 0
    finally:
        await process.close()
    assert process.report is not None and process.report.tracks == {}


async def test_a_silent_publisher_is_killed_within_its_timeouts() -> None:
    process = _Silent("Tone 1", "tone:1", "ws://127.0.0.1:9/ws", max_s=120.0)
    await process.launch()
    began = time.monotonic()
    with pytest.raises(PublisherError, match="no 'ready'"):
        await process.ready(timeout_s=CLOSE_TIMEOUT_S)
    assert await process.close(timeout_s=CLOSE_TIMEOUT_S) is None
    assert process._process is not None and process._process.returncode == -9  # SIGKILL
    assert time.monotonic() - began < 2 * CLOSE_TIMEOUT_S + 5.0


async def test_a_publisher_that_exits_early_is_an_error_not_a_wait() -> None:
    process = _Gone("Tone 1", "tone:1", "ws://127.0.0.1:9/ws", max_s=120.0)
    await process.launch()
    began = time.monotonic()
    with pytest.raises(PublisherError, match="exited"):
        await process.ready(timeout_s=EXIT_TIMEOUT_S)
    assert time.monotonic() - began < EXIT_TIMEOUT_S
    await process.close()
    assert process._process is not None and process._process.returncode == 0


def _track(real_time: float, resyncs: int = 0, shift_s: float = 0.0) -> TrackReport:
    return TrackReport(
        frames=round(1000 * real_time),
        expected_frames=1000,
        seconds=20.0,
        resyncs=resyncs,
        shift_s=shift_s,
    )


def _publisher(name: str, **tracks: TrackReport) -> Any:
    return SimpleNamespace(name=name, report=PublisherReport(name, tracks, 2.0, 20.0, 0))


def test_kept_real_time_needs_every_frame_rate_and_no_re_anchor() -> None:
    assert _track(1.0).kept_real_time
    assert _track(KEPT_REAL_TIME_FRACTION).kept_real_time
    assert not _track(KEPT_REAL_TIME_FRACTION - 0.01).kept_real_time
    assert not _track(1.0, resyncs=1, shift_s=0.3).kept_real_time
    report = PublisherReport("c", {"audio": _track(1.0, 2, 0.6), "camera": _track(1.0, 1, 0.25)})
    assert report.av_shift_s == pytest.approx(0.35)  # the sender's own lip-sync moved this much


def test_the_drift_is_the_recorders_only_if_the_clapper_kept_real_time() -> None:
    tone_behind = _publisher("Tone 1", audio=_track(0.85), camera=_track(0.96))
    clapper_ok = _publisher(CLAPPER_NAME, audio=_track(0.995), camera=_track(0.999))
    figures = publisher_figures([tone_behind, clapper_ok])
    assert figures["publishers_behind"] == ["Tone 1"]
    assert figures["av_drift_attributable"]  # a tone losing frames moves no clap
    assert figures["publisher_resyncs"] == {
        "Tone 1/audio": 0, "Tone 1/camera": 0, "Clapper/audio": 0, "Clapper/camera": 0,
    }  # fmt: skip

    clapper_shifted = _publisher(CLAPPER_NAME, audio=_track(0.99, 1, 0.3), camera=_track(1.0))
    figures = publisher_figures([clapper_shifted, SimpleNamespace(name="Tone 2", report=None)])
    assert not figures["av_drift_attributable"]
    assert figures["publishers_behind"] == [CLAPPER_NAME, "Tone 2"]
    assert figures["publishers"]["Tone 2"] == {"kept_real_time": False, "error": "no report"}
    assert figures["publishers"][CLAPPER_NAME]["av_shift_s"] == pytest.approx(0.3)


def test_the_table_says_when_the_drift_is_not_the_recorders() -> None:
    clapper = _publisher(CLAPPER_NAME, audio=_track(0.9, 2, 0.5), camera=_track(1.0))
    figures = {
        "recorded_wall_s": 20.0, "recorded_from": "clock origin", "started_after_origin_s": 0.4,
        "file_duration_s": 20.3, "duration_error": 0.015,
        "av_offset_start_s": 0.02, "av_offset_end_s": 0.1, "claps_read": [8, 8],
        "av_drift_frames_per_hour": 43.0, "warm_up_s": 4.0, "rss_mb_after_warm_up": 280.0,
        "rss_mb_at_end": 281.0, "rss_growth": 0.004, "peak_rss_mb": 290.0,
        "rss_mb_over_time": [], "frames_missed_in_file": 0, "late_ticks": 0,
        "encoder_queue_drops": 0, **publisher_figures([clapper]),
    }  # fmt: skip
    report = {
        "room": "r", "statuses": ["RECORDING_STOPPED"], "figures": figures,
        "targets": {"duration_error": 0.001, "av_drift_frames_per_hour": 1.0, "rss_growth": 0.1},
        "met": {"duration": False, "av_drift": False, "rss_growth": True},
    }  # fmt: skip
    table = format_table(report)
    assert "NOT ATTRIBUTABLE to the recorder" in table
    assert "Clapper: audio 90.0% (900/1000), 2 re-anchors, +0.500 s" in table
    assert "BEHIND" in table
