"""The client end of the embedded room's WebSocket: requests with replies, events in order.

Shared by the participant client and the recorder's loopback connector. One reader task takes
every message off the socket: replies resolve their request at once, events go on a bounded queue
that one dispatcher task hands, in order, to the owner's `on_event`. Because replies never wait
behind events, an event handler may itself make requests without deadlocking the reader. When the
event queue is full the reader waits (backpressure onto the socket, and from there the server,
which drops a client that stops reading: see `server.py`), so no event is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from recorder.embedded_room.protocol import (
    MAX_MESSAGE_BYTES,
    REQUEST_TIMEOUT_S,
    RoomRequestError,
)

log = logging.getLogger(__name__)

EVENT_QUEUE_SIZE = 256
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
HEARTBEAT_S = 5.0  # a dead server is noticed within about twice this

Message = dict[str, Any]
EventHandler = Callable[[Message], Awaitable[None]]
DisconnectHandler = Callable[[], Awaitable[None]]

_DISCONNECTED = object()  # the dispatcher's end-of-events marker


class SignallingChannel:
    """One WebSocket connection to the embedded room, owned by one client."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        socket: aiohttp.ClientWebSocketResponse,
        on_event: EventHandler,
        on_disconnect: DisconnectHandler,
        name: str,
    ) -> None:
        self._session = session
        self._socket = socket
        self._on_event = on_event
        self._on_disconnect = on_disconnect
        self._name = name
        self._request_ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._events: asyncio.Queue[Message | object] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._reader = asyncio.create_task(self._read(), name=f"{name}: signalling reader")
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"{name}: event dispatcher")
        self._closing = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        on_event: EventHandler,
        on_disconnect: DisconnectHandler,
        name: str,
        timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> SignallingChannel:
        """Open the WebSocket; `OSError`/`aiohttp.ClientError`/`TimeoutError` if it cannot."""
        session = aiohttp.ClientSession()
        try:
            socket = await asyncio.wait_for(
                session.ws_connect(
                    url, heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES, autoping=True
                ),
                timeout_s,
            )
        except BaseException:
            await session.close()
            raise
        return cls(session, socket, on_event, on_disconnect, name)

    @property
    def connected(self) -> bool:
        return not self._socket.closed and not self._reader.done()

    async def request(
        self, message_type: str, timeout_s: float = REQUEST_TIMEOUT_S, **fields: Any
    ) -> Message:
        """Send a request and wait for its reply; `RoomRequestError` if the room refuses it,
        `ConnectionError` if the connection is lost, `TimeoutError` after `timeout_s`."""
        request_id = str(next(self._request_ids))
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send(message_type, requestId=request_id, **fields)
            reply = await asyncio.wait_for(future, timeout_s)
        finally:
            self._pending.pop(request_id, None)
        if reply.get("type") == "error":
            raise RoomRequestError(str(reply.get("code")), str(reply.get("message")))
        return reply

    async def _send(self, message_type: str, **fields: Any) -> None:
        if self._socket.closed:
            raise ConnectionError(f"{self._name}: the room connection is closed")
        await self._socket.send_str(json.dumps({"type": message_type, **fields}))

    async def close(self) -> None:
        """Close the socket and stop both tasks (bounded); pending requests fail. Idempotent."""
        self._closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._socket.close(), CLOSE_TIMEOUT_S)
        # An event handler may close its own channel: never wait for the task we run in.
        tasks = [
            task for task in (self._reader, self._dispatcher) if task is not asyncio.current_task()
        ]
        for task in tasks:
            task.cancel()
        if self._dispatcher not in tasks:
            with contextlib.suppress(asyncio.QueueFull):
                self._events.put_nowait(_DISCONNECTED)  # ends the dispatcher after this handler
        try:
            if tasks:  # `asyncio.wait` times out quietly and, unlike a suppressed `wait_for`,
                # lets a cancellation of the task closing us through: its owner must see it.
                await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
        finally:
            await self._session.close()

    async def _read(self) -> None:
        try:
            async for frame in self._socket:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(frame.data)
                except ValueError:
                    log.warning("%s: the room sent a frame that is not JSON; ignored", self._name)
                    continue
                if not isinstance(message, dict):
                    continue
                future = self._pending.get(str(message.get("requestId")))
                if future is not None and message.get("type") in ("ok", "error"):
                    if not future.done():
                        future.set_result(message)
                    continue
                await self._events.put(message)
        finally:
            error = ConnectionError(f"{self._name}: the room connection closed")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
        # Reached only when the socket ended by itself (close() cancels this task instead).
        await self._events.put(_DISCONNECTED)

    async def _dispatch(self) -> None:
        while True:
            item = await self._events.get()
            if item is _DISCONNECTED:
                if not self._closing:
                    await self._on_disconnect()
                return
            try:
                await self._on_event(item)  # type: ignore[arg-type]
            except Exception:
                log.exception("%s: handling %r failed", self._name, item.get("type"))  # type: ignore[union-attr]
