"""`recorder bench --soak [--minutes N]`: one long live recording; does anything drift or grow?

The room is `recorder bench --live`'s (the embedded room on 127.0.0.1, cameras at 640x480 and
30 fps over real WebRTC, GRID at `med`, the worker in its own process measured by `--live`'s
measuring parent), with two differences. The fourth participant is the clapper
(`recorder.testing.clapper`: a flash and a beep together once a second) and the other three
send steady tones of their own, so that the A/V offset can be read from the file at its start and
at its end. And every publisher runs in its own process (`recorder.bench.publisher`, joined in
order, always taken down with bounded waits): four aiortc encoders in the bench's one interpreter
could not keep real time, their paced sources fell behind and re-anchored their own pts, and the
offset then moved with the *senders*. Each publisher reports, per track, the frames its sender
took against the real-time count and its source's re-anchors and pts shift. Figures, for the
worker process:

* **RSS over time** (sampled by the measuring parent every 0.1 s, reported once a minute or, for
  short runs, ten times), and its growth from just after the warm-up (`WARM_UP_S`, or a fifth of
  a short run) to the end: the median of the first `RSS_WINDOW_FRACTION` of the measured span
  against the median of the last;
* **A/V offset** (audio minus video, seconds and frames) as the median over the claps of the first
  and the last `SYNC_WINDOW_S` of the file, and its drift per hour. It is the recorder's only if
  the clapper kept real time (no re-anchor, >= 98 % of real-time frames): otherwise the table says
  it is not attributable and the target is not counted as met. Tones that fell behind are
  reported as load (their frames carry no clap);
* **dropped frames**: pts gaps in the file plus ticks the worker was too late to compose;
* **the file's duration against wall time** from the recording clock's origin (the first tick,
  where the file starts; read off the worker's `GET /status` just before the stop) to
  RECORDING_STOPPING. RECORDING_STARTED comes 0.3 to 0.8 s after that origin (when the first
  frames are durable), and is reported too;
* **the publishers**: each one's report (`publishers`), who did not keep real time.

Targets (issue 7): RSS growth < 10 % after warm-up, A/V drift < 1 frame per hour, duration error
< 0.1 %. A short run (CI runs 20 s) tests the bench, not the targets: drift and growth need
minutes to mean anything. What the recorder's timeline does with a sender whose clock is skewed
(which a run on one machine cannot show) is studied without a network by
`recorder.testing.clock_skew` (docs/reliability.md, "Long runs").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from recorder.bench.live import (
    LIVE_CAMERA_FPS,
    LIVE_CAMERA_SIZE,
    LIVE_LAYOUT,
    LIVE_PARTICIPANTS,
    LIVE_QUALITY,
    LiveRun,
    ProcessReport,
    frames_missed_in_file,
    local_output,
    measuring_command,
    record_for,
)
from recorder.bench.publisher import PublisherProcess, publishing

HELP = "record a live 4-participant room for minutes (--minutes); RSS, A/V drift, duration"

DEFAULT_SOAK_MINUTES = 30.0  # `--minutes` default (recorder/commands/bench.py)
WARM_UP_S = 60.0  # x264's lookahead, buffers and caches reach their size in the first minute
SHORT_RUN_WARM_UP_FRACTION = 0.2  # a run shorter than five warm-ups warms up for a fifth of it
RSS_WINDOW_FRACTION = 0.1  # the medians compared: the first and last tenth of the measured span
SYNC_WINDOW_S = 20.0  # claps read at the start and at the end of the file
SYNC_SKIP_S = 2.0  # the first claps: publishers and playout settle
RSS_REPORT_POINTS = 10  # RSS points reported for runs shorter than that many minutes
TARGET_RSS_GROWTH = 0.10
TARGET_DRIFT_FRAMES_PER_HOUR = 1.0
TARGET_DURATION_ERROR = 0.001
CLAPPER_NAME = "Clapper"
BYTES_PER_MB = 1_000_000
SECONDS_PER_HOUR = 3600.0
# Publishers leave on their own this long after the recording was due to end, should the bench
# hang without closing their input: every bounded wait of the run fits in it.
PUBLISHER_SPARE_S = 300.0


async def _record(
    seconds: float, output_dir: Path, report_path: Path
) -> tuple[LiveRun, list[PublisherProcess]]:
    """The live bench's room with a clapper, recorded for `seconds`; the publishers, each in its
    own process (`recorder.bench.publisher`), have their reports on `.report` afterwards.

    The first publisher starts and stops the recording and relays the statuses it hears, timed
    on CLOCK_MONOTONIC where it heard them.
    """
    from recorder.bench.publisher import CLAPPER_SOURCE, TONE_SOURCE_PREFIX  # noqa: PLC0415
    from recorder.demo import (  # noqa: PLC0415
        DemoOptions,
        free_loopback_port,
        storage_locations,
        worker_with_control,
    )
    from recorder.embedded_room.server import RoomServer  # noqa: PLC0415
    from recorder.lifecycle import Status  # noqa: PLC0415
    from recorder.storage.from_env import OUTPUT_DIR_ENV_VAR  # noqa: PLC0415

    publishers = [
        (f"Tone {index}", f"{TONE_SOURCE_PREFIX}{index}") for index in range(1, LIVE_PARTICIPANTS)
    ] + [(CLAPPER_NAME, CLAPPER_SOURCE)]
    control_port = free_loopback_port()
    command = measuring_command(report_path, list(worker_with_control(control_port)))
    async with (
        RoomServer(worker_command=command) as server,
        publishing(server.url, publishers, seconds + PUBLISHER_SPARE_S) as room,
    ):
        caller = room[0]
        changed = asyncio.Event()
        run = LiveRun(requested_at_s=time.monotonic())

        def on_status(status: str, at_s: float) -> None:
            run.saw(Status(status), at_s)
            changed.set()

        caller.on_status = on_status
        recording_id = await caller.start_recording(
            {"layout": {"type": LIVE_LAYOUT}, "quality": LIVE_QUALITY}
        )
        await record_for(run, changed, seconds, control_port, caller.stop_recording)
        media, _ = storage_locations(
            recording_id, DemoOptions(), {OUTPUT_DIR_ENV_VAR: str(output_dir)}
        )
        run.media_path = media
    return run, room


def publisher_figures(room: list[PublisherProcess]) -> dict[str, Any]:
    """Per publisher: its report (`PublisherReport.to_json`), or why there is none; which did not
    keep real time; and whether the A/V drift is the recorder's: the clapper's own pts must not
    have moved (a paced source that fell behind re-anchors, shifting that track alone). A tone
    that lost frames changes nothing in the clapper's offset; it is reported as load."""
    reports: dict[str, Any] = {}
    resyncs: dict[str, int | None] = {}
    behind: list[str] = []
    clapper_kept_time = False
    for process in room:
        report = process.report
        if report is None:
            reports[process.name] = {"kept_real_time": False, "error": "no report"}
            resyncs.update({f"{process.name}/{kind}": None for kind in ("audio", "camera")})
            behind.append(process.name)
            continue
        reports[process.name] = report.to_json()
        resyncs.update({f"{process.name}/{k}": t.resyncs for k, t in report.tracks.items()})
        if not report.kept_real_time:
            behind.append(process.name)
        if process.name == CLAPPER_NAME:
            clapper_kept_time = report.kept_real_time
    return {
        "publishers": reports,
        "publisher_resyncs": resyncs,
        "publishers_behind": behind,
        "av_drift_attributable": clapper_kept_time,
    }


