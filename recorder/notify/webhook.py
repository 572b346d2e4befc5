"""Webhook delivery: at least once, in `sequence` order, never in the recording's way.

One named task owns a bounded queue and delivers its events one after the other: an event is
retried (exponential backoff, full jitter) on connection failures, timeouts, 5xx, 408 and 429
until it is delivered or its attempts run out, and only then does the next one go, so a receiver
sees the statuses in order. Other 4xx answers, redirects (never followed: a redirect could point
anywhere) and refused addresses end an event at once. `notify()` never blocks and may be called
from any thread (the lifecycle emits from the loop, signal handlers and the media thread); a full
queue drops the event and says so. At shutdown `close()` gives the queue `DRAIN_TIMEOUT_S` to
empty, then logs what is left as undelivered: a receiver that never answers costs the recording
at most that, once, at the very end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from recorder import __version__
from recorder.lifecycle import Transition
from recorder.notify.address_guard import (
    ForbiddenAddressError,
    GuardedResolver,
    allow_private_from_env,
    check_url,
)
from recorder.notify.payload import payload_for
from recorder.notify.signing import SECRET_ENV_VAR, SIGNATURE_HEADER, sign
from recorder.retry import RetryPolicy

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0  # one POST, connect to last byte of the answer's head
DRAIN_TIMEOUT_S = 15.0  # at shutdown, the longest we wait for the queue to empty
CANCEL_WAIT_S = 1.0  # after the drain, how long the cancelled task gets to end
QUEUE_SIZE = 32  # a recording emits five statuses; the bound only guards against a runaway
WEBHOOK_RETRY = RetryPolicy(attempts=8, base_delay_s=1.0, max_delay_s=30.0)
RETRYABLE_STATUSES = frozenset({408, 429})  # and every 5xx
USER_AGENT = f"room-recorder/{__version__}"


class _Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give up"


@dataclass(frozen=True, slots=True)
class _Event:
    sequence: int | None
    webhook_type: str
    body: bytes

    def __str__(self) -> str:
        return f"{self.webhook_type} (sequence {self.sequence})"


@dataclass(slots=True)
class DeliveryReport:
    """What happened to the events, by sequence number; `dropped` counts a full queue's refusals."""

    delivered: list[int | None] = field(default_factory=list)
    undelivered: list[int | None] = field(default_factory=list)
    dropped: int = 0


def redact_url(url: str) -> str:
    """The URL as logs show it: no user info, no query or fragment (they may carry tokens)."""
    parsed = URL(url)
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


