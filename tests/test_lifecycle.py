"""The lifecycle state machine (CONTRACT.md §3): order, sequence, stop, hurry, frozen finalize."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from recorder.errors import (
    ExitCode,
    FinalizeTimeoutError,
    JoinError,
    StorageError,
)
from recorder.lifecycle import (
    FINALIZE_TIMEOUT_S,
    IllegalTransitionError,
    Lifecycle,
    RecordingIds,
    Status,
    StopReason,
    Transition,
    iso_utc,
)

IDS = RecordingIds(recording_id="rec-1", meeting_id="room-9")


class StepClock:
    """A clock that moves one second per reading, so each transition has its own time."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 14, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def make() -> tuple[Lifecycle, list[Transition]]:
    lifecycle = Lifecycle(IDS, clock=StepClock())
    seen: list[Transition] = []
    lifecycle.add_listener(seen.append)
    return lifecycle, seen


def test_happy_path_emits_each_status_once_in_order_with_growing_sequence() -> None:
    lifecycle, seen = make()
    lifecycle.begin()
    lifecycle.started()
    assert lifecycle.stop(StopReason.CONTROL) is True
    lifecycle.stopped({"filePath": "a/rec-1.mp4"})
    assert [t.status for t in seen] == [
        Status.STARTING,
        Status.STARTED,
        Status.STOPPING,
        Status.STOPPED,
    ]
    assert [t.sequence for t in seen] == [1, 2, 3, 4]
    assert [t.at for t in seen] == sorted(t.at for t in seen)
    assert seen[2].stop_reason is StopReason.CONTROL
    assert seen[3].stop_reason is StopReason.CONTROL
    assert seen[3].details == {"filePath": "a/rec-1.mp4"}
    assert all(t.ids == IDS for t in seen)
    assert lifecycle.exit_code is ExitCode.OK


def test_webhook_types_are_kebab_case() -> None:
    assert [s.webhook_type for s in Status] == [
        "recording-starting",
        "recording-started",
        "recording-stopping",
        "recording-stopped",
        "recording-failed",
    ]


def test_stop_is_idempotent_and_a_repeated_signal_hurries() -> None:
    lifecycle, seen = make()
    lifecycle.begin()
    lifecycle.started()
    assert lifecycle.stop(StopReason.SIGNAL) is True
    assert not lifecycle.hurry.is_set()
    # An automatic stop while stopping changes nothing.
    assert lifecycle.stop(StopReason.ROOM_ENDED) is False
    assert not lifecycle.hurry.is_set()
    # A second explicit stop hurries, but does not emit again or change the reason.
    assert lifecycle.stop(StopReason.SIGNAL) is False
    assert lifecycle.hurry.is_set()
    assert [t.status for t in seen].count(Status.STOPPING) == 1
    assert lifecycle.stop_reason is StopReason.SIGNAL
    # It still finishes as STOPPED: hurrying keeps what was recorded.
    lifecycle.stopped()
    assert lifecycle.stop(StopReason.SIGNAL) is False
    assert [t.status for t in seen][-1] is Status.STOPPED
    assert lifecycle.exit_code is ExitCode.OK


def test_stop_before_the_first_frame_goes_straight_to_stopping() -> None:
    lifecycle, seen = make()
    lifecycle.begin()
    assert lifecycle.stop(StopReason.EMPTY_ROOM) is True
    assert [t.status for t in seen] == [Status.STARTING, Status.STOPPING]