def clapper_region(canvas_width: int, canvas_height: int) -> Any:
    """The clapper's tile: the last of `LIVE_PARTICIPANTS` cameras in GRID, as the layouts
    package places them (join order)."""
    from layouts.geometry import arrange  # noqa: PLC0415
    from layouts.model import LayoutSpec, LayoutType, ParticipantView, Size  # noqa: PLC0415
    from layouts.selection import select  # noqa: PLC0415

    feeds = [ParticipantView(id=f"f{i}", name=f"f{i}", joined_at=float(i)) for i in range(4)]
    spec = LayoutSpec(type=LayoutType.GRID)
    selection = select(None, feeds, spec, 0.0)
    tiles = arrange(selection, feeds, spec.type, Size(canvas_width, canvas_height))
    return next(tile.rect for tile in tiles if tile.feed_id == feeds[-1].id)


def excerpt(source: Path, start_s: float, length_s: float, target: Path) -> Path:
    """`length_s` of `source` from `start_s` (from the keyframe before it), stream-copied: the
    sync checker reads a file whole, and a long recording's audio is too big to decode at once."""
    import av  # noqa: PLC0415

    with av.open(str(source)) as given, av.open(str(target), "w", format="mp4") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in given.streams}
        video = given.streams.video[0]
        if start_s > 0:
            given.seek(round(start_s / video.time_base), stream=video, backward=True)
        for packet in given.demux():
            if packet.pts is None or packet.dts is None or packet.size == 0:
                continue
            time_s = float(packet.pts * packet.time_base)
            if time_s > start_s + length_s:
                if packet.stream.type == "video":
                    break
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return target


