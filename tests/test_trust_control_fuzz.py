"""Hostile requests to the control endpoint: never a 500 or a traceback, a 400 names the field.

The endpoint under test is the real `ControlServer` in front of a real `Recording` (built from a
valid job, not run: layout changes, pins and stops go through the same code as in a live worker,
without the media). It listens on 127.0.0.1 in a thread of its own; hypothesis drives it over
HTTP with `http.client`: random JSON and random bytes to `POST /layout` and `POST /stop`, random
methods and paths. Whatever comes in, the answer is a 2xx or a 4xx, a 400 carries `problems`
whose every line starts with the field it is about (the same names `fields` lists), and no
handler raised (aiohttp would log it on `aiohttp.server` and answer 500).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.control import ControlServer
from recorder.control_settings import ControlSettings
from recorder.job import validate_job
from recorder.layout_change import CHANGE_FIELDS
from recorder.lifecycle import StopReason
from recorder.recording import Recording, RecordingOptions

REQUEST_TIMEOUT_S = 5.0
SERVER_START_TIMEOUT_S = 10.0
# Every problem line starts with a field path: `body`, `theme`, `layout.gridSize`, `pin`, ...
FIELD_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_\[\]]+)*: ")
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

LAYOUT_KEYS = ["type", "gridSize", "spotlight", "sidebar", "showNames", "padding", "x" * 300]
KNOWN_KEYS = [*CHANGE_FIELDS, *LAYOUT_KEYS, "", "\u202e", "__class__", "config"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["GRID", "spotlight", "SIDEBAR", "DARK", "light", "", "\u202egrid", "ｇrid"])
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
change_bodies = st.dictionaries(st.sampled_from(KNOWN_KEYS), json_values, max_size=4)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
paths = st.sampled_from(
    ["/layout", "/stop", "/status", "/healthz", "/metrics", "/", "//layout", "/layout/", "/%00"]
) | st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(
    lambda text: "/" + text.replace("#", "").replace("?", "")
)


class ServerErrors(logging.Handler):
    """Collects what aiohttp logs when a handler raises."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Endpoint:
    """The control endpoint of an unrun Recording, served on a loop in its own thread."""

    def __init__(self, spool_dir: Path) -> None:
        job = validate_job(
            {"room": {"connector": "loopback", "url": "ws://127.0.0.1:1/ws", "roomId": "fuzz"}}
        )
        self.recording = Recording(job, RecordingOptions(spool_dir=spool_dir))
        self.server = ControlServer(
            self.recording, ControlSettings(port=0), recording_id=job.recording_id
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="control-fuzz")
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop)
        self.port = int(started.result(SERVER_START_TIMEOUT_S).rsplit(":", 1)[1])

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(
            SERVER_START_TIMEOUT_S
        )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(SERVER_START_TIMEOUT_S)
        self.loop.close()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    served = Endpoint(tmp_path_factory.mktemp("spool"))
    served.start()
    yield served
    served.close()


@pytest.fixture
def server_errors() -> Iterator[ServerErrors]:
    handler = ServerErrors()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def _check_layout_answer(status: int, payload: bytes) -> None:
    assert status in (200, 400), (status, payload)
    assert b"Traceback" not in payload
    answer = json.loads(payload)
    if status == 200:
        assert set(answer) >= {"layout", "theme"}
        return
    problems, fields = answer["problems"], answer["fields"]
    assert problems and len(fields) == len(problems)
    for problem, field in zip(problems, fields, strict=True):
        assert FIELD_LINE.match(problem), problem
        assert problem.startswith(f"{field}: ")


@FUZZ
@given(body=json_values | change_bodies)
def test_any_json_to_layout_is_applied_or_refused_naming_the_field(
    endpoint: Endpoint, server_errors: ServerErrors, body: object
) -> None:
    status, payload = endpoint.request("POST", "/layout", json.dumps(body).encode())
    _check_layout_answer(status, payload)
    assert server_errors.records == []


@FUZZ
@given(body=st.binary(max_size=300))
def test_any_bytes_to_layout_are_refused_as_not_json_or_handled(
    endpoint: Endpoint, server_errors: ServerErrors, body: bytes
) -> None:
    status, payload = endpoint.request("POST", "/layout", body)
    _check_layout_answer(status, payload)
    assert server_errors.records == []


def test_an_oversized_body_is_refused_with_413(endpoint: Endpoint) -> None:
    status, _ = endpoint.request("POST", "/layout", b"{" + b" " * (128 * 1024) + b"}")
    assert status == 413


@FUZZ
@given(method=methods, path=paths, body=st.none() | st.binary(max_size=100))
def test_any_route_answers_without_a_server_error(
    endpoint: Endpoint, server_errors: ServerErrors, method: str, path: str, body: bytes | None
) -> None:
    status, payload = endpoint.request(method, path, body)
    assert status < 500 or (path == "/healthz" and status == 503), (method, path, status)
    assert b"Traceback" not in payload
    assert server_errors.records == []
    if path == "/stop" and method == "POST":
        assert status == 202  # a stop ignores its body


def test_a_layout_change_is_refused_once_the_recording_is_stopping(tmp_path: Path) -> None:
    """From RECORDING_STOPPING on, a change would be in no frame of the file, yet in the
    manifest: 409, saying why, and nothing is applied or recorded."""
    served = Endpoint(tmp_path)
    served.start()
    try:
        recording = served.recording
        recording.lifecycle.begin()
        body = json.dumps({"theme": "LIGHT"}).encode()
        assert served.request("POST", "/layout", body)[0] == 200  # while recording
        assert recording.request_stop(StopReason.CONTROL)
        status, payload = served.request("POST", "/layout", json.dumps({"theme": "DARK"}).encode())
        answer = json.loads(payload)
        assert status == 409 and answer["code"] == "RECORDING_STOPPING", answer
        assert "RECORDING_STOPPING" in answer["error"]
        assert json.loads(served.request("GET", "/status")[1])["theme"] == "LIGHT"
        assert [change["theme"] for change in recording.manifest.build()["layoutChanges"]] == [
            "LIGHT"
        ]
    finally:
        served.close()
