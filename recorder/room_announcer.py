"""Telling the room each status change: a lifecycle listener bridged to the async connector.

Lifecycle listeners are synchronous and must not block (they run under the state machine's lock,
on whatever thread made the transition), while `RoomConnector.announce_status` is a coroutine
that waits for the room's acknowledgement. The bridge is a small bounded queue on the event loop
and one named task that announces its statuses one after the other, so the room hears them in
sequence order. Statuses that come before the room is joined (STARTING) wait in the queue until
`attach()`; a recording that never joins drops them at `close()`, saying so.

Policy when the queue is full: drop and log. A recording emits five statuses at most, so a full
queue means the room stopped answering for a long time; the webhook still carries every status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from recorder.lifecycle import Status, Transition
from recorder.rooms.base import RoomConnector

log = logging.getLogger(__name__)

ANNOUNCE_QUEUE_SIZE = 8  # five statuses at most; the bound only guards against a runaway
ANNOUNCER_DRAIN_TIMEOUT_S = 5.0  # at the end: how long queued statuses may take to be announced


class RoomAnnouncer:
    """Announces lifecycle transitions to the room, in order, from one task."""

    def __init__(self, recording_id: str) -> None:
        self._recording_id = recording_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Transition | None] = asyncio.Queue(ANNOUNCE_QUEUE_SIZE + 1)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.announced: list[Status] = []
        self.dropped = 0

    def bind(self) -> None:
        """Remember the running loop, so `on_transition` can be called from any thread."""
        self._loop = asyncio.get_running_loop()

    def attach(self, connector: RoomConnector) -> None:
        """The room is joined: start announcing, queued statuses first."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._announce_all(connector), name=f"room-announcer-{self._recording_id}"
            )

    def on_transition(self, transition: Transition) -> None:
        """Lifecycle listener: queue the status for the room; returns at once, any thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("on_transition() before bind()")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put(transition)
        else:
            with contextlib.suppress(RuntimeError):  # a closed loop: the process is ending
                loop.call_soon_threadsafe(self._put, transition)

    async def close(self, timeout_s: float = ANNOUNCER_DRAIN_TIMEOUT_S) -> None:
        """Announce what is queued (at most `timeout_s`), then stop."""
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(None)
        task = self._task
        if task is None:
            left = [t.status for t in _drain(self._queue)]
            if left:
                log.warning("the room was never joined: not announced %s", ", ".join(left))
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=timeout_s)
            left = [t.status for t in _drain(self._queue)]
            log.warning("the room did not take %s in time", ", ".join(left) or "the last status")

    def _put(self, transition: Transition) -> None:
        if self._closing or self._queue.qsize() >= ANNOUNCE_QUEUE_SIZE:
            self.dropped += 1
            log.error("room announcement of %s dropped (queue full or closed)", transition.status)
            return
        self._queue.put_nowait(transition)

    async def _announce_all(self, connector: RoomConnector) -> None:
        while True:
            transition = await self._queue.get()
            if transition is None:
                return
            reason = transition.error.as_reason() if transition.error is not None else None
            await connector.announce_status(
                transition.status, recording_id=self._recording_id, reason=reason
            )
            self.announced.append(transition.status)


def _drain(queue: asyncio.Queue[Transition | None]) -> list[Transition]:
    items = []
    while not queue.empty():
        item = queue.get_nowait()
        if item is not None:
            items.append(item)
    return items
