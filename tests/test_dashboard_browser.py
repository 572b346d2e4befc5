"""The recordings page in a real headless browser: Debian's chromium, driven by Playwright.

The list renders with the manifests' data (hostile names as text, no script run), the
thumbnail loads, and the recording plays in the page's own <video> element: time advances, the
decoded size is the recording's, and seeking works (the local file is served with Range). That
the browser plays it at all proves the fragmented MP4 (H.264 + AAC) is browser-compatible; the
audio-only recording (M4A) plays in its <audio> element too.

The browser is the system's (`apt-get install chromium`, which scripts/test.sh does when it
can); Playwright's own browser downloads are never used. Without chromium the test is skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dashboard_helpers import (
    AMPERSAND_NAME,
    HOSTILE_NAME,
    MEDIA_DURATION_S,
    MEDIA_QUALITY,
    render_media,
    serve,
    store_recording,
)

from layouts.model import Orientation
from recorder.dashboard.stores import LocalStore
from recorder.dashboard.thumbnails import THUMBNAIL_WIDTH_PX
from recorder.presets import PRESETS, Mode
from recorder.storage.local import LocalSink

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

CHROMIUM = os.environ.get("RECORDER_TEST_CHROMIUM") or shutil.which("chromium") or ""
CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container has no user namespaces for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_TIMEOUT_MS = 20_000  # launch, page load, and playing ~1 s of media, on a busy machine
PLAYED_S = 1.0  # currentTime must pass this: real playback, not a first decoded frame
SEEK_TO_S = 2.5

pytestmark = pytest.mark.skipif(
    not CHROMIUM, reason="chromium is not installed (scripts/test.sh installs it as root)"
)


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        try:
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


async def test_the_page_lists_the_recordings_and_the_browser_plays_them(
    tmp_path: Path, page: playwright_api.Page
) -> None:
    video_media = await _render(tmp_path / "media" / "room.mp4", Mode.VIDEO_AND_AUDIO)
    audio_media = await _render(tmp_path / "media" / "room.m4a", Mode.AUDIO)
    root = tmp_path / "recordings"
    sink = LocalSink(root)
    await store_recording(
        sink,
        video_media,
        tmp_path / "spool",
        recording_id="board-1",
        aws_dir_path="team",
        names=(HOSTILE_NAME, AMPERSAND_NAME),
    )
    await store_recording(
        sink, audio_media, tmp_path / "spool", recording_id="call-2", mode=Mode.AUDIO
    )
    canvas = PRESETS[MEDIA_QUALITY].canvas(Orientation.LANDSCAPE)
    errors: list[str] = []  # script errors and console errors (a CSP violation is one)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            message.type == "error" and errors.append(f"{message.text} {message.location}")
        ),
    )

    async with serve(LocalStore(root), tmp_path / "cache") as (url, _thumbnails):
        await page.goto(url + "/")
        assert await page.title() == "Recordings"  # the hostile name did not retitle the page
        cards = page.locator("article.recording")
        assert await cards.count() == 2
        video_card = page.locator('article[data-key="team/board-1.mp4"]')
        assert await video_card.locator(".recording-id").inner_text() == "board-1"
        assert await video_card.locator(".duration").inner_text() == "0:03"
        assert await video_card.locator(".date").inner_text() == "2026-11-24 14:00:05 UTC"
        assert "GRID" in await video_card.locator(".layout").inner_text()
        names = await video_card.locator(".participants li").all_inner_texts()
        assert names == [HOSTILE_NAME, AMPERSAND_NAME]
        assert await page.locator('img[src="x"]').count() == 0

        thumbnail = video_card.locator("img.thumbnail")
        await thumbnail.scroll_into_view_if_needed()
        await page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=await thumbnail.element_handle()
        )
        assert await thumbnail.evaluate("img => img.naturalWidth") == THUMBNAIL_WIDTH_PX

        video = await video_card.locator("video").element_handle()
        await _play(page, video)
        played = await video.evaluate(
            "v => ({width: v.videoWidth, height: v.videoHeight, duration: v.duration,"
            " error: v.error && v.error.code, src: v.currentSrc})"
        )
        assert (played["width"], played["height"]) == (canvas.width, canvas.height)
        assert played["duration"] == pytest.approx(MEDIA_DURATION_S, abs=0.2)
        assert played["error"] is None
        assert played["src"] == url + "/files/team/board-1.mp4"
        # Seeking back and forth needs the server's Range support.
        await video.evaluate(
            """(v, to) => new Promise((resolve, reject) => {
                v.addEventListener('seeked', resolve, {once: true});
                v.addEventListener('error', () => reject(new Error('media error')), {once: true});
                v.currentTime = to;
            })""",
            SEEK_TO_S,
        )
        assert await video.evaluate("v => v.currentTime") >= SEEK_TO_S - 0.1

        audio = await page.locator('article[data-key="call-2.m4a"] audio').element_handle()
        await _play(page, audio)
        assert await audio.evaluate("a => a.duration") == pytest.approx(MEDIA_DURATION_S, abs=0.2)
    assert errors == []


async def _render(path: Path, mode: Mode) -> Path:
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    return await asyncio.to_thread(render_media, path, mode)


async def _play(page: playwright_api.Page, element: playwright_api.ElementHandle) -> None:
    """Start the element muted (autoplay rules allow it) and wait until real playback."""
    await element.evaluate("m => { m.muted = true; return m.play(); }")
    await page.wait_for_function(
        "([m, played]) => m.currentTime > played && !m.error", arg=[element, PLAYED_S]
    )
