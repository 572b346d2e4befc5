"""A layout change asked for mid-recording (`POST /layout`), validated like the job.

The body may switch the layout (`layout`: any of `type`, `priority`, `gridSize`), the `theme`, and
pin or unpin one participant for this recording (`pin` / `unpin`: a participant id). The layout
and theme go through the job's own validation (`recorder.job.validate_job`) on the job with the
change applied, so a bad value is refused with the same line `recorder validate` would print,
naming the field as the request spells it (`layout.type: 'MOSAIC' is not one of GRID, ...`).
What the recording cannot change once it runs (mode, quality, orientation) is not accepted here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recorder.errors import InvalidJobError, RecorderError
from recorder.job import Job, RecordingConfig, show_value, validate_job

LAYOUT_FIELDS = ("layout", "theme")  # merged into the job's config and validated with it
PIN_FIELDS = ("pin", "unpin")
CHANGE_FIELDS = (*LAYOUT_FIELDS, *PIN_FIELDS)
_CONFIG_PREFIX = "config."


class LayoutChangeError(InvalidJobError):
    """A refused change: `problems` has one line per bad field, `fields` their paths."""

    code = "INVALID_LAYOUT_CHANGE"

    @property
    def fields(self) -> list[str]:
        return [problem.split(":", 1)[0] for problem in self.problems]


class LayoutChangeTooLateError(RecorderError):
    """The recording is stopping or over: a change now would be in no frame of the file, yet
    in the manifest's `layoutChanges`. Refused (HTTP 409), whatever the body says."""

    code = "RECORDING_STOPPING"


@dataclass(frozen=True, slots=True)
class LayoutChange:
    """A valid change: the new config (None: layout and theme unchanged) and a pin or unpin."""

    config: RecordingConfig | None = None
    pin: str | None = None
    unpin: str | None = None


def parse_layout_change(body: object, job: Job, current: RecordingConfig) -> LayoutChange:
    """The change `body` asks for, applied to the `current` config; `LayoutChangeError` if not."""
    if not isinstance(body, dict):
        raise LayoutChangeError([f"body: {show_value(body)} is not a JSON object"])
    problems = [
        f"body: unknown field {show_value(key)}; allowed: {', '.join(CHANGE_FIELDS)}"
        for key in body
        if key not in CHANGE_FIELDS
    ]
    if not problems and not any(key in body for key in CHANGE_FIELDS):
        problems.append(f"body: names no change; allowed: {', '.join(CHANGE_FIELDS)}")
    pins: dict[str, str | None] = {}
    for key in PIN_FIELDS:
        value = body.get(key)
        if key in body and (not isinstance(value, str) or not value):
            problems.append(f"{key}: {show_value(value)} is not a participant id (a string)")
        pins[key] = value if isinstance(value, str) and value else None
    config = None
    if any(key in body for key in LAYOUT_FIELDS):
        try:
            config = _changed_config(body, job, current)
        except InvalidJobError as error:
            problems += [_request_path(problem) for problem in error.problems]
    if problems:
        raise LayoutChangeError(problems)
    return LayoutChange(config=config, pin=pins["pin"], unpin=pins["unpin"])


def _changed_config(body: dict[str, Any], job: Job, current: RecordingConfig) -> RecordingConfig:
    data = job.to_canonical_dict(include_secrets=True)
    config = current.model_dump(mode="json", by_alias=True)
    layout = body.get("layout", {})
    config["layout"] = {**config["layout"], **layout} if isinstance(layout, dict) else layout
    if "theme" in body:
        config["theme"] = body["theme"]
    data["config"] = config
    return validate_job(data).config


def _request_path(problem: str) -> str:
    """A job problem line, named as the request names the field (`layout.type`, not
    `config.layout.type`)."""
    return problem.removeprefix(_CONFIG_PREFIX)
