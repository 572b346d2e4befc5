"""The demo room: what `recorder demo` records, and how it is run and reported.

A fresh machine should show the whole product in one command: the embedded room starts on
127.0.0.1, three or four synthetic participants join it over real WebRTC and publish a camera
(their palette colour, number, name, a moving square and a clock) and a microphone, and one of
them records the room through `startRecording` / `stopRecording`, exactly as an application
would. So that the recording has something to show, the participants follow a script scaled to
the demo's length: they speak in turns (the floor passes every `TURN_S`), one turns the camera off
and later on again, one shares a screen for a while, one is pinned.

While it runs, one status line a second says how the recording is doing (from the worker's
control endpoint when it has one, else what the room knows); at the end the statuses are printed
as each participant received them, and where the file and its manifest are. The run is a failure
(exit 1) unless every participant saw the recording reach RECORDING_STOPPED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import numpy as np

from layouts.model import LayoutType, Theme
from recorder.client import RecordingState, RoomParticipant, join
from recorder.client.media import PacedTrack, paced_tracks
from recorder.embedded_room.control import DEFAULT_WORKER_COMMAND
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID
from recorder.embedded_room.server import RoomServer
from recorder.job import RecordingConfig, normalize_aws_dir_path
from recorder.lifecycle import Status
from recorder.presets import Mode, Quality
from recorder.storage.from_env import DEFAULT_OUTPUT_DIR, OUTPUT_DIR_ENV_VAR
from recorder.storage.keys import local_path_for, manifest_key_for, media_key
from recorder.storage.sink import S3_BUCKET_ENV_VAR
from recorder.testing.audio import SPEECH_RAMP_S, Signal, SpeechBursts, participant_voice_hz
from recorder.testing.sources import AudioFormat, SyntheticParticipant, VideoFormat
from recorder.testing.stills import demo_name
from recorder.testing.video import SyntheticScreen, SyntheticVideo

log = logging.getLogger(__name__)

DEFAULT_DURATION_S = 20.0
MIN_DURATION_S = 2.0  # shorter and the script's steps fall on top of each other
DEFAULT_PARTICIPANTS = 4
PARTICIPANT_COUNTS = (3, 4)
CAMERA_FORMAT = VideoFormat(640, 360, 30)  # a webcam's everyday size; 4 of them fit 2 cores
SCREEN_FORMAT = VideoFormat(1280, 800, 15)  # a 16:10 slide; screens send few frames
MICROPHONE_FORMAT = AudioFormat()  # 48 kHz mono s16, 20 ms frames, as Opus decodes
TURN_S = 3.0  # the floor passes to the next speaker this often
# Within a turn the speaker pauses now and then (a 0.4 s slot is silent with this chance): short
# pauses that the mixer's hysteresis rides over, so the speaking mark stays on for the turn.
TURN_SPEECH_ON_PROBABILITY = 0.85
STARTED_TIMEOUT_S = 20.0  # launch, join, first frame in the file; a worker slower than this failed
STOPPED_TIMEOUT_S = 60.0  # close the file, store it and the manifest
# A refused stop means the worker is gone; the room's verdict on it follows within ~2 s.
WORKER_GONE_GRACE_S = 5.0
STATUS_LINE_INTERVAL_S = 1.0
WORKER_STATUS_TIMEOUT_S = 0.5  # a status line late by more than this is the room's instead
LOOPBACK_HOST = "127.0.0.1"
RECORDER_PARTICIPANT = 1  # participant 1 (Alice) starts and stops the recording


@dataclass(frozen=True, slots=True)
class TakingTurns:
    """A voice that speaks only in its own turns: turn `turn` of every `speakers` turns.

    Turn k covers `[k * turn_s, (k + 1) * turn_s)`; the speaker of turn k is `k % speakers`. The
    edges fade like a speech burst's, so a turn starts and ends without a click.
    """

    voice: Signal
    turn: int
    speakers: int
    turn_s: float = TURN_S

    def speaking_at(self, time_s: np.ndarray | float) -> np.ndarray:
        """Whether it is this voice's turn at each time."""
        slot = np.floor(np.asarray(time_s, dtype=np.float64) / self.turn_s).astype(np.int64)
        return (slot % self.speakers) == self.turn

    def render(self, start: int, count: int, sample_rate_hz: int) -> np.ndarray:
        t = (start + np.arange(count, dtype=np.float64)) / sample_rate_hz
        into = np.mod(t, self.turn_s)
        edge = np.clip(np.minimum(into, self.turn_s - into) / SPEECH_RAMP_S, 0.0, 1.0)
        gate = np.where(self.speaking_at(t), 0.5 - 0.5 * np.cos(np.pi * edge), 0.0)
        return (self.voice.render(start, count, sample_rate_hz) * gate).astype(np.float32)