@pytest.mark.parametrize(
    ("steps", "illegal"),
    [
        ([], "started"),  # STARTED before STARTING
        ([], "stopped"),
        ([], "stop"),
        (["begin"], "begin"),  # STARTING twice
        (["begin"], "stopped"),  # STOPPED without STOPPING
        (["begin", "started"], "started"),
        (["begin", "started"], "stopped"),
        (["begin", "started", "stop"], "started"),  # back to STARTED
        (["begin", "started", "stop", "stopped"], "stopped"),
        (["begin", "started", "stop", "stopped"], "fail"),  # nothing after a final state
        (["begin", "fail"], "fail"),
        (["begin", "fail"], "started"),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(steps: list[str], illegal: str) -> None:
    lifecycle, seen = make()
    actions = {
        "begin": lifecycle.begin,
        "started": lifecycle.started,
        "stop": lambda: lifecycle.stop(StopReason.CONTROL),
        "stopped": lifecycle.stopped,
        "fail": lambda: lifecycle.fail(StorageError("x")),
    }
    for step in steps:
        actions[step]()
    state, count = lifecycle.state, len(seen)
    with pytest.raises(IllegalTransitionError):
        actions[illegal]()
    assert lifecycle.state is state
    assert len(seen) == count


def test_stop_after_failure_is_ignored() -> None:
    lifecycle, seen = make()
    lifecycle.begin()
    lifecycle.fail(JoinError("room unreachable"))
    assert lifecycle.stop(StopReason.SIGNAL) is False
    assert [t.status for t in seen] == [Status.STARTING, Status.FAILED]


@pytest.mark.parametrize("state", ["starting", "started", "stopping"])
def test_failed_is_reachable_from_every_state_that_is_not_final(state: str) -> None:
    lifecycle, seen = make()
    lifecycle.begin()
    if state in ("started", "stopping"):
        lifecycle.started()
    if state == "stopping":
        lifecycle.stop(StopReason.MAX_DURATION)
    error = StorageError("bucket gone", local_path="/spool/rec-1.mp4")
    transition = lifecycle.fail(error)
    assert transition.status is Status.FAILED
    assert transition.error is error
    assert transition.sequence == len(seen)
    assert lifecycle.exit_code is ExitCode.FAILED


def test_exit_code_follows_the_error() -> None:
    lifecycle, _ = make()
    lifecycle.begin()
    lifecycle.fail(JoinError("no room"))
    assert lifecycle.exit_code is ExitCode.JOIN_FAILED
    unfinished, _ = make()
    unfinished.begin()
    assert unfinished.exit_code is ExitCode.FAILED


def test_a_failing_listener_does_not_stop_the_others_or_the_machine() -> None:
    lifecycle = Lifecycle(IDS)
    seen: list[Status] = []

    def broken(_: Transition) -> None:
        raise RuntimeError("webhook exploded")

    lifecycle.add_listener(broken)
    lifecycle.add_listener(lambda t: seen.append(t.status))
    lifecycle.begin()
    lifecycle.started()
    assert seen == [Status.STARTING, Status.STARTED]
    assert lifecycle.state is Status.STARTED


def test_session_id_reaches_later_transitions() -> None:
    lifecycle, seen = make()
    lifecycle.begin()
    lifecycle.set_session_id("sess-7")
    lifecycle.started()
    assert seen[0].ids.session_id is None
    assert seen[1].ids.session_id == "sess-7"


def test_transitions_from_many_threads_keep_sequence_order() -> None:
    """Stops racing from several threads: one STOPPING, listeners see sequences in order."""
    lifecycle, seen = make()
    lifecycle.begin()
    lifecycle.started()
    start = threading.Barrier(8)
    results: list[bool] = []

    def stopper() -> None:
        start.wait()
        results.append(lifecycle.stop(StopReason.SIGNAL))

    threads = [threading.Thread(target=stopper) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert results.count(True) == 1
    assert lifecycle.hurry.is_set()  # the other seven were repeated signals
    lifecycle.stopped()
    assert [t.sequence for t in seen] == [1, 2, 3, 4]


async def test_finalize_returns_the_work_result_in_time() -> None:
    lifecycle, _ = make()
    lifecycle.begin()
    lifecycle.stop(StopReason.SIGNAL)

    async def work() -> str:
        return "stored"

    assert await lifecycle.finalize(work(), timeout_s=5) == "stored"
    assert lifecycle.state is Status.STOPPING  # the caller emits STOPPED with the details


async def test_finalize_timeout_fails_the_run_as_frozen() -> None:
    lifecycle, seen = make()
    lifecycle.begin()
    lifecycle.started()
    lifecycle.stop(StopReason.SIGNAL)
    cancelled = asyncio.Event()

    async def frozen() -> None:
        try:
            await asyncio.Event().wait()  # never set: the finalisation hangs
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(FinalizeTimeoutError) as raised:
        await lifecycle.finalize(frozen(), timeout_s=0.05, local_path="/spool/rec-1.mp4")
    assert cancelled.is_set()
    assert lifecycle.state is Status.FAILED
    assert seen[-1].status is Status.FAILED
    assert seen[-1].error is raised.value
    reason = raised.value.as_reason()
    assert reason["code"] == "FINALIZE_TIMEOUT"
    assert reason["localPath"] == "/spool/rec-1.mp4"
    assert "/spool/rec-1.mp4" in str(reason["message"])
    assert lifecycle.exit_code is ExitCode.FAILED


async def test_finalize_gives_up_on_work_that_ignores_cancellation() -> None:
    lifecycle, _ = make()
    lifecycle.begin()
    lifecycle.stop(StopReason.SIGNAL)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # refuses to stop: the timeout must still end the run

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(FinalizeTimeoutError):
        await lifecycle.finalize(stubborn(), timeout_s=0.05)
    assert loop.time() - started < 5  # bounded by the timeout plus the cancel grace
    release.set()
    await asyncio.sleep(0)  # let the stubborn task see the release and end


async def test_finalize_outside_stopping_is_illegal() -> None:
    lifecycle, _ = make()
    lifecycle.begin()

    async def work() -> None:
        return None

    coroutine = work()
    with pytest.raises(IllegalTransitionError):
        await lifecycle.finalize(coroutine)
    coroutine.close()


def test_defaults_and_time_format() -> None:
    assert FINALIZE_TIMEOUT_S > 0
    assert Lifecycle(IDS).finalize_timeout_s == FINALIZE_TIMEOUT_S
    at = datetime(2026, 11, 24, 14, 0, 0, 123456, tzinfo=UTC)
    assert iso_utc(at) == "2026-11-24T14:00:00.123Z"
    assert iso_utc(at.astimezone(ZoneInfo("Europe/Paris"))) == "2026-11-24T14:00:00.123Z"
