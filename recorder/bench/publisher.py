"""A bench's publisher in its own process: one participant of the embedded room, and its report.

Why a process each: aiortc's VP8 and Opus encoders of four participants in the bench's own Python
process could not keep real time on a small machine (they sent ~83 % of real-time audio frames);
each of their tracks then fell behind and re-anchored its own timestamps (`PacedTrack.resyncs`),
which shifts the *sender's* A/V, and the recording faithfully shows it. A long run's A/V drift can
only be put on the recorder when every sender kept real time, so each sender here has its own
interpreter (its own GIL and event loop) and says at the end how it did.

The child (`python -m recorder.bench.publisher --url URL --name NAME --source tone:1|clapper`)
imports everything, says `ready`, joins when told, publishes camera and microphone through the
project's participant client (`recorder.client`), and then obeys commands, one JSON object a line
on its standard input, answering with JSON lines on its standard output:

* `{"command": "join"}` -> `{"event": "joined", "participantId": ..., "at_s": ...}`;
* `{"command": "start", "config": {...}}` -> `{"event": "reply", "recordingId": ...}` (or
  `"error"`), then `{"event": "status", "status": ..., "at_s": ...}` for every status it hears;
* `{"command": "stop"}` -> `{"event": "reply", "recordingId": ...}`;
* `{"command": "leave"}`, end of input (its parent is gone), SIGTERM, SIGINT or `--max-s`:
  it leaves the room and prints its last line, `{"event": "report", ...}`: per track the frames
  its sender took against the real-time count for the time it sent (`real_time`), how often the
  paced source re-anchored (`resyncs`) and by how much in all (`shift_s`).

Times (`at_s`) are `time.monotonic()`: CLOCK_MONOTONIC, one clock for every process here, so the
parent times statuses as if it had heard them itself.

The parent side is `PublisherProcess` (one child) and `publishing` (a room of them, joined in
order, always taken down: asked to leave within `LEAVE_TIMEOUT_S`, killed after it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0  # a fresh interpreter importing aiortc, av and numpy on a busy machine
JOIN_TIMEOUT_S = 20.0  # one join and two publishes on 127.0.0.1
REQUEST_TIMEOUT_S = 20.0  # startRecording / stopRecording answered by the room
LEAVE_TIMEOUT_S = 15.0  # leave the room (peer connections close in PEER_CLOSE_TIMEOUT_S) + report
KILL_TIMEOUT_S = 5.0  # after SIGKILL: reaping the process
KEPT_REAL_TIME_FRACTION = 0.98  # a track's sender took at least this share of real-time frames
TONE_SOURCE_PREFIX = "tone:"
CLAPPER_SOURCE = "clapper"

StatusListener = Callable[[str, float], None]  # status, CLOCK_MONOTONIC when it was heard


class PublisherError(RuntimeError):
    """A publisher process did not do what it was asked in time, or answered with an error."""


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackReport:
    """How one published track's sender kept up."""

    frames: int  # frames its sender (encoder) took
    expected_frames: int  # real time over the same span: seconds x frame rate, plus the first
    seconds: float  # from the first frame taken to the last
    resyncs: int  # the paced source fell > RESYNC_AFTER_S behind and re-anchored its pts
    shift_s: float  # how far those re-anchors moved its pts ahead, in all

    @property
    def real_time(self) -> float:
        """Frames taken over the real-time count: 1.0 for a sender that kept up."""
        return self.frames / self.expected_frames if self.expected_frames else 0.0

    @property
    def kept_real_time(self) -> bool:
        return self.real_time >= KEPT_REAL_TIME_FRACTION and self.resyncs == 0


