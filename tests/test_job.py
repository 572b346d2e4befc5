"""The job contract (CONTRACT.md §1–2): defaults, canonical form, refusals, sources, CLI, schema."""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from layouts.model import LayoutSpec, LayoutType, Orientation, Priority, Size, Theme
from recorder.cli import main
from recorder.errors import ExitCode, InvalidJobError
from recorder.job import (
    DEFAULT_EMPTY_ROOM_TIMEOUT_S,
    DEFAULT_MAX_DURATION_S,
    JOB_ENV_VAR,
    MAX_JOB_SIZE_BYTES,
    RECORDING_ID_PATTERN,
    ROOM_CONNECTORS,
    SLASH_LOOKALIKES,
    Job,
    LayoutConfig,
    Limits,
    RecordingConfig,
    RoomConfig,
    job_json_schema,
    load_job,
    parse_job_json,
    show_value,
    validate_job,
)
from recorder.presets import Mode, Quality

ROOM = {"connector": "loopback", "url": "http://127.0.0.1:9/room", "roomId": "standup"}

# A problem line starts with the field path it is about (or `job` for the whole document).
PROBLEM_LINE = re.compile(r"^(job|[A-Za-z]+(\.[A-Za-z]+)*): \S")


def job_data(**top: Any) -> dict[str, Any]:
    """A valid job as parsed JSON, with top-level keys replaced by `top`."""
    return {"room": dict(ROOM), **top}


def with_value(path: str, value: object) -> dict[str, Any]:
    """A valid job with the field at dotted `path` set to `value` (parents created as needed)."""
    data = job_data()
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


def problems_of(data: object) -> list[str]:
    with pytest.raises(InvalidJobError) as caught:
        validate_job(data)
    return caught.value.problems


# --- defaults and canonical form -----------------------------------------------------------------


def test_defaults_fill_every_optional_field() -> None:
    job = validate_job(job_data())

    assert re.fullmatch(RECORDING_ID_PATTERN, job.recording_id)
    assert job.webhook_url is None
    assert job.aws_dir_path == ""
    assert job.config == RecordingConfig()
    assert job.config.layout.type is LayoutType.GRID
    assert job.config.layout.priority is Priority.SPEAKER
    assert job.config.layout.grid_size == 4
    assert job.config.theme is Theme.DEFAULT
    assert job.config.mode is Mode.VIDEO_AND_AUDIO
    assert job.config.quality is Quality.MED
    assert job.config.orientation is Orientation.LANDSCAPE
    assert job.room == RoomConfig(connector="loopback", url=ROOM["url"], room_id="standup")
    assert job.room.token is None
    assert job.limits.max_duration_sec == DEFAULT_MAX_DURATION_S == 4 * 3600
    assert job.limits.empty_room_timeout_sec == DEFAULT_EMPTY_ROOM_TIMEOUT_S == 60
    assert job.limits.empty_room_timeout_s == 60.0
    assert job.config.layout_spec() == LayoutSpec()
    assert job.media_key() == f"{job.recording_id}.mp4"
    assert job.manifest_key() == f"{job.recording_id}.json"


def test_each_job_without_an_id_gets_its_own() -> None:
    assert validate_job(job_data()).recording_id != validate_job(job_data()).recording_id


def test_recording_config_is_usable_without_a_job() -> None:
    config = RecordingConfig(
        layout=LayoutConfig(type="sidebar", priority=Priority.PIN, grid_size=2),
        theme=Theme.DARK,
        quality="HIGH",
        orientation="Portrait",
    )
    assert config.layout_spec() == LayoutSpec(
        type=LayoutType.SIDEBAR, priority=Priority.PIN, grid_size=2, theme=Theme.DARK
    )
    assert config.canvas() == Size(1080, 1920)
    assert config.preset().fps == 30
    assert RecordingConfig().canvas() == Size(1280, 720)


def test_models_are_frozen() -> None:
    job = validate_job(job_data())
    with pytest.raises(ValidationError):
        job.aws_dir_path = "elsewhere"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        job.config.layout.grid_size = 1  # type: ignore[misc]


