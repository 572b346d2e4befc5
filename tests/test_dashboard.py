"""`recorder dashboard` over HTTP: the list from real manifests, files with Range, thumbnails, S3.

Recordings are rendered offline once per module and stored by the storage code (the worker's
`RecordingDelivery`), into a local directory or a moto S3 server on 127.0.0.1. The page is
parsed and checked field by field; hostile names must come back as text, never as markup. The
browser's side (the player really plays) is tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from dashboard_helpers import (
    AMPERSAND_NAME,
    HOSTILE_NAME,
    MEDIA_DURATION_S,
    render_media,
    serve,
    store_recording,
)
from PIL import Image
from servers import S3Env
from yarl import URL

from recorder.cli import main
from recorder.dashboard.entries import entry_from_manifest
from recorder.dashboard.page import format_duration, format_size
from recorder.dashboard.stores import RELIST_MIN_INTERVAL_S, LocalStore, S3Store
from recorder.dashboard.thumbnails import THUMBNAIL_WIDTH_PX, thumbnail_time_s
from recorder.presets import Mode
from recorder.storage.from_env import sink_from_env
from recorder.storage.local import LocalSink
from recorder.storage.s3 import make_s3_client

# JPEG at quality 80 against the same frame scaled by the same library: ~3 levels on average.
THUMBNAIL_MAX_MEAN_ABS_DIFF = 6.0
COMMAND_TIMEOUT_S = 20.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)


@pytest.fixture(scope="module")
def video_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_media(tmp_path_factory.mktemp("media") / "room.mp4")


@pytest.fixture(scope="module")
def audio_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_media(tmp_path_factory.mktemp("media") / "room.m4a", Mode.AUDIO)


class Cards(HTMLParser):
    """Each recording card of the page: its key, id, fields by class, participants, elements."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, Any]] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        css = attributes.get("class") or ""
        if tag == "article" and css == "recording":
            self.cards.append({"key": attributes["data-key"], "participants": [], "text": {}})
        elif self.cards and tag in ("dd", "h2") and css:
            self._field = css
            self.cards[-1]["text"][css] = ""
        elif self.cards and tag == "li":
            self._field = "li"
            self.cards[-1]["participants"].append("")
        elif self.cards and tag in ("video", "audio", "img", "source"):
            self.cards[-1][tag] = attributes

    def handle_endtag(self, tag: str) -> None:
        if tag in ("dd", "h2", "li"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._field == "li":
            self.cards[-1]["participants"][-1] += data
        elif self._field is not None:
            self.cards[-1]["text"][self._field] += data


def parse(html: str) -> Cards:
    parser = Cards()
    parser.feed(html)
    return parser


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any, bytes]:
    """GET `url` exactly as written (no normalisation of `..` or percent escapes)."""
    target = URL(url, encoded=True)
    async with session.get(target, timeout=HTTP_TIMEOUT, **kwargs) as response:
        return response.status, response.headers, await response.read()