@dataclass(frozen=True, slots=True)
class PublisherReport:
    """A publisher's last line, parsed; `tracks` by kind (`audio`, `camera`)."""

    name: str
    tracks: dict[str, TrackReport]
    cpu_s: float = 0.0  # the child's own CPU (all its threads: encoders too), from `ready` on
    seconds: float = 0.0  # its life from `ready` to the report
    exit_code: int | None = None

    @property
    def kept_real_time(self) -> bool:
        return bool(self.tracks) and all(t.kept_real_time for t in self.tracks.values())

    @property
    def av_shift_s(self) -> float | None:
        """Its own A/V shift from re-anchoring (audio's pts moved ahead minus the camera's):
        what the recording shows on top of the recorder's own timing."""
        audio, camera = self.tracks.get("audio"), self.tracks.get("camera")
        if audio is None or camera is None:
            return None
        return audio.shift_s - camera.shift_s

    def to_json(self) -> dict[str, Any]:
        return {
            "kept_real_time": self.kept_real_time,
            "av_shift_s": None if self.av_shift_s is None else round(self.av_shift_s, 4),
            "cpu_s_per_s": round(self.cpu_s / self.seconds, 3) if self.seconds else None,
            "exit_code": self.exit_code,
            "tracks": {
                kind: {
                    "frames": t.frames,
                    "expected_frames": t.expected_frames,
                    "real_time": round(t.real_time, 4),
                    "seconds": round(t.seconds, 2),
                    "resyncs": t.resyncs,
                    "shift_s": round(t.shift_s, 4),
                }
                for kind, t in self.tracks.items()
            },
        }

    @classmethod
    def parse(cls, line: dict[str, Any], exit_code: int | None) -> PublisherReport:
        tracks = {
            str(kind): TrackReport(
                frames=int(t["frames"]),
                expected_frames=int(t["expected_frames"]),
                seconds=float(t["seconds"]),
                resyncs=int(t["resyncs"]),
                shift_s=float(t["shift_s"]),
            )
            for kind, t in (line.get("tracks") or {}).items()
        }
        return cls(
            str(line.get("name")),
            tracks,
            cpu_s=float(line.get("cpu_s") or 0.0),
            seconds=float(line.get("seconds") or 0.0),
            exit_code=exit_code,
        )


# --- the parent side -----------------------------------------------------------------------------