def test_zero_empty_room_timeout_turns_that_stop_off() -> None:
    job = validate_job(job_data(limits={"emptyRoomTimeoutSec": 0}))
    assert job.limits.empty_room_timeout_sec == 0
    assert job.limits.empty_room_timeout_s is None


@pytest.mark.parametrize(
    ("path", "given", "canonical"),
    [
        ("config.layout.type", "spotlight", "SPOTLIGHT"),
        ("config.layout.type", "SideBar", "SIDEBAR"),
        ("config.layout.priority", "pin", "PIN"),
        ("config.theme", "light", "LIGHT"),
        ("config.theme", "Dark", "DARK"),
        ("config.mode", "AUDIO", "audio"),
        ("config.mode", "Video-And-Audio", "video-and-audio"),
        ("config.quality", "HIGH", "high"),
        ("config.quality", "Low", "low"),
        ("config.orientation", "PORTRAIT", "portrait"),
        ("room.connector", "JANUS", "janus"),
        ("room.connector", "LoopBack", "loopback"),
    ],
)
def test_enum_values_match_any_case_and_echo_canonically(
    path: str, given: str, canonical: str
) -> None:
    job = validate_job(with_value(path, given))
    node: Any = job.to_canonical_dict()
    for key in path.split("."):
        node = node[key]
    assert node == canonical


def test_enum_look_alikes_outside_ascii_are_refused() -> None:
    # "ſ" (long s) case-folds to "s" in Unicode; the contract's enums are ASCII words.
    assert problems_of(with_value("config.layout.type", "ſpotlight")) == [
        "config.layout.type: 'ſpotlight' is not one of GRID, SPOTLIGHT, SIDEBAR"
    ]


def test_canonical_json_is_complete_ordered_and_masks_the_token() -> None:
    job = validate_job(
        {
            "recordingId": "rec-1",
            "webhookUrl": "https://hooks.example.com/rec?x=1",
            "awsDirPath": "/tenant/2026/",
            "config": {"layout": {"type": "grid", "gridSize": 2}, "mode": "audio"},
            "room": {**ROOM, "roomId": 1234, "token": "s3cret"},
        }
    )
    text = job.to_canonical_json()
    assert "s3cret" not in text and "s3cret" not in repr(job)
    assert json.loads(text) == {
        "recordingId": "rec-1",
        "webhookUrl": "https://hooks.example.com/rec?x=1",
        "awsDirPath": "tenant/2026",
        "config": {
            "layout": {"type": "GRID", "priority": "SPEAKER", "gridSize": 2},
            "theme": "DEFAULT",
            "mode": "audio",
            "quality": "med",
            "orientation": "landscape",
        },
        "room": {
            "connector": "loopback",
            "url": ROOM["url"],
            "roomId": 1234,
            "token": "**********",
            "pin": None,
        },
        "limits": {"maxDurationSec": 14400, "emptyRoomTimeoutSec": 60},
    }
    assert list(json.loads(text)) == [
        "recordingId",
        "webhookUrl",
        "awsDirPath",
        "config",
        "room",
        "limits",
    ]
    assert job.media_key() == "tenant/2026/rec-1.m4a"
    assert job.manifest_key() == "tenant/2026/rec-1.json"
    with_secret = job.to_canonical_dict(include_secrets=True)
    assert with_secret["room"]["token"] == "s3cret"
    assert validate_job(with_secret) == job


# --- refusals ------------------------------------------------------------------------------------

