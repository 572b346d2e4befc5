"""The worker killed with SIGKILL at seeded random moments; `recorder upload` finishes the delivery.

A SIGKILL gives the worker no last word: no final status, no manifest, an upload cut anywhere.
What the contract promises is that the spool left behind plays up to its last complete fragment
(at most `KEYFRAME_INTERVAL_S` is lost) and that `recorder upload SPOOL` stores exactly that
prefix with a manifest (`"recovered": true` when the worker died before writing the final one).

The moments are drawn from a seeded generator (`KILL_SEED`), one per phase: STARTING (the media
runs, the room is being joined), STARTED early and late, STOPPING (after the SIGTERM, while the
file is closed and stored). Sinks alternate between the local directory and S3 (moto). Each run
is a few seconds; the whole module stays under ~40 s on two shared cores.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import S3Env
from worker_helpers import (
    FINISHED_TIMEOUT_S,
    FlakyS3Proxy,
    WorkerProcess,
    is_upload_part,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    worker_env,
)

from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.inspect import probe
from recorder.media.fmp4 import durable_length
from recorder.presets import KEYFRAME_INTERVAL_S
from recorder.storage.sidecar import sidecar_path

KILL_SEED = 20261124
STARTED_LOG = "RECORDING_STARTED"
MEDIA_RUNNING_LOG = ": media running"
AWS_DIR = "crash"
# How much of the time alive the stored file may miss: the torn fragment (one keyframe interval)
# plus the encoder's first-frame latency and the scheduling of two shared cores.
LOSS_SLACK_S = 1.0


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
            job = room_job(
                server,
                recordingId=recording_id,
                awsDirPath=AWS_DIR,
                config={"quality": "low"},
                limits={"emptyRoomTimeoutSec": 0},
            )
            worker = await WorkerProcess.launch(job, worker_view)
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
