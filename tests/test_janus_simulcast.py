"""Simulcast through a real Janus: the recorder asks for the layer a tile needs.

aiortc cannot publish simulcast, so the publisher here is Debian's chromium (driven by
Playwright, as the dashboard's browser test does): a 1280x720 canvas stream sent in three layers
(rids `h;m;l`, janus.js' order, each half the size of the one above), published into a VideoRoom
by this test over Janus' API. The connector subscribes, learns the top layer from what it decodes
at the layer Janus says it forwards, and `prefer_video_size` moves it to the smallest layer that
fills the tile: the decoded frames change size accordingly.

Chromium runs in the test's sealed network like everything else; its host candidates are given
as addresses, not mDNS names, which Janus is configured to ignore.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from janus_helpers import FAST, ColourSink, new_room_id, room_config
from test_room_helpers import until

from layouts.model import Size
from recorder.client.janus import create_room
from recorder.rooms.base import TrackKind, feed_id
from recorder.rooms.janus import JanusConnector
from recorder.rooms.janus.api import JanusSession
from recorder.testing.janus import JanusServer

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

CHROMIUM = os.environ.get("RECORDER_TEST_CHROMIUM") or shutil.which("chromium") or ""
CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container has no user namespaces for the sandbox
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    # Host candidates as addresses: Janus ignores mDNS (`.local`) candidates.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
BROWSER_TIMEOUT_MS = 20_000
TOP = Size(1280, 720)
LAYER_TIMEOUT_S = 15.0  # a layer switch waits for that layer's keyframe; the top one ramps up

# A canvas stream with motion (an encoder sends little for a still picture), in three layers.
PUBLISH_SIMULCAST = """async ([width, height]) => {
  const canvas = document.createElement('canvas');
  canvas.width = width; canvas.height = height;
  const context = canvas.getContext('2d');
  let frame = 0;
  setInterval(() => {
    context.fillStyle = '#2840e0'; context.fillRect(0, 0, width, height);
    context.fillStyle = '#ffffff'; context.fillRect((frame * 9) % (width - 80), height / 2, 80, 80);
    frame += 1;
  }, 33);
  const track = canvas.captureStream(30).getVideoTracks()[0];
  const pc = new RTCPeerConnection({iceServers: []});
  window.publisher = pc;
  pc.addTransceiver(track, {direction: 'sendonly', sendEncodings: [
    {rid: 'h', maxBitrate: 1500000},
    {rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 600000},
    {rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 200000},
  ]});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
  });
  return pc.localDescription.sdp;
}"""
ACCEPT_ANSWER = (
    "async (sdp) => { await window.publisher.setRemoteDescription({type: 'answer', sdp}); }"
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM, reason="chromium is not installed (scripts/test.sh installs it as root)"
)


@pytest.fixture
async def browser(janus: JanusServer) -> AsyncIterator[object]:
    """Chromium, started from inside the sealed network (so it is in it)."""
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def test_the_recorder_asks_janus_for_the_layer_each_tile_needs(
    janus: JanusServer, browser: playwright_api.Browser
) -> None:
    room_id = new_room_id()
    await create_room(janus.ws_url, room_id)
    page = await browser.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    offer = await page.evaluate(PUBLISH_SIMULCAST, [TOP.width, TOP.height])
    assert "a=simulcast:send h;m;l" in offer

    session = await JanusSession.open(janus.ws_url, name="chromium's signalling")
    sink = ColourSink()
    connector = JanusConnector(room_config(janus, room_id), sink, timings=FAST)
    try:
        handle = await session.attach()
        joined = await handle.message(
            {"request": "join", "ptype": "publisher", "room": room_id, "display": "Chromium"}
        )
        published = await handle.message(
            {"request": "publish", "descriptions": [{"mid": "0", "description": "camera"}]},
            jsep={"type": "offer", "sdp": offer},
        )
        assert published.data["streams"][0]["simulcast"] is True
        assert published.jsep is not None
        await page.evaluate(ACCEPT_ANSWER, published.jsep["sdp"])

        await connector.join()
        camera = feed_id(str(joined.data["id"]), TrackKind.CAMERA)
        # Janus starts on the top layer once the browser's bandwidth estimate allows it.
        await until(lambda: sink.sizes.get(camera) == (TOP.width, TOP.height), LAYER_TIMEOUT_S)

        # A thumbnail: the quarter layer. A half-size tile: the half layer. A full tile: the top.
        for tile, layer in (
            (Size(320, 180), Size(320, 180)),
            (Size(640, 360), Size(640, 360)),
            (Size(1280, 720), TOP),
        ):
            connector.prefer_video_size(camera, tile)
            wanted = (layer.width, layer.height)
            await until(lambda wanted=wanted: sink.sizes[camera] == wanted, LAYER_TIMEOUT_S)
    finally:
        await connector.close()
        await session.close()
        await page.close()