AWS_RULE = "allowed: a relative '/'-separated path"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("config.layout.type", "GRIDX", "'GRIDX' is not one of GRID, SPOTLIGHT, SIDEBAR"),
        ("config.layout.type", 1, "1 is not one of GRID, SPOTLIGHT, SIDEBAR"),
        ("config.layout.type", None, "None is not one of GRID, SPOTLIGHT, SIDEBAR"),
        ("config.layout.priority", "loudest", "'loudest' is not one of SPEAKER, PIN"),
        ("config.layout.gridSize", "4", "'4' is not an integer from 1 to 4"),
        ("config.layout.gridSize", 4.5, "4.5 is not an integer from 1 to 4"),
        ("config.layout.gridSize", 4.0, "4.0 is not an integer from 1 to 4"),
        ("config.layout.gridSize", True, "True is not an integer from 1 to 4"),
        ("config.layout.gridSize", 0, "0 is not an integer from 1 to 4"),
        ("config.layout.gridSize", 5, "5 is not an integer from 1 to 4"),
        ("config.theme", "blue", "'blue' is not one of DARK, LIGHT, DEFAULT"),
        ("config.mode", "video", "'video' is not one of video-and-audio, audio"),
        ("config.quality", "ultra", "'ultra' is not one of low, med, high"),
        ("config.orientation", "square", "'square' is not one of landscape, portrait"),
        ("room.connector", "zoom", "'zoom' is not one of loopback, janus"),
        ("room.url", "", "'' is empty; allowed: a non-empty string without whitespace"),
        ("room.url", "ws://a b", "'ws://a b' holds whitespace; allowed:"),
        ("room.url", 80, "80 is not a string; allowed:"),
        ("room.roomId", True, "True is not a string or an integer; allowed:"),
        ("room.roomId", 1.5, "1.5 is not a string or an integer; allowed:"),
        ("room.roomId", -1, "-1 is out of range; allowed:"),
        ("room.roomId", 2**64, f"{2**64} is out of range; allowed:"),
        ("room.roomId", "", "'' is empty; allowed:"),
        ("room.roomId", "r" * 257, "'rrrrrrrrr"),
        ("room.token", "", "'' is empty; allowed:"),
        ("room.token", 42, "42 is not a string; allowed:"),
        ("recordingId", "../x", "'../x' is not a safe id; allowed: 1 to 128 of A-Z a-z 0-9"),
        ("recordingId", ".hidden", "'.hidden' is not a safe id"),
        ("recordingId", "", "'' is not a safe id"),
        ("recordingId", "a" * 129, "'aaaaaaaa"),
        ("recordingId", "réunion", "'réunion' is not a safe id"),
        ("recordingId", 7, "7 is not a string; allowed:"),
        ("webhookUrl", "ftp://example.com/x", "'ftp://example.com/x' is not an http or https URL"),
        ("webhookUrl", "https://", "'https://' has no host"),
        ("webhookUrl", "example.com/hook", "'example.com/hook' is not an http or https URL"),
        ("webhookUrl", "http://h:99999/", "'http://h:99999/' is not a URL"),
        ("webhookUrl", "http://h/\nx", "'http://h/\\nx' holds control or invalid characters"),
        ("webhookUrl", "http://h/" + "a" * 2048, "'http://h/aaaa"),
        ("webhookUrl", 1, "1 is not a string; allowed: an http or https URL with a host"),
        ("limits.maxDurationSec", 0, "0 is not an integer from 1 to 86400"),
        ("limits.maxDurationSec", 86401, "86401 is not an integer from 1 to 86400"),
        ("limits.maxDurationSec", "60", "'60' is not an integer from 1 to 86400"),
        ("limits.maxDurationSec", 1.5, "1.5 is not an integer from 1 to 86400"),
        ("limits.emptyRoomTimeoutSec", -1, "-1 is not an integer from 0 to 86400"),
        ("limits.emptyRoomTimeoutSec", False, "False is not an integer from 0 to 86400"),
    ],
)
def test_each_field_refuses_with_its_path_value_and_rule(
    path: str, value: object, expected: str
) -> None:
    problems = problems_of(with_value(path, value))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: {expected}"), problems[0]


