"""The frame sink of a live recording: received frames into the media timeline.

Connectors hand frames by feed id (`FrameSink`); the timeline keeps one feed object per track.
This adapter adds a feed at its first frame and removes it at `end_feed` (an audio feed then plays
out what it buffered), so a publisher that reconnects gets a fresh feed under the same id. Feeds
are added under their participant (`participant_of_feed`), so the timeline keeps a participant's
audio and video together when the sender's clock runs slow. Frames
arrive on the event loop, the timeline's pushing side (`recorder/media/timeline.py`), and the
connector's clock must be the recording clock's (`clock=recording_clock.clock.now`) so arrival
times and ticks are on one time axis.
"""

from __future__ import annotations

import av

from recorder.media.timeline import AudioFeed, Timeline, VideoFeed
from recorder.rooms.base import participant_of_feed


class TimelineSink:
    """`FrameSink` over a `Timeline`: feeds come and go with their tracks."""

    def __init__(self, timeline: Timeline) -> None:
        self._timeline = timeline
        self._video: dict[str, VideoFeed] = {}
        self._audio: dict[str, AudioFeed] = {}

    def push_video(self, feed_id: str, frame: av.VideoFrame, arrival_s: float) -> None:
        feed = self._video.get(feed_id)
        if feed is None:
            feed = self._video[feed_id] = self._timeline.add_video_feed(
                feed_id, participant_of_feed(feed_id)
            )
        feed.push(frame, arrival_s)

    def push_audio(self, feed_id: str, frame: av.AudioFrame, arrival_s: float) -> None:
        feed = self._audio.get(feed_id)
        if feed is None:
            feed = self._audio[feed_id] = self._timeline.add_audio_feed(
                feed_id, participant_of_feed(feed_id)
            )
        feed.push(frame, arrival_s)

    def end_feed(self, feed_id: str) -> None:
        if self._video.pop(feed_id, None) is not None:
            self._timeline.remove_video_feed(feed_id)
        if self._audio.pop(feed_id, None) is not None:
            self._timeline.remove_audio_feed(feed_id)