class PublisherProcess:
    """One publisher child, driven over its standard input and output (module docstring).

    Its standard error (logs) is the parent's. Every wait is bounded; `close()` always ends the
    process: asked to leave, then killed, then reaped.
    """

    def __init__(self, name: str, source: str, url: str, max_s: float) -> None:
        self.name = name
        self.source = source
        self.url = url
        self.max_s = max_s
        self.on_status: StatusListener | None = None
        self.participant_id: str | None = None
        self.report: PublisherReport | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # replies, joined, ready
        self._report_line: dict[str, Any] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "recorder.bench.publisher", "--url", self.url,
            "--name", self.name, "--source", self.source, "--max-s", f"{self.max_s:.1f}",
        ]  # fmt: skip

    async def launch(self) -> None:
        """Start the child (it imports and says `ready`; `join` follows separately)."""
        self._process = await asyncio.create_subprocess_exec(
            *self.command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._read(), name=f"bench: publisher {self.name}")

    async def _read(self) -> None:
        """Every line of the child's output: statuses to `on_status`, the report kept, the
        rest queued for whoever waits on it; end of output queued as `{"event": "exited"}`."""
        output = self._process.stdout if self._process is not None else None
        try:
            while output is not None and (line := await output.readline()):
                try:
                    message = json.loads(line)
                except ValueError:
                    log.debug("publisher %s: %r", self.name, line)
                    continue
                if not isinstance(message, dict):
                    continue
                event = message.get("event")
                if event == "status":
                    self._status(message)
                elif event == "report":
                    self._report_line = message
                else:
                    self._events.put_nowait(message)
        finally:
            self._events.put_nowait({"event": "exited"})

    def _status(self, message: dict[str, Any]) -> None:
        """Hand a status on; a listener that fails is logged, and the reading goes on."""
        if self.on_status is None:
            return
        try:
            self.on_status(str(message.get("status")), float(message["at_s"]))
        except Exception:
            log.exception("publisher %s: the status listener failed on %s", self.name, message)

    async def _expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self._events.get(), timeout_s)
        except TimeoutError:
            raise PublisherError(f"publisher {self.name}: no {event!r} in {timeout_s} s") from None
        if message.get("event") != event or "error" in message:
            raise PublisherError(f"publisher {self.name}: wanted {event!r}, got {message}")
        return message

    def _send(self, command: dict[str, Any]) -> None:
        if self._process is None or self._process.stdin is None:
            raise PublisherError(f"publisher {self.name} is not running")
        self._process.stdin.write((json.dumps(command) + "\n").encode())

    async def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        await self._expect("ready", timeout_s)

    async def join(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Join and publish; returns once both tracks are published."""
        self._send({"command": "join"})
        self.participant_id = str((await self._expect("joined", timeout_s))["participantId"])

    async def start_recording(
        self, config: dict[str, Any], timeout_s: float = REQUEST_TIMEOUT_S
    ) -> str:
        self._send({"command": "start", "config": config})
        return str((await self._expect("reply", timeout_s))["recordingId"])

    async def stop_recording(self, timeout_s: float = REQUEST_TIMEOUT_S) -> str:
        self._send({"command": "stop"})
        return str((await self._expect("reply", timeout_s))["recordingId"])

    async def close(self, timeout_s: float = LEAVE_TIMEOUT_S) -> PublisherReport | None:
        """Leave, report and exit within `timeout_s`, or be killed; the report, if it came."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(OSError, PublisherError):
                self._send({"command": "leave"})
                if process.stdin is not None:
                    process.stdin.close()  # end of input: the child leaves even if it missed that
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                log.warning("publisher %s did not leave in %s s: killed", self.name, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), KILL_TIMEOUT_S)
        if self._reader is not None:  # the output ends with the process; bounded all the same
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, KILL_TIMEOUT_S)
        if self._report_line is not None:
            self.report = PublisherReport.parse(self._report_line, process.returncode)
        return self.report


@contextlib.asynccontextmanager
async def publishing(
    url: str, publishers: Sequence[tuple[str, str]], max_s: float
) -> AsyncIterator[list[PublisherProcess]]:
    """Publishers `(name, source)` in their own processes, joined in this order (the layout
    places tiles by join order), publishing until the block ends; then every one leaves, or is
    killed, whatever happened in the block. Their reports are on each `.report` afterwards.

    All start at once (importing takes seconds each), then join one by one.
    """
    processes = [PublisherProcess(name, source, url, max_s) for name, source in publishers]
    try:
        for process in processes:
            await process.launch()
        for process in processes:
            await process.ready()
        for process in processes:
            await process.join()
        yield processes
    finally:
        await asyncio.gather(*(p.close() for p in processes), return_exceptions=True)


# --- the child side ------------------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _source(spec: str, name: str) -> Any:
    """The synthetic participant named by `--source`, with the live bench's camera."""
    from recorder.bench.live import LIVE_CAMERA_FPS, LIVE_CAMERA_SIZE  # noqa: PLC0415
    from recorder.testing.clapper import clapper_participant  # noqa: PLC0415
    from recorder.testing.sources import AudioFormat, VideoFormat, synthetic_participant  # noqa: PLC0415

    camera = VideoFormat(*LIVE_CAMERA_SIZE, fps=LIVE_CAMERA_FPS)
    if spec == CLAPPER_SOURCE:
        return clapper_participant(name, camera)
    if spec.startswith(TONE_SOURCE_PREFIX):
        index = int(spec.removeprefix(TONE_SOURCE_PREFIX))
        return synthetic_participant(index, name, camera, AudioFormat())
    raise ValueError(f"unknown source {spec!r} (tone:N or clapper)")