def test_long_values_are_cut_in_error_lines() -> None:
    [line] = problems_of(with_value("recordingId", "a" * 500))
    assert "a" * 100 not in line
    assert line.startswith("recordingId: 'aaa") and "... is not a safe id" in line
    assert len(show_value("a" * 500)) <= 60


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("job", "job: unknown field 'extra'; allowed: recordingId, webhookUrl, awsDirPath, "
         "config, room, limits"),
        ("config", "config: unknown field 'extra'; allowed: layout, theme, mode, quality, "
         "orientation"),
        ("config.layout", "config.layout: unknown field 'extra'; allowed: type, priority, "
         "gridSize"),
        ("room", "room: unknown field 'extra'; allowed: connector, url, roomId, token, pin"),
        ("limits", "limits: unknown field 'extra'; allowed: maxDurationSec, "
         "emptyRoomTimeoutSec"),
    ],
)  # fmt: skip
def test_unknown_keys_are_refused_at_every_level(path: str, expected: str) -> None:
    data = job_data() if path == "job" else with_value(f"{path}.extra", 1)
    if path == "job":
        data["extra"] = 1
    assert problems_of(data) == [expected]


def test_python_attribute_names_are_not_json_keys() -> None:
    assert LayoutConfig(grid_size=2).grid_size == 2
    assert problems_of(with_value("config.layout.grid_size", 2)) == [
        "config.layout: unknown field 'grid_size'; allowed: type, priority, gridSize"
    ]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("config", [], "config: [] is not an object with layout, theme, mode, quality, "
         "orientation"),
        ("config.layout", "GRID", "config.layout: 'GRID' is not an object with type, "
         "priority, gridSize"),
        ("room", "loopback", "room: 'loopback' is not an object with connector, url, roomId, "
         "token, pin"),
        ("limits", None, "limits: None is not an object with maxDurationSec, "
         "emptyRoomTimeoutSec"),
    ],
)  # fmt: skip
def test_parts_that_are_not_objects_are_refused(path: str, value: object, expected: str) -> None:
    assert problems_of(with_value(path, value)) == [expected]


def test_room_is_required_and_so_are_its_fields() -> None:
    assert problems_of({}) == [
        "room: is required (an object with connector, url, roomId, token, pin)"
    ]
    assert problems_of({"room": {}}) == [
        "room.connector: is required",
        "room.url: is required",
        "room.roomId: is required",
    ]


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "recordingId": "bad id",
        "awsDirPath": "a/../b",
        "config": {"layout": {"type": "GRIDX", "gridSize": 9}, "quality": "4k", "zoom": 2},
        "room": {**ROOM, "connector": "teams"},
        "limits": {"maxDurationSec": -5},
    }
    problems = problems_of(data)
    assert [line.split(":", 1)[0] for line in problems] == [
        "recordingId",
        "awsDirPath",
        "config.layout.type",
        "config.layout.gridSize",
        "config.quality",
        "config",
        "room.connector",
        "limits.maxDurationSec",
    ]
    assert "config.layout.type: 'GRIDX' is not one of GRID, SPOTLIGHT, SIDEBAR" in problems
    error = InvalidJobError(problems)
    assert error.exit_code == ExitCode.INVALID_JOB
    assert all(line in error.message for line in problems)


# --- awsDirPath ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("", ""),
        ("/", ""),
        ("a", "a"),
        ("/a/b/", "a/b"),
        ("a/b/", "a/b"),
        ("/a", "a"),
        ("réunions/2026", "réunions/2026"),
        ("会議/録画", "会議/録画"),
        ("team a/..x/x../.hidden", "team a/..x/x../.hidden"),
        ("é" * 256, "é" * 256),  # 512 bytes of UTF-8: the limit itself
        ("/" + "a" * 512 + "/", "a" * 512),
    ],
)
def test_aws_dir_path_is_normalised(given: str, stored: str) -> None:
    job = validate_job(job_data(awsDirPath=given, recordingId="r1"))
    assert job.aws_dir_path == stored
    assert job.media_key() == (f"{stored}/r1.mp4" if stored else "r1.mp4")


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("a/../b", "has a '..' segment"),
        ("..", "has a '..' segment"),
        ("../a", "has a '..' segment"),
        ("a/..", "has a '..' segment"),
        (".", "has a '.' segment"),
        ("./a", "has a '.' segment"),
        ("a/./b", "has a '.' segment"),
        ("a//b", "has an empty segment"),
        ("//", "has an empty segment"),
        ("//a", "has an empty segment"),
        ("a//", "has an empty segment"),
        ("C:\\x", "holds a backslash"),
        ("a\\..\\b", "holds a backslash"),
        ("a\x00b", "holds control or invalid characters"),
        ("a\nb", "holds control or invalid characters"),
        ("a\x7fb", "holds control or invalid characters"),
        ("a\x85b", "holds control or invalid characters"),
        ("a\ud800b", "holds control or invalid characters"),
        ("a" * 513, "is longer than 512 bytes"),
        ("é" * 257, "is longer than 512 bytes"),
        (5, "is not a string"),
        (None, "is not a string"),
    ],
)
def test_aws_dir_path_refusals(given: object, reason: str) -> None:
    [line] = problems_of(job_data(awsDirPath=given))
    assert line.startswith(f"awsDirPath: {show_value(given)} {reason}; {AWS_RULE}"), line