def demo_participant(
    number: int,
    speakers: int,
    camera: VideoFormat = CAMERA_FORMAT,
    microphone: AudioFormat = MICROPHONE_FORMAT,
) -> SyntheticParticipant:
    """Participant `number` (from 1) of the demo: palette colour `number - 1`, speaking in turn."""
    index = number - 1
    name = demo_name(number)
    voice = SpeechBursts(
        seed=index,
        pitch_hz=participant_voice_hz(index),
        on_probability=TURN_SPEECH_ON_PROBABILITY,
    )
    return SyntheticParticipant(
        name,
        picture=SyntheticVideo(index, name, camera.size).frame_at,
        video_format=camera,
        signal=TakingTurns(voice, turn=index, speakers=speakers),
        audio_format=microphone,
    )


def screen_track(number: int, screen: VideoFormat = SCREEN_FORMAT) -> PacedTrack:
    """Participant `number`'s screen share: a slide with a title bar in their colour."""
    slide = SyntheticScreen(number - 1, f"{demo_name(number)}'s screen", screen.size)
    source = SyntheticParticipant(slide.name, picture=slide.frame_at, video_format=screen)
    return PacedTrack("video", source.video_frames())


# --- the script ----------------------------------------------------------------------------------


Action = Callable[[dict[int, RoomParticipant]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a participant does `at_fraction` of the way through the recording."""

    at_fraction: float
    says: str  # what the demo prints when it happens
    action: Action


def demo_script(participants: int) -> list[Step]:
    """The demo's script for 3 or 4 participants: a pin, a camera off and on, a screen share.

    The last participant is pinned, participant 3 turns the camera off and on, participant 2
    shares a screen; the steps are spread over the recording so each shows for a while.
    """
    pinned = participants
    presenter, camera_shy = 2, 3

    async def pin(room: dict[int, RoomParticipant]) -> None:
        await room[RECORDER_PARTICIPANT].pin(room[pinned].id)

    async def camera_off(room: dict[int, RoomParticipant]) -> None:
        await room[camera_shy].camera_off()

    async def camera_on(room: dict[int, RoomParticipant]) -> None:
        await room[camera_shy].camera_on()

    async def share(room: dict[int, RoomParticipant]) -> None:
        await room[presenter].start_screen_share(screen_track(presenter))

    async def stop_share(room: dict[int, RoomParticipant]) -> None:
        await room[presenter].stop_screen_share()

    return [
        Step(0.10, f"{demo_name(RECORDER_PARTICIPANT)} pins {demo_name(pinned)}", pin),
        Step(0.20, f"{demo_name(camera_shy)} turns the camera off", camera_off),
        Step(0.35, f"{demo_name(presenter)} shares a screen", share),
        Step(0.55, f"{demo_name(camera_shy)} turns the camera on", camera_on),
        Step(0.80, f"{demo_name(presenter)} stops sharing", stop_share),
    ]


# --- options, outcome ----------------------------------------------------------------------------

_DEFAULT_CONFIG = RecordingConfig()


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What `recorder demo`'s flags choose; defaults are the contract's (CONTRACT.md §1)."""

    layout: LayoutType = _DEFAULT_CONFIG.layout.type
    theme: Theme = _DEFAULT_CONFIG.theme
    mode: Mode = _DEFAULT_CONFIG.mode
    quality: Quality = _DEFAULT_CONFIG.quality
    duration_s: float = DEFAULT_DURATION_S
    webhook_url: str | None = None
    aws_dir_path: str | None = None
    participants: int = DEFAULT_PARTICIPANTS
    # What startRecording launches; None: `recorder run` with its control endpoint, which the
    # status line reads.
    worker_command: tuple[str, ...] | None = None
    worker_log: Path | None = None  # where the default worker logs; None: the terminal

    def config(self) -> dict[str, Any]:
        """The `config` of the startRecording call."""
        return {
            "layout": {"type": str(self.layout)},
            "theme": str(self.theme),
            "mode": str(self.mode),
            "quality": str(self.quality),
        }


@dataclass(slots=True)
class SeenStatus:
    """A `recordingStateChanged` as one participant received it."""

    status: Status
    at_s: float  # seconds since startRecording was called
    reason: dict[str, Any] | None = None


@dataclass(slots=True)
class DemoOutcome:
    """How the demo went: the statuses every participant saw, and where the recording is."""

    recording_id: str | None = None
    seen: dict[str, list[SeenStatus]] = field(default_factory=dict)  # by participant name
    media_location: str | None = None  # a path, or s3://bucket/key
    manifest_location: str | None = None
    error: str | None = None
    started_s: float | None = None  # STARTED, seconds since startRecording (first who saw it)
    stopping_s: float | None = None
    recorded_s: float = 0.0  # wall time between STARTED and STOPPING

    @property
    def succeeded(self) -> bool:
        """Everyone saw the recording stop cleanly and nothing else went wrong."""
        return (
            self.error is None
            and bool(self.seen)
            and all(s and s[-1].status is Status.STOPPED for s in self.seen.values())
        )


# --- running -------------------------------------------------------------------------------------


class _StatusWatch:
    """Collects every participant's `recordingStateChanged`, and wakes waiters on each."""

    def __init__(self, origin_s: float) -> None:
        self.origin_s = origin_s
        self.seen: dict[str, list[SeenStatus]] = {}
        self.changed = asyncio.Event()

    def listen(self, participant: RoomParticipant) -> None:
        log_ = self.seen.setdefault(participant.name, [])

        def on_change(state: RecordingState) -> None:
            log_.append(SeenStatus(state.status, time.monotonic() - self.origin_s, state.reason))
            self.changed.set()

        participant.on_recording_state_changed = on_change

    def first(self, status: Status) -> SeenStatus | None:
        """The earliest sighting of `status` by anyone."""
        sightings = [s for log_ in self.seen.values() for s in log_ if s.status is status]
        return min(sightings, key=lambda s: s.at_s, default=None)

    def final(self) -> SeenStatus | None:
        """A final status (STOPPED or FAILED) as soon as anyone saw one."""
        return next((s for log_ in self.seen.values() for s in log_ if s.status.is_final), None)

    def everyone_final(self) -> bool:
        return bool(self.seen) and all(
            any(s.status.is_final for s in log_) for log_ in self.seen.values()
        )

    async def wait_for(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `done()` holds (checked at each status change); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True


def storage_locations(
    recording_id: str, options: DemoOptions, environ: Mapping[str, str]
) -> tuple[str, str]:
    """Where the worker stores the media file and the manifest (CONTRACT.md §2, §5): an
    `s3://` URL when the environment configures a bucket, else a local path. The worker inherits
    the demo's environment and working directory, so both compute the same place."""
    prefix = normalize_aws_dir_path(options.aws_dir_path or "")
    extension = ".m4a" if options.mode is Mode.AUDIO else ".mp4"
    key = media_key(prefix, recording_id, extension)
    manifest = manifest_key_for(key)
    bucket = environ.get(S3_BUCKET_ENV_VAR, "").strip()
    if bucket:
        return f"s3://{bucket}/{key}", f"s3://{bucket}/{manifest}"
    root = Path(environ.get(OUTPUT_DIR_ENV_VAR) or DEFAULT_OUTPUT_DIR)
    return str(local_path_for(root, key)), str(local_path_for(root, manifest))


# The live line, from the room server and the seconds recorded so far.
StatusLine = Callable[[RoomServer, float], Awaitable[str]]


async def run_demo(
    options: DemoOptions,
    *,
    out: TextIO = sys.stdout,
    stop_early: asyncio.Event | None = None,
) -> DemoOutcome:
    """Run the demo room and record it; what happened. Never raises for a failed recording.

    `stop_early` (set by Ctrl-C) stops the recording before the duration is up.
    """
    status_line: StatusLine = room_status_line
    worker_command = options.worker_command
    if worker_command is None:
        port = free_loopback_port()
        worker_command = worker_with_control(port, options.worker_log)
        if options.worker_log is not None:
            print(f"worker log: {options.worker_log}", file=out, flush=True)
        status_line = WorkerStatusLine(port)
    async with RoomServer(worker_command=worker_command) as server:
        print(f"room: {server.url} (room {DEFAULT_ROOM_ID!r})", file=out, flush=True)
        room = await join_demo_room(server.url, options.participants)
        demo = _DemoRun(server, room, options, out, status_line)
        try:
            await demo.record(stop_early or asyncio.Event())
        finally:
            await asyncio.gather(*(p.leave() for p in room.values()), return_exceptions=True)
    return demo.outcome


async def join_demo_room(
    url: str, count: int, camera: VideoFormat = CAMERA_FORMAT
) -> dict[int, RoomParticipant]:
    """Participants 1..`count` joined and publishing camera and microphone, by number."""
    room: dict[int, RoomParticipant] = {}
    try:
        for number in range(1, count + 1):
            participant = await join(url, demo_name(number))
            room[number] = participant
            for kind, track in paced_tracks(demo_participant(number, count, camera)).items():
                await participant.publish(kind, track)
    except BaseException:
        await asyncio.gather(*(p.leave() for p in room.values()), return_exceptions=True)
        raise
    return room


class _DemoRun:
    """One recording of the demo room: start it, play the script, stop it, collect statuses."""

    def __init__(
        self,
        server: RoomServer,
        room: dict[int, RoomParticipant],
        options: DemoOptions,
        out: TextIO,
        status_line: StatusLine,
    ) -> None:
        self.server = server
        self.room = room
        self.options = options
        self.out = out
        self.status_line = status_line
        self.watch = _StatusWatch(time.monotonic())
        for participant in room.values():
            self.watch.listen(participant)
        self.outcome = DemoOutcome(seen=self.watch.seen)
        self.caller = room[RECORDER_PARTICIPANT]
        self.interactive = out.isatty()

    async def record(self, stop_early: asyncio.Event) -> None:
        watch, outcome = self.watch, self.outcome
        try:
            outcome.recording_id = await self.caller.start_recording(
                webhook_url=self.options.webhook_url,
                aws_dir_path=self.options.aws_dir_path,
                config=self.options.config(),
            )
        except Exception as error:  # the room refused: START_RECORDING_FAILED with its reason
            outcome.error = f"startRecording was refused: {error}"
            return
        self._say(f"{self.caller.name} called startRecording: recording {outcome.recording_id}")
        arrived = await watch.wait_for(
            lambda: watch.first(Status.STARTED) is not None or watch.final() is not None,
            STARTED_TIMEOUT_S,
        )
        started = watch.first(Status.STARTED)
        if started is None:
            outcome.error = (
                "the recording did not start"
                if arrived
                else f"no RECORDING_STARTED within {STARTED_TIMEOUT_S:.0f} s"
            )
        else:
            outcome.started_s = started.at_s
            await self._play_script(watch.origin_s + started.at_s, stop_early)
        await self._stop()

    async def _play_script(self, started_s: float, stop_early: asyncio.Event) -> None:
        """Run the script from `started_s` (monotonic) until the duration is up, a final status
        arrives, or `stop_early` is set."""
        duration_s = self.options.duration_s
        steps = sorted(demo_script(self.options.participants), key=lambda s: s.at_fraction)
        next_line_s = 0.0
        while True:
            elapsed_s = time.monotonic() - started_s
            if elapsed_s >= duration_s or stop_early.is_set() or self.watch.final() is not None:
                break
            while steps and steps[0].at_fraction * duration_s <= elapsed_s:
                step = steps.pop(0)
                self._say(f"{elapsed_s:5.1f} s  {step.says}")
                try:
                    await step.action(self.room)
                except Exception as error:  # a refused step is reported; the recording goes on
                    self._say(f"        ({step.says} failed: {error})")
            if elapsed_s >= next_line_s:
                self._show(await self.status_line(self.server, elapsed_s))
                next_line_s += STATUS_LINE_INTERVAL_S
            wake_s = min(duration_s, next_line_s, *(s.at_fraction * duration_s for s in steps[:1]))
            self.watch.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    _first_of(self.watch.changed.wait(), stop_early.wait()),
                    max(0.0, wake_s - (time.monotonic() - started_s)),
                )
        if self.interactive:
            self.out.write("\n")

    async def _stop(self) -> None:
        """stopRecording (unless it already ended); wait for every participant's final status."""
        watch, outcome = self.watch, self.outcome
        wait_s = STOPPED_TIMEOUT_S
        if watch.final() is None:
            self._say(f"{self.caller.name} calls stopRecording")
            try:
                await self.caller.stop_recording()
            except Exception as error:  # no recording runs: its worker is gone, say so soon
                outcome.error = outcome.error or f"stopRecording was refused: {error}"
                wait_s = WORKER_GONE_GRACE_S
        if not await watch.wait_for(watch.everyone_final, wait_s):
            outcome.error = outcome.error or (
                f"not every participant saw a final status within {STOPPED_TIMEOUT_S:.0f} s"
            )
        started, stopping = watch.first(Status.STARTED), watch.first(Status.STOPPING)
        if started is not None and stopping is not None:
            outcome.stopping_s = stopping.at_s
            outcome.recorded_s = stopping.at_s - started.at_s
        if outcome.recording_id is not None:
            self._locate(outcome.recording_id)

    def _locate(self, recording_id: str) -> None:
        """Where the file and manifest are; locally, check that they are there."""
        outcome = self.outcome
        media, manifest = storage_locations(recording_id, self.options, os.environ)
        outcome.media_location, outcome.manifest_location = media, manifest
        if outcome.succeeded and not media.startswith("s3://"):
            missing = [path for path in (media, manifest) if not Path(path).is_file()]
            if missing:
                outcome.error = f"RECORDING_STOPPED, but {', '.join(missing)} is not there"

    def _say(self, text: str) -> None:
        """A line that stays (on a terminal, it replaces the status line first)."""
        prefix = "\r\x1b[2K" if self.interactive else ""
        self.out.write(f"{prefix}{text}\n")
        self.out.flush()

    def _show(self, text: str) -> None:
        """The status line: rewritten in place on a terminal, one line each time otherwise."""
        if self.interactive:
            self.out.write(f"\r\x1b[2K{text}")
            self.out.flush()
        else:
            self._say(text)


async def _first_of(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def room_status_line(server: RoomServer, elapsed_s: float) -> str:
    """The live line from what the room itself knows: time and who is in the room."""
    present = server.participant_names(DEFAULT_ROOM_ID)
    return f"recording {elapsed_s:5.1f} s | participants {len(present)}"


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for the worker's control endpoint)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_HOST, 0))
        return int(probe.getsockname()[1])


def worker_with_control(port: int, log_path: Path | None = None) -> tuple[str, ...]:
    """`recorder run` (the job on standard input) with its control endpoint on `port`.

    With `log_path`, its log (standard error) is appended there instead of interleaving with
    the demo's status line: `sh` redirects and then `exec`s the worker, so the process the
    room signals is the worker itself.
    """
    *command, job_source = DEFAULT_WORKER_COMMAND
    worker = (*command, "--control-port", str(port), job_source)
    if log_path is None:
        return worker
    return ("/bin/sh", "-c", 'exec "$@" 2>>"$0"', str(log_path), *worker)


async def worker_status(port: int, timeout_s: float = WORKER_STATUS_TIMEOUT_S) -> dict[str, Any]:
    """The worker's `GET /status` from its control endpoint on 127.0.0.1 (`recorder run
    --control-port`). Raises `aiohttp.ClientError`, `TimeoutError` or `ValueError` when it does
    not answer with a JSON object (the worker is starting, or gone)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://{LOOPBACK_HOST}:{port}/status") as response,
    ):
        status = await response.json()
    if not isinstance(status, dict):
        raise ValueError(f"the worker's status is not a JSON object: {status!r}")
    return status


class WorkerStatusLine:
    """The live line from the worker's control endpoint (`GET /status` of `recorder run`).

    The output frame rate is measured between two readings, the bitrate is the file's average so
    far; drops are the worker's own counters (video ticks skipped by a late media thread,
    encoder queue drops). Until the endpoint answers (the worker is starting), the room's line
    stands in.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._last: tuple[float, int] | None = None  # (monotonic s, frames composed)

    async def __call__(self, server: RoomServer, elapsed_s: float) -> str:
        try:
            status = await worker_status(self.port)
            frames, written = int(status["frames"]), int(status["bytes"])
            drops = sum(int(count) for count in status["drops"].values())
            present = len(status["participants"])
            recorded_s = float(status["elapsedS"])
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
            return await room_status_line(server, elapsed_s)
        now = time.monotonic()
        fps = 0.0
        if self._last is not None and now > self._last[0]:
            fps = (frames - self._last[1]) / (now - self._last[0])
        self._last = (now, frames)
        # Bytes reach the file a fragment (up to 2 s) at a time: the average is the steady figure.
        bitrate_kbps = written * 8 / recorded_s / 1000 if recorded_s > 0 else 0.0
        return (
            f"recording {recorded_s:5.1f} s | participants {present} | output {fps:4.1f} fps "
            f"| {bitrate_kbps:5.0f} kb/s | drops {drops}"
        )


def report(outcome: DemoOutcome, out: TextIO) -> None:
    """Print the statuses as each participant saw them, and where the recording is."""
    print("statuses, as each participant saw them (seconds after startRecording):", file=out)
    width = max((len(name) for name in outcome.seen), default=0)
    for name, seen in outcome.seen.items():
        steps = "  ".join(f"{s.status.name} +{s.at_s:.2f}" for s in seen) or "(none)"
        print(f"  {name:<{width}}  {steps}", file=out)
    failure = next(
        (s for seen in outcome.seen.values() for s in seen if s.status is Status.FAILED), None
    )
    if failure is not None and failure.reason:
        print(f"the recording failed: {failure.reason}", file=out)
    if outcome.succeeded:
        print(f"recorded {outcome.recorded_s:.1f} s", file=out)
        print(f"file:     {outcome.media_location}", file=out)
        print(f"manifest: {outcome.manifest_location}", file=out)
    if outcome.error is not None:
        print(f"demo failed: {outcome.error}", file=out)
    out.flush()