async def test_the_page_lists_local_recordings_with_their_manifest_data(
    tmp_path: Path, video_media: Path, audio_media: Path
) -> None:
    root = tmp_path / "recordings"
    sink = LocalSink(root)
    early = await store_recording(
        sink,
        audio_media,
        tmp_path / "spool",
        recording_id="call-audio",
        mode=Mode.AUDIO,
        names=("Ann",),
        started_at=datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
    )
    late = await store_recording(
        sink,
        video_media,
        tmp_path / "spool",
        recording_id="standup-1",
        aws_dir_path="team/daily",
        names=(HOSTILE_NAME, AMPERSAND_NAME),
    )
    # Noise the listing must skip: JSON that is not a manifest, a manifest whose media is gone,
    # a manifest pointing at another recording's file, a hidden partial file.
    (root / "notes.json").write_text('{"hello": 1}')
    orphan = json.loads((root / "team/daily/standup-1.json").read_text())
    (root / "team/daily/gone.json").write_text(
        json.dumps({**orphan, "output": {**orphan["output"], "key": "team/daily/gone.mp4"}})
    )
    (root / "team/daily/thief.json").write_text(json.dumps(orphan))
    (root / "team/daily/.standup-2.mp4.abc.partial").write_bytes(b"partial")

    async with (
        serve(LocalStore(root), tmp_path / "cache") as (url, _thumbnails),
        aiohttp.ClientSession() as session,
    ):
        status, headers, body = await get(session, url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none' covers it
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    page = parse(body.decode())
    assert [card["key"] for card in page.cards] == ["team/daily/standup-1.mp4", "call-audio.m4a"]

    video, audio = page.cards
    assert video["text"]["recording-id"] == "standup-1"
    assert video["text"]["date"] == "2026-11-24 14:00:05 UTC"
    assert video["text"]["duration"] == "0:03"
    assert video["text"]["size"] == format_size(late.media.size_bytes)
    assert video["text"]["layout"] == "GRID · DEFAULT theme · low 854×480"
    assert video["text"]["stop-reason"] == "control"
    # The hostile names are shown as the text they are, and made no element.
    assert video["participants"] == [HOSTILE_NAME, AMPERSAND_NAME]
    assert not [attrs for tag, attrs in page.elements if tag == "img" and attrs.get("src") == "x"]
    assert not [tag for tag, _attrs in page.elements if tag == "b"]
    assert video["video"]["poster"] == "/thumbnails/team/daily/standup-1.mp4"
    assert video["source"] == {"src": "/files/team/daily/standup-1.mp4", "type": "video/mp4"}
    assert video["img"]["src"] == video["video"]["poster"]

    assert audio["text"]["date"] == "2026-11-23 09:30:00 UTC"
    assert audio["text"]["size"] == format_size(early.media.size_bytes)
    assert audio["participants"] == ["Ann"]
    assert audio["source"] == {"src": "/files/call-audio.m4a", "type": "audio/mp4"}
    assert "video" not in audio and "img" not in audio


async def test_files_are_served_with_range_support_and_only_for_listed_recordings(
    tmp_path: Path, video_media: Path
) -> None:
    root = tmp_path / "recordings"
    delivered = await store_recording(
        LocalSink(root), video_media, tmp_path / "spool", recording_id="r1", aws_dir_path="a"
    )
    content = (root / "a/r1.mp4").read_bytes()
    (root / "a/unlisted.mp4").write_bytes(content)  # a media file without a manifest
    (tmp_path / "secret.json").write_text("{}")
    async with (
        serve(LocalStore(root), tmp_path / "cache") as (url, _thumbnails),
        aiohttp.ClientSession() as session,
    ):
        status, headers, body = await get(session, url + "/files/a/r1.mp4")
        assert status == 200 and body == content
        assert headers["Content-Type"] == "video/mp4"
        assert headers["Accept-Ranges"] == "bytes"

        status, headers, body = await get(
            session, url + "/files/a/r1.mp4", headers={"Range": "bytes=1000-1999"}
        )
        assert status == 206
        assert headers["Content-Range"] == f"bytes 1000-1999/{len(content)}"
        assert body == content[1000:2000]

        status, _headers, body = await get(session, url + "/files/a/r1.json")
        assert status == 200
        assert json.loads(body) == dict(delivered.manifest_document)

        for path in (
            "/files/a/unlisted.mp4",
            "/files/../secret.json",
            "/files/a/%2e%2e/%2e%2e/secret.json",
            "/files/a/..%2f..%2fsecret.json",
        ):
            status, _headers, _body = await get(session, url + path)
            assert status == 404, path


async def test_the_thumbnail_is_a_frame_of_the_recording_and_is_made_once(
    tmp_path: Path, video_media: Path, audio_media: Path
) -> None:
    root = tmp_path / "recordings"
    await store_recording(LocalSink(root), video_media, tmp_path / "spool", recording_id="v")
    await store_recording(
        LocalSink(root), audio_media, tmp_path / "spool", recording_id="a", mode=Mode.AUDIO
    )
    async with (
        serve(LocalStore(root), tmp_path / "cache") as (url, thumbnails),
        aiohttp.ClientSession() as session,
    ):
        await get(session, url + "/")  # list first, as a browser does
        first, second = await asyncio.gather(
            get(session, url + "/thumbnails/v.mp4"), get(session, url + "/thumbnails/v.mp4")
        )
        again = await get(session, url + "/thumbnails/v.mp4")
        audio_status, _headers, _body = await get(session, url + "/thumbnails/a.m4a")
    for status, headers, _body in (first, second, again):
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert first[2] == second[2] == again[2]
    assert thumbnails.extracted == 1  # concurrent and later requests: from the one extraction
    assert audio_status == 404

    thumbnail = np.asarray(Image.open(io.BytesIO(first[2])).convert("RGB"), dtype=np.int16)
    assert thumbnail.shape == (180, THUMBNAIL_WIDTH_PX, 3)  # 854x480 scaled, aspect kept
    expected_at = thumbnail_time_s(MEDIA_DURATION_S)
    assert expected_at == MEDIA_DURATION_S / 2

    # The thumbnail is the frame at that time: of every frame of the file, scaled the same way,
    # it is closest to that one (neighbours differ by the moving square and the clocks).
    differences: dict[float, float] = {}
    with av.open(str(root / "v.mp4")) as container:
        for frame in container.decode(video=0):
            image = frame.to_image(width=THUMBNAIL_WIDTH_PX, height=180, interpolation="AREA")
            differences[frame.time] = float(np.abs(thumbnail - np.asarray(image, np.int16)).mean())
    closest = min(differences, key=differences.__getitem__)
    assert closest == pytest.approx(expected_at)
    assert differences[closest] <= THUMBNAIL_MAX_MEAN_ABS_DIFF


async def test_s3_store_lists_and_redirects_to_a_presigned_url_that_serves_the_object(
    tmp_path: Path, video_media: Path, s3_env: S3Env
) -> None:
    sink = sink_from_env()  # the S3 sink, as a worker with RECORDER_S3_BUCKET gets it
    delivered = await store_recording(
        sink, video_media, tmp_path / "spool", recording_id="s3-rec", aws_dir_path="team"
    )
    await store_recording(
        sink, video_media, tmp_path / "spool", recording_id="elsewhere", aws_dir_path="other"
    )
    content = await asyncio.to_thread(video_media.read_bytes)
    store = S3Store(make_s3_client(), s3_env.bucket, prefix="team")
    async with (
        serve(store, tmp_path / "cache") as (url, thumbnails),
        aiohttp.ClientSession() as session,
    ):
        status, headers, body = await get(session, url + "/")
        assert status == 200
        assert f"media-src 'self' {s3_env.server.endpoint}" in headers["Content-Security-Policy"]
        page = parse(body.decode())
        assert [card["key"] for card in page.cards] == ["team/s3-rec.mp4"]
        assert page.cards[0]["text"]["size"] == format_size(delivered.media.size_bytes)
        assert page.cards[0]["participants"] == ["Ann", "Ben"]

        status, headers, _body = await get(
            session, url + "/files/team/s3-rec.mp4", allow_redirects=False
        )
        assert status == 302
        presigned = headers["Location"]
        assert presigned.startswith(s3_env.server.endpoint) and "Signature" in presigned
        status, headers, body = await get(session, presigned)
        assert status == 200 and body == content
        assert headers["Content-Type"] == "video/mp4"
        status, _headers, body = await get(session, presigned, headers={"Range": "bytes=0-99"})
        assert status == 206 and body == content[:100]

        # Another prefix's recording is not listed, so not served.
        status, _headers, _body = await get(
            session, url + "/files/other/elsewhere.mp4", allow_redirects=False
        )
        assert status == 404

        # The thumbnail is decoded from the presigned URL (ranged reads by FFmpeg).
        status, headers, body = await get(session, url + "/thumbnails/team/s3-rec.mp4")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (THUMBNAIL_WIDTH_PX, 180)
    assert thumbnails.extracted == 1


async def test_a_key_not_listed_lists_again_but_not_on_every_request(
    tmp_path: Path, video_media: Path
) -> None:
    now = 0.0
    root = tmp_path / "recordings"
    store = LocalStore(root, clock=lambda: now)
    assert await store.entries() == []
    await store_recording(LocalSink(root), video_media, tmp_path / "spool", recording_id="late")
    assert await store.find("late.mp4") is None  # listed just now: no second walk yet
    now += RELIST_MIN_INTERVAL_S
    found = await store.find("late.mp4")
    assert found is not None and found.recording_id == "late"
    assert await store.find("late.json") is found


def test_a_manifest_cannot_point_at_another_object_or_break_the_entry() -> None:
    base = {"manifestVersion": 1, "output": {"key": "p/r.mp4"}}
    assert entry_from_manifest("p/r.json", base) is not None
    assert entry_from_manifest("p/r.json", {**base, "output": {"key": "p/other.mp4"}}) is None
    assert entry_from_manifest("p/r.json", {**base, "output": {"key": "q/r.mp4"}}) is None
    assert entry_from_manifest("p/r.json", {"output": {"key": "p/r.mp4"}}) is None
    assert entry_from_manifest("p/r.json", ["not", "a", "manifest"]) is None
    strange = entry_from_manifest(
        "p/r.json",
        {
            **base,
            "durationS": "long",
            "startedAt": "yesterday",
            "participants": [{"name": 5, "present": [[0, "x"], [1, 3]]}, "bob", {"id": "i"}],
            "config": [],
        },
    )
    assert strange is not None
    assert (strange.duration_s, strange.started_at, strange.layout) == (None, None, None)
    assert [(p.name, p.present_s) for p in strange.participants] == [
        ("?", 2.0),
        ("?", 0.0),
        ("i", 0.0),
    ]


def test_durations_and_sizes_read_as_people_write_them() -> None:
    assert [format_duration(s) for s in (None, 0.4, 3.0, 754.6, 3723)] == [
        "–",
        "0:00",
        "0:03",
        "12:35",
        "1:02:03",
    ]
    assert [format_size(n) for n in (None, 999, 180_735, 2_500_000, 4_200_000_000)] == [
        "–",
        "999 B",
        "180.7 kB",
        "2.5 MB",
        "4.2 GB",
    ]


def test_the_dashboard_refuses_to_serve_the_network_without_expose(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["dashboard", "--dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "--expose" in capsys.readouterr().err


async def test_the_dashboard_command_serves_until_sigterm(
    tmp_path: Path, video_media: Path
) -> None:
    root = tmp_path / "recordings"
    await store_recording(LocalSink(root), video_media, tmp_path / "spool", recording_id="cli")
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECORDER_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recorder",
        "dashboard",
        "--dir",
        str(root),
        "--port",
        "0",
        "--cache-dir",
        str(tmp_path / "cache"),
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), COMMAND_TIMEOUT_S)
        assert line.startswith(b"dashboard: http://127.0.0.1:")
        url = line.decode().split(" ", 1)[1].strip()
        async with aiohttp.ClientSession() as session:
            status, _headers, body = await get(session, url + "/")
        assert status == 200
        assert [card["key"] for card in parse(body.decode()).cards] == ["cli.mp4"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), COMMAND_TIMEOUT_S) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
