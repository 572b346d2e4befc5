"""The worker's control endpoint, on the real worker process: every route, bad input, the token.

`recorder run --control-port 0` prints `control: http://127.0.0.1:PORT`; the tests talk HTTP to it
while the recording runs in the embedded room (one participant without media, so that there is
someone to pin), and check that what the endpoint changes shows in the file and the manifest.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from live_helpers import frames_at
from worker_helpers import (
    WorkerProcess,
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

                # A layout and theme switch, then a pin for this recording.
                code, applied = await _json(
                    http,
                    "POST",
                    f"{url}/layout",
                    {"layout": {"type": "spotlight"}, "theme": "light"},
                )
                switched_wall = time.time()
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
    # The theme switch is in the file: the canvas colour before it, the new one after.
    started = datetime.fromisoformat(manifest["startedAt"].replace("Z", "+00:00")).timestamp()
    switch_s = switched_wall - started
    before, after = 0.2, switch_s + LAYOUT_SHOWS_S
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
                assert (await response.json())["state"] == "RECORDING_STARTED"  # never stopped
            async with http.post(f"{url}/stop", headers=good) as response:
                assert response.status == 202
        result = await worker.finish()
    assert result.returncode == ExitCode.OK, result.stderr
