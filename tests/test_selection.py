"""Who is visible and in which slot: ranking, capacity, screen shares, stable slots, hold time.

Times are seconds on the recording clock, passed in explicitly: nothing here sleeps.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layouts.model import LayoutSpec, LayoutType, ParticipantView, Priority
from layouts.selection import EMPTY_SELECTION, SPEAKER_HOLD_S, Selection, select

GRID = LayoutType.GRID
SPOTLIGHT = LayoutType.SPOTLIGHT
SIDEBAR = LayoutType.SIDEBAR


def cam(feed_id: str, **fields: object) -> ParticipantView:
    return ParticipantView(id=feed_id, name=feed_id.upper(), **fields)  # type: ignore[arg-type]


def spec(
    layout: LayoutType = GRID, grid_size: int = 4, priority: Priority = Priority.SPEAKER
) -> LayoutSpec:
    return LayoutSpec(type=layout, priority=priority, grid_size=grid_size)


def speaking(feed: ParticipantView, now: float) -> ParticipantView:
    return replace(feed, speaking=True, last_spoke=now)


def silent(feed: ParticipantView) -> ParticipantView:
    return replace(feed, speaking=False)


class Room:
    """A tiny driver: holds the feeds and the last selection, and steps the clock by hand."""

    def __init__(self, feeds: list[ParticipantView], layout_spec: LayoutSpec) -> None:
        self.feeds = {feed.id: feed for feed in feeds}
        self.spec = layout_spec
        self.now = 0.0
        self.selection = select(None, list(self.feeds.values()), layout_spec, self.now)

    def speak(self, *feed_ids: str) -> None:
        for feed_id in feed_ids:
            self.feeds[feed_id] = speaking(self.feeds[feed_id], self.now)

    def hush(self, *feed_ids: str) -> None:
        for feed_id in feed_ids:
            self.feeds[feed_id] = silent(self.feeds[feed_id])

    def leave(self, feed_id: str) -> None:
        del self.feeds[feed_id]

    def join(self, feed: ParticipantView) -> None:
        self.feeds[feed.id] = feed

    def tick(self, at: float) -> Selection:
        """Advance to `at`; speaking feeds have spoken up to now."""
        self.now = at
        for feed_id, feed in list(self.feeds.items()):
            if feed.speaking:
                self.feeds[feed_id] = replace(feed, last_spoke=at)
        self.selection = select(self.selection, list(self.feeds.values()), self.spec, at)
        return self.selection


# --- basics ---------------------------------------------------------------------------------------


def test_empty_room_selects_nobody() -> None:
    assert select(None, [], spec(), 0.0) == EMPTY_SELECTION
    assert EMPTY_SELECTION.visible == () and EMPTY_SELECTION.hidden == 0
    previous = select(None, [cam("a")], spec(), 0.0)
    assert select(previous, [], spec(), 1.0) == EMPTY_SELECTION


def test_refuses_duplicate_ids_and_grid_size_below_one() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        select(None, [cam("a"), cam("a")], spec(), 0.0)
    with pytest.raises(ValueError, match="grid_size"):
        select(None, [cam("a")], spec(grid_size=0), 0.0)


def test_speaker_ranking_recent_speaker_then_joined_then_id() -> None:
    feeds = [
        cam("early", joined_at=0.0),
        cam("late", joined_at=5.0),
        cam("spoke-long-ago", joined_at=9.0, last_spoke=2.0),
        cam("spoke-recently", joined_at=9.0, last_spoke=8.0),
        cam("twin-b", joined_at=3.0),
        cam("twin-a", joined_at=3.0),
    ]
    selection = select(None, feeds, spec(grid_size=4), 10.0)
    assert selection.visible == ("spoke-recently", "spoke-long-ago", "early", "twin-a")
    assert selection.hidden == 2
    # The order of the input does not matter.
    assert select(None, list(reversed(feeds)), spec(grid_size=4), 10.0) == selection


def test_pin_priority_puts_pinned_first_in_pin_order_then_speakers() -> None:
    feeds = [
        cam("talker", last_spoke=9.0),
        cam("pinned-second", pinned_at=4.0),
        cam("pinned-first", pinned_at=1.0),
        cam("quiet"),
    ]
    pin = select(None, feeds, spec(grid_size=3, priority=Priority.PIN), 10.0)
    assert pin.visible == ("pinned-first", "pinned-second", "talker")
    # Under SPEAKER the pins do not decide.
    by_speaker = select(None, feeds, spec(grid_size=3), 10.0)
    assert by_speaker.visible[0] == "talker"


@pytest.mark.parametrize(
    ("layout", "grid_size", "shown"),
    [(GRID, 1, 1), (GRID, 3, 3), (GRID, 4, 4), (SIDEBAR, 1, 1), (SIDEBAR, 3, 3), (SPOTLIGHT, 4, 1)],
)
def test_capacity_per_layout(layout: LayoutType, grid_size: int, shown: int) -> None:
    feeds = [cam(f"p{i}", joined_at=float(i)) for i in range(6)]
    selection = select(None, feeds, spec(layout, grid_size), 0.0)
    assert selection.visible == tuple(f"p{i}" for i in range(shown))
    assert selection.hidden == 6 - shown
    assert selection.main == (None if layout is GRID else "p0")


def test_fewer_feeds_than_places_shows_everyone() -> None:
    feeds = [cam("a", joined_at=0.0), cam("b", joined_at=1.0)]
    selection = select(None, feeds, spec(SIDEBAR, 4), 0.0)
    assert selection.visible == ("a", "b") and selection.hidden == 0


# --- screen shares ----------------------------------------------------------------------------


def test_spotlight_share_is_main_with_presenter_as_pip_not_hidden() -> None:
    feeds = [
        cam("talker", last_spoke=5.0),
        cam("presenter"),
        cam("presenter:screen", screen_of="presenter", joined_at=3.0),
        cam("other"),
    ]
    selection = select(None, feeds, spec(SPOTLIGHT), 6.0)
    assert selection.visible == ("presenter:screen",)
    assert selection.main == "presenter:screen"
    assert selection.pip == "presenter"
    assert selection.shown == ("presenter:screen", "presenter")
    assert selection.hidden == 2  # talker and other; the PIP is shown


def test_spotlight_share_without_presenter_feed_has_no_pip() -> None:
    feeds = [cam("talker", last_spoke=5.0), cam("gone:screen", screen_of="gone")]
    selection = select(None, feeds, spec(SPOTLIGHT), 6.0)
    assert selection.visible == ("gone:screen",) and selection.pip is None
    assert selection.hidden == 1


def test_sidebar_share_is_main_and_presenter_competes_for_side_tiles() -> None:
    feeds = [
        cam("presenter", last_spoke=5.0),
        cam("presenter:screen", screen_of="presenter"),
        cam("quiet", joined_at=1.0),
        cam("quieter", joined_at=2.0),
    ]
    selection = select(None, feeds, spec(SIDEBAR, 3), 6.0)
    assert selection.visible == ("presenter:screen", "presenter", "quiet")
    assert selection.pip is None and selection.hidden == 1


def test_newest_share_is_main_and_a_pinned_share_wins_under_pin() -> None:
    feeds = [
        cam("a"),
        cam("b"),
        cam("a:screen", screen_of="a", joined_at=1.0, pinned_at=3.0),
        cam("b:screen", screen_of="b", joined_at=2.0),
    ]
    assert select(None, feeds, spec(SPOTLIGHT), 5.0).main == "b:screen"
    assert select(None, feeds, spec(SPOTLIGHT, priority=Priority.PIN), 5.0).main == "a:screen"


def test_share_beats_pinned_camera_for_the_main_tile() -> None:
    feeds = [cam("boss", pinned_at=0.0), cam("x"), cam("x:screen", screen_of="x")]
    selection = select(None, feeds, spec(SIDEBAR, 2, Priority.PIN), 1.0)
    assert selection.visible == ("x:screen", "boss")


def test_share_starting_takes_main_at_once_and_former_main_moves_to_the_side() -> None:
    room = Room([cam("a", last_spoke=0.0), cam("b"), cam("c")], spec(SIDEBAR, 3))
    assert room.selection.visible == ("a", "b", "c")
    room.join(cam("b:screen", screen_of="b", joined_at=1.0))
    selection = room.tick(1.0)  # no hold for a deliberate share
    assert selection.main == "b:screen"
    # a (the most recent speaker) displaces the least recently active side tile, in place.
    assert selection.visible == ("b:screen", "b", "a")


def test_share_in_grid_enters_at_once_in_place_of_least_recently_active() -> None:
    room = Room(
        [cam("a", last_spoke=3.0), cam("b", last_spoke=1.0), cam("c", last_spoke=2.0)],
        spec(GRID, 3),
    )
    assert room.selection.visible == ("a", "c", "b")
    room.join(cam("c:screen", screen_of="c", joined_at=4.0))
    assert room.tick(4.0).visible == ("a", "c", "c:screen")


# --- stable slots and hold time ---------------------------------------------------------------


def four_people_and_a_newcomer() -> Room:
    feeds = [
        cam("a", last_spoke=4.0),
        cam("b", last_spoke=1.0),  # least recently active of the visible
        cam("c", last_spoke=3.0),
        cam("d", last_spoke=2.0),
        cam("e", joined_at=5.0),
    ]
    return Room(feeds, spec(GRID, 4))


def test_new_speaker_takes_the_slot_of_the_least_recently_active_after_the_hold() -> None:
    room = four_people_and_a_newcomer()
    assert room.selection.visible == ("a", "c", "d", "b")
    room.tick(10.0)
    room.speak("e")
    assert room.tick(10.0).visible == ("a", "c", "d", "b")
    assert room.tick(10.0 + SPEAKER_HOLD_S - 0.01).visible == ("a", "c", "d", "b")
    held = room.tick(10.0 + SPEAKER_HOLD_S)
    assert held.visible == ("a", "c", "d", "e")  # e in b's slot; nobody else moved
    assert held.hidden == 1


def test_a_cough_does_not_evict_and_an_interrupted_stretch_starts_over() -> None:
    room = four_people_and_a_newcomer()
    room.tick(10.0)
    room.speak("e")
    room.tick(10.0)
    room.hush("e")
    room.tick(10.5)  # a cough: half a second
    room.speak("e")
    room.tick(11.0)
    # 1.5 s after the first sound, but only 0.5 s of continuous speaking: no change.
    assert room.tick(11.5).visible == ("a", "c", "d", "b")
    assert room.tick(11.0 + SPEAKER_HOLD_S).visible == ("a", "c", "d", "e")


def test_speakers_do_not_evict_someone_who_is_speaking() -> None:
    room = four_people_and_a_newcomer()
    room.tick(10.0)
    room.speak("a", "b", "c", "d", "e")
    room.tick(10.0)
    assert room.tick(20.0).visible == ("a", "c", "d", "b")
    room.hush("c")
    assert room.tick(21.0).visible == ("a", "e", "d", "b")


def test_feeds_leaving_close_up_their_slot_and_free_places_fill_at_once() -> None:
    room = four_people_and_a_newcomer()
    room.leave("c")
    # c's slot closes up; e fills the free place at once (nobody is displaced).
    assert room.tick(1.0).visible == ("a", "d", "b", "e")
    room.leave("a")
    assert room.tick(2.0).visible == ("d", "b", "e")


def test_pinned_feeds_are_never_evicted_by_speakers() -> None:
    feeds = [cam("p1", pinned_at=1.0), cam("p2", pinned_at=2.0), cam("x"), cam("y")]
    room = Room(feeds, spec(GRID, 2, Priority.PIN))
    assert room.selection.visible == ("p1", "p2")
    room.speak("x")
    room.tick(0.0)
    assert room.tick(60.0).visible == ("p1", "p2")
    assert room.selection.hidden == 2


def test_pinning_moves_the_feed_to_the_front_and_unpinned_slots_keep_their_order() -> None:
    feeds = [cam(name, joined_at=float(i)) for i, name in enumerate("abcd")]
    room = Room(feeds, spec(GRID, 3, Priority.PIN))
    assert room.selection.visible == ("a", "b", "c")
    room.join(replace(room.feeds["d"], pinned_at=5.0))
    # d leads; c, the least recently active unpinned feed, gives up its place.
    assert room.tick(5.0).visible == ("d", "a", "b")
    room.join(replace(room.feeds["b"], pinned_at=6.0))
    assert room.tick(6.0).visible == ("d", "b", "a")


# --- the main tile ----------------------------------------------------------------------------


def test_spotlight_main_changes_only_after_the_hold_and_not_while_main_speaks() -> None:
    room = Room([cam("a", last_spoke=1.0), cam("b"), cam("c")], spec(SPOTLIGHT))
    assert room.selection.main == "a"
    room.speak("a")
    room.tick(2.0)
    room.speak("b")
    room.tick(2.0)
    assert room.tick(10.0).main == "a"  # a still speaking: b talks over but does not take over
    room.hush("a")
    # b has held the floor for 8 s already: a stops, b takes the main tile.
    selection = room.tick(10.1)
    assert selection.main == "b" and selection.visible == ("b",)
    assert selection.main_since == 10.1 and selection.hidden == 2


def test_spotlight_main_waits_for_the_full_hold() -> None:
    room = Room([cam("a", last_spoke=1.0), cam("b")], spec(SPOTLIGHT))
    room.speak("b")
    room.tick(5.0)
    assert room.tick(5.0 + SPEAKER_HOLD_S / 2).main == "a"
    assert room.tick(5.0 + SPEAKER_HOLD_S).main == "b"


def test_main_leaving_is_replaced_at_once_by_the_top_ranked() -> None:
    room = Room([cam("a", last_spoke=3.0), cam("b", last_spoke=2.0), cam("c")], spec(SPOTLIGHT))
    room.leave("a")
    assert room.tick(3.1).main == "b"


def test_first_selection_takes_a_speaker_at_once() -> None:
    feeds = [cam("a"), speaking(cam("b"), 0.0)]
    assert select(None, feeds, spec(SPOTLIGHT), 0.0).main == "b"


def test_sidebar_main_change_swaps_the_two_feeds() -> None:
    feeds = [cam(name, joined_at=float(i)) for i, name in enumerate("abcd")]
    room = Room(feeds, spec(SIDEBAR, 4))
    assert room.selection.visible == ("a", "b", "c", "d")
    room.speak("c")
    room.tick(1.0)
    assert room.tick(1.0 + SPEAKER_HOLD_S).visible == ("c", "b", "a", "d")


def test_sidebar_main_from_hidden_former_main_displaces_least_recent_side_tile() -> None:
    feeds = [
        cam("a", last_spoke=5.0),
        cam("b", last_spoke=1.0),
        cam("c", last_spoke=2.0),
        cam("d"),
    ]
    room = Room(feeds, spec(SIDEBAR, 3))
    assert room.selection.visible == ("a", "c", "b")
    room.speak("d")
    room.tick(6.0)
    assert room.tick(6.0 + SPEAKER_HOLD_S).visible == ("d", "c", "a")


def test_pin_decides_main_at_once_under_pin_priority() -> None:
    room = Room([cam("a", last_spoke=1.0), cam("b")], spec(SPOTLIGHT, priority=Priority.PIN))
    assert room.selection.main == "a"
    room.join(replace(room.feeds["b"], pinned_at=2.0))
    assert room.tick(2.0).main == "b"
    room.speak("a")
    room.tick(3.0)
    assert room.tick(30.0).main == "b"


def test_same_inputs_same_output() -> None:
    room_one = four_people_and_a_newcomer()
    room_two = four_people_and_a_newcomer()
    for room in (room_one, room_two):
        room.speak("e")
        room.tick(1.0)
        room.tick(3.0)
    assert room_one.selection == room_two.selection


# --- properties -------------------------------------------------------------------------------

STEP_S = (0.05, 0.1, 0.25, 0.5, 1.0)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[LayoutSpec, list[ParticipantView], list[tuple]]:
    """A fixed roster and a sequence of (time step, who speaks) events."""
    layout = draw(st.sampled_from(list(LayoutType)))
    priority = draw(st.sampled_from(list(Priority)))
    grid_size = draw(st.integers(1, 4))
    count = draw(st.integers(1, 7))
    feeds = []
    for i in range(count):
        pinned = draw(st.booleans()) and draw(st.booleans())
        feeds.append(
            cam(
                f"p{i}",
                joined_at=float(draw(st.integers(0, 3))),
                pinned_at=float(draw(st.integers(0, 9))) if pinned else None,
            )
        )
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from(STEP_S), st.frozensets(st.integers(0, count - 1))),
            min_size=1,
            max_size=40,
        )
    )
    return LayoutSpec(type=layout, priority=priority, grid_size=grid_size), feeds, steps


@settings(max_examples=300, deadline=None)
@given(conversations())
def test_property_conversations_keep_the_rules(
    case: tuple[LayoutSpec, list[ParticipantView], list[tuple]],
) -> None:
    layout_spec, feeds, steps = case
    capacity = 1 if layout_spec.type is SPOTLIGHT else layout_spec.grid_size
    pinned = sorted(
        (feed for feed in feeds if feed.pinned_at is not None), key=lambda f: (f.pinned_at, f.id)
    )
    now = 0.0
    previous = select(None, feeds, layout_spec, now)
    started: dict[str, float] = {}  # the test's own record of continuous speaking
    for step, speakers in steps:
        now = round(now + step, 2)
        feeds = [
            replace(feed, speaking=True, last_spoke=now)
            if i in speakers
            else replace(feed, speaking=False)
            for i, feed in enumerate(feeds)
        ]
        for i, feed in enumerate(feeds):
            if i in speakers:
                started.setdefault(feed.id, now)
            else:
                started.pop(feed.id, None)
        current = select(previous, feeds, layout_spec, now)

        def held(feed_id: str | None, now: float = now) -> bool:
            return feed_id in started and now - started[feed_id] >= SPEAKER_HOLD_S

        # Never more than the layout's places; everyone accounted for; no one twice.
        assert len(current.visible) <= capacity
        assert len(set(current.visible)) == len(current.visible)
        assert current.hidden == len(feeds) - len(current.visible)
        assert len(current.visible) == min(capacity, len(feeds))
        # Under PIN the pinned feeds lead, in pin order.
        if layout_spec.priority is Priority.PIN:
            leading = tuple(feed.id for feed in pinned[:capacity])
            assert current.visible[: len(leading)] == leading
        # The main tile changes only to someone who held the floor, from someone silent.
        moved = {previous.main, current.main}
        if current.main != previous.main and not (layout_spec.priority is Priority.PIN and pinned):
            assert held(current.main)
            assert previous.main not in started
        # Slot stability: whoever stays visible keeps its slot (a main change swaps two feeds).
        for feed_id in set(previous.visible) & set(current.visible) - moved:
            assert previous.visible.index(feed_id) == current.visible.index(feed_id)
        # Entering a full set means displacing someone: only after the hold (or a former main).
        for feed_id in set(current.visible) - set(previous.visible):
            if feed_id == current.main and current.main != previous.main:
                continue  # checked above
            if feed_id in (previous.main,):
                continue  # a SIDEBAR main demoted to the side
            if layout_spec.priority is Priority.PIN and feed_id in {f.id for f in pinned}:
                continue
            assert held(feed_id), (feed_id, previous, current)
        # Nobody who is speaking loses their place (the roster is fixed: no one left).
        for feed_id in set(previous.visible) - set(current.visible):
            assert feed_id not in started, (feed_id, previous, current)
        previous = current


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(list(LayoutType)),
    st.sampled_from(list(Priority)),
    st.integers(1, 4),
)
def test_property_joins_and_leaves_keep_survivors_in_order(
    seed: int, layout: LayoutType, priority: Priority, grid_size: int
) -> None:
    """With people coming and going, those who stay visible never swap places with each other."""
    rng = random.Random(seed)
    layout_spec = LayoutSpec(type=layout, priority=priority, grid_size=grid_size)
    present: dict[str, ParticipantView] = {}
    previous: Selection | None = None
    now = 0.0
    for step in range(40):
        now += rng.choice(STEP_S)
        if rng.random() < 0.3 or not present:
            feed_id = f"p{step}"
            screen_of = None
            if present and rng.random() < 0.2:
                screen_of = rng.choice(sorted(present))
            present[feed_id] = cam(feed_id, joined_at=now, screen_of=screen_of)
        elif rng.random() < 0.2:
            del present[rng.choice(sorted(present))]
        for feed_id, feed in list(present.items()):
            talk = rng.random() < 0.3 and not feed.is_screen_share
            present[feed_id] = replace(
                feed, speaking=talk, last_spoke=now if talk else feed.last_spoke
            )
        feeds = list(present.values())
        rng.shuffle(feeds)  # the input's order must not matter
        current = select(previous, feeds, layout_spec, now)
        assert current == select(previous, sorted(feeds, key=lambda f: f.id), layout_spec, now)
        assert current.hidden + len(current.shown) == len(feeds)
        assert all(feed_id in present for feed_id in current.shown)
        if previous is not None and priority is Priority.SPEAKER:
            moved = {previous.main, current.main}
            kept = [i for i in previous.visible if i in current.visible and i not in moved]
            assert kept == [i for i in current.visible if i in kept]
        previous = current
