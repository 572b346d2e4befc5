"""Fixtures and helpers for tests against a real Janus (Debian's `janus`, the project's config).

Janus runs in a sealed network (`recorder/testing/netns.py`): a network namespace the test
creates, with 127.0.0.1 for the API and 10.200.0.1 on a veth for media. The test's own thread
enters it for the whole test (`sealed_network`), so the publishers, the connector and any worker
process the test starts meet Janus there, and no packet touches the machine's interfaces.

A test is skipped, saying why, only when this machine cannot run Janus at all: no root for the
namespace, or janus neither installed nor installable (`ensure_janus_installed`).
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from test_room_helpers import CountingSink

from layouts.model import Rect
from recorder.client.janus import JanusPublisher
from recorder.client.media import paced_tracks
from recorder.inspect import region_colour
from recorder.job import RoomConfig
from recorder.rooms.janus import JanusTimings
from recorder.testing.janus import JanusServer, JanusUnavailableError
from recorder.testing.netns import NetworkNamespaceError, SealedNetwork
from recorder.testing.sources import ParticipantSource
from recorder.testing.video import nearest_participant

# The connector's pacing, shortened so that joins, leaves and new streams are seen quickly.
FAST = JanusTimings(
    poll_interval_s=0.2,
    probe_interval_s=0.5,
    reconnect_timeout_s=20.0,
    reconnect_first_delay_s=0.1,
    reconnect_max_delay_s=0.5,
)
COLOUR_MATCH_MAX_DISTANCE = 50.0  # VP8 and the YUV round trip move a flat colour by a few levels


@pytest.fixture
def sealed_network() -> Iterator[SealedNetwork]:
    """A sealed network that this test's thread is inside of, for the whole test."""
    reason = SealedNetwork.unavailable_reason()
    if reason is not None:
        pytest.skip(f"Janus needs a sealed network, and {reason}")
    try:
        network = SealedNetwork.create()
    except NetworkNamespaceError as error:
        pytest.skip(f"Janus needs a sealed network, and this machine refuses one: {error}")
    with network, network.entered():
        yield network


@pytest.fixture
def janus(sealed_network: SealedNetwork, tmp_path: Path) -> Iterator[JanusServer]:
    """Janus with the project's configuration, in the test's sealed network."""
    server = JanusServer(network=sealed_network, folder=tmp_path / "janus")
    try:
        server.start()
    except JanusUnavailableError as error:
        pytest.skip(f"Janus cannot run here: {error}")
    try:
        yield server
    finally:
        server.close()


def new_room_id() -> int:
    return 1000 + secrets.randbelow(1_000_000)


def room_config(janus: JanusServer, room_id: int, *, pin: str | None = None) -> RoomConfig:
    return RoomConfig(connector="janus", url=janus.ws_url, room_id=room_id, pin=pin)


async def publishing(
    janus: JanusServer, room_id: int, source: ParticipantSource, *, pin: str | None = None
) -> JanusPublisher:
    """A participant named after `source`, publishing its camera and microphone."""
    publisher = await JanusPublisher.join(janus.ws_url, room_id, source.name, pin=pin)
    await publisher.publish(paced_tracks(source))
    return publisher


class ColourSink(CountingSink):
    """A counting sink that also keeps each video feed's last frame, to tell whose it is."""

    def __init__(self) -> None:
        super().__init__()
        self.last_frames: dict[str, av.VideoFrame] = {}
        self.ended_count: collections.Counter[str] = collections.Counter()

    def push_video(self, feed_id: str, frame: av.VideoFrame, arrival_s: float) -> None:
        self.frames[feed_id] += 1
        self.arrivals[feed_id].append(arrival_s)
        self.sizes[feed_id] = (frame.width, frame.height)
        self.last_frames[feed_id] = frame

    def end_feed(self, feed_id: str) -> None:
        super().end_feed(feed_id)
        self.ended_count[feed_id] += 1

    def colour(self, feed_id: str) -> tuple[float, float, float]:
        """The median colour of the feed's last frame (whole frame)."""
        frame = self.last_frames[feed_id]
        return region_colour(frame, Rect(0, 0, frame.width, frame.height))

    def palette_index(self, feed_id: str) -> int | None:
        """Which synthetic participant's camera the feed's last frame shows, if any."""
        return nearest_participant(self.colour(feed_id), COLOUR_MATCH_MAX_DISTANCE)