# --- sources -------------------------------------------------------------------------------------

VALID_TEXT = json.dumps({"recordingId": "from-source", "room": ROOM})


def test_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(VALID_TEXT, encoding="utf-8")
    assert load_job(str(path), environ={}).recording_id == "from-source"


def test_load_from_a_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_bytes(b"\xef\xbb\xbf" + VALID_TEXT.encode())
    assert load_job(str(path), environ={}).recording_id == "from-source"


def test_load_from_stdin() -> None:
    job = load_job("-", stdin=io.StringIO(VALID_TEXT), environ={})
    assert job.recording_id == "from-source"


def test_load_from_the_environment(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="recorder.job")
    job = load_job(None, stdin=io.StringIO("not read"), environ={JOB_ENV_VAR: VALID_TEXT})
    assert job.recording_id == "from-source"
    assert f"${JOB_ENV_VAR}" in caplog.text


@pytest.mark.parametrize(
    ("source", "content", "expected"),
    [
        (None, None, "job: no job given: pass a job file, '-' for standard input, or set "
         "$RECORDER_JOB"),
        (None, "", "job: $RECORDER_JOB is empty"),
        (None, "{", "job: $RECORDER_JOB is not valid JSON: Expecting property name enclosed "
         "in double quotes at line 1 column 2"),
        ("-", "[1, 2]", "job: standard input holds [1, 2], not a JSON object"),
        ("-", "null", "job: standard input holds None, not a JSON object"),
        ("-", '{"room": NaN}', "job: standard input is not valid JSON: NaN is not a JSON value"),
        ("-", "[" * 100_000, "job: standard input is nested too deeply"),
        ("-", "1" * 5000, "job: standard input holds a number with too many digits"),
        ("-", " " * (MAX_JOB_SIZE_BYTES + 1), f"job: standard input is larger than "
         f"{MAX_JOB_SIZE_BYTES} bytes"),
    ],
)  # fmt: skip
def test_unreadable_jobs_name_their_source(
    source: str | None, content: str | None, expected: str
) -> None:
    environ = {} if content is None or source is not None else {JOB_ENV_VAR: content}
    with pytest.raises(InvalidJobError) as caught:
        load_job(source, stdin=io.StringIO(content or ""), environ=environ)
    assert caught.value.problems == [expected]


def test_unreadable_files_are_invalid_jobs(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(InvalidJobError) as caught:
        load_job(str(missing))
    assert caught.value.problems == [
        f"job: cannot read file {str(missing)!r}: No such file or directory"
    ]
    with pytest.raises(InvalidJobError) as caught:
        load_job(str(tmp_path))
    assert caught.value.problems == [f"job: cannot read file {str(tmp_path)!r}: Is a directory"]
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"awsDirPath": "réunions"}'.encode("latin-1"))
    with pytest.raises(InvalidJobError) as caught:
        load_job(str(latin1))
    assert caught.value.problems == [f"job: file {str(latin1)!r} is not UTF-8 text"]


# --- command line --------------------------------------------------------------------------------


def test_validate_prints_the_canonical_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"room": {**ROOM, "token": "t0ken"}, "config": {"mode": "Audio"}}))
    assert main(["validate", str(path)]) == ExitCode.OK
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["config"]["mode"] == "audio"
    assert printed["room"]["token"] == "**********"
    assert "t0ken" not in out + err
    assert validate_job({**printed, "room": ROOM}).config.mode is Mode.AUDIO


