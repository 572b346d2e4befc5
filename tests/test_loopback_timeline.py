"""From a live room into the media timeline: the project's synthetic participant, published over
WebRTC on 127.0.0.1, shows up in the timeline's pictures and audio, and leaves it when it goes."""

from __future__ import annotations

import numpy as np
from test_room_helpers import until

from recorder.client import join
from recorder.client.media import paced_tracks
from recorder.embedded_room.protocol import DEFAULT_ROOM_ID
from recorder.embedded_room.server import RoomServer
from recorder.job import RoomConfig
from recorder.media.clock import MonotonicClock, RecordingClock
from recorder.media.timeline import Timeline
from recorder.rooms.base import TrackKind, feed_id
from recorder.rooms.loopback import LoopbackConnector
from recorder.rooms.timeline_sink import TimelineSink
from recorder.testing.sources import AudioFormat, VideoFormat, synthetic_participant
from recorder.testing.video import nearest_participant

AUDIBLE_PEAK = 0.05  # the synthetic tone peaks near 0.3 full scale; Opus keeps it well above this


async def test_a_live_participant_reaches_the_timeline() -> None:
    recording_clock = RecordingClock(MonotonicClock(), fps=30)
    timeline = Timeline(recording_clock)
    async with RoomServer() as server:
        token = server.issue_recorder_token(DEFAULT_ROOM_ID)
        room = RoomConfig(
            connector="loopback", url=server.url, room_id=DEFAULT_ROOM_ID, token=token
        )
        connector = LoopbackConnector(room, TimelineSink(timeline), clock=recording_clock.clock.now)
        await connector.join()
        recording_clock.start()
        source = synthetic_participant(2, "Carol", VideoFormat(320, 180, fps=15), AudioFormat())
        carol = await join(server.url, "Carol")
        try:
            for kind, track in paced_tracks(source).items():
                await carol.publish(kind, track)
            camera = feed_id(carol.id, TrackKind.CAMERA)
            audio = feed_id(carol.id, TrackKind.AUDIO)

            def showing() -> bool:
                picture = timeline.pictures(recording_clock.now_s()).get(camera)
                return picture is not None and picture.frame is not None

            await until(showing)
            frame = timeline.pictures(recording_clock.now_s())[camera].frame
            assert (frame.width, frame.height) == (320, 180)
            # The background (most of the frame) is participant 2's palette colour.
            background = np.median(frame.to_ndarray(format="rgb24").reshape(-1, 3), axis=0)
            assert nearest_participant(tuple(background)) == 2

            def audible() -> bool:
                end = int(recording_clock.now_s() * 48_000) - 48_000 // 2  # past the playout delay
                samples = timeline.read_audio(max(end - 4_800, 0), 4_800).get(audio)
                return samples is not None and float(np.abs(samples).max()) > AUDIBLE_PEAK

            await until(audible)

            await carol.leave()
            await until(lambda: camera not in timeline.pictures(recording_clock.now_s()))
        finally:
            await carol.leave()
            await connector.close()
