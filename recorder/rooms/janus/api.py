"""The Janus JSON API over one WebSocket: a session, its plugin handles, requests and events.

Shared by the recorder's connector and the test and demo publishers (`recorder.client.janus`).

Janus answers a core request (`create`, `attach`, `detach`, `destroy`) with `success` or `error`,
a `keepalive` with `ack`, and a plugin `message` either with `success` carrying `plugindata` (the
VideoRoom's synchronous requests: `create`, `listparticipants`) or with `ack` and later an `event`
carrying the same transaction (the asynchronous ones: `join`, `publish`, `configure`, `update`,
`start`); the event may even come before the ack. `JanusHandle.message()` hides that: it returns
the plugin's answer, with its JSEP if any, or raises `JanusError` for a core or plugin error.
Everything else Janus sends on the socket (events without a transaction, `webrtcup`, `hangup`,
`media`, `slowlink`, `detached`) is handed to the owner's `on_event` callback, in order, from the
one reader task; it must not block.

Liveness: Janus destroys a session that makes no request for its `session_timeout` (60 s by
default), so a keep-alive goes every `KEEPALIVE_INTERVAL_S`; WebSocket pings (`HEARTBEAT_S`) find
a dead TCP connection. Any failure (the socket closes, a keep-alive gets no answer) marks the
session lost once: pending requests fail with `JanusConnectionLostError` and `lost` is set. A
lost session is not revived; its owner opens a new one (Janus forgets a session whose WebSocket
closed, so there is nothing to claim back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

JANUS_WS_PROTOCOL = "janus-protocol"  # Janus drops a WebSocket handshake that does not ask for it
VIDEOROOM_PLUGIN = "janus.plugin.videoroom"
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 5.0  # Janus answers in milliseconds; past this the connection is suspect
KEEPALIVE_INTERVAL_S = 15.0  # well inside Janus' default session_timeout of 60 s
HEARTBEAT_S = 5.0  # WebSocket pings: a dead connection is noticed within about twice this
CLOSE_TIMEOUT_S = 2.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # an SDP for dozens of streams is tens of kB

# Core error codes (janus/apierror.h) and VideoRoom ones (plugins/janus_videoroom.c) we act on.
SESSION_NOT_FOUND = 458
HANDLE_NOT_FOUND = 459
VIDEOROOM_NO_SUCH_ROOM = 426
VIDEOROOM_NO_SUCH_FEED = 428
VIDEOROOM_UNAUTHORIZED = 433

Message = dict[str, Any]


class JanusError(Exception):
    """Janus refused a request: `code` and `reason` as Janus gave them."""

    def __init__(self, code: int, reason: str, *, request: str = "") -> None:
        super().__init__(f"{request + ': ' if request else ''}{reason} (Janus error {code})")
        self.code = code
        self.reason = reason
        self.request = request


class JanusConnectionLostError(ConnectionError):
    """The session's WebSocket is gone (closed, unanswered keep-alive, Janus restarted)."""


@dataclass(frozen=True, slots=True)
class JanusReply:
    """A plugin's answer: its `plugindata.data`, and the JSEP (offer or answer) it carried."""

    data: Message
    jsep: Message | None = None


@dataclass(frozen=True, slots=True)
class JanusEvent:
    """Something Janus said on its own: `kind` is the message's `janus` field."""

    kind: str  # "event", "webrtcup", "hangup", "media", "slowlink", "detached", "timeout", ...
    handle_id: int | None
    data: Message = field(default_factory=dict)  # plugindata.data of an "event"
    jsep: Message | None = None
    message: Message = field(default_factory=dict)  # the whole message, for the rarer fields


EventCallback = Callable[[JanusEvent], None]
LostCallback = Callable[[str], None]


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Message]
    answers: frozenset[str]  # the `janus` values that settle this request


