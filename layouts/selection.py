"""Who is visible, in which slot, and who holds the main tile: one pure step per tick.

`select(previous, feeds, spec, now)` takes the previous tick's `Selection` and this tick's feeds and
returns the next `Selection`. It keeps the state it needs inside the value it returns, so it never
reads a clock, never draws a random number, and the same inputs always give the same selection:
tests replay a conversation by calling it with chosen times.

The rules (issue 2, item 3), and the decisions taken where the issue left room:

* **Ranking.** Under `Priority.SPEAKER` the most recent speakers come first (`last_spoke`, newest
  first; never spoke: last), then the earlier joiner, then the feed id so ties are deterministic.
  Under `Priority.PIN` pinned feeds come first in pin order (`pinned_at`, then id), then the
  speaker ranking. "Least recently active" is the other end of the speaker ranking.
* **Screen shares are content.** In SPOTLIGHT and SIDEBAR a share is the main tile (a pinned share
  first under PIN, else the newest share); in SPOTLIGHT the presenter's camera is then the picture
  in picture (`Selection.pip`) and is not counted as hidden. Any other share (GRID, or a second
  share in SIDEBAR) must be visible: it takes a slot at once, evicting the least recently active
  non-share, because starting a share is a deliberate act, not a cough. Shares never evict pinned
  feeds under PIN.
* **Capacity.** GRID shows up to `grid_size` tiles; SIDEBAR one main plus up to `grid_size - 1`
  side tiles; SPOTLIGHT one main tile (plus the PIP).
* **Stable slots.** A feed that stays visible keeps its slot. A speaker who enters a full set takes
  the slot of the least recently active visible feed that is not speaking; nobody else moves.
  When a feed leaves, the later slots close up (the geometry lays tiles out by count, so a hole has
  no place to be drawn). Under PIN the pinned feeds occupy the leading slots in pin order; a pin or
  unpin is an explicit act and may shift the unpinned slots by one.
* **Hold time.** A speaker must speak continuously for `SPEAKER_HOLD_S` before taking the main
  tile from someone who is not speaking, or before evicting anyone. The main tile does not change
  while its holder is still speaking. The first selection and an empty slot are filled at once
  (nobody is displaced), and so is the main tile when its holder leaves.
* **Main changes in SIDEBAR** swap places: the former main takes the new main's side slot; if the
  new main came from hidden, the former main enters the side tiles like any other recent speaker
  (into a free slot, or in place of a less recently active feed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from layouts.model import LayoutSpec, LayoutType, ParticipantView, Priority

# How long a speaker must speak without a pause before the main tile changes to them, or before
# they displace a visible feed: long enough that a cough or an "mm-hm" does not flicker the layout.
SPEAKER_HOLD_S = 1.5


@dataclass(frozen=True, slots=True)
class Selection:
    """Who is shown at one tick, plus the state the next tick's `select` needs.

    `visible` holds feed ids in display order: in SPOTLIGHT and SIDEBAR the first one is the main
    tile (`main`), the others are side tiles; in GRID they are the cells in reading order. `pip` is
    the presenter's camera drawn over their screen share in SPOTLIGHT; it is not in `visible` and
    not counted in `hidden`. `hidden` is how many present feeds are shown nowhere (the "+N" badge).
    """

    visible: tuple[str, ...] = ()
    hidden: int = 0
    main: str | None = None
    pip: str | None = None
    main_since: float | None = None  # recording-clock time the current main took the main tile
    # (feed id, recording-clock time it started speaking) for every feed speaking now, by id.
    speaking_since: tuple[tuple[str, float], ...] = ()

    @property
    def shown(self) -> tuple[str, ...]:
        """Every feed drawn on the canvas: the visible tiles, then the PIP if any."""
        return (*self.visible, self.pip) if self.pip is not None else self.visible

    def speaking_started(self, feed_id: str) -> float | None:
        """When `feed_id` started its current stretch of speaking; None if it is not speaking."""
        for speaker, since in self.speaking_since:
            if speaker == feed_id:
                return since
        return None


# The empty room: nobody present, nothing shown; arranging it gives no tiles.
EMPTY_SELECTION = Selection()


def select(
    previous: Selection | None,
    feeds: Sequence[ParticipantView],
    spec: LayoutSpec,
    now: float,
) -> Selection:
    """Decide who is visible at `now`, given the previous tick's selection (None on the first).

    Pure: no clock, no randomness, no mutation of the inputs. Raises ValueError for duplicate feed
    ids or a `grid_size` below 1.
    """
    if spec.grid_size < 1:
        raise ValueError(f"grid_size must be at least 1, got {spec.grid_size}")
    by_id = _index_feeds(feeds)
    if not by_id:
        return EMPTY_SELECTION

    speaking_since = _track_speaking(previous, feeds, now)
    holders = _floor_holders(feeds, speaking_since, now)

    main: str | None = None
    pip: str | None = None
    if spec.type is not LayoutType.GRID:
        main = _choose_main(previous, by_id, spec, holders)
        pip = _choose_pip(by_id, spec, main)

    slots = _fill_slots(previous, by_id, spec, main=main, pip=pip, holders=holders)
    visible = (main, *slots) if main is not None else slots
    hidden = len(by_id) - len(visible) - (1 if pip is not None else 0)

    main_since: float | None = None
    if main is not None:
        unchanged = previous is not None and previous.main == main
        main_since = previous.main_since if unchanged and previous is not None else now

    return Selection(
        visible=visible,
        hidden=hidden,
        main=main,
        pip=pip,
        main_since=main_since,
        speaking_since=tuple(sorted(speaking_since.items())),
    )


def has_held_floor(started: float | None, now: float) -> bool:
    """Whether a speaker who started at `started` has spoken long enough to take a place."""
    return started is not None and now - started >= SPEAKER_HOLD_S


def recency_key(feed: ParticipantView) -> tuple[float, float, str]:
    """Sort key of the speaker ranking: smallest first = most recently active first."""
    spoke = -feed.last_spoke if feed.last_spoke is not None else math.inf
    return (spoke, feed.joined_at, feed.id)


def pin_key(feed: ParticipantView) -> tuple[float, str]:
    """Sort key of pin order: first pinned first (unpinned feeds last)."""
    return (feed.pinned_at if feed.pinned_at is not None else math.inf, feed.id)


def _index_feeds(feeds: Sequence[ParticipantView]) -> dict[str, ParticipantView]:
    by_id: dict[str, ParticipantView] = {}
    for feed in feeds:
        if feed.id in by_id:
            raise ValueError(f"duplicate feed id {feed.id!r}")
        by_id[feed.id] = feed
    return by_id


def _track_speaking(
    previous: Selection | None, feeds: Sequence[ParticipantView], now: float
) -> dict[str, float]:
    """Start time of each present feed's current stretch of continuous speaking."""
    before = dict(previous.speaking_since) if previous is not None else {}
    return {feed.id: before.get(feed.id, now) for feed in feeds if feed.speaking}


