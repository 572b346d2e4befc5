"""The Janus connector's decisions, as pure functions: which streams are whose tracks, what one
`update` changes, which m-line carries whom, which simulcast layer a tile needs, and where a
keyframe begins. The same decisions are exercised against a real Janus in
test_janus_connector.py; here every case is spelled out."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from layouts.model import Fit, Size
from recorder.rooms.base import TrackKind
from recorder.rooms.janus.peer import is_keyframe_start
from recorder.rooms.janus.simulcast import layer_size, substream_for_tile, top_layer_size
from recorder.rooms.janus.streams import (
    PublisherStream,
    SubscribedStream,
    SubscriptionUpdate,
    parse_streams,
    plan_update,
    publisher_streams,
    routes,
    silent_mids,
    track_kinds,
    wanted_streams,
)

A, B = 111, 222  # feed ids


def _audio(feed: int = A, mid: str = "0") -> PublisherStream:
    return PublisherStream(feed, mid, "audio")


def _video(feed: int = A, mid: str = "1", description: str | None = None) -> PublisherStream:
    return PublisherStream(feed, mid, "video", description)


def _sub(
    mid: str, feed: int | None, feed_mid: str | None, media: str = "video", *, active: bool = True
) -> SubscribedStream:
    return SubscribedStream(mid, media, active, feed, feed_mid)


# --- which stream is which track -----------------------------------------------------------------


def test_a_publishers_streams_become_microphone_camera_and_screen() -> None:
    audio, camera, screen = _audio(), _video(mid="1", description="camera"), _video(mid="2")
    data = PublisherStream(A, "3", "data")
    assert track_kinds([audio, camera, screen, data]) == {
        TrackKind.AUDIO: audio,
        TrackKind.CAMERA: camera,
        TrackKind.SCREEN: screen,  # an undescribed second video is the screen share
    }


def test_a_stream_described_as_a_screen_is_the_screen_whatever_its_order() -> None:
    screen = _video(mid="1", description="Screen share")
    camera = _video(mid="2", description="webcam")
    assert track_kinds([screen, camera]) == {TrackKind.CAMERA: camera, TrackKind.SCREEN: screen}
    # A screen share alone is a screen share, not a camera.
    assert track_kinds([screen]) == {TrackKind.SCREEN: screen}


def test_extra_streams_are_left_alone() -> None:
    first, second = _audio(mid="0"), _audio(mid="3")
    cameras = [_video(mid=str(m)) for m in (1, 2, 4)]
    kinds = track_kinds([first, *cameras, second])
    assert kinds == {
        TrackKind.AUDIO: first,
        TrackKind.CAMERA: cameras[0],
        TrackKind.SCREEN: cameras[1],
    }


def test_wanted_streams_cover_every_publisher() -> None:
    wanted = wanted_streams(
        {A: [_audio(A), _video(A)], B: [_video(B, "0", "screen")]},
    )
    assert wanted == {
        (A, "0"): TrackKind.AUDIO,
        (A, "1"): TrackKind.CAMERA,
        (B, "0"): TrackKind.SCREEN,
    }


# --- reading what Janus says ---------------------------------------------------------------------


PROBE_STREAMS = [
    {"type": "audio", "active": True, "mid": "0", "feed_id": A, "feed_mid": "0"},
    {"type": "video", "active": True, "mid": "1", "feed_id": A, "feed_mid": "1",
     "feed_description": "camera", "simulcast": {"substream": 2}},
    {"type": "video", "active": True, "mid": "2", "feed_id": A, "feed_mid": "2",
     "feed_description": "screen"},
    {"type": "video", "active": False, "mid": "3"},
    {"type": "audio", "mid": "4", "feed_id": True, "feed_mid": "0"},  # not a feed id
    "junk", {"mid": 5}, {"type": "video"},
]  # fmt: skip
PROBE_OFFER = "\r\n".join(
    [
        "v=0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=sendonly", "a=mid:0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=sendonly", "a=mid:1",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=inactive", "a=mid:2",
        "m=video 0 UDP/TLS/RTP/SAVPF 96", "a=mid:3",
        "",
    ]
)  # fmt: skip


def test_janus_streams_are_read_and_junk_is_skipped() -> None:
    streams = parse_streams(PROBE_STREAMS)
    assert [s.mid for s in streams] == ["0", "1", "2", "3", "4"]
    camera = streams[1]
    assert (camera.feed, camera.feed_mid, camera.description) == (A, "1", "camera")
    assert camera.simulcast and not streams[0].simulcast
    assert streams[3].key is None  # inactive: carries nobody
    assert streams[4].feed is None  # a boolean is no feed id
    assert parse_streams("nothing") == []


def test_a_stream_janus_offers_inactive_is_not_published() -> None:
    # Janus 1.1 lists a stream its publisher disabled (a stopped screen share) as active; only
    # the probe's offer tells, with an inactive m-line.
    assert silent_mids(PROBE_OFFER) == {"2", "3"}
    published = publisher_streams(PROBE_STREAMS, PROBE_OFFER)
    assert [s.feed_mid for s in published[A]] == ["0", "1"]
    assert [s.feed_mid for s in publisher_streams(PROBE_STREAMS)[A]] == ["0", "1", "2"]


# --- keeping the subscription equal to what is wanted ----------------------------------------


def test_the_update_adds_what_is_missing_and_drops_what_is_not_wanted() -> None:
    current = [
        _sub("0", A, "0", "audio"),
        _sub("1", A, "1"),
        _sub("2", B, "1"),  # B's camera: B left
        _sub("3", None, None, active=False),  # a freed m-line
    ]
    update = plan_update([(A, "0"), (A, "1"), (A, "2")], current)
    assert update == SubscriptionUpdate(subscribe=((A, "2"),), unsubscribe=("2",))
    assert update.request() == {
        "request": "update",
        "subscribe": [{"feed": A, "mid": "2"}],
        "unsubscribe": [{"sub_mid": "2"}],
    }


def test_a_stream_carried_twice_is_dropped_once() -> None:
    current = [_sub("0", A, "1"), _sub("1", A, "1")]
    assert plan_update([(A, "1")], current) == SubscriptionUpdate(unsubscribe=("1",))


def test_nothing_to_change_is_no_update_and_empty_lists_are_left_out() -> None:
    current = [_sub("0", A, "1")]
    assert not plan_update([(A, "1")], current)
    only_drop = plan_update([], current)
    assert only_drop.request() == {"request": "update", "unsubscribe": [{"sub_mid": "0"}]}
    assert plan_update([(B, "0"), (B, "0")], []).subscribe == ((B, "0"),)


# --- which m-line carries whom ---------------------------------------------------------------


def test_routes_follow_active_wanted_streams_of_present_feeds() -> None:
    current = [
        _sub("0", A, "0", "audio"),
        _sub("1", A, "1"),
        _sub("2", B, "1"),  # B is no longer present
        _sub("3", A, "2", active=False),  # inactive
        _sub("4", A, "1"),  # A's camera twice: routed once
        _sub("5", A, "0", "video"),  # wanted as audio, carried as video: never
    ]
    wanted = {(A, "0"): TrackKind.AUDIO, (A, "1"): TrackKind.CAMERA, (B, "1"): TrackKind.CAMERA}
    assert routes(current, wanted, [A]) == {"0": (A, TrackKind.AUDIO), "1": (A, TrackKind.CAMERA)}


def test_a_reused_m_line_routes_its_new_feed() -> None:
    wanted = {(A, "1"): TrackKind.CAMERA, (B, "1"): TrackKind.CAMERA}
    before = routes([_sub("3", A, "1")], wanted, [A, B])
    after = routes([_sub("3", B, "1")], wanted, [A, B])
    assert (before, after) == ({"3": (A, TrackKind.CAMERA)}, {"3": (B, TrackKind.CAMERA)})


# --- simulcast -------------------------------------------------------------------------------


TOP = Size(1280, 720)


@pytest.mark.parametrize(
    ("tile", "fit", "substream"),
    [
        (Size(320, 180), Fit.FILL, 0),  # a thumbnail: the quarter layer fills it
        (Size(360, 200), Fit.FILL, 0),  # 1.125x up from 320x180: within the tolerance
        (Size(400, 225), Fit.FILL, 1),  # 1.25x up: the half layer
        (Size(640, 360), Fit.FILL, 1),
        (Size(700, 394), Fit.FILL, 1),
        (Size(960, 540), Fit.FILL, 2),
        (Size(1920, 1080), Fit.FILL, 2),  # larger than the top: the top
        (Size(640, 100), Fit.FILL, 1),  # a wide strip cropped from a camera: its width binds
        (Size(640, 100), Fit.FIT, 0),  # a screen fitted into it needs the height only
    ],
)
def test_the_smallest_layer_that_fills_the_tile(tile: Size, fit: Fit, substream: int) -> None:
    assert substream_for_tile(tile, TOP, fit) == substream


def test_an_unknown_top_layer_or_empty_tile_keeps_the_top() -> None:
    assert substream_for_tile(Size(320, 180), None) == 2
    assert substream_for_tile(Size(0, 0), TOP) == 2


def test_the_top_layer_is_estimated_from_a_lower_one() -> None:
    assert layer_size(TOP, 0) == Size(320, 180)
    assert layer_size(TOP, 1) == Size(640, 360)
    assert top_layer_size(Size(320, 180), 0) == TOP
    assert top_layer_size(TOP, 2) == TOP


# --- where a keyframe begins -----------------------------------------------------------------


def _vp8_payloads(count: int) -> list[tuple[bool, list[bytes]]]:
    """`count` frames through aiortc's own VP8 encoder: (is the frame forced key, its RTP
    payloads)."""
    encoder = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000))
    result = []
    for index in range(count):
        picture = np.full((120, 160, 3), (index * 37) % 256, np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
        forced = index == 3
        payloads, _timestamp = encoder.encode(frame, force_keyframe=forced)
        result.append((index == 0 or forced, payloads))
    return result


def test_vp8_keyframes_are_told_from_delta_frames_by_their_first_packet() -> None:
    for key, payloads in _vp8_payloads(5):
        assert is_keyframe_start("VP8", payloads[0]) is key
        assert not any(is_keyframe_start("VP8", p) for p in payloads[1:])


def test_h264_keyframes_in_single_aggregated_and_fragmented_packets() -> None:
    idr, sps, delta = bytes([0x65, 1]), bytes([0x67, 1]), bytes([0x41, 1])
    assert is_keyframe_start("H264", idr) and is_keyframe_start("H264", sps)
    assert not is_keyframe_start("H264", delta)
    stap = bytes([0x78]) + len(sps).to_bytes(2, "big") + sps + len(idr).to_bytes(2, "big") + idr
    assert is_keyframe_start("H264", stap)
    assert not is_keyframe_start("H264", bytes([0x78]) + (2).to_bytes(2, "big") + delta)
    assert is_keyframe_start("H264", bytes([0x7C, 0x85, 9]))  # FU-A start of an IDR
    assert not is_keyframe_start("H264", bytes([0x7C, 0x05, 9]))  # its middle
    assert not is_keyframe_start("H264", b"")


def test_other_codecs_are_never_held_but_retransmissions_are() -> None:
    assert is_keyframe_start("VP9", b"\x00")
    assert not is_keyframe_start("rtx", b"\x00")