class JanusSession:
    """One Janus session on its own WebSocket. Open with `await JanusSession.open(url)`."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        socket: aiohttp.ClientWebSocketResponse,
        *,
        token: str | None,
        on_event: EventCallback | None,
        on_lost: LostCallback | None,
        name: str,
    ) -> None:
        self._client = client
        self._socket = socket
        self._token = token
        self._on_event = on_event
        self._on_lost = on_lost
        self.name = name
        self.id: int | None = None
        self._pending: dict[str, _Pending] = {}
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._closing = False
        self._reader = asyncio.create_task(self._read(), name=f"{name}: janus reader")
        self._keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        token: str | None = None,
        on_event: EventCallback | None = None,
        on_lost: LostCallback | None = None,
        name: str = "janus",
        timeout_s: float = CONNECT_TIMEOUT_S,
        keepalive_interval_s: float = KEEPALIVE_INTERVAL_S,
    ) -> JanusSession:
        """Connect and create a session; `OSError`/`aiohttp.ClientError`/`TimeoutError`/
        `JanusError` when that fails (nothing is left open then).

        `on_event` gets what Janus says outside replies; `on_lost` is called once, with the
        reason, when the session is lost other than by `close()`. Both run on the reader task
        and must not block.
        """
        client = aiohttp.ClientSession()
        try:
            socket = await client.ws_connect(
                url,
                protocols=(JANUS_WS_PROTOCOL,),
                heartbeat=HEARTBEAT_S,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                max_msg_size=MAX_MESSAGE_BYTES,
                autoping=True,
            )
        except BaseException:
            await client.close()
            raise
        session = cls(client, socket, token=token, on_event=on_event, on_lost=on_lost, name=name)
        try:
            reply = await session.request({"janus": "create"}, timeout_s=timeout_s)
            session.id = int(reply["data"]["id"])
        except BaseException:
            await session.close()
            raise
        session._keepalive = asyncio.create_task(
            session._keep_alive(keepalive_interval_s), name=f"{name}: janus keep-alive"
        )
        return session

    # --- requests ----------------------------------------------------------------------------

    async def request(
        self,
        body: Message,
        *,
        handle_id: int | None = None,
        answers: frozenset[str] = frozenset({"success"}),
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> Message:
        """Send one request and return the message that settles it (`answers`, or `error`)."""
        if self.lost.is_set():
            raise JanusConnectionLostError(self.lost_reason or "the Janus session is lost")
        transaction = secrets.token_hex(8)
        message = {**body, "transaction": transaction}
        if self.id is not None:
            message["session_id"] = self.id
        if handle_id is not None:
            message["handle_id"] = handle_id
        if self._token is not None:
            message["token"] = self._token
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = _Pending(future, answers)
        try:
            await self._socket.send_str(json.dumps(message))
            reply = await asyncio.wait_for(future, timeout_s)
        except (ConnectionError, aiohttp.ClientError) as error:
            self._mark_lost(f"sending failed: {error}")
            raise JanusConnectionLostError(self.lost_reason) from None
        finally:
            self._pending.pop(transaction, None)
        if reply.get("janus") == "error":
            error = reply.get("error") or {}
            raise JanusError(
                int(error.get("code", 0)), str(error.get("reason")), request=_describe(body)
            )
        return reply

    async def attach(self, plugin: str = VIDEOROOM_PLUGIN) -> JanusHandle:
        """A new handle on `plugin`."""
        reply = await self.request({"janus": "attach", "plugin": plugin})
        return JanusHandle(self, int(reply["data"]["id"]))

    async def close(self) -> None:
        """Destroy the session (best effort) and close the socket; idempotent and bounded."""
        if self._closing:
            return
        self._closing = True
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.id is not None and not self.lost.is_set():
            with contextlib.suppress(JanusError, ConnectionError, TimeoutError):
                await self.request({"janus": "destroy"}, timeout_s=CLOSE_TIMEOUT_S)
        self._mark_lost("closed")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._socket.close(), CLOSE_TIMEOUT_S)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), CLOSE_TIMEOUT_S)
        if self._keepalive is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._keepalive), CLOSE_TIMEOUT_S)
        await self._client.close()

    # --- the reader and the keep-alive -------------------------------------------------------

    async def _read(self) -> None:
        reason = "the WebSocket closed"
        try:
            async for frame in self._socket:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    if frame.type is aiohttp.WSMsgType.ERROR:
                        reason = f"WebSocket error: {self._socket.exception()}"
                    continue
                try:
                    message = json.loads(frame.data)
                except ValueError:
                    log.warning("%s: a message that is not JSON was ignored", self.name)
                    continue
                if isinstance(message, dict):
                    self._dispatch(message)
        except (aiohttp.ClientError, ConnectionError) as error:
            reason = f"the WebSocket failed: {error}"
        finally:
            self._mark_lost(reason)

    def _dispatch(self, message: Message) -> None:
        kind = str(message.get("janus"))
        pending = self._pending.get(str(message.get("transaction")))
        if pending is not None and (kind in pending.answers or kind == "error"):
            if not pending.future.done():
                pending.future.set_result(message)
            return
        if kind in ("ack", "success", "error"):
            return  # the ack of an async request, or the answer to one that timed out
        if self._on_event is None:
            return
        plugindata = message.get("plugindata")
        data = plugindata.get("data") if isinstance(plugindata, dict) else None
        sender = message.get("sender")
        jsep = message.get("jsep")
        self._on_event(
            JanusEvent(
                kind=kind,
                handle_id=int(sender) if isinstance(sender, int) else None,
                data=data if isinstance(data, dict) else {},
                jsep=jsep if isinstance(jsep, dict) else None,
                message=message,
            )
        )

    async def _keep_alive(self, interval_s: float) -> None:
        while not self.lost.is_set():
            await asyncio.sleep(interval_s)
            try:
                await self.request({"janus": "keepalive"}, answers=frozenset({"ack"}))
            except (JanusError, ConnectionError, TimeoutError) as error:
                log.warning("%s: keep-alive failed (%s): the session is lost", self.name, error)
                self._mark_lost(f"keep-alive failed: {error}")
                with contextlib.suppress(Exception):
                    await self._socket.close()
                return

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(JanusConnectionLostError(reason))
        if not self._closing:
            log.info("%s: the Janus session is lost: %s", self.name, reason)
            if self._on_lost is not None:
                self._on_lost(reason)


class JanusHandle:
    """One plugin handle of a session."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session = session
        self.id = handle_id

    async def message(
        self, body: Message, *, jsep: Message | None = None, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> JanusReply:
        """Send a plugin request; its answer, or `JanusError` when Janus or the plugin refuses."""
        request: Message = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self.session.request(
            request,
            handle_id=self.id,
            answers=frozenset({"success", "event"}),
            timeout_s=timeout_s,
        )
        plugindata = reply.get("plugindata")
        data = plugindata.get("data") if isinstance(plugindata, dict) else None
        if not isinstance(data, dict):
            raise JanusError(0, "the plugin's answer holds no data", request=_describe(body))
        if "error_code" in data or "error" in data:
            raise JanusError(
                int(data.get("error_code") or 0), str(data.get("error")), request=_describe(body)
            )
        answer_jsep = reply.get("jsep")
        return JanusReply(data, answer_jsep if isinstance(answer_jsep, dict) else None)

    async def detach(self) -> None:
        """Detach the handle (its peer connection, if any, is hung up by Janus)."""
        await self.session.request({"janus": "detach"}, handle_id=self.id)


def _describe(body: Message) -> str:
    """A request as errors name it: the plugin request or the core verb."""
    inner = body.get("body")
    if isinstance(inner, dict) and "request" in inner:
        return f"videoroom {inner['request']}"
    return str(body.get("janus") or body.get("request") or "request")