def _floor_holders(
    feeds: Sequence[ParticipantView], speaking_since: dict[str, float], now: float
) -> list[str]:
    """Cameras that have held the floor for the hold time: the longest speaker first."""
    holders = [
        feed
        for feed in feeds
        if not feed.is_screen_share and has_held_floor(speaking_since.get(feed.id), now)
    ]
    holders.sort(key=lambda feed: (speaking_since[feed.id], *recency_key(feed)))
    return [feed.id for feed in holders]


def _share_key(spec: LayoutSpec) -> Callable[[ParticipantView], tuple[float, float, str]]:
    """Order of screen shares: pinned shares first under PIN, then the newest share."""
    pins_count = spec.priority is Priority.PIN

    def key(feed: ParticipantView) -> tuple[float, float, str]:
        pinned = feed.pinned_at if pins_count and feed.pinned_at is not None else math.inf
        return (pinned, -feed.joined_at, feed.id)

    return key


def _pinned(feeds: Sequence[ParticipantView], spec: LayoutSpec) -> list[ParticipantView]:
    """The pinned feeds in pin order, or none when pins do not decide (SPEAKER priority)."""
    if spec.priority is not Priority.PIN:
        return []
    return sorted((feed for feed in feeds if feed.pinned_at is not None), key=pin_key)


