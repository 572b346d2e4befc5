"""The recording's lifecycle (CONTRACT.md §3) as an explicit state machine.

`RECORDING_STARTING` → `RECORDING_STARTED` → `RECORDING_STOPPING` → `RECORDING_STOPPED`, or
`RECORDING_FAILED` from any state that is not final. Each status is emitted once, in order, with a
`sequence` that grows by one, to listeners (the webhook notifier, the room announcement) that are
called synchronously and must not block: they enqueue. The machine does no I/O itself, so it can
be driven from the event loop, a signal handler or the media thread, and tested without any.

Stopping is idempotent: the first `stop(reason)` moves to STOPPING, later ones do not emit again.
A repeated *explicit* stop (a second SIGTERM/SIGINT or a second control request) sets `hurry`,
which the finalisation reads to give up on slow retries while keeping what was recorded.
`finalize()` bounds the stopping work by `FINALIZE_TIMEOUT_S`; past it the run fails as frozen
(`FinalizeTimeoutError`) instead of hanging, as LiveKit Egress does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from recorder.errors import ExitCode, FinalizeTimeoutError, RecorderError

log = logging.getLogger(__name__)

# How long stopping may take (closing the file, uploading the tail, verifying, the manifest)
# before the run is failed as frozen. A launcher's grace period must be longer than this.
FINALIZE_TIMEOUT_S = 180.0
# How long a frozen finalisation gets to react to its cancellation before the run fails anyway.
FINALIZE_CANCEL_GRACE_S = 1.0

T = TypeVar("T")


class Status(StrEnum):
    """The statuses a recording goes through (CONTRACT.md §3), as sent to webhooks and the room."""

    STARTING = "RECORDING_STARTING"
    STARTED = "RECORDING_STARTED"
    STOPPING = "RECORDING_STOPPING"
    STOPPED = "RECORDING_STOPPED"
    FAILED = "RECORDING_FAILED"

    @property
    def webhook_type(self) -> str:
        """The status in kebab case: `RECORDING_STARTED` → `recording-started`."""
        return self.value.lower().replace("_", "-")

    @property
    def is_final(self) -> bool:
        return self in (Status.STOPPED, Status.FAILED)


class StopReason(StrEnum):
    """Why a recording stops."""

    SIGNAL = "signal"  # SIGTERM/SIGINT from the launcher (stopRecording)
    CONTROL = "control"  # the worker's local control endpoint (stopRecording)
    ROOM_ENDED = "room-ended"
    EMPTY_ROOM = "empty-room-timeout"
    MAX_DURATION = "max-duration"


# A repeated stop for one of these reasons is a person (or a launcher) insisting: hurry up. An
# automatic stop arriving while stopping (the room ends too) changes nothing.
HURRYING_STOP_REASONS = frozenset({StopReason.SIGNAL, StopReason.CONTROL})

# The transitions the contract allows; FAILED is reachable from every state that is not final.
# STARTING → STOPPING is a stop that arrives before the first frame is in the file.
_NEXT: dict[Status | None, frozenset[Status]] = {
    None: frozenset({Status.STARTING}),
    Status.STARTING: frozenset({Status.STARTED, Status.STOPPING, Status.FAILED}),
    Status.STARTED: frozenset({Status.STOPPING, Status.FAILED}),
    Status.STOPPING: frozenset({Status.STOPPED, Status.FAILED}),
    Status.STOPPED: frozenset(),
    Status.FAILED: frozenset(),
}


def may_follow(previous: Status | None, status: Status) -> bool:
    """Whether `status` may be sent right after `previous` (None: nothing sent yet).

    For relays that pass on statuses they did not produce and must keep their order (the
    embedded room tells its participants what each worker announces).
    """
    return status in _NEXT[previous]


class IllegalTransitionError(RecorderError, RuntimeError):
    """A transition the state machine does not allow: a bug in the caller, never the user's."""

    code = "ILLEGAL_TRANSITION"


@dataclass(frozen=True, slots=True)
class RecordingIds:
    """Who a recording is: the ids every webhook and the manifest carry.

    `meeting_id` is the room's id; `session_id` is the room session when the connector knows one
    (None until it does, sent as null).
    """

    recording_id: str
    meeting_id: str
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """One emitted status change: what listeners receive."""

    status: Status
    sequence: int  # 1 for STARTING, then +1 per emitted status
    at: datetime  # UTC
    ids: RecordingIds
    stop_reason: StopReason | None = None  # set from STOPPING on
    error: RecorderError | None = None  # set on FAILED
    # Status-specific facts (on STOPPED: where the file is, its size, codecs...), passed through.
    details: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