def test_validate_reports_every_problem_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {"config": {"layout": {"type": "GRIDX"}, "theme": "pink"}, "room": ROOM}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(bad)))
    assert main(["validate", "-"]) == ExitCode.INVALID_JOB == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "invalid job: config.layout.type: 'GRIDX' is not one of GRID, SPOTLIGHT, SIDEBAR",
        "invalid job: config.theme: 'pink' is not one of DARK, LIGHT, DEFAULT",
    ]


def test_validate_reads_the_environment_when_no_job_is_given(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(JOB_ENV_VAR, VALID_TEXT)
    assert main(["validate"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["recordingId"] == "from-source"
    monkeypatch.delenv(JOB_ENV_VAR)
    assert main(["validate"]) == ExitCode.INVALID_JOB
    assert "set $RECORDER_JOB" in capsys.readouterr().err


def test_installed_command_exits_2_on_an_invalid_job() -> None:
    script = Path(sys.executable).with_name("recorder")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "recorder"]
    result = subprocess.run(
        [*command, "validate", "-"],
        input=json.dumps({"room": ROOM, "config": {"quality": "8k"}}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == ExitCode.INVALID_JOB
    assert result.stdout == ""
    assert "invalid job: config.quality: '8k' is not one of low, med, high" in result.stderr


def test_schema_command_prints_a_schema_naming_every_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema"]) == ExitCode.OK
    schema = json.loads(capsys.readouterr().out)
    assert schema == json.loads(json.dumps(job_json_schema()))
    assert "case-insensitive" in schema["$comment"]
    assert schema["required"] == ["room"]
    assert schema["additionalProperties"] is False
    definitions = {name: schema["$defs"][name] for name in schema["$defs"]}
    for model in (Job, RecordingConfig, LayoutConfig, RoomConfig, Limits):
        properties = (
            schema["properties"] if model is Job else definitions[model.__name__]["properties"]
        )
        aliases = [field.alias for field in model.model_fields.values()]
        assert list(properties) == aliases
        for alias in aliases:
            assert properties[alias].get("description"), f"{model.__name__}.{alias}"
    assert definitions["LayoutType"]["enum"] == ["GRID", "SPOTLIGHT", "SIDEBAR"]
    assert definitions["RoomConfig"]["properties"]["connector"]["enum"] == list(ROOM_CONNECTORS)


def test_schema_accepts_the_canonical_job() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = job_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    job = validate_job(job_data(room={**ROOM, "token": "t"}, webhookUrl="http://127.0.0.1/h"))
    jsonschema.validate(job.to_canonical_dict(include_secrets=True), schema)


# --- properties ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

FULL_JOB: dict[str, Any] = {
    "recordingId": "rec-7",
    "webhookUrl": "https://127.0.0.1:8443/hook",
    "awsDirPath": "a/b",
    "config": {
        "layout": {"type": "GRID", "priority": "PIN", "gridSize": 3},
        "theme": "DARK",
        "mode": "audio",
        "quality": "high",
        "orientation": "portrait",
    },
    "room": {**ROOM, "token": "t"},
    "limits": {"maxDurationSec": 60, "emptyRoomTimeoutSec": 0},
}


def _paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in node.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found.extend(_paths(value, (*prefix, key)))
    return found


FULL_JOB_PATHS = _paths(FULL_JOB)


@st.composite
def mutated_jobs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid job with a few fields replaced, removed, or joined by unknown keys."""
    data = copy.deepcopy(FULL_JOB)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(FULL_JOB_PATHS))
        parent: Any = data
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "remove":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.text(max_size=8))] = draw(json_values)
    return data


def _check_outcome(outcome: Job | InvalidJobError) -> None:
    event("a job" if isinstance(outcome, Job) else "an invalid job")
    if isinstance(outcome, Job):
        # A valid job's canonical form is itself a valid job, and the same one.
        again = validate_job(json.loads(outcome.to_canonical_json(include_secrets=True)))
        assert again == outcome
    else:
        assert outcome.problems
        for line in outcome.problems:
            assert PROBLEM_LINE.match(line), line
            assert "is not valid (" not in line, f"untranslated pydantic error: {line}"


def _outcome(data: object) -> Job | InvalidJobError:
    try:
        return validate_job(data)
    except InvalidJobError as error:
        return error


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(json_values)
def test_any_json_value_is_a_job_or_an_invalid_job(data: object) -> None:
    _check_outcome(_outcome(data))


@PROPERTY_SETTINGS
@given(mutated_jobs())
def test_any_mutation_of_a_job_is_a_job_or_an_invalid_job(data: dict[str, Any]) -> None:
    _check_outcome(_outcome(data))


@PROPERTY_SETTINGS
@given(st.text(max_size=60))
def test_any_text_is_a_job_or_an_invalid_job(text: str) -> None:
    try:
        outcome: Job | InvalidJobError = parse_job_json(text)
    except InvalidJobError as error:
        outcome = error
    _check_outcome(outcome)


def _any_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(
            c.upper() if u else c.lower() for c, u in zip(word, upper, strict=True)
        )
    )


@st.composite
def valid_jobs(draw: st.DrawFn) -> dict[str, Any]:
    """Jobs the contract accepts, in any casing, with optional fields left out at random."""
    layout = {
        "type": draw(st.sampled_from(list(LayoutType)).flatmap(_any_case)),
        "priority": draw(st.sampled_from(list(Priority)).flatmap(_any_case)),
        "gridSize": draw(st.integers(1, 4)),
    }
    config = {
        "layout": layout,
        "theme": draw(st.sampled_from(list(Theme)).flatmap(_any_case)),
        "mode": draw(st.sampled_from(list(Mode)).flatmap(_any_case)),
        "quality": draw(st.sampled_from(list(Quality)).flatmap(_any_case)),
        "orientation": draw(st.sampled_from(list(Orientation)).flatmap(_any_case)),
    }
    segment = st.text(
        # No control, surrogate or invisible formatting characters (Cf, Zl, Zp), nothing that
        # reads as `.`, `..`, `/` or `\\` once folded (NFKC), nor a slash look-alike.
        st.characters(
            exclude_categories=["Cc", "Cs", "Cf", "Zl", "Zp"],
            exclude_characters="/\\" + "".join(SLASH_LOOKALIKES),
        ),
        min_size=1,
        max_size=8,
    ).filter(
        lambda s: (
            s not in (".", "..")
            and unicodedata.normalize("NFKC", s) not in (".", "..")
            and not set(unicodedata.normalize("NFKC", s)) & {"/", "\\", *SLASH_LOOKALIKES}
        )
    )
    data: dict[str, Any] = {
        "recordingId": draw(st.from_regex(RECORDING_ID_PATTERN, fullmatch=True)),
        "webhookUrl": draw(st.sampled_from([None, "http://127.0.0.1:8080/h", "https://h.test"])),
        "awsDirPath": "/".join(draw(st.lists(segment, max_size=4))),
        "config": config,
        "room": {
            "connector": draw(st.sampled_from(ROOM_CONNECTORS).flatmap(_any_case)),
            "url": "ws://127.0.0.1:8188/",
            "roomId": draw(
                st.integers(0, 2**64 - 1)
                | st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=10)
            ),
        },
        "limits": {
            "maxDurationSec": draw(st.integers(1, 86400)),
            "emptyRoomTimeoutSec": draw(st.integers(0, 86400)),
        },
    }
    for section in (data, config, layout, data["limits"]):
        for key in draw(st.sets(st.sampled_from(sorted(section)))):
            if not (section is data and key == "room"):
                section.pop(key)
    return data


@PROPERTY_SETTINGS
@given(valid_jobs())
def test_every_job_the_contract_allows_is_accepted(data: dict[str, Any]) -> None:
    job = validate_job(data)
    assert job.config.layout.type in LayoutType
    assert job.media_key().endswith(job.media_extension)
    assert not job.media_key().startswith("/")
    _check_outcome(job)