def _choose_main(
    previous: Selection | None,
    by_id: dict[str, ParticipantView],
    spec: LayoutSpec,
    holders: list[str],
) -> str:
    """The main tile of SPOTLIGHT or SIDEBAR (there is always one when anyone is present)."""
    shares = [feed for feed in by_id.values() if feed.is_screen_share]
    if shares:
        return min(shares, key=_share_key(spec)).id
    pinned = _pinned(list(by_id.values()), spec)
    if pinned:
        return pinned[0].id
    current = previous.main if previous is not None else None
    if current is not None and current in by_id and not by_id[current].is_screen_share:
        if by_id[current].speaking:
            return current
        return next((holder for holder in holders if holder != current), current)
    if holders:
        return holders[0]
    return min(by_id.values(), key=recency_key).id


def _choose_pip(
    by_id: dict[str, ParticipantView], spec: LayoutSpec, main: str | None
) -> str | None:
    """In SPOTLIGHT, the presenter's camera over their share when both are present."""
    if spec.type is not LayoutType.SPOTLIGHT or main is None:
        return None
    presenter = by_id[main].screen_of
    if presenter is None or presenter not in by_id or by_id[presenter].is_screen_share:
        return None
    return presenter


def _slot_capacity(spec: LayoutSpec) -> int:
    if spec.type is LayoutType.GRID:
        return spec.grid_size
    if spec.type is LayoutType.SIDEBAR:
        return spec.grid_size - 1
    return 0


def _fill_slots(
    previous: Selection | None,
    by_id: dict[str, ParticipantView],
    spec: LayoutSpec,
    *,
    main: str | None,
    pip: str | None,
    holders: list[str],
) -> tuple[str, ...]:
    """The GRID cells or SIDEBAR side tiles, in display order, keeping slots stable."""
    capacity = _slot_capacity(spec)
    if capacity <= 0:
        return ()
    eligible = {feed_id: feed for feed_id, feed in by_id.items() if feed_id not in (main, pip)}

    pinned = _pinned(list(eligible.values()), spec)
    lead = [feed.id for feed in pinned[:capacity]]
    taken = {feed.id for feed in pinned}  # pinned feeds beyond capacity stay hidden, in pin order
    room = capacity - len(lead)
    shares = sorted(
        (feed for feed in eligible.values() if feed.is_screen_share and feed.id not in taken),
        key=_share_key(spec),
    )
    forced = {feed.id for feed in shares}

    def keep_key(feed_id: str) -> tuple[int, int, tuple[float, float, str]]:
        """Larger = the better one to displace: not a share, silent, least recently active."""
        feed = eligible[feed_id]
        return (
            0 if feed_id in forced else 1,
            0 if feed.speaking else 1,
            recency_key(feed),
        )

    # The previous slots, minus whoever left or now sits elsewhere; a former SIDEBAR main swaps
    # into the slot its successor came from.
    former_main = previous.main if previous is not None else None
    demoted = (
        former_main
        if former_main is not None
        and former_main != main
        and former_main in eligible
        and former_main not in taken
        else None
    )
    order: list[str] = []
    previous_slots = [] if previous is None else [i for i in previous.visible if i != former_main]
    for feed_id in previous_slots:
        if feed_id == main and demoted is not None:
            order.append(demoted)
            demoted = None
        elif feed_id in eligible and feed_id not in taken:
            order.append(feed_id)

    # Fewer places than before (new pins, a smaller grid): the least worth keeping go first.
    while len(order) > room:
        order.remove(max(order, key=keep_key))

    def admit(feed_id: str, may_displace: Callable[[str], bool]) -> None:
        if feed_id in order or room <= 0:
            return
        if len(order) < room:
            order.append(feed_id)
            return
        victim = max(order, key=keep_key)
        if may_displace(victim):
            order[order.index(victim)] = feed_id

    for share in shares:
        admit(share.id, lambda victim: victim not in forced)
    if demoted is not None:
        demoted_key = keep_key(demoted)
        admit(demoted, lambda victim: victim not in forced and keep_key(victim) > demoted_key)
    for holder in holders:
        if holder in eligible and holder not in taken:
            admit(holder, lambda victim: victim not in forced and not eligible[victim].speaking)
    waiting = sorted(
        (feed for feed in eligible.values() if feed.id not in taken and feed.id not in order),
        key=recency_key,
    )
    for feed in waiting[: max(0, room - len(order))]:
        order.append(feed.id)

    return (*lead, *order)
