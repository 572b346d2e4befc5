"""The worker's local control endpoint (aiohttp): status, stop, layout changes, health, metrics.

A launcher that prefers HTTP to signals, a dashboard, or Prometheus talks to one recording here:

| route | what |
| --- | --- |
| `GET /healthz` | 200 while the recording is healthy (media running or finishing), else 503 |
| `GET /status` | state, elapsed seconds, participants, frames, drops, bytes, upload lag (JSON) |
| `POST /stop` | stop, as SIGTERM does (202); a second one hurries, as a second SIGTERM does |
| `POST /layout` | `{"layout": {"type": ...}, "theme": ..., "pin": id, "unpin": id}`: 200, or 400 |
|  | with `problems` (one line per bad field, validated like the job) and `fields`, or 409 |
|  | once the recording is stopping (a change then would be in no frame) |
| `GET /metrics` | Prometheus text format: state, elapsed, frames, drops, bytes, bitrate, lag |

It listens on 127.0.0.1 unless told otherwise (`--control-host`); anywhere else it requires a
token (`RECORDER_CONTROL_TOKEN`, see `recorder.control_settings`), which every request must then
carry as `Authorization: Bearer <token>` (a token that is set is required on loopback too).
The endpoint only reads and asks: it never blocks the recording, and every answer comes from
counters the recording already keeps.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from recorder.control_settings import ControlSettings
from recorder.layout_change import LayoutChangeError, LayoutChangeTooLateError
from recorder.lifecycle import Status

if TYPE_CHECKING:
    from recorder.recording import RecordingMetrics

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a layout change is a few dozen bytes
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
SHUTDOWN_TIMEOUT_S = 1.0


class ControlledRecording(Protocol):
    """What the endpoint asks of the recording (`recorder.recording.Recording`)."""

    def healthy(self) -> tuple[bool, str]: ...

    def status(self) -> dict[str, Any]: ...

    def metrics(self) -> RecordingMetrics: ...

    def stop_from_control(self) -> bool: ...

    def change_layout(self, body: object) -> dict[str, Any]: ...


def prometheus_text(metrics: RecordingMetrics, recording_id: str) -> str:
    """The metrics in Prometheus' text exposition format (version 0.0.4)."""
    label = f'recording_id="{_escape(recording_id)}"'
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Mapping[str, float] | float) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        if isinstance(samples, Mapping):
            for labels, value in samples.items():
                lines.append(f"{name}{{{label},{labels}}} {_number(value)}")
        else:
            lines.append(f"{name}{{{label}}} {_number(samples)}")

    metric(
        "recorder_state",
        "gauge",
        "The recording's status: 1 for the current one.",
        {f'status="{status}"': float(metrics.state is status) for status in Status},
    )
    metric("recorder_elapsed_seconds", "gauge", "Seconds recorded so far.", metrics.elapsed_s)
    metric("recorder_frames_total", "counter", "Video frames composed.", metrics.frames)
    metric(
        "recorder_dropped_total",
        "counter",
        "Output lost: video frames skipped by a late media thread, encoder queue drops.",
        {'stage="late_tick"': metrics.late_ticks, 'stage="encoder_queue"': metrics.encoder_drops},
    )
    metric("recorder_bytes_total", "counter", "Bytes written to the spool.", metrics.bytes_written)
    metric(
        "recorder_bitrate_bps", "gauge", "Average bitrate of the file so far.", metrics.bitrate_bps
    )
    metric(
        "recorder_upload_lag_bytes",
        "gauge",
        "Durable spool bytes not yet stored at the final place.",
        metrics.upload_lag_bytes,
    )
    metric("recorder_participants", "gauge", "Participants present.", metrics.participants)
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlServer:
    """The aiohttp server of one recording's control endpoint."""

    def __init__(
        self, recording: ControlledRecording, settings: ControlSettings, *, recording_id: str
    ) -> None:
        self._recording = recording
        self._settings = settings
        self._recording_id = recording_id
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> str:
        """Listen; the endpoint's base URL (`http://HOST:PORT`)."""
        app = web.Application(middlewares=[self._authorize], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        app.router.add_post("/stop", self._stop)
        app.router.add_post("/layout", self._layout)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.host, self._settings.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in str(host) else host
        self.url = f"http://{shown}:{port}"
        log.info("control endpoint at %s (token %s)", self.url, _required(self._settings))
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- routes ------------------------------------------------------------------------------

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self._settings.token
        if token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return web.json_response(
                    {"error": "a valid 'Authorization: Bearer <token>' header is required"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    async def _healthz(self, _request: web.Request) -> web.Response:
        healthy, detail = self._recording.healthy()
        return web.json_response(
            {"healthy": healthy, "detail": detail}, status=200 if healthy else 503
        )

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self._recording.status())

    async def _stop(self, _request: web.Request) -> web.Response:
        began = self._recording.stop_from_control()
        status = self._recording.status()
        return web.json_response({"stopping": began, "state": status["state"]}, status=202)

    async def _layout(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except (ValueError, UnicodeDecodeError) as error:
            return _bad_request(LayoutChangeError([f"body: is not JSON: {error}"]))
        try:
            applied = self._recording.change_layout(body)
        except LayoutChangeError as error:
            return _bad_request(error)
        except LayoutChangeTooLateError as error:
            return web.json_response({"error": error.message, "code": error.code}, status=409)
        return web.json_response(applied)

    async def _metrics(self, _request: web.Request) -> web.Response:
        text = prometheus_text(self._recording.metrics(), self._recording_id)
        return web.Response(
            body=text.encode("utf-8"), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )


def _bad_request(error: LayoutChangeError) -> web.Response:
    return web.json_response({"problems": error.problems, "fields": error.fields}, status=400)


def _required(settings: ControlSettings) -> str:
    return "required" if settings.token is not None else "not required"