Listener = Callable[[Transition], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(at: datetime) -> str:
    """UTC ISO-8601 with milliseconds and `Z`, as webhooks and the manifest write times."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Lifecycle:
    """The state machine of one recording; thread-safe, no I/O.

    Listeners are called in registration order, under the machine's lock, so they see the
    transitions in sequence order even when transitions come from several threads. A listener
    that raises is logged and skipped: a webhook or room announcement failing never changes the
    recording's state.
    """

    def __init__(
        self,
        ids: RecordingIds,
        *,
        clock: Callable[[], datetime] = utc_now,
        finalize_timeout_s: float = FINALIZE_TIMEOUT_S,
    ) -> None:
        self._ids = ids
        self._clock = clock
        self.finalize_timeout_s = finalize_timeout_s
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._state: Status | None = None
        self._sequence = 0
        self._stop_reason: StopReason | None = None
        self._error: RecorderError | None = None
        # Set by a repeated explicit stop; read by the finalisation (any thread) to cut retries.
        self.hurry = threading.Event()

    # --- observing ---------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Receive every later transition; add listeners before `begin()` to see them all."""
        with self._lock:
            self._listeners.append(listener)

    @property
    def ids(self) -> RecordingIds:
        return self._ids

    @property
    def state(self) -> Status | None:
        """The last emitted status; None before `begin()`."""
        return self._state

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stop_reason

    @property
    def error(self) -> RecorderError | None:
        return self._error

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code (CONTRACT.md §6) for the state reached."""
        if self._state is Status.STOPPED:
            return ExitCode.OK
        if self._state is Status.FAILED and self._error is not None:
            return self._error.exit_code
        return ExitCode.FAILED  # failed, or never finished: not recorded and stored

    def set_session_id(self, session_id: str) -> None:
        """The room session, once the connector knows it; later transitions carry it."""
        with self._lock:
            self._ids = replace(self._ids, session_id=session_id)

    # --- transitions -------------------------------------------------------------------------

    def begin(self) -> Transition:
        """STARTING: the worker is joining the room."""
        return self._emit(Status.STARTING)

    def started(self, details: Mapping[str, object] | None = None) -> Transition:
        """STARTED: the first composited frame (or mixed audio) is in the file."""
        return self._emit(Status.STARTED, details=details)

    def stop(self, reason: StopReason) -> bool:
        """Ask the recording to stop; True when this call began stopping.

        Idempotent: once stopping (or finished) nothing is emitted again. A repeated explicit
        stop (`HURRYING_STOP_REASONS`) while stopping sets `hurry`.
        """
        with self._lock:
            if self._state is None:
                raise IllegalTransitionError(f"stop({reason}) before the recording began")
            if self._state is Status.STOPPING:
                if reason in HURRYING_STOP_REASONS and not self.hurry.is_set():
                    log.warning("stop requested again (%s): finishing faster", reason)
                    self.hurry.set()
                return False
            if self._state.is_final:
                log.debug("stop(%s) ignored: already %s", reason, self._state)
                return False
            self._stop_reason = reason
            self._emit(Status.STOPPING)
            return True

    def stopped(self, details: Mapping[str, object] | None = None) -> Transition:
        """STOPPED: the file and its manifest are durably stored at their final place."""
        return self._emit(Status.STOPPED, details=details)

    def fail(self, error: RecorderError) -> Transition:
        """FAILED, from any state that is not final, with the error that ends the run."""
        with self._lock:
            self._check(Status.FAILED)
            self._error = error
            return self._emit(Status.FAILED)

    async def finalize(
        self,
        work: Awaitable[T],
        *,
        timeout_s: float | None = None,
        local_path: str | None = None,
    ) -> T:
        """Await the stopping work, bounded by the finalisation timeout.

        Past the timeout the work is cancelled, the run fails as frozen (`FinalizeTimeoutError`,
        naming `local_path` when a local copy survives) and that error is raised.
        """
        if self._state is not Status.STOPPING:
            raise IllegalTransitionError(f"finalize() while {self._state}, not stopping")
        limit_s = self.finalize_timeout_s if timeout_s is None else timeout_s
        task = asyncio.ensure_future(work)
        if isinstance(task, asyncio.Task):
            task.set_name(f"finalize-{self._ids.recording_id}")
        done, _ = await asyncio.wait({task}, timeout=limit_s)
        if task in done:
            return task.result()
        # Frozen: cancel, but do not wait longer than a moment for work that ignores it.
        task.cancel()
        await asyncio.wait({task}, timeout=FINALIZE_CANCEL_GRACE_S)
        kept = f"; the recording is kept at {local_path}" if local_path else ""
        error = FinalizeTimeoutError(
            f"stopping did not finish within {limit_s:g} s{kept}", local_path=local_path
        )
        self.fail(error)
        raise error

    # --- inside ------------------------------------------------------------------------------

    def _check(self, status: Status) -> None:
        if status not in _NEXT[self._state]:
            raise IllegalTransitionError(f"{self._state or 'NEW'} → {status} is not allowed")

    def _emit(self, status: Status, *, details: Mapping[str, object] | None = None) -> Transition:
        with self._lock:
            self._check(status)
            self._state = status
            self._sequence += 1
            transition = Transition(
                status=status,
                sequence=self._sequence,
                at=self._clock(),
                ids=self._ids,
                stop_reason=self._stop_reason,
                error=self._error if status is Status.FAILED else None,
                details=MappingProxyType(dict(details or {})),
            )
            log.info("recording %s: %s", self._ids.recording_id, status)
            for listener in self._listeners:
                try:
                    listener(transition)
                except Exception:
                    log.exception("a listener failed on %s; the recording goes on", status)
            return transition