class WebhookNotifier:
    """Delivers status changes to one webhook URL; `on_transition` is a lifecycle listener."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        allow_private: bool = False,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        retry: RetryPolicy = WEBHOOK_RETRY,
        queue_size: int = QUEUE_SIZE,
        resolver: AbstractResolver | None = None,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = url
        self._secret = secret or None
        self.request_timeout_s = request_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.retry = retry
        self.queue_size = queue_size
        self._resolver = GuardedResolver(allow_private=allow_private, inner=resolver)
        self._rng = rng
        self._sleep = sleep
        self._loop: asyncio.AbstractEventLoop | None = None
        # One slot more than `queue_size` for the end-of-queue marker that close() puts.
        self._queue: asyncio.Queue[_Event | None] = asyncio.Queue(queue_size + 1)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight: _Event | None = None
        self._closing = False
        self.report = DeliveryReport()

    @classmethod
    def from_env(
        cls, url: str, environ: Mapping[str, str] | None = None, **options: Any
    ) -> WebhookNotifier:
        """A notifier with the deployment's secret and private-address policy."""
        env = os.environ if environ is None else environ
        return cls(
            url,
            secret=env.get(SECRET_ENV_VAR) or None,
            allow_private=allow_private_from_env(env),
            **options,
        )

    def __repr__(self) -> str:  # never the secret
        return f"WebhookNotifier({redact_url(self.url)!r}, signed={self._secret is not None})"

    # --- the owner's side --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session and start the delivery task (on the running loop)."""
        if self._task is not None:
            raise RuntimeError("the notifier has already started")
        self._loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(resolver=self._resolver, limit=1)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        self._task = asyncio.create_task(self._deliver_all(), name="webhook-delivery")

    async def close(self) -> DeliveryReport:
        """Deliver what is queued within `drain_timeout_s`, then stop; what happened."""
        if self._task is None:
            return self.report
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(None)
        done, _ = await asyncio.wait({self._task}, timeout=self.drain_timeout_s)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=CANCEL_WAIT_S)
            left = [self._in_flight] if self._in_flight is not None else []
            while not self._queue.empty():
                event = self._queue.get_nowait()
                if event is not None:
                    left.append(event)
            for event in left:
                log.error(
                    "webhook %s undelivered: %s did not take it within the %g s drain time",
                    event,
                    redact_url(self.url),
                    self.drain_timeout_s,
                )
                self.report.undelivered.append(event.sequence)
        if self._session is not None:
            await self._session.close()
        log.info(
            "webhooks: %d delivered, %d undelivered, %d dropped",
            len(self.report.delivered),
            len(self.report.undelivered),
            self.report.dropped,
        )
        return self.report

    # --- the producers' side: any thread, never blocks ---------------------------------------

    def on_transition(self, transition: Transition) -> None:
        """Lifecycle listener: enqueue the status change's webhook."""
        self.notify(payload_for(transition))

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Queue one webhook body for delivery; returns at once, from any thread."""
        data = payload.get("data") or {}
        event = _Event(
            sequence=data.get("sequence"),
            webhook_type=str(payload.get("webhookType", "")),
            body=json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        )
        loop = self._loop
        if loop is None:
            raise RuntimeError("notify() before start()")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put(event)
            return
        try:
            loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:  # the loop is closed: the process is ending
            self._drop(event, "the event loop is closed")

    def _put(self, event: _Event) -> None:
        if self._closing:
            self._drop(event, "the notifier is closing")
        elif self._queue.qsize() >= self.queue_size:
            self._drop(event, f"{self.queue_size} events are already waiting")
        else:
            self._queue.put_nowait(event)

    def _drop(self, event: _Event, why: str) -> None:
        log.error("webhook %s dropped: %s", event, why)
        self.report.dropped += 1
        self.report.undelivered.append(event.sequence)

    # --- the delivery task -------------------------------------------------------------------

    async def _deliver_all(self) -> None:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            self._in_flight = event
            await self._deliver(event)
            self._in_flight = None

    async def _deliver(self, event: _Event) -> None:
        for attempt in range(1, self.retry.attempts + 1):
            outcome, detail = await self._attempt(event)
            if outcome is _Outcome.DELIVERED:
                log.debug("webhook %s delivered (try %d)", event, attempt)
                self.report.delivered.append(event.sequence)
                return
            if outcome is _Outcome.GIVE_UP or attempt == self.retry.attempts:
                log.error(
                    "webhook %s to %s undelivered after %d tries: %s",
                    event,
                    redact_url(self.url),
                    attempt,
                    detail,
                )
                self.report.undelivered.append(event.sequence)
                return
            delay_s = self.retry.delay_s(attempt, self._rng)
            log.warning(
                "webhook %s failed (%s); try %d of %d in %.2f s",
                event,
                detail,
                attempt + 1,
                self.retry.attempts,
                delay_s,
            )
            await self._sleep(delay_s)

    async def _attempt(self, event: _Event) -> tuple[_Outcome, str]:
        if self._session is None:
            raise RuntimeError("the notifier has not started")
        try:
            await check_url(self.url, self._resolver)
        except ForbiddenAddressError as error:
            return _Outcome.GIVE_UP, str(error)
        except OSError as error:  # the name does not resolve (yet): DNS may recover
            return _Outcome.RETRY, f"cannot resolve: {error}"
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(event.body, self._secret)  # fresh `t` per try
        try:
            async with self._session.post(
                self.url,
                data=event.body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
            ) as response:
                status = response.status
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, ForbiddenAddressError):  # rebinding, caught at connect
                return _Outcome.GIVE_UP, str(error.os_error)
            return _Outcome.RETRY, f"cannot connect: {error.os_error}"
        except TimeoutError:
            return _Outcome.RETRY, f"no answer within {self.request_timeout_s:g} s"
        except aiohttp.ClientError as error:
            return _Outcome.RETRY, f"{type(error).__name__}: {error}"
        if 200 <= status < 300:
            return _Outcome.DELIVERED, str(status)
        if 300 <= status < 400:
            return _Outcome.GIVE_UP, f"HTTP {status}: redirects are not followed"
        if status in RETRYABLE_STATUSES or status >= 500:
            return _Outcome.RETRY, f"HTTP {status}"
        return _Outcome.GIVE_UP, f"HTTP {status}"
