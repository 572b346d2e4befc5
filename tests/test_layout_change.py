"""Layout changes asked of a running recording, validated like the job; the control endpoint's
settings and its Prometheus text. Pure functions: no worker, no network."""

from __future__ import annotations

import pytest

from layouts.model import LayoutType, Priority, Theme
from recorder.control import prometheus_text
from recorder.control_settings import ControlConfigError, ControlSettings, is_loopback
from recorder.job import Job, validate_job
from recorder.layout_change import LayoutChangeError, parse_layout_change
from recorder.lifecycle import Status
from recorder.recording import RecordingMetrics


def make_job() -> Job:
    return validate_job(
        {
            "room": {"connector": "loopback", "url": "ws://x", "roomId": "a", "token": "t"},
            "config": {"layout": {"type": "SIDEBAR", "gridSize": 3}, "quality": "low"},
        }
    )


def test_a_change_merges_into_the_config_as_applied_now() -> None:
    job = make_job()
    change = parse_layout_change({"layout": {"type": "spotlight"}}, job, job.config)
    assert change.config is not None and change.pin is None
    assert change.config.layout.type is LayoutType.SPOTLIGHT
    assert change.config.layout.grid_size == 3  # untouched fields keep their applied values
    assert change.config.quality == job.config.quality
    again = parse_layout_change(
        {"layout": {"priority": "pin"}, "theme": "Light"}, job, change.config
    )
    assert again.config is not None
    assert again.config.layout.type is LayoutType.SPOTLIGHT  # the earlier change stays
    assert (again.config.layout.priority, again.config.theme) == (Priority.PIN, Theme.LIGHT)
    pin = parse_layout_change({"pin": "p2", "unpin": "p1"}, job, job.config)
    assert (pin.config, pin.pin, pin.unpin) == (None, "p2", "p1")


@pytest.mark.parametrize(
    ("body", "fields", "words"),
    [
        ({"layout": {"type": "MOSAIC"}}, ["layout.type"], "is not one of GRID, SPOTLIGHT"),
        ({"layout": {"gridSize": 0}}, ["layout.gridSize"], "an integer from 1 to 4"),
        ({"layout": {"gridSize": "2"}}, ["layout.gridSize"], "is not an integer"),
        ({"layout": "GRID"}, ["layout"], "is not an object"),
        ({"layout": {"type": "GRID", "x": 1}}, ["layout"], "unknown field 'x'"),
        ({"theme": None}, ["theme"], "is not one of DARK, LIGHT, DEFAULT"),
        ({"pin": ""}, ["pin"], "is not a participant id"),
        ({"mode": "audio"}, ["body"], "unknown field 'mode'"),
        ({}, ["body"], "names no change"),
        ("SPOTLIGHT", ["body"], "is not a JSON object"),
        (
            {"layout": {"type": "x", "gridSize": 5}, "pin": 3},
            ["pin", "layout.type", "layout.gridSize"],
            "",
        ),
    ],
)
def test_bad_changes_are_refused_naming_every_bad_field(
    body: object, fields: list[str], words: str
) -> None:
    job = make_job()
    with pytest.raises(LayoutChangeError) as refused:
        parse_layout_change(body, job, job.config)
    assert refused.value.fields == fields
    assert words in refused.value.problems[0]


def test_the_endpoint_is_loopback_unless_a_token_guards_it() -> None:
    assert ControlSettings(port=0).host == "127.0.0.1"
    assert is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    with pytest.raises(ControlConfigError, match="RECORDER_CONTROL_TOKEN"):
        ControlSettings(port=8080, host="0.0.0.0")
    exposed = ControlSettings(port=8080, host="0.0.0.0", token="secret")
    assert "secret" not in repr(exposed)
    with pytest.raises(ControlConfigError):
        ControlSettings(port=70000)


def test_metrics_are_prometheus_text_with_one_current_state() -> None:
    metrics = RecordingMetrics(
        state=Status.STOPPING,
        elapsed_s=10.0,
        frames=300,
        late_ticks=2,
        encoder_drops=1,
        bytes_written=1_250_000,
        upload_lag_bytes=4096,
        participants=3,
    )
    text = prometheus_text(metrics, 'rec"1')
    lines = text.splitlines()
    label = 'recording_id="rec\\"1"'
    states = [line for line in lines if line.startswith("recorder_state{")]
    assert len(states) == len(Status)
    assert f'recorder_state{{{label},status="RECORDING_STOPPING"}} 1' in states
    assert sum(line.endswith(" 1") for line in states) == 1
    assert f"recorder_frames_total{{{label}}} 300" in lines
    assert f'recorder_dropped_total{{{label},stage="late_tick"}} 2' in lines
    assert f'recorder_dropped_total{{{label},stage="encoder_queue"}} 1' in lines
    assert f"recorder_bitrate_bps{{{label}}} 1000000" in lines  # 1.25 MB in 10 s
    assert f"recorder_upload_lag_bytes{{{label}}} 4096" in lines
    for name in ("recorder_state", "recorder_frames_total", "recorder_bytes_total"):
        assert f"# TYPE {name} " in text and f"# HELP {name} " in text
    assert text.endswith("\n")
