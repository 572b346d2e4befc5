"""One recording, start to finish: the object that owns every task, thread and connection.

`Recording(job, options).run()` does what CONTRACT.md promises for one job and returns the exit
code (§6). In order:

1. **Media first** (fast start): the encoder opens the spool, the recording clock starts (tick 0 =
   the file's time 0) and the media engine ticks on its own thread ("media"), composing the empty
   room until someone arrives, so x264 is warm by the time the room is joined.
2. **STARTING**: the webhook notifier (if the job has a `webhookUrl`) and the room announcer are
   the lifecycle's listeners; the local control endpoint listens, if asked for.
3. **Join** the room through the job's connector, racing any stop: `JoinError` fails the run
   with exit code 3 (the spool is removed: nothing was recorded of the room). Then the connector's
   events feed the roster (one named task), delivery starts streaming the spool to its final place,
   and the stop triggers are armed.
4. **STARTED** once the room is joined and the first frames are durable in the spool (the
   encoder's first durable report; in audio mode, the first mixed audio).
5. **Stop** on SIGTERM/SIGINT (a second one hurries: storage retries are cut, what was recorded is
   kept), `POST /stop`, the room ending, the room empty for `emptyRoomTimeoutSec`, or
   `maxDurationSec`. **STOPPING**: the engine stops and closes the file, then delivery finishes
   (tail, verification, manifest), bounded by the finalisation timeout, and the run is
   **STOPPED**, or **FAILED** naming the spool that is kept (`recorder upload` finishes it).
6. Tear down with bounded waits: the room is told the last status, then left; webhooks get their
   drain time; one summary line is logged.

Status changes reach the webhook notifier and the room (`announce_status` is async while
lifecycle listeners are synchronous: `RoomAnnouncer` bridges them through a bounded queue and one
task). Every task is created through `OwnedTasks`, which names it, logs its failure and cancels it
with a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layouts.model import Size
from recorder.errors import (
    ExitCode,
    FinalizeTimeoutError,
    JoinError,
    MediaError,
    RecorderError,
    StorageError,
)
from recorder.job import Job, RecordingConfig, RoomConfig
from recorder.layout_change import (
    LayoutChangeError,
    LayoutChangeTooLateError,
    parse_layout_change,
)
from recorder.lifecycle import (
    FINALIZE_TIMEOUT_S,
    Lifecycle,
    RecordingIds,
    Status,
    StopReason,
    utc_now,
)
from recorder.media.clock import Clock, MonotonicClock, RecordingClock
from recorder.media.encoder import Encoder, EncoderSettings
from recorder.media.engine import ENGINE_STOP_TIMEOUT_S, EngineStats, MediaEngine, TickReport
from recorder.media.timeline import Timeline
from recorder.notify.payload import stopped_details
from recorder.room_announcer import RoomAnnouncer
from recorder.rooms import connector_for
from recorder.rooms.base import (
    ConnectorClosedError,
    FrameSink,
    MonotonicNow,
    RoomConnector,
    RoomEnded,
)
from recorder.rooms.timeline_sink import TimelineSink
from recorder.roster import RoomRoster, UnknownParticipantError
from recorder.storage.delivery import DeliveredRecording, RecordingDelivery
from recorder.storage.from_env import sink_from_env
from recorder.storage.keys import DeliveryTarget
from recorder.storage.manifest import LayoutChangeEntry, ManifestBuilder
from recorder.storage.spool import SpoolProgress

if TYPE_CHECKING:  # imported when first used, after the media started (start latency)
    from recorder.control import ControlServer
    from recorder.control_settings import ControlSettings
    from recorder.notify.webhook import WebhookNotifier

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
TASK_CANCEL_TIMEOUT_S = 2.0  # how long a cancelled task may take to end
CONNECTOR_CLOSE_TIMEOUT_S = 5.0  # leaving the room (peer connections, signalling)
JOIN_CANCEL_TIMEOUT_S = 2.0  # a join abandoned for a stop

ConnectorFactory = Callable[[RoomConfig, FrameSink, MonotonicNow], RoomConnector]


def _default_connector(room: RoomConfig, sink: FrameSink, clock: MonotonicNow) -> RoomConnector:
    return connector_for(room, sink, clock=clock)


@dataclass(frozen=True, slots=True)
class RecordingOptions:
    """How the worker runs this recording (the command line's and the deployment's choices)."""

    spool_dir: Path
    control: ControlSettings | None = None  # None: no control endpoint
    finalize_timeout_s: float = FINALIZE_TIMEOUT_S
    environ: Mapping[str, str] | None = None  # default: the process's own
    clock: Clock | None = None  # default: the monotonic clock (live)
    connector_factory: ConnectorFactory = _default_connector
    on_control_url: Callable[[str], None] | None = None  # told the endpoint's URL once it listens
    # The worker process (`recorder run`): once the recording has ended, ignore further stop
    # signals for the rest of the exit (see `_remove_signal_handlers`). Off in-process (tests).
    ignore_stop_signals_when_done: bool = False


@dataclass(frozen=True, slots=True)
class RecordingMetrics:
    """The figures `/metrics` exposes, read from the recording's own counters."""

    state: Status | None
    elapsed_s: float
    frames: int  # video frames composed and handed to the encoder
    late_ticks: int  # video frames skipped because the media thread was late
    encoder_drops: int  # items the encoder queue dropped
    bytes_written: int  # spool bytes written
    upload_lag_bytes: int  # durable spool bytes not stored yet
    participants: int

    @property
    def bitrate_bps(self) -> float:
        """The file's average bitrate so far."""
        return self.bytes_written * 8 / self.elapsed_s if self.elapsed_s > 0 else 0.0


