"""The worker killed with SIGKILL at seeded random moments; `recorder upload` finishes the delivery.

A SIGKILL gives the worker no last word: no final status, no manifest, an upload cut anywhere.
What the contract promises is that the spool left behind plays up to its last complete fragment
(at most `KEYFRAME_INTERVAL_S` is lost) and that `recorder upload SPOOL` stores exactly that
prefix with a manifest (`"recovered": true` when the worker died before writing the final one).

The moments are drawn from a seeded generator (`KILL_SEED`), one per phase: STARTING (the media
runs, the room is being joined), STARTED early and late, STOPPING (after the SIGTERM, while the
file is closed and stored). Sinks alternate between the local directory and S3 (moto). Each run
is a few seconds; the whole module stays under ~50 s on two shared cores.

The manifest of a killed worker comes from the sidecar's draft, which the worker keeps current
(`SIDECAR_REFRESH_S`): participants who join, leave and mute well after the recorder joined are
in the recovered manifest, their intervals where they happened, the ones still open closed at
the kill.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from live_helpers import join_publishing, tone_participant
from servers import S3Env
from worker_helpers import (
    FINISHED_TIMEOUT_S,
    STARTED_TIMEOUT_S,
    FlakyS3Proxy,
    WorkerProcess,
    is_upload_part,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    worker_env,
)

from recorder.client import RoomParticipant
from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.inspect import probe
from recorder.media.fmp4 import durable_length
from recorder.presets import KEYFRAME_INTERVAL_S
from recorder.storage.sidecar import read_sidecar, sidecar_path
from recorder.storage.sidecar_refresh import SIDECAR_REFRESH_S
from recorder.testing.sources import VideoFormat

KILL_SEED = 20261124
STARTED_LOG = "RECORDING_STARTED"
MEDIA_RUNNING_LOG = ": media running"
AWS_DIR = "crash"
# How much of the time alive the stored file may miss: the torn fragment (one keyframe interval)
# plus the encoder's first-frame latency and the scheduling of two shared cores.
LOSS_SLACK_S = 1.0
# A change reaches the sidecar within SIDECAR_REFRESH_S plus this: the room's message to the
# recorder, the write on a worker thread, all on two shared, loaded cores.
REFRESH_SLACK_S = 1.5
# Mute -> `speaking` closed: the mixer's SPEAKING_OFF_MIN_S (0.6 s) and the playout delay.
MUTE_TO_QUIET_S = 1.5
# How far the manifest's times (recording clock, from startedAt) may sit from the test's own wall
# clock readings around an action: the signalling round trip and the scheduling of loaded cores.
EVENT_TIME_SLACK_S = 1.0
SMALL_CAMERA = VideoFormat(160, 96, 15)
MS = 0.001  # the manifest's rounding  # the participants' cost is not what this test is about


@dataclass(frozen=True)
class KillMoment:
    phase: str  # STARTING | STARTED | STOPPING
    delay_s: float  # after the phase's anchor in the log
    sink: str  # local | s3


def kill_moments(seed: int = KILL_SEED) -> list[KillMoment]:
    """One moment per phase (two in STARTED), reproducible from `seed`."""
    rng = random.Random(seed)
    return [
        KillMoment("STARTING", rng.uniform(0.0, 0.15), "local"),
        KillMoment("STARTED", rng.uniform(0.2, 1.0), "s3"),
        KillMoment("STARTED", rng.uniform(2.5, 4.0), "local"),
        KillMoment("STOPPING", rng.uniform(0.0, 0.5), "s3"),
    ]


MOMENTS = kill_moments()


async def _launch(server: RoomServer, recording_id: str, env: Mapping[str, str]) -> WorkerProcess:
    """A low-quality recording of the room into AWS_DIR that outlives an empty room."""
    job = room_job(
        server,
        recordingId=recording_id,
        awsDirPath=AWS_DIR,
        config={"quality": "low"},
        limits={"emptyRoomTimeoutSec": 0},
    )
    return await WorkerProcess.launch(job, env)


async def _kill_at(worker: WorkerProcess, moment: KillMoment) -> float | None:
    """SIGKILL the worker at `moment`; the seconds it had been STARTED (None before that)."""
    if moment.phase == "STARTING":
        await worker.wait_for_log(MEDIA_RUNNING_LOG)
        await asyncio.sleep(moment.delay_s)
        started_s = None
    else:
        await worker.wait_for_log(STARTED_LOG)
        started = time.monotonic()
        if moment.phase == "STOPPING":
            await asyncio.sleep(1.0)  # a fragment or two before the stop
            worker.signal(signal.SIGTERM)
            # The store refuses the tail (503 SlowDown, retried): the worker stays in STOPPING.
            await worker.wait_for_log("failed (SlowDown)")
        await asyncio.sleep(moment.delay_s)
        started_s = time.monotonic() - started
    worker.signal(signal.SIGKILL)
    result = await worker.finish()
    assert result.returncode == -signal.SIGKILL
    return started_s


async def _upload(spool: Path, env: dict[str, str], *arguments: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "upload", str(spool), *arguments, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), FINISHED_TIMEOUT_S)
    return process.returncode or 0, out.decode(), err.decode()


def _stored(tmp_path: Path, s3: S3Env, sink: str, key: str) -> bytes | None:
    if sink == "local":
        path = tmp_path / "out" / key
        return path.read_bytes() if path.exists() else None
    try:
        return s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    except s3.client.exceptions.NoSuchKey:
        return None


@pytest.mark.parametrize("moment", MOMENTS, ids=[f"{m.phase}+{m.delay_s:.2f}s" for m in MOMENTS])
async def test_a_worker_killed_at_any_moment_is_recovered_by_recorder_upload(
    moment: KillMoment, tmp_path: Path, s3_env: S3Env
) -> None:
    index = MOMENTS.index(moment)
    recording_id = f"killed-{index}"
    env = (
        worker_env(tmp_path, RECORDER_S3_BUCKET=s3_env.bucket)
        if moment.sink == "s3"
        else worker_env(tmp_path)
    )
    # In STOPPING the store refuses every part upload, so the kill lands mid-delivery.
    proxy = FlakyS3Proxy(s3_env.server.endpoint, fail_first=10_000, matching=is_upload_part)
    worker_view = dict(env)
    if moment.phase == "STOPPING":
        worker_view["AWS_ENDPOINT_URL_S3"] = await proxy.start()
    try:
        async with RoomServer() as server:
            worker = await _launch(server, recording_id, worker_view)
            started_s = await _kill_at(worker, moment)
    finally:
        await proxy.close()

    media_key, manifest_key = f"{AWS_DIR}/{recording_id}.mp4", f"{AWS_DIR}/{recording_id}.json"
    spools = sorted((tmp_path / "spool").glob("*.mp4"))
    (spool,) = spools  # in STOPPING too: the store refused the tail, the spool is still there
    playable = durable_length(spool)
    recorded = spool.read_bytes()[:playable]
    had_sidecar = sidecar_path(spool).exists()
    draft: dict[str, Any] | None = None
    if had_sidecar:
        draft = json.loads(sidecar_path(spool).read_bytes())["manifest"]

    arguments = () if had_sidecar else ("--key", media_key)
    code, out, err = await _upload(spool, env, *arguments)

    if playable == 0:  # killed before the first fragment: no media of the room existed yet
        assert moment.phase == "STARTING"
        assert code == ExitCode.FAILED and "no complete MP4 box" in err
        assert spool.exists()  # refused, never deleted
        assert _stored(tmp_path, s3_env, moment.sink, media_key) is None
        return

    assert code == ExitCode.OK, err
    assert json.loads(out)["sizeBytes"] == playable
    stored = _stored(tmp_path, s3_env, moment.sink, media_key)
    assert stored == recorded  # exactly the playable prefix, byte for byte
    copy = tmp_path / "stored.mp4"
    copy.write_bytes(stored)
    report = probe(copy)
    assert report.damage is None, report.damage
    assert report.video is not None and report.video.packets > 0
    assert report.audio is not None and report.audio.packets > 0
    if started_s is not None and moment.phase == "STARTED":
        # It plays up to its last fragment: what is missing is at most the torn one.
        assert report.video.duration_s >= started_s - KEYFRAME_INTERVAL_S - LOSS_SLACK_S

    manifest_raw = _stored(tmp_path, s3_env, moment.sink, manifest_key)
    assert manifest_raw is not None
    manifest = json.loads(manifest_raw)
    assert manifest["recordingId"] == recording_id
    assert manifest["output"]["key"] == media_key
    assert manifest["output"]["sizeBytes"] == playable
    assert manifest["stoppedAt"] is not None
    if draft is not None and draft.get("stoppedAt") is not None:
        # Killed after the final manifest was in the sidecar: it is delivered as it was.
        assert manifest["stopReason"] == "signal" and "recovered" not in manifest
    else:
        assert manifest["recovered"] is True
    assert not spool.exists() and not sidecar_path(spool).exists()


def test_the_kill_moments_are_seeded_and_cover_every_phase() -> None:
    assert kill_moments() == MOMENTS  # reproducible
    assert {m.phase for m in MOMENTS} == {"STARTING", "STARTED", "STOPPING"}
    assert {m.sink for m in MOMENTS} == {"local", "s3"}
    assert kill_moments(1) != MOMENTS


def _draft(spool: Path) -> dict[str, Any]:
    sidecar = read_sidecar(spool)
    assert sidecar is not None and sidecar.manifest is not None
    return dict(sidecar.manifest)


def _people(draft: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in draft["participants"]}


async def _until_draft(
    spool: Path, predicate: Any, timeout_s: float, what: str, *, since: float | None = None
) -> float:
    """Poll the sidecar until its draft's participants satisfy `predicate`, at most `timeout_s`
    after `since` (time.monotonic(); default now); the seconds from `since` until it did."""
    began = time.monotonic() if since is None else since
    while not predicate(_people(_draft(spool))):
        if time.monotonic() > began + timeout_s:
            raise AssertionError(f"{what}: not in the sidecar within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - began


def _at_s(draft: dict[str, Any], wall_s: float) -> float:
    """A wall-clock reading (time.time()) on the recording clock of the manifest."""
    started = datetime.fromisoformat(str(draft["startedAt"]).replace("Z", "+00:00"))
    return wall_s - started.timestamp()


async def test_a_killed_workers_manifest_has_who_came_left_and_muted_after_the_join(
    tmp_path: Path,
) -> None:
    env = worker_env(tmp_path)
    recording_id = "killed-late-joiners"
    participants: list[RoomParticipant] = []
    try:
        async with RoomServer() as server:
            worker = await _launch(server, recording_id, env)
            await worker.wait_for_log(STARTED_LOG)
            (spool,) = sorted((tmp_path / "spool").glob("*.mp4"))
            assert _draft(spool)["participants"] == []  # the draft the join wrote: nobody

            # Well after the recorder's join: Ann comes and stays, Bob comes and goes.
            joined_wall = time.time()
            ann = await join_publishing(server.url, tone_participant(0, "Ann", SMALL_CAMERA))
            participants.append(ann)
            bob = await join_publishing(server.url, tone_participant(1, "Bob", SMALL_CAMERA))
            participants.append(bob)
            await _until_draft(
                spool,
                lambda people: all(people.get(name, {}).get("speaking") for name in ("Ann", "Bob")),
                STARTED_TIMEOUT_S,
                "Ann and Bob present and speaking",
            )
            left_wall, left_mono = time.time(), time.monotonic()
            await bob.leave()
            await ann.mute()
            # Within the refresh bound of the leave: the draft is not just written at the join.
            await _until_draft(
                spool,
                lambda people: people["Bob"]["present"][-1][1] is not None,
                SIDECAR_REFRESH_S + REFRESH_SLACK_S,
                "Bob's leave",
                since=left_mono,
            )
            await _until_draft(
                spool,
                lambda people: people["Ann"]["speaking"][-1][1] is not None,
                SIDECAR_REFRESH_S + MUTE_TO_QUIET_S + REFRESH_SLACK_S,
                "Ann's mute",
                since=left_mono,
            )
            # The spool grows once more, so its last write (the kill's time, for recovery) is
            # past what the draft holds.
            seen_bytes = spool.stat().st_size
            deadline = time.monotonic() + KEYFRAME_INTERVAL_S + LOSS_SLACK_S
            while spool.stat().st_size == seen_bytes:
                assert time.monotonic() < deadline, "the spool stopped growing"
                await asyncio.sleep(0.02)
            last_draft = _draft(spool)
            worker.signal(signal.SIGKILL)
            killed_wall = time.time()
            assert (await worker.finish()).returncode == -signal.SIGKILL
    finally:
        for participant in participants:
            await participant.leave()

    code, _, err = await _upload(spool, env)
    assert code == ExitCode.OK, err
    manifest = json.loads((tmp_path / "out" / AWS_DIR / f"{recording_id}.json").read_bytes())
    assert manifest["recovered"] is True
    duration_s = manifest["durationS"]
    killed_s = _at_s(manifest, killed_wall)
    # The spool's last write is the kill, up to a fragment not yet flushed.
    assert killed_s - KEYFRAME_INTERVAL_S - LOSS_SLACK_S <= duration_s <= killed_s + MS
    people = _people(manifest)
    assert set(people) == {"Ann", "Bob"}
    ann_m, bob_m = people["Ann"], people["Bob"]
    joined_s, left_s = _at_s(manifest, joined_wall), _at_s(manifest, left_wall)

    # Ann: present from her join to the kill (open in the draft, closed at durationS).
    ((ann_from, ann_to),) = ann_m["present"]
    assert joined_s - EVENT_TIME_SLACK_S <= ann_from <= left_s
    assert ann_to == duration_s
    # ... spoke from after her join, quiet after the mute.
    spoke_from, spoke_to = ann_m["speaking"][0][0], ann_m["speaking"][-1][1]
    assert ann_from <= spoke_from < spoke_to
    assert left_s - EVENT_TIME_SLACK_S <= spoke_to <= left_s + MUTE_TO_QUIET_S + EVENT_TIME_SLACK_S
    # Bob: present from his join to his leave, closed then, not at the kill.
    ((bob_from, bob_to),) = bob_m["present"]
    assert ann_from <= bob_from <= bob_to
    assert left_s - EVENT_TIME_SLACK_S <= bob_to <= left_s + EVENT_TIME_SLACK_S
    assert bob_to < duration_s
    for person in people.values():  # every interval closed: none left open-ended
        for kind in ("present", "visible", "speaking", "pinned"):
            assert all(end is not None for _, end in person[kind]), (person["name"], kind)
    # Nothing the draft held is lost; what the recovery added is the closing of open intervals.
    draft_people = _people(last_draft)
    assert draft_people["Ann"]["present"] == [[ann_from, None]]
    assert draft_people["Bob"]["present"] == bob_m["present"]
