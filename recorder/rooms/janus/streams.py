"""The recorder's one multistream subscription, as data: what to take, and what to change.

Pure functions, no I/O: the connector feeds them what Janus said and sends what they decide.

- A publisher's streams (`PublisherStream`, from the `streams[]` of a probe subscription) become
  at most one track of each `TrackKind` (`track_kinds`): the first audio stream is the
  microphone; a video stream whose description names a screen (`SCREEN_WORDS`: janus.js' screen
  sharing and our publishers say "screen") is the screen share; the first other video stream is
  the camera; a second undescribed video stream is taken as the screen share too, since that is
  what a second camera-less video from the same person nearly always is. Data channels and any
  further streams are left alone (not subscribed, so never decoded).
- The subscription as Janus last described it (`SubscribedStream`s, from `attached`/`updated`)
  and the streams wanted give the one `update` request that makes them agree (`plan_update`):
  subscribe to what is wanted and missing, unsubscribe by subscription mid what is no longer
  wanted or is a duplicate.
- Which m-line carries which participant's track now (`routes`): only active m-lines whose feed
  is still present and whose stream is wanted. Janus reuses a freed m-line (same mid) for another
  feed, so a mid's route can change from one update to the next; the connector follows this map,
  never the life of aiortc's track objects (a track does not end when its m-line goes inactive).

Feed ids are Janus' own (an integer, or a string in rooms with `string_ids`); they are kept as
given, since requests must send them back the same way, and turned into participant ids with
`str()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recorder.rooms.base import TrackKind

FeedId = int | str
StreamKey = tuple[FeedId, str]  # (publisher's feed id, the publisher's own mid of the stream)
SCREEN_WORDS = ("screen",)  # a video stream described with one of these words is a screen share


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _feed(value: object) -> FeedId | None:
    if isinstance(value, bool):
        return None
    return value if isinstance(value, (int, str)) else None


@dataclass(frozen=True, slots=True)
class PublisherStream:
    """One stream a publisher sends (as a subscription to all its streams lists it)."""

    feed: FeedId
    feed_mid: str
    media: str  # "audio", "video" or "data"
    description: str | None = None
    simulcast: bool = False

    @property
    def key(self) -> StreamKey:
        return (self.feed, self.feed_mid)

    @property
    def names_a_screen(self) -> bool:
        description = (self.description or "").lower()
        return any(word in description for word in SCREEN_WORDS)


@dataclass(frozen=True, slots=True)
class SubscribedStream:
    """One m-line of the recorder's subscription, as Janus' last `attached`/`updated` said."""

    mid: str
    media: str
    active: bool
    feed: FeedId | None = None
    feed_mid: str | None = None
    feed_display: str | None = None
    description: str | None = None
    simulcast: bool = False

    @property
    def key(self) -> StreamKey | None:
        if not self.active or self.feed is None or self.feed_mid is None:
            return None
        return (self.feed, self.feed_mid)

    def as_published(self) -> PublisherStream | None:
        """The publisher's stream this m-line carries (None when inactive)."""
        if self.key is None or self.feed is None or self.feed_mid is None:
            return None
        return PublisherStream(
            self.feed, self.feed_mid, self.media, self.description, self.simulcast
        )


def parse_streams(entries: object) -> list[SubscribedStream]:
    """A `streams` list of an `attached`/`updated` event (anything malformed is skipped)."""
    streams: list[SubscribedStream] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        mid, media = _text(entry.get("mid")), _text(entry.get("type"))
        if mid is None or media is None:
            continue
        streams.append(
            SubscribedStream(
                mid=mid,
                media=media,
                active=entry.get("active") is not False,
                feed=_feed(entry.get("feed_id")),
                feed_mid=_text(entry.get("feed_mid")),
                feed_display=_text(entry.get("feed_display")),
                description=_text(entry.get("feed_description")),
                simulcast=isinstance(entry.get("simulcast"), dict),
            )
        )
    return streams


def silent_mids(sdp: str) -> set[str]:
    """The mids whose m-line in an offer carries no media (`a=inactive`, or port 0)."""
    silent: set[str] = set()
    for section in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        lines = section.split("\n")
        fields = lines[0].split()
        mid = next((line[6:].strip() for line in lines if line.startswith("a=mid:")), None)
        if mid is None:
            continue
        if "a=inactive" in lines or (len(fields) > 1 and fields[1] == "0"):
            silent.add(mid)
    return silent