def spool_path_for(spool_dir: Path, job: Job) -> Path:
    """A new spool file name for the job: its id, a random part (a relaunch with the same id
    never overwrites a spool an earlier run left behind), its extension."""
    return spool_dir / f"{job.recording_id}.{secrets.token_hex(4)}{job.media_extension}"


class OwnedTasks:
    """The recording's tasks: each named, its failure logged, all cancelled with a bounded wait."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, name: str, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=f"{self._owner}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("task %r failed", task.get_name(), exc_info=error)

    async def cancel_all(self, timeout_s: float = TASK_CANCEL_TIMEOUT_S) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                log.warning("task %r did not end within %g s", task.get_name(), timeout_s)


class Recording:
    """One job recorded from its room to its final place; `run()` once, from an event loop."""

    def __init__(self, job: Job, options: RecordingOptions) -> None:
        self.job = job
        self.options = options
        self.environ = os.environ if options.environ is None else options.environ
        self.ids = RecordingIds(recording_id=job.recording_id, meeting_id=str(job.room.room_id))
        self.lifecycle = Lifecycle(self.ids, finalize_timeout_s=options.finalize_timeout_s)
        self.manifest = ManifestBuilder(job, self.ids)
        self.progress = SpoolProgress()
        self.spool = spool_path_for(options.spool_dir, job)
        config = job.config
        self.settings = EncoderSettings.for_preset(config.preset(), config.mode, config.orientation)
        self.clock = RecordingClock(options.clock or MonotonicClock(), self.settings.fps)
        self.timeline = Timeline(self.clock)
        self.roster = RoomRoster(
            to_recording_s=self.clock.to_recording_s, now_s=self.clock.now_s, manifest=self.manifest
        )
        self.announcer = RoomAnnouncer(job.recording_id)
        self.encoder: Encoder | None = None
        self.engine: MediaEngine | None = None
        self.connector: RoomConnector | None = None
        self._tile_sizes: dict[str, Size] = {}  # video feed id -> drawn size, last reported
        self.delivery: RecordingDelivery | None = None
        self.notifier: WebhookNotifier | None = None
        self.control: ControlServer | None = None
        self.delivered: DeliveredRecording | None = None
        self._delivery_starting: asyncio.Task[None] | None = None
        self._config: RecordingConfig = config  # as applied now (layout changes replace it)
        self._tasks = OwnedTasks(f"recording {job.recording_id}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_stop: StopReason | None = None
        self._stop_requested = asyncio.Event()
        self._joined = asyncio.Event()
        self._first_media = asyncio.Event()
        self._first_media_seen = False
        self._roster_changed = asyncio.Event()
        self._media_thread: threading.Thread | None = None
        self._media_stop = threading.Event()
        self._media_error: BaseException | None = None
        self._media_stats: EngineStats | None = None
        self._origin_wall: datetime | None = None
        self.started_after_s: float | None = None  # first tick -> STARTED
        self.stop_requested_mono: float | None = None
        self.stopped_mono: float | None = None  # when the final status was reached

    # --- the one public entry point ----------------------------------------------------------

    async def run(self) -> ExitCode:
        """Record the job; the process exit code (CONTRACT.md §6)."""
        self._loop = asyncio.get_running_loop()
        self.announcer.bind()
        self._install_signal_handlers()
        try:
            media_error = self._start_media()
            await self._start_listeners()
            self.lifecycle.begin()
            if media_error is not None:
                self.lifecycle.fail(media_error)
                return self.lifecycle.exit_code
            if self._pending_stop is not None:
                self.request_stop(self._pending_stop)
            await self._start_control()
            if await self._join():
                self._after_join()
            if self.lifecycle.state is not Status.FAILED:
                await self._stop_requested.wait()
                await self._finish()
        except RecorderError as error:  # anything of ours that escaped: the run fails, says why
            log.exception("recording %s failed", self.job.recording_id)
            self._fail(error)
        except Exception as error:
            log.exception("recording %s crashed", self.job.recording_id)
            self._fail(RecorderError(f"the worker crashed: {type(error).__name__}: {error}"))
        finally:
            await self._shutdown()
        return self.lifecycle.exit_code

    # --- stopping: any thread ----------------------------------------------------------------

    def request_stop(self, reason: StopReason) -> bool:
        """Ask the recording to stop (idempotent; a repeated SIGNAL/CONTROL stop hurries).

        Safe from any thread and from signal handlers; True when this call began the stop.
        """
        if self.lifecycle.state is None:  # before STARTING: taken up as soon as it begins
            self._pending_stop = self._pending_stop or reason
            return True
        began = self.lifecycle.stop(reason)
        if began:
            self.stop_requested_mono = time.monotonic()
            log.info("recording %s: stop requested (%s)", self.job.recording_id, reason)
        self._call_on_loop(self._stop_requested.set)
        return began

    # --- the control endpoint's side (on the loop) -------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        state = self.lifecycle.state
        if state is Status.FAILED:
            return False, "the recording failed"
        if self._media_error is not None:
            return False, f"the media thread failed: {self._media_error}"
        thread = self._media_thread
        if state in (Status.STARTING, Status.STARTED) and (thread is None or not thread.is_alive()):
            return False, "the media thread is not running"
        return True, str(state) if state is not None else "launching"

    def status(self) -> dict[str, Any]:
        metrics = self.metrics()
        return {
            "recordingId": self.job.recording_id,
            "state": str(metrics.state) if metrics.state is not None else None,
            "stopReason": str(self.lifecycle.stop_reason) if self.lifecycle.stop_reason else None,
            "elapsedS": round(metrics.elapsed_s, 3),
            "participants": [p.as_dict() for p in self.roster.present()],
            "frames": metrics.frames,
            "drops": {"lateTicks": metrics.late_ticks, "encoderQueue": metrics.encoder_drops},
            "bytes": metrics.bytes_written,
            "durableBytes": self.progress.durable_bytes,
            "storedBytes": self.progress.stored_bytes,
            "uploadLagBytes": metrics.upload_lag_bytes,
            "layout": self._config.layout.model_dump(mode="json", by_alias=True),
            "theme": str(self._config.theme),
            "pinned": self.roster.pinned(),
        }

    def metrics(self) -> RecordingMetrics:
        engine_stats = self.engine.stats if self.engine is not None else None
        encoder_stats = self.encoder.stats if self.encoder is not None else None
        return RecordingMetrics(
            state=self.lifecycle.state,
            elapsed_s=self._elapsed_s(),
            frames=engine_stats.composed if engine_stats else 0,
            late_ticks=engine_stats.skipped if engine_stats else 0,
            encoder_drops=encoder_stats.queue_drops if encoder_stats else 0,
            bytes_written=encoder_stats.bytes_written if encoder_stats else 0,
            upload_lag_bytes=self.progress.upload_lag_bytes,
            participants=len(self.roster.present()),
        )

    def stop_from_control(self) -> bool:
        return self.request_stop(StopReason.CONTROL)

    def change_layout(self, body: object) -> dict[str, Any]:
        """Apply a `POST /layout` body, all or nothing; `LayoutChangeError` naming bad fields.

        An applied change goes into the manifest's `layoutChanges` at its time on the recording
        clock (a pin's: the time the roster gave its `pinned` interval), so that the manifest
        tells what the file shows from when. Once the recording is stopping a change would be in
        no frame, so it is refused (`LayoutChangeTooLateError`, HTTP 409).
        """
        state = self.lifecycle.state
        if state is Status.STOPPING or (state is not None and state.is_final):
            raise LayoutChangeTooLateError(
                f"the recording is {state}: a layout change now would not be in the file"
            )
        change = parse_layout_change(body, self.job, self._config)
        present = {participant.id for participant in self.roster.present()}
        problems = [
            f"{field}: {value!r} is not a participant of the room"
            for field, value in (("pin", change.pin), ("unpin", change.unpin))
            if value is not None and value not in present
        ]
        if problems:
            raise LayoutChangeError(problems)
        at_s: float | None = None
        try:
            if change.unpin is not None:
                at_s = self.roster.set_pinned(change.unpin, False)
            if change.pin is not None:
                at_s = self.roster.set_pinned(change.pin, True)
        except UnknownParticipantError as error:  # left between the check and now
            raise LayoutChangeError([f"pin: {error.args[0]!r} left the room"]) from None
        if change.config is not None:
            self._config = change.config
            if self.engine is not None:
                self.engine.set_layout(change.config.layout_spec())
            log.info("layout is now %s", change.config.layout_spec())
        if at_s is None:
            at_s = self._change_time_s()
        self.manifest.layout_changed(
            LayoutChangeEntry.applied(at_s, change.config, pin=change.pin, unpin=change.unpin)
        )
        return {
            "layout": self._config.layout.model_dump(mode="json", by_alias=True),
            "theme": str(self._config.theme),
            "pinned": self.roster.pinned(),
        }

    # --- starting ----------------------------------------------------------------------------

    def _start_media(self) -> MediaError | None:
        """Open the spool, start the clock and the media thread; the error if it cannot."""
        try:
            self.options.spool_dir.mkdir(parents=True, exist_ok=True)
            self.encoder = Encoder(self.spool, self.settings, on_durable=self._on_durable)
        except (OSError, MediaError) as error:
            message = error.message if isinstance(error, MediaError) else str(error)
            return MediaError(f"cannot start recording into {self.spool}: {message}")
        self.engine = MediaEngine(
            clock=self.clock,
            timeline=self.timeline,
            roster=self.roster,
            encoder=self.encoder,
            layout=self._config.layout_spec(),
            on_tick=self._on_tick,
        )
        self.clock.start()
        self._origin_wall = utc_now()
        self.manifest.recording_started(self._origin_wall)
        self._media_thread = threading.Thread(target=self._media_main, name="media", daemon=True)
        self._media_thread.start()
        log.info(
            "recording %s: media running (%s, %s, %dx%d), spool %s",
            self.job.recording_id,
            self._config.mode,
            self._config.quality,
            self.settings.canvas.width,
            self.settings.canvas.height,
            self.spool,
        )
        return None

    async def _start_listeners(self) -> None:
        if self.job.webhook_url:
            from recorder.notify.webhook import WebhookNotifier  # noqa: PLC0415 - start latency

            self.notifier = WebhookNotifier.from_env(self.job.webhook_url, self.environ)
            await self.notifier.start()
            self.lifecycle.add_listener(self.notifier.on_transition)
        self.lifecycle.add_listener(self.announcer.on_transition)

    async def _start_control(self) -> None:
        if self.options.control is None:
            return
        from recorder.control import ControlServer  # noqa: PLC0415 - start latency

        self.control = ControlServer(self, self.options.control, recording_id=self.job.recording_id)
        url = await self.control.start()
        if self.options.on_control_url is not None:
            self.options.on_control_url(url)

    async def _join(self) -> bool:
        """Join the room unless a stop comes first; False when not joined (failed or stopped)."""
        sink = TimelineSink(self.timeline)
        try:
            self.connector = self.options.connector_factory(
                self.job.room, sink, self.clock.clock.now
            )
        except JoinError as error:
            await self._join_failed(error)
            return False
        joining = self._tasks.spawn("join", self.connector.join())
        stopping = self._tasks.spawn("wait-for-stop", self._stop_requested.wait())
        await asyncio.wait({joining, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not joining.done():
            log.info("stopped while joining the room: the join is abandoned")
            joining.cancel()
            await asyncio.wait({joining}, timeout=JOIN_CANCEL_TIMEOUT_S)
            return False
        error = joining.exception()
        if isinstance(error, JoinError):
            await self._join_failed(error)
            return False
        if error is not None:
            raise error
        return True

    async def _join_failed(self, error: JoinError) -> None:
        """Nothing of the room was recorded: stop the media, remove the spool, fail (exit 3)."""
        log.error("recording %s: %s", self.job.recording_id, error.message)
        await asyncio.to_thread(self._stop_media)
        self.progress.finish()
        with contextlib.suppress(OSError):
            self.spool.unlink(missing_ok=True)
        self._fail(error)

    def _on_tick(self, report: TickReport) -> None:
        """The media thread's report of each tick: the roster's timeline, and the tile sizes for
        the room when they changed (on the loop: connectors are not thread-safe)."""
        self.roster.on_tick(report)
        if report.tile_sizes is not None:
            self._tile_sizes = dict(report.tile_sizes)
            self._call_on_loop(self._prefer_video_sizes)

    def _prefer_video_sizes(self) -> None:
        if self.connector is not None:
            for feed, size in self._tile_sizes.items():
                self.connector.prefer_video_size(feed, size)

    def _after_join(self) -> None:
        connector = self.connector
        if connector is None:
            return
        self._prefer_video_sizes()  # tiles drawn before the join
        self._joined.set()
        self.announcer.attach(connector)
        self._tasks.spawn("room-events", self._pump_events(connector))
        self._tasks.spawn("announce-started", self._announce_started())
        self._tasks.spawn("max-duration", self._stop_at_max_duration())
        timeout_s = self.job.limits.empty_room_timeout_s
        if timeout_s is not None:
            self._tasks.spawn("empty-room", self._stop_when_empty(timeout_s))
        self._delivery_starting = self._tasks.spawn("delivery-start", self._start_delivery())

    async def _start_delivery(self) -> None:
        """Write the sidecar and start streaming the spool (once; again if the first try failed)."""
        if self.delivery is not None:
            return
        delivery = RecordingDelivery(
            sink_from_env(self.environ),
            self.spool,
            DeliveryTarget.for_job(self.job),
            self.progress,
            hurry=self.lifecycle.hurry,
        )
        # The manifest's builder as the draft's source: the sidecar's draft is kept current while
        # recording (at most every SIDECAR_REFRESH_S), so a SIGKILL costs the timeline no more.
        await delivery.start(refresh=self.manifest)
        self.delivery = delivery

    # --- while recording ---------------------------------------------------------------------

    def _media_main(self) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            self._media_stats = engine.run(self._media_stop)
        except BaseException as error:  # reported by the loop; the thread must not die silently
            log.exception("the media engine failed")
            self._media_error = error
        finally:
            self._call_on_loop(self._media_ended)

    def _media_ended(self) -> None:
        if not self._media_stop.is_set():  # it ended by itself: a failure, the run cannot go on
            self._stop_requested.set()

    def _on_durable(self, durable_bytes: int) -> None:
        """Encoder thread: the spool's durable size grew (the first time: frames are in it)."""
        self.progress.advance(durable_bytes)
        if not self._first_media_seen:
            self._first_media_seen = True
            self._call_on_loop(self._first_media.set)

    async def _announce_started(self) -> None:
        await self._joined.wait()
        await self._first_media.wait()
        if self.lifecycle.state is not Status.STARTING:
            return  # stopped (or failed) before the first frames were in the file
        self.started_after_s = self.clock.now_s()
        self.lifecycle.started()
        age_s = process_age_s()
        log.info(
            "recording %s started: first frames in the file %.2f s after the first tick, "
            "%s after the process started",
            self.job.recording_id,
            self.started_after_s,
            "?" if age_s is None else f"{age_s:.2f} s",
        )

    async def _pump_events(self, connector: RoomConnector) -> None:
        while True:
            try:
                event = await connector.next_event()
            except ConnectorClosedError:
                return
            self.roster.apply(event)
            self._roster_changed.set()
            if isinstance(event, RoomEnded):
                log.info("the room ended: %s", event.reason)
                self.request_stop(StopReason.ROOM_ENDED)

    async def _stop_at_max_duration(self) -> None:
        limit_s = float(self.job.limits.max_duration_sec)
        await asyncio.sleep(max(0.0, limit_s - self.clock.now_s()))
        log.info("the recording reached its maximum duration (%g s)", limit_s)
        self.request_stop(StopReason.MAX_DURATION)

    async def _stop_when_empty(self, timeout_s: float) -> None:
        while True:
            self._roster_changed.clear()
            since_s = self.roster.empty_since_s
            if since_s is None:
                await self._roster_changed.wait()
                continue
            remaining_s = since_s + timeout_s - self.clock.now_s()
            if remaining_s <= 0:
                log.info("the room has been empty for %g s", timeout_s)
                self.request_stop(StopReason.EMPTY_ROOM)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._roster_changed.wait(), remaining_s)

    # --- stopping ----------------------------------------------------------------------------

    async def _finish(self) -> None:
        state = self.lifecycle.state
        if state is None or state.is_final:
            return
        if state is not Status.STOPPING:  # the media thread ended by itself
            await self._media_failed()
            return
        if self._delivery_starting is not None:
            await asyncio.wait({self._delivery_starting})  # a failure is logged; tried again below
        try:
            self.delivered = await self.lifecycle.finalize(
                self._finalize(), local_path=str(self.spool)
            )
        except (StorageError, MediaError) as error:
            await self._abandon_delivery()
            self._fail(_naming_spool(error, self.spool))
        except FinalizeTimeoutError as error:  # frozen: FAILED (emitted already, or now)
            await self._abandon_delivery()
            self._fail(error)
        else:
            self.lifecycle.stopped(stopped_details(self.delivered))

    async def _finalize(self) -> DeliveredRecording:
        """Stop the media and close the file, then deliver it and its manifest."""
        await self._start_delivery()
        try:
            stats = await asyncio.to_thread(self._stop_media)
        finally:
            encoder = self.encoder
            failed = self._media_error is not None or encoder is None or encoder.failed
            # The uploader waits for this; after a failure, the durable watermark is all there is.
            self.progress.finish(None if failed else encoder.stats.bytes_written)
        if self._media_error is not None:
            raise MediaError(f"the media failed: {self._media_error}")
        delivery = self.delivery
        if delivery is None:
            raise RuntimeError("finalising without a delivery")
        manifest = self.manifest.build(
            stopped_at=utc_now(),
            stop_reason=self.lifecycle.stop_reason,
            duration_s=stats.ticks / self.clock.fps,
        )
        return await delivery.finish(manifest)

    def _stop_media(self) -> EngineStats:
        """Blocking: stop the tick loop, wait for it to flush and close the file (bounded)."""
        self._media_stop.set()
        thread = self._media_thread
        if thread is not None:
            thread.join(ENGINE_STOP_TIMEOUT_S)
            if thread.is_alive():
                raise FinalizeTimeoutError(
                    f"the media thread did not stop within {ENGINE_STOP_TIMEOUT_S} s",
                    local_path=str(self.spool),
                )
        if self.engine is None:
            return EngineStats()
        return self._media_stats or self.engine.stats

    async def _media_failed(self) -> None:
        error = self._media_error or RuntimeError("the media thread ended")
        await asyncio.to_thread(self._stop_media)
        self.progress.finish()
        await self._abandon_delivery()
        self._fail(MediaError(f"the media failed: {error}", local_path=str(self.spool)))

    async def _abandon_delivery(self) -> None:
        if self.delivery is not None:
            await self.delivery.abandon()

    def _fail(self, error: RecorderError) -> None:
        state = self.lifecycle.state
        if state is not None and state.is_final:
            return
        if state is None:
            self.lifecycle.begin()
        log.error("recording %s failed (%s): %s", self.job.recording_id, error.code, error.message)
        self.lifecycle.fail(error)

    async def _shutdown(self) -> None:
        """Bounded teardown, whatever happened: media, tasks, room, control, webhooks."""
        self.stopped_mono = time.monotonic()
        if self._media_thread is not None and self._media_thread.is_alive():
            with contextlib.suppress(RecorderError):
                await asyncio.to_thread(self._stop_media)
        if not self.progress.finished:
            self.progress.finish()
        if self.delivery is not None:  # finish() or abandon() stopped it, unless the run crashed
            stopping = self.delivery.stop_refreshing()
            await _bounded(stopping, TASK_CANCEL_TIMEOUT_S, "sidecar refresh")
        await self._tasks.cancel_all()
        await self.announcer.close()
        closing: list[Coroutine[Any, Any, Any]] = []
        if self.connector is not None:
            closing.append(_bounded(self.connector.close(), CONNECTOR_CLOSE_TIMEOUT_S, "room"))
        if self.control is not None:
            closing.append(self.control.close())
        if self.notifier is not None:
            closing.append(self.notifier.close())
        await asyncio.gather(*closing, return_exceptions=True)
        self._remove_signal_handlers()
        log.info(self.summary())

    # --- helpers -----------------------------------------------------------------------------

    def summary(self) -> str:
        """The run's one summary line."""
        metrics = self.metrics()
        stats = self._media_stats or (self.engine.stats if self.engine else EngineStats())
        stored_s = (
            self.stopped_mono - self.stop_requested_mono
            if self.stopped_mono is not None and self.stop_requested_mono is not None
            else None
        )
        webhooks = "none"
        if self.notifier is not None:
            report = self.notifier.report
            webhooks = f"{len(report.delivered)} delivered, {len(report.undelivered)} undelivered"
        sidecar = ""
        refreshed = self.delivery.refresh_stats if self.delivery is not None else None
        if refreshed is not None:
            sidecar = f"; sidecar refreshed {refreshed.written} times, {refreshed.failed} failed"
        kept = ""
        if self.lifecycle.error is not None:
            kept = f"; error {self.lifecycle.error.code}"
        if self.lifecycle.state is Status.FAILED and self.spool.exists():
            kept += f"; the recording is kept at {self.spool}"
        return (
            f"recording {self.job.recording_id}: {self.lifecycle.state} "
            f"(exit {int(self.lifecycle.exit_code)}, stop: {self.lifecycle.stop_reason}); "
            f"duration {metrics.elapsed_s:.2f} s, frames {stats.composed} composed, "
            f"{stats.skipped} skipped late, {metrics.encoder_drops} dropped by the encoder queue; "
            f"{metrics.bytes_written} bytes; stop to final status "
            f"{'-' if stored_s is None else f'{stored_s:.2f} s'}; webhooks {webhooks}; "
            f"room told {len(self.announcer.announced)} statuses{sidecar}{kept}"
        )

    def _change_time_s(self) -> float:
        """The recording time a layout change applies from: the clock's now, never below 0.

        The clock starts (tick 0, the file's time 0) before the control endpoint listens, so a
        change made before RECORDING_STARTED still has its own time: frames from tick 0 are in
        the file already (STARTED only says they are durable), and the old layout is what they
        show until then. Only a recording never run (no clock) gives 0.
        """
        return max(0.0, self.clock.now_s()) if self.clock.started else 0.0

    def _elapsed_s(self) -> float:
        if self._media_stats is not None:
            return self._media_stats.ticks / self.clock.fps
        return max(0.0, self.clock.now_s()) if self.clock.started else 0.0

    def _call_on_loop(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            callback()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits any more
                loop.call_soon_threadsafe(callback)

    def _install_signal_handlers(self) -> None:
        loop = self._loop
        if loop is None:
            return
        for signum in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signal_handlers(self) -> None:
        """Give the stop signals back; in the worker process, ignore them from now on.

        The recording has its final status and its exit code: a launcher's SIGTERM during the
        rest of the exit (closing the loop, joining threads, the interpreter's own teardown:
        tens of ms) has nothing left to stop, and with the default action it would end the
        process as "killed by SIGTERM" (-15, 143 in a shell) instead of the recording's code,
        which is what the platform reads. A stuck exit is still ended by the launcher's SIGKILL.
        """
        loop = self._loop
        if loop is None:
            return
        for signum in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
                if self.options.ignore_stop_signals_when_done:
                    signal.signal(signum, signal.SIG_IGN)

    def _on_signal(self, signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        if self.lifecycle.state is not None and self.lifecycle.state.is_final:
            return
        self.request_stop(StopReason.SIGNAL)


def process_age_s() -> float | None:
    """Seconds since this process started (Linux `/proc`), for the start-latency log line."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        started_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started_s
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _naming_spool(error: RecorderError, spool: Path) -> RecorderError:
    """The error, with the spool named when it is still there (the webhook and log say where)."""
    if error.local_path is None and spool.exists():
        error.local_path = str(spool)
    return error


async def _bounded(work: Coroutine[Any, Any, Any], timeout_s: float, what: str) -> None:
    try:
        await asyncio.wait_for(work, timeout_s)
    except TimeoutError:
        log.warning("closing the %s took longer than %g s; left behind", what, timeout_s)
    except Exception:
        log.exception("closing the %s failed", what)