def median_offset_s(path: Path, region: Any, skip_s: float) -> tuple[float | None, int]:
    """The median A/V offset of the claps in the file at `path` after `skip_s`; how many."""
    from recorder.inspect import measure_sync  # noqa: PLC0415

    report = measure_sync(path, region)
    offsets = [
        c.offset_s
        for c in report.claps
        if c.offset_s is not None and c.flash_s is not None and c.flash_s >= skip_s
    ]
    return (statistics.median(offsets) if offsets else None), len(offsets)


def rss_figures(worker: ProcessReport, started_s: float, stopping_s: float) -> dict[str, Any]:
    """RSS over the recording: points, warm-up, growth after it."""
    span_s = stopping_s - started_s
    warm_up_s = min(WARM_UP_S, span_s * SHORT_RUN_WARM_UP_FRACTION)
    samples = [(t - started_s, rss) for t, _, rss in worker.samples if started_s <= t <= stopping_s]
    measured = [(t, rss) for t, rss in samples if t >= warm_up_s]
    window_s = (span_s - warm_up_s) * RSS_WINDOW_FRACTION
    first = [rss for t, rss in measured if t <= warm_up_s + window_s]
    last = [rss for t, rss in measured if t >= span_s - window_s]
    growth = statistics.median(last) / statistics.median(first) - 1.0 if first and last else None
    step_s = 60.0 if span_s >= 60.0 * RSS_REPORT_POINTS else span_s / RSS_REPORT_POINTS
    points: list[list[float]] = []
    for t, rss in samples:
        if not points or t >= points[-1][0] + step_s:
            points.append([round(t, 1), round(rss / BYTES_PER_MB, 1)])
    return {
        "warm_up_s": round(warm_up_s, 1),
        "rss_mb_after_warm_up": round(statistics.median(first) / BYTES_PER_MB, 1)
        if first
        else None,
        "rss_mb_at_end": round(statistics.median(last) / BYTES_PER_MB, 1) if last else None,
        "rss_growth": None if growth is None else round(growth, 4),
        "rss_mb_over_time": points,
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    """One soak recording of `args.minutes` minutes, measured."""
    minutes = float(getattr(args, "minutes", None) or DEFAULT_SOAK_MINUTES)
    seconds = minutes * 60.0
    with tempfile.TemporaryDirectory(prefix="recorder-bench-soak-") as folder:
        workdir = Path(folder)
        report_path, output_dir = workdir / "worker.json", workdir / "recordings"
        began = time.monotonic()
        with local_output(output_dir):
            live, room = asyncio.run(_record(seconds, output_dir, report_path))
        if not report_path.exists() or live.started_at_s is None or live.stopping_at_s is None:
            raise RuntimeError(f"the soak did not record (statuses: {live.statuses})")
        worker = ProcessReport(**json.loads(report_path.read_text(encoding="utf-8")))
        media = Path(live.media_path) if live.media_path else None
        if media is None or not media.exists():
            raise RuntimeError(f"the soak left no file (statuses: {live.statuses})")
        return summarise(
            live,
            worker,
            media,
            workdir,
            time.monotonic() - began,
            publishers=publisher_figures(room),
        )


def recording_clock_origin_s(live: LiveRun) -> float | None:
    """When the worker's recording clock read 0 (the first tick), on CLOCK_MONOTONIC; None when
    its status was not read."""
    status, read_at_s = live.worker_status, live.worker_status_at_s
    elapsed_s = (status or {}).get("elapsedS")
    if read_at_s is None or not isinstance(elapsed_s, (int, float)):
        return None
    return read_at_s - float(elapsed_s)


def summarise(
    live: LiveRun,
    worker: ProcessReport,
    media: Path,
    workdir: Path,
    bench_wall_s: float,
    *,
    publishers: dict[str, Any],
) -> dict[str, Any]:
    """The figures, the targets and whether each is met. The A/V drift counts as met only when
    the clapper kept real time (`publisher_figures`): otherwise its own shifts are in it."""
    from recorder.inspect import probe  # noqa: PLC0415

    if live.started_at_s is None or live.stopping_at_s is None:
        raise RuntimeError(f"the soak did not record (statuses: {live.statuses})")
    report = probe(media)
    video = report.video
    if video is None or video.width is None or video.height is None or not video.frame_rate:
        raise RuntimeError(f"no video stream in {media}")
    frame_s = 1.0 / video.frame_rate
    region = clapper_region(video.width, video.height)
    duration_s = video.duration_s
    window_s = min(SYNC_WINDOW_S, duration_s / 2)
    start_offset, start_claps = median_offset_s(
        excerpt(media, 0.0, window_s, workdir / "start.mp4"), region, SYNC_SKIP_S
    )
    end_from_s = max(0.0, duration_s - window_s)
    end_offset, end_claps = median_offset_s(
        excerpt(media, end_from_s, window_s, workdir / "end.mp4"), region, end_from_s
    )
    drift = None
    if start_offset is not None and end_offset is not None and duration_s > 0:
        drift = (end_offset - start_offset) / frame_s * SECONDS_PER_HOUR / duration_s
    # The recording's wall-clock span: from its clock's origin (the first tick, which the file
    # starts at) to the stop. The origin is read off the worker's `GET /status` just before the
    # stop (`elapsedS` is the recording clock then). RECORDING_STARTED comes later, once the
    # first frames are durable (0.3 to 0.8 s, more under load), so STARTED..STOPPING measures
    # that lead, not the clock's rate.
    origin_s = recording_clock_origin_s(live)
    wall_s = live.stopping_at_s - (live.started_at_s if origin_s is None else origin_s)
    duration_error = abs(duration_s - wall_s) / wall_s if wall_s > 0 else None
    drops = (live.worker_status or {}).get("drops")
    late_ticks = drops.get("lateTicks") if isinstance(drops, dict) else None
    file_figures = frames_missed_in_file(media)
    rss = rss_figures(worker, live.started_at_s, live.stopping_at_s)
    figures = {
        "recorded_wall_s": round(wall_s, 2),
        "recorded_from": "clock origin" if origin_s is not None else "RECORDING_STARTED",
        "started_after_origin_s": None
        if origin_s is None
        else round(live.started_at_s - origin_s, 3),
        "file_duration_s": round(duration_s, 3),
        "duration_error": None if duration_error is None else round(duration_error, 5),
        "av_offset_start_s": None if start_offset is None else round(start_offset, 4),
        "av_offset_end_s": None if end_offset is None else round(end_offset, 4),
        "claps_read": [start_claps, end_claps],
        "av_drift_frames_per_hour": None if drift is None else round(drift, 3),
        "frames_missed_in_file": file_figures.get("missed"),
        "late_ticks": late_ticks,
        "encoder_queue_drops": drops.get("encoderQueue") if isinstance(drops, dict) else None,
        "peak_rss_mb": round(worker.peak_rss_bytes / BYTES_PER_MB, 1),
        **rss,
        **publishers,
    }
    met = {
        "rss_growth": rss["rss_growth"] is not None and rss["rss_growth"] < TARGET_RSS_GROWTH,
        "av_drift": drift is not None
        and abs(drift) < TARGET_DRIFT_FRAMES_PER_HOUR
        and publishers["av_drift_attributable"],
        "duration": duration_error is not None and duration_error < TARGET_DURATION_ERROR,
    }
    return {
        "room": (
            f"{LIVE_PARTICIPANTS} participants (3 tones and the clapper), "
            f"{LIVE_CAMERA_SIZE[0]}x{LIVE_CAMERA_SIZE[1]} at {LIVE_CAMERA_FPS} fps over WebRTC "
            f"on 127.0.0.1, each publisher in its own process; {LIVE_LAYOUT} at {LIVE_QUALITY}"
        ),
        "statuses": live.statuses,
        "worker_exit_code": worker.exit_code,
        "bench_wall_s": round(bench_wall_s, 1),
        "figures": figures,
        "targets": {
            "rss_growth": TARGET_RSS_GROWTH,
            "av_drift_frames_per_hour": TARGET_DRIFT_FRAMES_PER_HOUR,
            "duration_error": TARGET_DURATION_ERROR,
        },
        "met": met,
        "meets_targets": all(met.values()) and live.final_status == "RECORDING_STOPPED",
    }


def format_table(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    figures, targets, met = report["figures"], report["targets"], report["met"]

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    behind = figures.get("publishers_behind") or []
    drift_note = f" {mark(met['av_drift'])}"
    if not figures.get("av_drift_attributable"):
        drift_note = " NOT ATTRIBUTABLE to the recorder: the clapper did not keep real time"
    elif behind:
        drift_note += f" (publishers behind, as load only: {', '.join(behind)})"
    lines = [
        f"soak: {report['room']}; statuses {' > '.join(report['statuses'])}",
        f"  recorded {figures['recorded_wall_s']} s wall (from the {figures['recorded_from']}"
        f"; STARTED came {figures['started_after_origin_s']} s after it), file "
        f"{figures['file_duration_s']} s: "
        f"error {figures['duration_error']} (target < {targets['duration_error']}) "
        f"{mark(met['duration'])}",
        f"  A/V offset start {figures['av_offset_start_s']} s, end "
        f"{figures['av_offset_end_s']} s (claps {figures['claps_read']}): drift "
        f"{figures['av_drift_frames_per_hour']} frames/hour (target < "
        f"{targets['av_drift_frames_per_hour']}){drift_note}",
        f"  RSS after warm-up ({figures['warm_up_s']} s) {figures['rss_mb_after_warm_up']} MB,"
        f" at the end {figures['rss_mb_at_end']} MB: growth {figures['rss_growth']} (target < "
        f"{targets['rss_growth']}) {mark(met['rss_growth'])}; peak {figures['peak_rss_mb']} MB",
        f"  RSS over time (s, MB): {figures['rss_mb_over_time']}",
        f"  frames missed in the file {figures['frames_missed_in_file']}, late ticks "
        f"{figures['late_ticks']}, encoder queue drops {figures['encoder_queue_drops']}",
        "  publishers (own processes; frames their senders took / real time, re-anchors of the "
        "paced source, their pts shift):",
    ]
    for name, publisher in (figures.get("publishers") or {}).items():
        tracks = publisher.get("tracks") or {}
        parts = [
            f"{kind} {t['real_time']:.1%} ({t['frames']}/{t['expected_frames']}), "
            f"{t['resyncs']} re-anchors, {t['shift_s']:+.3f} s"
            for kind, t in tracks.items()
        ]
        state = "kept real time" if publisher.get("kept_real_time") else "BEHIND"
        detail = "; ".join(parts) if parts else publisher.get("error", "no tracks")
        cpu = publisher.get("cpu_s_per_s")
        lines.append(f"    {name}: {detail}; CPU {cpu} s/s: {state}")
    return "\n".join(lines)