def publisher_streams(
    entries: object, offer_sdp: str | None = None
) -> dict[FeedId, list[PublisherStream]]:
    """Every publisher's streams, in their order, from a probe subscription's `streams` and the
    offer that came with it.

    Janus 1.1 still lists a stream its publisher has disabled (a screen share stopped by a
    renegotiation) as active there, and tells no subscriber; only the offer gives it away, with
    an inactive m-line. Such streams are left out.
    """
    silent = silent_mids(offer_sdp) if offer_sdp else set()
    by_feed: dict[FeedId, list[PublisherStream]] = {}
    for stream in parse_streams(entries):
        published = stream.as_published()
        if published is not None and stream.mid not in silent:
            by_feed.setdefault(published.feed, []).append(published)
    return by_feed


def track_kinds(streams: Sequence[PublisherStream]) -> dict[TrackKind, PublisherStream]:
    """Which of one publisher's streams the recording takes, and as what (see the module doc)."""
    chosen: dict[TrackKind, PublisherStream] = {}
    videos = [stream for stream in streams if stream.media == "video"]
    audio = next((stream for stream in streams if stream.media == "audio"), None)
    if audio is not None:
        chosen[TrackKind.AUDIO] = audio
    screen = next((stream for stream in videos if stream.names_a_screen), None)
    camera = next((stream for stream in videos if stream is not screen), None)
    if screen is None and camera is not None:
        screen = next((stream for stream in videos if stream is not camera), None)
    if camera is not None:
        chosen[TrackKind.CAMERA] = camera
    if screen is not None:
        chosen[TrackKind.SCREEN] = screen
    return chosen


def wanted_streams(
    publishers: Mapping[FeedId, Sequence[PublisherStream]],
) -> dict[StreamKey, TrackKind]:
    """Every stream the recording takes, by (feed, publisher mid), with its track kind."""
    return {
        stream.key: kind
        for streams in publishers.values()
        for kind, stream in track_kinds(streams).items()
    }


@dataclass(frozen=True, slots=True)
class SubscriptionUpdate:
    """One `update` request: streams to add (feed, publisher mid), m-lines to drop (sub mid)."""

    subscribe: tuple[StreamKey, ...] = ()
    unsubscribe: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.subscribe or self.unsubscribe)

    def subscribe_entries(self) -> list[dict[str, Any]]:
        return [{"feed": feed, "mid": mid} for feed, mid in self.subscribe]

    def request(self) -> dict[str, Any]:
        """The VideoRoom `update` body (Janus refuses an empty list, so those are left out)."""
        body: dict[str, Any] = {"request": "update"}
        if self.subscribe:
            body["subscribe"] = self.subscribe_entries()
        if self.unsubscribe:
            body["unsubscribe"] = [{"sub_mid": mid} for mid in self.unsubscribe]
        return body


def plan_update(
    wanted: Iterable[StreamKey], current: Sequence[SubscribedStream]
) -> SubscriptionUpdate:
    """What to change so the subscription carries exactly the wanted streams, once each."""
    wanted_keys = list(dict.fromkeys(wanted))
    carried: set[StreamKey] = set()
    unsubscribe: list[str] = []
    for stream in current:
        key = stream.key
        if key is None:
            continue
        if key in carried or key not in wanted_keys:
            unsubscribe.append(stream.mid)
        else:
            carried.add(key)
    subscribe = tuple(key for key in wanted_keys if key not in carried)
    return SubscriptionUpdate(subscribe, tuple(unsubscribe))


def routes(
    current: Sequence[SubscribedStream],
    wanted: Mapping[StreamKey, TrackKind],
    present: Iterable[FeedId],
) -> dict[str, tuple[FeedId, TrackKind]]:
    """Which participant's track each m-line carries now, by subscription mid.

    A (feed, kind) is routed from one m-line only (the first), even while Janus briefly carries
    a stream twice.
    """
    present_feeds = set(present)
    routed: dict[str, tuple[FeedId, TrackKind]] = {}
    taken: set[tuple[FeedId, TrackKind]] = set()
    for stream in current:
        key = stream.key
        if key is None or key[0] not in present_feeds:
            continue
        kind = wanted.get(key)
        if kind is None or kind.media_kind != stream.media or (key[0], kind) in taken:
            continue
        taken.add((key[0], kind))
        routed[stream.mid] = (key[0], kind)
    return routed