class _Child:
    """The child's participant: joins, publishes, obeys commands, reports (module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.source = _source(args.source, args.name)
        self.participant: Any = None
        self.tracks: dict[Any, Any] = {}  # TrackKind -> PacedTrack
        self.ready_at_s = time.monotonic()
        self.ready_cpu_s = time.process_time()

    async def join(self) -> None:
        from recorder.client import join  # noqa: PLC0415
        from recorder.client.media import paced_tracks  # noqa: PLC0415

        self.participant = await join(self.args.url, self.args.name)
        for kind, track in paced_tracks(self.source).items():
            self.tracks[kind] = track
            await self.participant.publish(kind, track)

        def heard(state: Any) -> None:
            _emit("status", status=str(state.status), at_s=time.monotonic())

        self.participant.on_recording_state_changed = heard
        _emit("joined", participantId=self.participant.id, at_s=time.monotonic())

    async def obey(self, message: dict[str, Any]) -> bool:
        """Carry out one command; False for `leave`."""
        command = message.get("command")
        if command == "leave":
            return False
        if command == "join" and self.participant is None:
            await self.join()
        elif command in ("start", "stop") and self.participant is not None:
            try:
                if command == "start":
                    config = message.get("config")
                    recording_id = await self.participant.start_recording(
                        config=config if isinstance(config, dict) else {}
                    )
                else:
                    recording_id = await self.participant.stop_recording()
            except Exception as error:  # the room refused: the parent decides what that means
                _emit("reply", error=f"{type(error).__name__}: {error}")
            else:
                _emit("reply", recordingId=recording_id)
        else:
            _emit("reply", error=f"cannot {command!r} now")
        return True

    async def leave_and_report(self) -> None:
        """Leave the room (bounded) and print the report: always the last line."""
        sent = self.participant.sent() if self.participant is not None else {}
        if self.participant is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.participant.leave(), LEAVE_TIMEOUT_S)
        _emit(
            "report",
            name=self.args.name,
            cpu_s=round(time.process_time() - self.ready_cpu_s, 3),
            seconds=round(time.monotonic() - self.ready_at_s, 3),
            tracks={
                str(kind): self._track_report(kind.media_kind, paced, sent.get(kind))
                for kind, paced in self.tracks.items()
            },
        )

    def _track_report(self, media_kind: str, paced: Any, sent: Any) -> dict[str, Any]:
        """One track: what its sender took against the real-time count over the same span."""
        if media_kind == "audio":
            audio = self.source.audio_format
            frame_s = audio.samples_per_frame / audio.sample_rate_hz
        else:
            frame_s = 1.0 / self.source.video_format.fps
        frames = sent.frames if sent is not None else 0
        seconds = sent.last_s - sent.first_s if frames else 0.0
        return {
            "frames": frames,
            "expected_frames": round(seconds / frame_s) + 1 if frames else 0,
            "seconds": round(seconds, 3),
            "resyncs": paced.resyncs,
            "shift_s": round(paced.shift_s, 4),
        }


async def _child(args: argparse.Namespace) -> int:
    import recorder.client  # noqa: F401, PLC0415 - imported before `ready`: joins are then quick

    child = _Child(args)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.call_later(args.max_s, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _emit("ready")
    try:
        while not stop.is_set():
            reading = asyncio.ensure_future(reader.readline())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not reading.done():
                reading.cancel()
                break
            line = reading.result()
            if not line:
                break  # end of input: the parent is done, or gone
            message = json.loads(line)
            if not isinstance(message, dict) or not await child.obey(message):
                break
    finally:
        await child.leave_and_report()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one bench publisher (see the module docstring)")
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--source", required=True, help="tone:N or clapper")
    parser.add_argument("--max-s", type=float, required=True, help="leave after this at most")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="publisher %(name)s: %(message)s")
    return asyncio.run(_child(args))


if __name__ == "__main__":
    sys.exit(main())
