"""The media tick loop: one tick per output frame, from who is in the room to encoded media.

The same loop runs live and offline; only what is injected differs:

* the clock: `RecordingClock` over a `MonotonicClock` live (ticks are paced in real time), over
  a `ManualClock` offline (`wait_for_tick` jumps to the tick: as fast as the CPU allows);
* the feeder: offline, a callable that pushes the test streams' frames into the timeline up to
  the end of each tick before it runs (live, the event loop pushes as frames arrive).

Each tick i, on the media thread:

1. audio: the timeline's span for tick i (every present participant, visible or not) goes
   through the mixer, whose frames go to the encoder; the mixer's speaking states are updated;
2. video (video-and-audio mode only): the roster's participants at the tick, with speaking
   states from the mixer, go through the layouts (`plan_frame`: select, arrange, scene; the
   previous tick's scene is reused while nothing drawn changed); the
   compositor draws the scene with each feed's latest picture; the frame goes to the encoder with
   pts i.

The roster is read one playout delay behind the tick, because the media it describes is shown one
playout delay after it arrives (`recorder.media.timeline`): a participant's tile appears when
their first frame is due, not a playout delay before it with an avatar.

Live lateness: if the loop finds itself more than `LATE_SKIP_AFTER_TICKS` behind the clock (a
stall: CPU starvation, a long encoder wait), it skips composing the missed ticks, so it is back in
step at once, but still mixes and encodes their audio, which the timeline holds, and gives the
encoder a copy of the last composed frame for each of them: the file stays constant frame rate
(frame i has pts i, so keyframes stay at most `KEYFRAME_INTERVAL_S` apart and players see no
gap), its video holds still for the stall, no audio is lost, and it keeps its wall-clock
duration. Skips are counted.

Stop: `run` returns when `stop` is set or the requested duration is reached; it then flushes the
mixer and closes the encoder (last fragment written), even when a tick failed.

Live hooks: `set_layout` switches the layout from any thread (the next tick plans with it), and
`on_tick`, called on the media thread after every tick, tells the recording what the tick did
(speech states, the feeds drawn) for its participant timeline, without a second loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import av

from layouts.model import LayoutSpec, ParticipantView, Size
from layouts.scene import Scene, SceneCache, plan_frame
from layouts.selection import Selection
from recorder.errors import FinalizeTimeoutError, MediaError
from recorder.media.clock import RecordingClock
from recorder.media.compositor import Compositor
from recorder.media.encoder import Encoder, EncoderStats
from recorder.media.mixer import Mixer, SpeechState
from recorder.media.timeline import Timeline

log = logging.getLogger(__name__)

# Live: a tick found more than this many frame periods late is skipped (its audio is kept).
LATE_SKIP_AFTER_TICKS = 2
# How long `stop()` waits for the media thread to flush and close the file.
ENGINE_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One video feed present in the room, as the roster knows it.

    `view.speaking` and `view.last_spoke` are filled in by the engine from the mixer, by
    `audio_feed_id` (the participant's microphone feed; None for a screen share or no audio).
    """

    view: ParticipantView
    audio_feed_id: str | None = None


class Roster(Protocol):
    """Who is in the room at a time on the recording clock (seconds since the first tick)."""

    def entries(self, recording_s: float) -> Sequence[RosterEntry]: ...


