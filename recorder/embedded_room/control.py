"""The control service of the embedded room: one worker process per `startRecording`.

It does for local runs what a platform's control service does in production (CONTRACT.md §1–2):
it turns a participant's `startRecording({webhookUrl, awsDirPath, config})` into a job, validates
it with the job model (so a bad call is refused to the caller before any process starts), and
launches the worker command with the job on standard input; `stopRecording()` sends the worker
SIGTERM. The worker joins the room hidden with a recorder token made for that recording, and
announces its statuses through its connector; this service relays them to every participant, in
order, each once. If the worker exits without a final status (a crash, a kill), the participants
are told RECORDING_FAILED so nobody waits for a recording that is gone.

One recording at a time per room: a start while one runs, or a stop when none does, is refused to
the caller (START_RECORDING_FAILED / STOP_RECORDING_FAILED) and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recorder.embedded_room.protocol import CONNECTOR_NAME, ErrorCode, RoomRequestError
from recorder.errors import InvalidJobError
from recorder.job import validate_job
from recorder.lifecycle import Status, may_follow

log = logging.getLogger(__name__)

# `recorder run -`: one recording per process, the job on standard input (not in the environment
# or a file, where its room token could be read by others).
DEFAULT_WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "recorder", "run", "-")
CALLER_FIELDS = ("webhookUrl", "awsDirPath", "config")  # what startRecording may set
WORKER_EXIT_TIMEOUT_S = 15.0  # on shutdown: SIGTERM, then SIGKILL after this
WORKER_DISCONNECT_GRACE_S = 2.0  # statuses sent just before exit are read before judging it
TOKEN_BYTES = 24

StatusListener = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class RecorderGrant:
    """What a recorder token allows: joining this room hidden, and announcing one recording."""

    token: str
    recording_id: str | None  # None: a token issued by hand (tests, a developer's recorder)
    last_status: Status | None = None
    connections: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while nobody uses it

    def __post_init__(self) -> None:
        self.idle.set()

    def attach(self) -> None:
        self.connections += 1
        self.idle.clear()

    def detach(self) -> None:
        self.connections = max(0, self.connections - 1)
        if self.connections == 0:
            self.idle.set()


@dataclass(slots=True)
class _Worker:
    recording_id: str
    process: asyncio.subprocess.Process
    grant: RecorderGrant
    stopping: bool = False
    monitor: asyncio.Task[None] | None = None


class RecordingControl:
    """Starts and stops the recordings of one room and relays their statuses."""

    def __init__(
        self,
        room_id: str,
        *,
        signalling_url: str,
        worker_command: Sequence[str] = DEFAULT_WORKER_COMMAND,
        on_status: StatusListener,
    ) -> None:
        self._room_id = room_id
        self._signalling_url = signalling_url
        self._worker_command = tuple(worker_command)
        self._on_status = on_status
        self._grants: dict[str, RecorderGrant] = {}
        self._worker: _Worker | None = None
        self._lock = asyncio.Lock()
        self._last_change: dict[str, Any] | None = None

    # --- recorder tokens ---------------------------------------------------------------------

    def issue_token(self, recording_id: str | None = None) -> str:
        """A new recorder credential for this room (a developer's or a test's recorder)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self._grants[token] = RecorderGrant(token=token, recording_id=recording_id)
        return token

    def grant_for(self, token: object) -> RecorderGrant | None:
        """The grant of a token, or None for anything that is not a live token of this room."""
        if not isinstance(token, str):
            return None
        for known, grant in self._grants.items():
            if secrets.compare_digest(known, token):
                return grant
        return None

    # --- statuses ----------------------------------------------------------------------------

    @property
    def current(self) -> dict[str, Any] | None:
        """The last `recordingStateChanged` of a recording that is still running, for joiners."""
        if self._worker is None:
            return None
        return self._last_change

    def relay_status(
        self,
        grant: RecorderGrant,
        status: object,
        *,
        recording_id: object = None,
        reason: object = None,
        verdict: bool = False,
    ) -> None:
        """Tell the room a recorder's status, if it follows the previous one (CONTRACT.md §3).

        `verdict`: the service's own RECORDING_FAILED for a worker that exited without a final
        status; it may follow nothing at all (the worker died before it said STARTING).
        """
        try:
            parsed = Status(status)
        except ValueError:
            allowed = ", ".join(Status)
            raise RoomRequestError(
                ErrorCode.INVALID_REQUEST, f"status {status!r} is not one of {allowed}"
            ) from None
        died_silent = verdict and parsed is Status.FAILED and grant.last_status is None
        if not died_silent and not may_follow(grant.last_status, parsed):
            raise RoomRequestError(
                ErrorCode.INVALID_REQUEST,
                f"status {parsed} cannot follow {grant.last_status} (CONTRACT.md §3 order)",
            )
        grant.last_status = parsed
        change: dict[str, Any] = {
            "status": str(parsed),
            "recordingId": grant.recording_id
            or (recording_id if isinstance(recording_id, str) else None),
        }
        if isinstance(reason, dict):
            change["reason"] = reason
        self._last_change = change
        log.info("room %s: recording %s is %s", self._room_id, change["recordingId"], parsed)
        self._on_status(change)

    # --- start and stop ----------------------------------------------------------------------

    async def start(self, params: object) -> str:
        """Launch a worker for `params` (the call's `{webhookUrl, awsDirPath, config}`); its id.

        `RoomRequestError(START_RECORDING_FAILED)` if one runs, the job is invalid, or the worker
        cannot be launched; nothing changes then.
        """
        async with self._lock:
            if self._worker is not None:
                raise RoomRequestError(
                    ErrorCode.START_RECORDING_FAILED,
                    f"recording {self._worker.recording_id} is already running in room "
                    f"{self._room_id!r}; stop it first",
                )
            job = self._job_for(params)
            recording_id = job["recordingId"]
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._worker_command, stdin=asyncio.subprocess.PIPE
                )
            except OSError as error:
                raise RoomRequestError(
                    ErrorCode.START_RECORDING_FAILED,
                    f"the worker could not be launched ({self._worker_command[0]}): {error}",
                ) from None
            grant = RecorderGrant(token=job["room"]["token"], recording_id=recording_id)
            self._grants[grant.token] = grant
            worker = _Worker(recording_id, process, grant)
            self._worker = worker
            self._last_change = None
            await self._hand_job(worker, job)
            worker.monitor = asyncio.create_task(
                self._watch(worker), name=f"room {self._room_id}: worker {recording_id}"
            )
            log.info(
                "room %s: recording %s launched (pid %d)",
                self._room_id,
                recording_id,
                process.pid,
            )
            return recording_id

    async def stop(self) -> str:
        """SIGTERM the running worker; its id. `RoomRequestError(STOP_RECORDING_FAILED)` if no
        recording runs or it is already stopping; nothing changes then."""
        async with self._lock:
            worker = self._worker
            if worker is None or worker.process.returncode is not None:
                raise RoomRequestError(
                    ErrorCode.STOP_RECORDING_FAILED,
                    f"no recording is running in room {self._room_id!r}",
                )
            if worker.stopping:
                raise RoomRequestError(
                    ErrorCode.STOP_RECORDING_FAILED,
                    f"recording {worker.recording_id} is already stopping",
                )
            worker.stopping = True
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
            log.info("room %s: recording %s asked to stop", self._room_id, worker.recording_id)
            return worker.recording_id

    async def close(self) -> None:
        """Stop the running worker, if any: SIGTERM, then SIGKILL after a bounded wait."""
        worker = self._worker
        if worker is None:
            return
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.process.wait(), WORKER_EXIT_TIMEOUT_S)
            except TimeoutError:
                log.warning("worker %s ignored SIGTERM; killing it", worker.recording_id)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
        if worker.monitor is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(worker.monitor, WORKER_DISCONNECT_GRACE_S + 1.0)

    # --- internals ---------------------------------------------------------------------------

    def _job_for(self, params: object) -> dict[str, Any]:
        """The validated job for a call's parameters, with a new recording id and token."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RoomRequestError(
                ErrorCode.START_RECORDING_FAILED, "the parameters must be a JSON object"
            )
        unknown = sorted(set(params) - set(CALLER_FIELDS))
        if unknown:
            raise RoomRequestError(
                ErrorCode.START_RECORDING_FAILED,
                f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
                + ", ".join(CALLER_FIELDS),
            )
        job: dict[str, Any] = {key: params[key] for key in CALLER_FIELDS if key in params}
        job["recordingId"] = uuid.uuid4().hex
        job["room"] = {
            "connector": CONNECTOR_NAME,
            "url": self._signalling_url,
            "roomId": self._room_id,
            "token": secrets.token_urlsafe(TOKEN_BYTES),
        }
        try:
            validate_job(job)
        except InvalidJobError as error:
            raise RoomRequestError(ErrorCode.START_RECORDING_FAILED, error.message) from None
        return job

    async def _hand_job(self, worker: _Worker, job: dict[str, Any]) -> None:
        stdin = worker.process.stdin
        if stdin is None:
            return
        try:
            stdin.write(json.dumps(job).encode())
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            log.warning("worker %s closed its standard input early", worker.recording_id)
        finally:
            stdin.close()

    async def _watch(self, worker: _Worker) -> None:
        """When the worker exits: relay a failure if it never said how it ended; free the room."""
        returncode = await worker.process.wait()
        # The worker's connection closes with it; what it sent before is read before the close.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.grant.idle.wait(), WORKER_DISCONNECT_GRACE_S)
        last = worker.grant.last_status
        log.info(
            "room %s: worker %s exited with code %d (last status %s)",
            self._room_id,
            worker.recording_id,
            returncode,
            last,
        )
        if last is None or not last.is_final:
            with contextlib.suppress(RoomRequestError):
                self.relay_status(
                    worker.grant,
                    Status.FAILED,
                    verdict=True,
                    reason={
                        "code": "WORKER_EXITED",
                        "message": f"the worker exited with code {returncode} before it "
                        "reported how the recording ended",
                    },
                )
        self._grants.pop(worker.grant.token, None)
        async with self._lock:
            if self._worker is worker:
                self._worker = None
