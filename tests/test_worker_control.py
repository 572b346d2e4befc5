"""The worker's control endpoint, on the real worker process: every route, bad input, the token.

`recorder run --control-port 0` prints `control: http://127.0.0.1:PORT`; the tests talk HTTP to it
while the recording runs in the embedded room (one participant without media, so that there is
someone to pin), and check that what the endpoint changes shows in the file and the manifest
(`layoutChanges`, also when the run fails at the store and `recorder upload` delivers it).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from live_helpers import frames_at
from servers import S3Env
from worker_helpers import (
    FINISHED_TIMEOUT_S,
    POLL_INTERVAL_S,
    FlakyS3Proxy,
    WorkerProcess,
    is_upload_part,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    worker_env,
)

from layouts.model import Rect, Theme
from layouts.themes import theme_colors
from recorder.client import join
from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.inspect import region_colour
from recorder.storage.sidecar import sidecar_path

STARTED_LOG = "RECORDING_STARTED"
NO_EMPTY_ROOM_STOP = {"emptyRoomTimeoutSec": 0}
CORNER = Rect(0, 0, 8, 8)  # inside the canvas margin at every quality: the canvas colour
# The canvas colour as encoded: flat areas keep their colour within a few levels at our rates.
CANVAS_COLOUR_MATCH = 12.0
# A layout change shows in the file within this much file time (the next tick, plus the
# encoder's first frames after a scene change).
LAYOUT_SHOWS_S = 0.5
AFTER_SWITCH_S = 0.5  # recorded past the moment the switch must show, before the stop
STATUS_WAIT_S = 10.0  # bound on waiting for the recording's clock to reach a time
TOKEN = "control-token-for-tests"
SIDECAR_WAIT_S = 20.0  # bound on the stop writing the final manifest into the sidecar


async def _json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    async with http.request(method, url, data=data) as response:
        return response.status, await response.json()


def _close_to(measured: tuple[float, float, float], rgb: tuple[int, int, int]) -> bool:
    return sum((a - b) ** 2 for a, b in zip(measured, rgb, strict=True)) ** 0.5 <= (
        CANVAS_COLOUR_MATCH
    )


async def test_the_control_endpoint_reports_steers_and_stops_the_recording(tmp_path: Path) -> None:
    env = worker_env(tmp_path)
    async with RoomServer() as server:
        eve = await join(server.url, "Eve")
        try:
            job = room_job(server, config={"quality": "low"}, limits=NO_EMPTY_ROOM_STOP)
            worker = await WorkerProcess.launch(job, env, "--control-port", "0")
            url = await worker.control_url()
            assert url.startswith("http://127.0.0.1:")
            await worker.wait_for_log(STARTED_LOG)
            async with aiohttp.ClientSession() as http:
                code, health = await _json(http, "GET", f"{url}/healthz")
                assert (code, health["healthy"]) == (200, True)

                code, status = await _json(http, "GET", f"{url}/status")
                assert code == 200
                assert status["state"] == "RECORDING_STARTED" and status["stopReason"] is None
                assert [(p["id"], p["name"]) for p in status["participants"]] == [(eve.id, "Eve")]
                assert status["frames"] > 0 and status["bytes"] > 0 and status["elapsedS"] > 0
                assert status["drops"] == {
                    "lateTicks": status["drops"]["lateTicks"],
                    "encoderQueue": 0,
                }
                assert status["layout"]["type"] == "GRID" and status["pinned"] == []

                async with http.get(f"{url}/metrics") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    metrics = await response.text()
                rid = status["recordingId"]
                assert (
                    f'recorder_state{{recording_id="{rid}",status="RECORDING_STARTED"}} 1'
                    in metrics
                )
                assert (
                    f'recorder_state{{recording_id="{rid}",status="RECORDING_STOPPED"}} 0'
                    in metrics
                )
                frames_line = next(
                    line
                    for line in metrics.splitlines()
                    if line.startswith("recorder_frames_total")
                )
                assert int(frames_line.split()[-1]) > 0
                for name in ("recorder_bitrate_bps", "recorder_upload_lag_bytes", "# TYPE"):
                    assert name in metrics

                # Bad input: 400, each bad field named as the request spells it; nothing changes.
                refused = [
                    ({"layout": {"type": "MOSAIC"}}, "layout.type", "GRID, SPOTLIGHT, SIDEBAR"),
                    ({"layout": {"gridSize": 9}}, "layout.gridSize", "from 1 to 4"),
                    ({"layout": {"tiles": 2}}, "layout", "unknown field 'tiles'"),
                    ({"theme": "NEON"}, "theme", "DARK, LIGHT, DEFAULT"),
                    ({"pin": "nobody"}, "pin", "not a participant"),
                    ({"unpin": 7}, "unpin", "not a participant id"),
                    ({"quality": "high"}, "body", "unknown field 'quality'"),
                    ([], "body", "not a JSON object"),
                ]
                for body, field, words in refused:
                    code, answer = await _json(http, "POST", f"{url}/layout", body)
                    assert code == 400, body
                    assert answer["fields"] == [field], answer
                    assert words in answer["problems"][0], answer
                code, answer = await _json(http, "POST", f"{url}/layout", raw=b"{not json")
                assert (code, answer["fields"]) == (400, ["body"])

                # A layout and theme switch, then a pin for this recording, between two readings
                # of the recording's clock (the manifest's times are on it).
                code, status = await _json(http, "GET", f"{url}/status")
                before_changes_s = status["elapsedS"]
                code, applied = await _json(
                    http,
                    "POST",
                    f"{url}/layout",
                    {"layout": {"type": "spotlight"}, "theme": "light"},
                )
                assert code == 200
                assert applied["layout"] == {
                    "type": "SPOTLIGHT",
                    "priority": "SPEAKER",
                    "gridSize": 4,
                }
                assert applied["theme"] == "LIGHT"
                code, applied = await _json(http, "POST", f"{url}/layout", {"pin": eve.id})
                assert (code, applied["pinned"]) == (200, [eve.id])
                code, status = await _json(http, "GET", f"{url}/status")
                assert status["layout"]["type"] == "SPOTLIGHT" and status["theme"] == "LIGHT"
                assert status["participants"][0]["pinned"] is True
                after_changes_s = status["elapsedS"]
                # Record a while in the new layout, so that the file shows it.
                shown_until_s = status["elapsedS"] + LAYOUT_SHOWS_S + AFTER_SWITCH_S
                deadline = time.monotonic() + STATUS_WAIT_S
                while status["elapsedS"] < shown_until_s:
                    assert time.monotonic() < deadline, status
                    code, status = await _json(http, "GET", f"{url}/status")

                code, stopping = await _json(http, "POST", f"{url}/stop")
                assert (code, stopping["stopping"]) == (202, True)
            result = await worker.finish()
        finally:
            await eve.leave()
    assert result.returncode == ExitCode.OK, result.stderr

    recording_id = status["recordingId"]
    media = tmp_path / "out" / f"{recording_id}.mp4"
    manifest = json.loads(media.with_suffix(".json").read_text())
    assert manifest["stopReason"] == "control"
    (person,) = manifest["participants"]
    (pinned,) = person["pinned"]
    assert pinned[1] == manifest["durationS"]
    # The two applied changes, not the refused ones, at their times on the recording clock;
    # `config` stays what the job asked for.
    switch, pin = manifest["layoutChanges"]
    assert switch == {
        "atS": switch["atS"],
        "layout": {"type": "SPOTLIGHT", "priority": "SPEAKER", "gridSize": 4},
        "theme": "LIGHT",
        "pin": None,
        "unpin": None,
    }
    assert pin == {"atS": pinned[0], "layout": None, "theme": None, "pin": eve.id, "unpin": None}
    assert before_changes_s <= switch["atS"] <= pin["atS"] <= after_changes_s
    assert manifest["config"]["layout"]["type"] == "GRID"
    assert manifest["config"]["theme"] == "DEFAULT"
    # The theme switch is in the file where the manifest says: the canvas colour before it, the
    # new one after.
    before, after = 0.2, switch["atS"] + LAYOUT_SHOWS_S
    sampled = frames_at(media, [before, after])
    assert _close_to(
        region_colour(sampled[before], CORNER), theme_colors(Theme.DEFAULT).canvas_background
    )
    assert _close_to(
        region_colour(sampled[after], CORNER), theme_colors(Theme.LIGHT).canvas_background
    )


async def test_a_control_token_is_required_when_set_and_exposing_needs_one(tmp_path: Path) -> None:
    async with RoomServer() as server:
        job = room_job(server, config={"quality": "low"}, limits=NO_EMPTY_ROOM_STOP)
        # Beyond this machine without a token: refused before anything starts.
        exposed = await WorkerProcess.launch(
            job, worker_env(tmp_path), "--control-port", "0", "--control-host", "0.0.0.0"
        )
        result = await exposed.finish()
        assert result.returncode == ExitCode.INVALID_JOB
        assert "RECORDER_CONTROL_TOKEN" in result.stderr
        assert not (tmp_path / "spool").exists()

        env = worker_env(tmp_path, RECORDER_CONTROL_TOKEN=TOKEN)
        worker = await WorkerProcess.launch(
            room_job(server, config={"quality": "low"}, limits=NO_EMPTY_ROOM_STOP),
            env,
            "--control-port",
            "0",
        )
        url = await worker.control_url()
        await worker.wait_for_log(STARTED_LOG)
        good = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            for route, method in [("/status", "GET"), ("/stop", "POST"), ("/metrics", "GET"),
                                  ("/healthz", "GET"), ("/layout", "POST")]:  # fmt: skip
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                    async with http.request(method, url + route, headers=headers) as response:
                        assert response.status == 401, (route, headers)
                        assert response.headers["WWW-Authenticate"] == "Bearer"
            async with http.get(f"{url}/status", headers=good) as response:
                assert response.status == 200
                status = await response.json()
                assert status["state"] == "RECORDING_STARTED"  # never stopped
            async with http.post(f"{url}/stop", headers=good) as response:
                assert response.status == 202
        result = await worker.finish()
    assert result.returncode == ExitCode.OK, result.stderr
    # The refused (unauthenticated) layout requests changed nothing, and the manifest says so.
    manifest = json.loads((tmp_path / "out" / f"{status['recordingId']}.json").read_text())
    assert manifest["layoutChanges"] == []


def _final_sidecar(spool_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The spool and the manifest its sidecar holds, once that is the final one (`stoppedAt`
    set: the stop writes it before storing anything); None before."""
    for spool in spool_dir.glob("*.mp4"):
        if sidecar_path(spool).exists():
            manifest = json.loads(sidecar_path(spool).read_bytes())["manifest"]
            if manifest.get("stoppedAt") is not None:
                return spool, manifest
    return None