Feeder = Callable[[float], None]  # offline: push source frames due before this recording time


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one tick did, for `on_tick` (the live recording's participant timeline)."""

    index: int
    tick_s: float  # the tick's recording time (its video pts times the time base)
    speech: Mapping[str, SpeechState]  # by audio feed id, after this tick's audio was mixed
    shown: tuple[str, ...] | None  # feed ids drawn on this frame; None: no frame was composed
    # The size each video feed is drawn at, set on the ticks where the tiles changed (a room
    # that forwards several qualities is asked for the one that fills its tile); else None.
    tile_sizes: Mapping[str, Size] | None = None


TickObserver = Callable[[TickReport], None]


@dataclass(slots=True)
class EngineStats:
    """Counters and time per stage, for the run's summary line and the benchmark."""

    ticks: int = 0  # ticks run (audio mixed; video composed unless skipped or audio mode)
    composed: int = 0  # video frames composed and handed to the encoder
    skipped: int = 0  # live: late ticks not composed (the last frame repeated)
    feed_s: float = 0.0  # offline: pushing source frames into the timeline
    mix_s: float = 0.0  # reading the timeline's audio and mixing it
    plan_s: float = 0.0  # roster, selection, geometry, scene
    compose_s: float = 0.0
    encode_put_s: float = 0.0  # handing frames to the encoder (waits on a full queue included)
    close_s: float = 0.0  # flushing the mixer and the encoder at the end
    encoder: EncoderStats = field(default_factory=EncoderStats)

    def summary(self) -> str:
        """One line for the run's log."""
        return (
            f"ticks={self.ticks} composed={self.composed} skipped={self.skipped} "
            f"feed={self.feed_s:.2f}s mix={self.mix_s:.2f}s plan={self.plan_s:.2f}s "
            f"compose={self.compose_s:.2f}s put={self.encode_put_s:.2f}s "
            f"close={self.close_s:.2f}s; {self.encoder.summary()}"
        )


class MediaEngine:
    """Runs the tick loop on the calling thread (`run`) or on its own thread (`start`/`stop`)."""

    def __init__(
        self,
        *,
        clock: RecordingClock,
        timeline: Timeline,
        roster: Roster,
        encoder: Encoder,
        layout: LayoutSpec,
        feeder: Feeder | None = None,
        on_tick: TickObserver | None = None,
    ) -> None:
        """`on_tick` runs on the media thread after each tick: it must be quick and not block."""
        if clock.fps != encoder.settings.fps:
            raise ValueError(
                f"clock ticks at {clock.fps} fps, the encoder at {encoder.settings.fps}"
            )
        if timeline.recording_clock is not clock:
            raise ValueError("the timeline must run on the engine's recording clock")
        self.clock = clock
        self.timeline = timeline
        self.roster = roster
        self.encoder = encoder
        self.layout = layout
        self.feeder = feeder
        self.on_tick = on_tick
        self._observer_errors = 0
        self.mixer = Mixer()
        self.has_video = encoder.settings.has_video
        self.canvas = encoder.settings.canvas
        self.compositor = Compositor(self.canvas) if self.has_video else None
        self.stats = EngineStats()
        self._selection: Selection | None = None
        self._scenes = SceneCache()
        self._last_scene: Scene | None = None
        self._tile_sizes: dict[str, Size] = {}
        self._tiles_changed = False
        self._last_frame: av.VideoFrame | None = None  # repeated on late ticks
        self._roster_delay_s = timeline.settings.playout_delay_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- running ----------------------------------------------------------------------------

    def run(
        self, stop: threading.Event | None = None, duration_s: float | None = None
    ) -> EngineStats:
        """Tick until `stop` is set or `duration_s` of output is made; flush; the counters.

        The file then holds exactly `round(duration_s * fps)` frames and as many seconds of audio.
        """
        stop = stop or self._stop
        end = None if duration_s is None else round(duration_s * self.clock.fps)
        if not self.clock.started:
            self.clock.start()
        index = 0
        try:
            while not stop.is_set() and (end is None or index < end):
                if not self.clock.wait_for_tick(index, stop):
                    break
                behind = self.clock.tick_at(self.clock.now_s()) - index
                if behind > LATE_SKIP_AFTER_TICKS:
                    last = behind + index if end is None else min(end, behind + index)
                    log.warning(
                        "media: %d ticks late at tick %d: skipping their video", behind, index
                    )
                    for late in range(index, last):
                        self._feed(late)
                        self._mix(late)
                        self._repeat(late)
                        self.stats.ticks += 1
                        self.stats.skipped += 1
                        self._report(late, None)
                    index = last
                    continue
                self._feed(index)
                self._mix(index)
                shown = self._compose(index) if self.has_video else None
                self.stats.ticks += 1
                self._report(index, shown)
                index += 1
        finally:
            self._close()
        return self.stats

    def start(self, duration_s: float | None = None) -> None:
        """Run on a thread named "media"; `stop()` ends it."""
        if self._thread is not None:
            raise RuntimeError("the media engine is already running")

        def target() -> None:
            try:
                self.run(self._stop, duration_s)
            except BaseException as error:  # reported by stop(); the thread must not die silently
                log.exception("media engine failed")
                self._error = error

        self._thread = threading.Thread(target=target, name="media", daemon=True)
        self._thread.start()

    def set_layout(self, layout: LayoutSpec) -> None:
        """Switch the layout mid-recording, from any thread; the next tick plans with it.

        One reference assignment of a frozen value: the media thread reads either the old
        layout or the new one, never a mix.
        """
        self.layout = layout

    def stop(self, timeout_s: float = ENGINE_STOP_TIMEOUT_S) -> EngineStats:
        """Stop ticking, flush, close the file; the counters. Idempotent.

        Raises what the loop raised, or `FinalizeTimeoutError` when it did not finish in time.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise FinalizeTimeoutError(f"the media thread did not stop within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self.stats

    # -- one tick ---------------------------------------------------------------------------

    def _feed(self, index: int) -> None:
        if self.feeder is None:
            return
        started = time.perf_counter()
        self.feeder(self.clock.tick_s(index + 1))
        self.stats.feed_s += time.perf_counter() - started

    def _mix(self, index: int) -> None:
        started = time.perf_counter()
        start, count = self.clock.audio_span(index)
        frames = self.mixer.mix(start, count, self.timeline.read_audio(start, count))
        mixed = time.perf_counter()
        self.stats.mix_s += mixed - started
        for frame in frames:
            self.encoder.put_audio(frame)
        self.stats.encode_put_s += time.perf_counter() - mixed

    def _compose(self, index: int) -> tuple[str, ...] | None:
        """Compose and encode frame `index`; the feed ids it drew."""
        if self.compositor is None:
            return None
        started = time.perf_counter()
        tick_s = self.clock.tick_s(index)
        views = self._views(tick_s - self._roster_delay_s)
        self._selection, scene = plan_frame(
            self._selection, views, self.layout, self.canvas, tick_s, cache=self._scenes
        )
        pictures = self.timeline.pictures(tick_s)
        planned = time.perf_counter()
        frames = {feed: None if p.stale else p.frame for feed, p in pictures.items()}
        out = self.compositor.compose(scene, frames)
        composed = time.perf_counter()
        self.encoder.put_video(out, index)
        self._last_frame = out
        self.stats.plan_s += planned - started
        self.stats.compose_s += composed - planned
        self.stats.encode_put_s += time.perf_counter() - composed
        self.stats.composed += 1
        if scene is not self._last_scene:
            self._last_scene = scene
            sizes = {plan.tile.feed_id: plan.tile.rect.size for plan in scene.tiles}
            if sizes != self._tile_sizes:
                self._tile_sizes = sizes
                self._tiles_changed = True
        return self._selection.shown

    def _repeat(self, index: int) -> None:
        """A late tick's video: a copy of the last composed frame (the encoder owns each frame
        it is given and stamps its pts, so the same object cannot go twice)."""
        if self._last_frame is None:
            return  # nothing composed yet: the file's first frame is still to come
        started = time.perf_counter()
        copy = av.VideoFrame.from_ndarray(self._last_frame.to_ndarray(), format="yuv420p")
        self.encoder.put_video(copy, index)
        self.stats.encode_put_s += time.perf_counter() - started

    def _report(self, index: int, shown: tuple[str, ...] | None) -> None:
        if self.on_tick is None:
            return
        try:
            sizes = self._tile_sizes if self._tiles_changed else None
            self._tiles_changed = False
            self.on_tick(
                TickReport(index, self.clock.tick_s(index), self.mixer.speech(), shown, sizes)
            )
        except Exception:  # bookkeeping must never stop the media; say so once, count the rest
            self._observer_errors += 1
            if self._observer_errors == 1:
                log.exception("media: the tick observer failed; the recording goes on")

    def _views(self, roster_s: float) -> list[ParticipantView]:
        speech = self.mixer.speech()
        return [_with_speech(entry, speech) for entry in self.roster.entries(roster_s)]

    def _close(self) -> None:
        started = time.perf_counter()
        try:
            for frame in self.mixer.flush():
                self.encoder.put_audio(frame)
        except MediaError:
            log.debug("media: the encoder failed before the mixer's tail", exc_info=True)
        finally:
            try:
                self.stats.encoder = self.encoder.close()
            finally:
                self.stats.encoder = self.encoder.stats
                self.stats.close_s = time.perf_counter() - started


def _with_speech(entry: RosterEntry, speech: dict[str, SpeechState]) -> ParticipantView:
    state = speech.get(entry.audio_feed_id) if entry.audio_feed_id is not None else None
    if state is None:
        return entry.view
    return replace(entry.view, speaking=state.speaking, last_spoke=state.last_spoke_s)