async def _final_sidecar_manifest(spool_dir: Path) -> tuple[Path, dict[str, Any]]:
    """`_final_sidecar`, waited for (bounded by `SIDECAR_WAIT_S`)."""
    deadline = time.monotonic() + SIDECAR_WAIT_S
    while (found := _final_sidecar(spool_dir)) is None:
        assert time.monotonic() < deadline, "no final manifest in a sidecar"
        await asyncio.sleep(POLL_INTERVAL_S)
    return found


async def test_layout_changes_reach_the_manifest_recorder_upload_delivers(
    tmp_path: Path, s3_env: S3Env
) -> None:
    """The store refuses the media at the stop (503 on every part); the second SIGTERM ends the
    run FAILED with the spool and its sidecar kept; `recorder upload` later stores it with the
    manifest the sidecar holds, layout changes and all."""
    env = worker_env(tmp_path, RECORDER_S3_BUCKET=s3_env.bucket)
    proxy = FlakyS3Proxy(s3_env.server.endpoint, fail_first=10_000, matching=is_upload_part)
    try:
        async with RoomServer() as server:
            eve = await join(server.url, "Eve")
            try:
                job = room_job(
                    server, awsDirPath="kept", config={"quality": "low"}, limits=NO_EMPTY_ROOM_STOP
                )
                worker = await WorkerProcess.launch(
                    job, {**env, "AWS_ENDPOINT_URL_S3": await proxy.start()}, "--control-port", "0"
                )
                url = await worker.control_url()
                await worker.wait_for_log(STARTED_LOG)
                async with aiohttp.ClientSession() as http:
                    _, status = await _json(http, "GET", f"{url}/status")
                    before_changes_s = status["elapsedS"]
                    for body in (
                        {"layout": {"type": "sidebar", "gridSize": 2}, "pin": eve.id},
                        {"theme": "dark", "unpin": eve.id},
                    ):
                        code, answer = await _json(http, "POST", f"{url}/layout", body)
                        assert code == 200, answer
                    _, status = await _json(http, "GET", f"{url}/status")
                    after_changes_s = status["elapsedS"]
                worker.signal(signal.SIGTERM)
                spool, in_sidecar = await _final_sidecar_manifest(tmp_path / "spool")
                worker.signal(signal.SIGTERM)  # the launcher's patience ends: keep the spool
                result = await worker.finish()
            finally:
                await eve.leave()
    finally:
        await proxy.close()
    assert result.returncode == ExitCode.FAILED, result.stderr
    assert spool.exists()

    upload = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "upload", str(spool), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(upload.communicate(), FINISHED_TIMEOUT_S)
    assert upload.returncode == 0, err.decode()
    key = f"kept/{status['recordingId']}.json"
    manifest = json.loads(s3_env.client.get_object(Bucket=s3_env.bucket, Key=key)["Body"].read())
    assert "recovered" not in manifest  # the final manifest, from the sidecar
    sidebar = {"type": "SIDEBAR", "priority": "SPEAKER", "gridSize": 2}
    first, second = manifest["layoutChanges"]
    assert (first["layout"], first["theme"], first["pin"], first["unpin"]) == (
        sidebar,
        "DEFAULT",
        eve.id,
        None,
    )
    assert (second["layout"], second["theme"], second["pin"], second["unpin"]) == (
        sidebar,
        "DARK",
        None,
        eve.id,
    )
    assert before_changes_s <= first["atS"] <= second["atS"] <= after_changes_s
    (person,) = manifest["participants"]
    assert person["pinned"] == [[first["atS"], second["atS"]]]
    assert manifest["layoutChanges"] == in_sidecar["layoutChanges"]
