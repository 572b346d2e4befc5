"""The job a worker is launched with (CONTRACT.md §1–2): its model, its validation, its loading.

A job arrives as JSON from a caller we do not control, so everything is refused before the worker
joins a room unless it follows the contract exactly: unknown keys, wrong types and out-of-range
values are all reported at once, one line per problem, each naming the field path, the bad value
and what is allowed. Valid jobs become frozen models whose defaults are applied and whose enum
values are in canonical form; `Job.to_canonical_json()` is the config as applied.

`RecordingConfig` (the caller's `config`) stands alone so offline tools (`recorder render`, tests)
can build one without a room. The models use the contract's camelCase keys for JSON and
snake_case attribute names in Python; JSON input is matched by camelCase key only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Annotated, Any, TextIO
from urllib.parse import urlsplit

import annotated_types
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from layouts.model import (
    DEFAULT_GRID_SIZE,
    MAX_GRID_SIZE,
    LayoutSpec,
    LayoutType,
    Orientation,
    Priority,
    Size,
    Theme,
)
from recorder.errors import InvalidJobError
from recorder.presets import PRESETS, Mode, Preset, Quality

log = logging.getLogger(__name__)

JOB_ENV_VAR = "RECORDER_JOB"
STDIN_SOURCE = "-"

# The room technologies a job may name. A connector module adds its name here; the job is
# validated before any connector is imported (start latency), so this cannot be a registry that
# connectors fill at import time.
ROOM_CONNECTORS: tuple[str, ...] = ("loopback", "janus")

DEFAULT_MAX_DURATION_S = 4 * 60 * 60
MAX_DURATION_LIMIT_S = 24 * 60 * 60  # a recording longer than a day is a forgotten stop
DEFAULT_EMPTY_ROOM_TIMEOUT_S = 60
MAX_EMPTY_ROOM_TIMEOUT_S = MAX_DURATION_LIMIT_S

# recordingId becomes part of an object key and a local file name: a safe ASCII charset, starting
# with a letter or digit so it is never `.`, `..` or a hidden file.
RECORDING_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# With a 128-character id and its extension, a 512-byte prefix keeps every key well inside S3's
# 1024-byte limit.
MAX_AWS_DIR_PATH_BYTES = 512
MAX_URL_CHARS = 2048
MAX_ROOM_ID_CHARS = 256
MAX_ROOM_ID_INT = 2**64 - 1  # room ids that are numbers are unsigned 64-bit (Janus VideoRoom)
MAX_TOKEN_CHARS = 8192
MAX_JOB_SIZE_BYTES = 1_000_000  # a job is a few hundred bytes; refuse to parse a runaway input
MAX_SHOWN_VALUE_CHARS = 60  # longer values are cut in error lines

WEBHOOK_URL_SCHEMES = ("http", "https")
AWS_DIR_PATH_RULE = (
    "a relative '/'-separated path with no empty, '.' or '..' segments (nor look-alikes of them), "
    "no backslashes, control or invisible formatting characters (bidi overrides, zero-width), "
    f"at most {MAX_AWS_DIR_PATH_BYTES} bytes of UTF-8 (stored in Unicode NFC)"
)
# Characters that change how a key reads without being seen: bidi overrides and isolates,
# zero-width spaces and joiners, the byte order mark (category Cf); line and paragraph
# separators (Zl, Zp), which break a log line as a newline does.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Zl", "Zp"})
# Characters drawn like a slash or a backslash that no normalisation turns into one: in a key
# they would show a folder that is not there.
SLASH_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u2216\u29f9")
ENUM_NOTE = "Enum values are matched case-insensitively and echoed back in canonical form."

_PROBLEM_ERROR_TYPE = "job_value"  # our own validators' errors: ctx["problem"] is the whole line


# --- showing values and raising problems ---------------------------------------------------------


def show_value(value: object) -> str:
    """The value as an error line shows it: its repr, cut to `MAX_SHOWN_VALUE_CHARS`."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int past Python's digit limit, a very deep list
        text = f"<{type(value).__name__}>"
    if len(text) > MAX_SHOWN_VALUE_CHARS:
        text = text[: MAX_SHOWN_VALUE_CHARS - 3] + "..."
    return text


def _problem(value: object, reason: str) -> PydanticCustomError:
    # The template is only a placeholder so that braces in the value cannot be taken as fields.
    return PydanticCustomError(
        _PROBLEM_ERROR_TYPE, "{problem}", {"problem": f"{show_value(value)} {reason}"}
    )


def _is_valid_text(text: str) -> bool:
    """False for strings that cannot be written as UTF-8 (JSON lets `\\ud800` through)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def _check_text(value: object, rule: str, *, max_chars: int, allow_spaces: bool = True) -> str:
    """A non-empty, printable, UTF-8-encodable string of at most `max_chars`, or a problem."""
    if not isinstance(value, str):
        raise _problem(value, f"is not a string; allowed: {rule}")
    if not value:
        raise _problem(value, f"is empty; allowed: {rule}")
    if len(value) > max_chars:
        raise _problem(value, f"is longer than {max_chars} characters; allowed: {rule}")
    if not _is_valid_text(value) or _has_control_characters(value):
        raise _problem(value, f"holds control or invalid characters; allowed: {rule}")
    if not allow_spaces and any(char.isspace() for char in value):
        raise _problem(value, f"holds whitespace; allowed: {rule}")
    return value


# --- field validators ----------------------------------------------------------------------------


def _case_insensitive_choice(canonical: Mapping[str, object]) -> Callable[[object], object]:
    """A validator that maps any ASCII casing of a choice to its canonical value.

    `canonical` maps each choice's lower-case spelling to what the field holds (an enum member
    or a string). Only ASCII case is folded, so look-alikes such as `ſ` for `s` stay refused.
    """
    allowed = ", ".join(str(choice) for choice in canonical.values())

    def check(value: object) -> object:
        if isinstance(value, str) and value.isascii() and value.lower() in canonical:
            return canonical[value.lower()]
        raise _problem(value, f"is not one of {allowed}")

    return check


def _enum_field(enum: type[StrEnum]) -> BeforeValidator:
    return BeforeValidator(_case_insensitive_choice({member.lower(): member for member in enum}))


def _check_recording_id(value: object) -> str:
    rule = "1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
    if not isinstance(value, str):
        raise _problem(value, f"is not a string; allowed: {rule}")
    if not re.fullmatch(RECORDING_ID_PATTERN, value, flags=re.ASCII):
        raise _problem(value, f"is not a safe id; allowed: {rule}")
    return value


def _check_webhook_url(value: object) -> str | None:
    """An absolute http(s) URL with a host, kept as given.

    Whether its host is a private address is checked when a webhook is delivered (the address
    can change between now and then), not here.
    """
    if value is None:
        return None
    rule = f"an http or https URL with a host, at most {MAX_URL_CHARS} characters"
    url = _check_text(value, rule, max_chars=MAX_URL_CHARS, allow_spaces=False)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise _problem(value, f"is not a URL; allowed: {rule}") from None
    if parts.scheme.lower() not in WEBHOOK_URL_SCHEMES:
        raise _problem(value, f"is not an http or https URL; allowed: {rule}")
    if not parts.hostname:
        raise _problem(value, f"has no host; allowed: {rule}")
    return url


def normalize_aws_dir_path(value: object) -> str:
    """The key prefix with one leading and one trailing `/` dropped, or a problem.

    The prefix is joined to object keys in S3 and to a directory in the local sink, so anything
    that could climb out of it (`..`), be read differently by another tool (`\\`, `.`, empty
    segments) or break a log line (control characters) is refused rather than repaired.
    """
    if not isinstance(value, str):
        raise _problem(value, f"is not a string; allowed: {AWS_DIR_PATH_RULE}")
    if not _is_valid_text(value) or _has_control_characters(value):
        raise _problem(value, f"holds control or invalid characters; allowed: {AWS_DIR_PATH_RULE}")
    if any(unicodedata.category(char) in INVISIBLE_CATEGORIES for char in value):
        raise _problem(
            value, f"holds invisible formatting characters; allowed: {AWS_DIR_PATH_RULE}"
        )
    if "\\" in value:
        raise _problem(value, f"holds a backslash; allowed: {AWS_DIR_PATH_RULE}")
    # One spelling per name: "é" composed and decomposed would otherwise be two folders that
    # look the same.
    value = unicodedata.normalize("NFC", value)
    if value in ("", "/"):
        return ""  # the bucket root
    segments = value.split("/")
    # A leading `/` gives an empty first segment and a trailing one an empty last: both are
    # dropped. Any other empty segment is a `//`.
    if segments[0] == "":
        segments = segments[1:]
    if segments[-1] == "":
        segments = segments[:-1]
    for segment in segments:
        if segment == "":
            raise _problem(value, f"has an empty segment; allowed: {AWS_DIR_PATH_RULE}")
        if segment in (".", ".."):
            raise _problem(value, f"has a {segment!r} segment; allowed: {AWS_DIR_PATH_RULE}")
        # A tool that folds compatibility characters (NFKC) would read "‥" as "..", "．" as "."
        # and "／" as "/": refused, so no reader can see a traversal or another folder in it.
        folded = unicodedata.normalize("NFKC", segment)
        if folded in (".", "..") or any(c in SLASH_LOOKALIKES or c in "/\\" for c in folded):
            raise _problem(
                value,
                f"has a segment {segment!r} that reads as {folded!r}; allowed: {AWS_DIR_PATH_RULE}",
            )
    normalized = "/".join(segments)
    if len(normalized.encode("utf-8")) > MAX_AWS_DIR_PATH_BYTES:
        raise _problem(
            value, f"is longer than {MAX_AWS_DIR_PATH_BYTES} bytes; allowed: {AWS_DIR_PATH_RULE}"
        )
    return normalized


def _check_room_url(value: object) -> str:
    return _check_text(
        value,
        f"a non-empty string without whitespace, at most {MAX_URL_CHARS} characters",
        max_chars=MAX_URL_CHARS,
        allow_spaces=False,
    )


def _check_room_id(value: object) -> str | int:
    rule = (
        f"a non-empty string of at most {MAX_ROOM_ID_CHARS} characters, "
        f"or an integer from 0 to {MAX_ROOM_ID_INT}"
    )
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_ROOM_ID_INT:
            raise _problem(value, f"is out of range; allowed: {rule}")
        return value
    if isinstance(value, str):
        return _check_text(value, rule, max_chars=MAX_ROOM_ID_CHARS)
    raise _problem(value, f"is not a string or an integer; allowed: {rule}")


def _check_token(value: object) -> object:
    if value is None or isinstance(value, SecretStr):
        return value
    return _check_text(
        value,
        f"a non-empty string of at most {MAX_TOKEN_CHARS} characters, or null for none",
        max_chars=MAX_TOKEN_CHARS,
    )


# --- models --------------------------------------------------------------------------------------


class _JobPart(BaseModel):
    """Common settings: frozen, unknown keys refused, no type coercion, camelCase JSON keys."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        field_title_generator=lambda name, _info: to_camel(name),
        validate_by_alias=True,
        validate_by_name=True,  # Python code builds parts by attribute name; JSON is by alias
    )


class LayoutConfig(_JobPart):
    """How participants are placed on the canvas."""

    type: Annotated[LayoutType, _enum_field(LayoutType)] = Field(
        default=LayoutType.GRID,
        description="GRID: equal tiles; SPOTLIGHT: one large tile; SIDEBAR: a large tile with "
        "the others stacked beside it.",
    )
    priority: Annotated[Priority, _enum_field(Priority)] = Field(
        default=Priority.SPEAKER,
        description="Who gets the visible places when more people are present than fit: the "
        "most recent speakers (SPEAKER) or the pinned participants first (PIN).",
    )
    grid_size: Annotated[int, Field(ge=1, le=MAX_GRID_SIZE)] = Field(
        default=DEFAULT_GRID_SIZE,
        description="The most participant tiles visible at once (an integer).",
    )


class RecordingConfig(_JobPart):
    """The caller's `config`: what the recording looks like and how good it is."""

    layout: LayoutConfig = Field(default=LayoutConfig(), description="The layout.")
    theme: Annotated[Theme, _enum_field(Theme)] = Field(
        default=Theme.DEFAULT, description="Colours of the background, tiles and labels."
    )
    mode: Annotated[Mode, _enum_field(Mode)] = Field(
        default=Mode.VIDEO_AND_AUDIO,
        description="video-and-audio: an MP4 with the composite and the mix; audio: an M4A "
        "with the mix only.",
    )
    quality: Annotated[Quality, _enum_field(Quality)] = Field(
        default=Quality.MED,
        description="low: 854x480, med: 1280x720, high: 1920x1080 (landscape), 30 fps.",
    )
    orientation: Annotated[Orientation, _enum_field(Orientation)] = Field(
        default=Orientation.LANDSCAPE,
        description="The canvas' orientation; portrait is the landscape canvas turned.",
    )

    def layout_spec(self) -> LayoutSpec:
        """The layout choice in the layouts package's own vocabulary."""
        return LayoutSpec(
            type=self.layout.type,
            priority=self.layout.priority,
            grid_size=self.layout.grid_size,
            theme=self.theme,
        )

    def preset(self) -> Preset:
        """The encoder preset for this quality (CONTRACT.md §5)."""
        return PRESETS[self.quality]

    def canvas(self) -> Size:
        """The output canvas for this quality and orientation."""
        return self.preset().canvas(self.orientation)


class RoomConfig(_JobPart):
    """How the worker joins the room."""

    connector: Annotated[
        str,
        BeforeValidator(_case_insensitive_choice({name.lower(): name for name in ROOM_CONNECTORS})),
    ] = Field(
        description="The room technology.",
        json_schema_extra={"enum": list(ROOM_CONNECTORS)},
    )
    url: Annotated[str, BeforeValidator(_check_room_url)] = Field(
        description="Where the room's signalling is, in the connector's own form.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_URL_CHARS},
    )
    room_id: Annotated[str | int, BeforeValidator(_check_room_id)] = Field(
        description="The room to join: a string or a non-negative integer.",
    )
    token: Annotated[SecretStr | None, BeforeValidator(_check_token)] = Field(
        default=None,
        description="The credential the connector joins with; never echoed back.",
    )
    pin: Annotated[SecretStr | None, BeforeValidator(_check_token)] = Field(
        default=None,
        description="The room's PIN, for rooms that have one (Janus VideoRoom); never echoed back.",
    )


class Limits(_JobPart):
    """When the worker stops on its own."""

    max_duration_sec: Annotated[int, Field(ge=1, le=MAX_DURATION_LIMIT_S)] = Field(
        default=DEFAULT_MAX_DURATION_S,
        description="The recording stops after this many seconds.",
    )
    empty_room_timeout_sec: Annotated[int, Field(ge=0, le=MAX_EMPTY_ROOM_TIMEOUT_S)] = Field(
        default=DEFAULT_EMPTY_ROOM_TIMEOUT_S,
        description="The recording stops when no participant has been present for this many "
        "seconds; 0 turns this stop off (maxDurationSec still applies).",
    )

    @property
    def empty_room_timeout_s(self) -> float | None:
        """The empty-room stop delay, or None when the job turned that stop off."""
        return float(self.empty_room_timeout_sec) if self.empty_room_timeout_sec else None


class Job(_JobPart):
    """One recording: what to record, where to put it, whom to tell.

    Enum values are matched case-insensitively and echoed back in canonical form.
    """

    recording_id: Annotated[str, BeforeValidator(_check_recording_id)] = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="The caller's id for this recording; it names the files. Default: a new "
        "unique id.",
        json_schema_extra={"pattern": RECORDING_ID_PATTERN},
    )
    webhook_url: Annotated[str | None, BeforeValidator(_check_webhook_url)] = Field(
        default=None,
        description="Where each status change is POSTed. Absent or null: no webhook.",
        json_schema_extra={"format": "uri", "maxLength": MAX_URL_CHARS},
    )
    aws_dir_path: Annotated[str, BeforeValidator(normalize_aws_dir_path)] = Field(
        default="",
        description="The key prefix (folder) the files go under: " + AWS_DIR_PATH_RULE + ". "
        "A leading or trailing '/' is dropped. Absent: the bucket root.",
    )
    config: RecordingConfig = Field(
        default=RecordingConfig(), description="What the recording looks like."
    )
    room: RoomConfig = Field(description="How to join the room; required.")
    limits: Limits = Field(default=Limits(), description="When the recording stops on its own.")

    def _key(self, extension: str) -> str:
        name = f"{self.recording_id}{extension}"
        return f"{self.aws_dir_path}/{name}" if self.aws_dir_path else name

    @property
    def media_extension(self) -> str:
        """`.m4a` for an audio-only recording, `.mp4` otherwise (CONTRACT.md §5)."""
        return ".m4a" if self.config.mode is Mode.AUDIO else ".mp4"

    def media_key(self) -> str:
        """The media file's object key: `<awsDirPath>/<recordingId>.mp4` (or `.m4a`)."""
        return self._key(self.media_extension)

    def manifest_key(self) -> str:
        """The manifest's object key: `<awsDirPath>/<recordingId>.json`."""
        return self._key(".json")

    def to_canonical_dict(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """The job as applied: every field, defaults filled in, enums in canonical form.

        The room token is masked unless `include_secrets`, since this is what `recorder
        validate` prints and what the manifest stores next to the recording.
        """
        data = self.model_dump(mode="json", by_alias=True)
        if include_secrets and self.room.token is not None:
            data["room"]["token"] = self.room.token.get_secret_value()
        if include_secrets and self.room.pin is not None:
            data["room"]["pin"] = self.room.pin.get_secret_value()
        return data

    def to_canonical_json(self, *, include_secrets: bool = False) -> str:
        """`to_canonical_dict` as indented JSON, in the contract's field order."""
        return json.dumps(
            self.to_canonical_dict(include_secrets=include_secrets), indent=2, ensure_ascii=False
        )


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of a job, with a note that enum values are case-insensitive."""
    schema = Job.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": ENUM_NOTE + " A recordingId left out is generated.",
        **schema,
    }


# --- translating pydantic's errors into our lines ------------------------------------------------


def _format_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) if loc else "job"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class at a field path of a job, or None where the path leaves the models."""
    model: type[BaseModel] = Job
    for part in loc:
        field = next(
            (f for name, f in model.model_fields.items() if (f.alias or name) == part), None
        )
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return None
        model = field.annotation
    return model


def _field_names(model: type[BaseModel]) -> str:
    return ", ".join(field.alias or name for name, field in model.model_fields.items())


def _integer_rule(loc: tuple[int | str, ...]) -> str:
    """`an integer from LOW to HIGH`, read from the constraints of the field at `loc`."""
    parent = _model_at(loc[:-1])
    field = None
    if parent is not None:
        field = next(
            (f for name, f in parent.model_fields.items() if (f.alias or name) == loc[-1]), None
        )
    low = high = None
    for constraint in field.metadata if field is not None else ():
        if isinstance(constraint, annotated_types.Ge):
            low = constraint.ge
        elif isinstance(constraint, annotated_types.Le):
            high = constraint.le
    if low is not None and high is not None:
        return f"an integer from {low} to {high}"
    return "an integer"


def _problem_line(error: ErrorDetails) -> str:
    loc = tuple(error["loc"])
    path = _format_path(loc)
    kind = error["type"]
    value = error.get("input")
    if kind == _PROBLEM_ERROR_TYPE:
        return f"{path}: {error.get('ctx', {})['problem']}"
    if kind == "missing":
        model = _model_at(loc)
        what = f" (an object with {_field_names(model)})" if model is not None else ""
        return f"{path}: is required{what}"
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = f"; allowed: {_field_names(parent)}" if parent is not None else ""
        return f"{_format_path(loc[:-1])}: unknown field {show_value(loc[-1])}{allowed}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc)
        what = f" with {_field_names(model)}" if model is not None else ""
        return f"{path}: {show_value(value)} is not an object{what}"
    if kind.startswith("int_") or kind in ("greater_than_equal", "less_than_equal"):
        return f"{path}: {show_value(value)} is not {_integer_rule(loc)}"
    # Not reached by the models above; kept so an unforeseen error still names its field.
    return f"{path}: {show_value(value)} is not valid ({kind})"


def problems_of(error: ValidationError) -> list[str]:
    """One line per problem, each `<field path>: <value> <what is wrong>; allowed: <rule>`."""
    return [_problem_line(details) for details in error.errors()]


# --- parsing and loading -------------------------------------------------------------------------


def validate_job(data: object) -> Job:
    """A Job from parsed JSON, or `InvalidJobError` listing every problem at once."""
    if not isinstance(data, dict):
        raise InvalidJobError([f"job: {show_value(data)} is not a JSON object"])
    try:
        return Job.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as error:
        raise InvalidJobError(problems_of(error)) from None


class _NotJsonConstantError(ValueError):
    """Python's json module reads NaN and Infinity; JSON has no such values."""


def _refuse_constant(name: str) -> object:
    raise _NotJsonConstantError(f"{name} is not a JSON value")


def parse_job_json(text: str, *, source: str = "the job") -> Job:
    """A Job from JSON text; `source` names where the text came from in error lines."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_JOB_SIZE_BYTES:
        raise InvalidJobError([f"job: {source} is larger than {MAX_JOB_SIZE_BYTES} bytes"])
    if not text.strip():
        raise InvalidJobError([f"job: {source} is empty"])
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise InvalidJobError(
            [
                f"job: {source} is not valid JSON: {error.msg} at line {error.lineno} "
                f"column {error.colno}"
            ]
        ) from None
    except _NotJsonConstantError as error:
        raise InvalidJobError([f"job: {source} is not valid JSON: {error}"]) from None
    except ValueError:  # Python refuses to convert integers of thousands of digits
        raise InvalidJobError([f"job: {source} holds a number with too many digits"]) from None
    except RecursionError:
        raise InvalidJobError([f"job: {source} is nested too deeply"]) from None
    if not isinstance(data, dict):
        raise InvalidJobError([f"job: {source} holds {show_value(data)}, not a JSON object"])
    return validate_job(data)


def describe_source(source: str | None) -> str:
    """How error lines and logs name a job source."""
    if source is None:
        return f"${JOB_ENV_VAR}"
    if source == STDIN_SOURCE:
        return "standard input"
    return f"file {source!r}"


def _read_file(path: str) -> str:
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_JOB_SIZE_BYTES + 1)
    except OSError as error:
        reason = error.strerror or str(error)
        raise InvalidJobError([f"job: cannot read {describe_source(path)}: {reason}"]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidJobError([f"job: {describe_source(path)} is not UTF-8 text"]) from None


def load_job(
    source: str | None,
    *,
    stdin: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> Job:
    """Read and validate the job from a file path, `-` (standard input), or None (`$RECORDER_JOB`).

    `stdin` and `environ` default to the process's own; tests pass their own.
    """
    described = describe_source(source)
    if source is None:
        env = os.environ if environ is None else environ
        text = env.get(JOB_ENV_VAR)
        if text is None:
            raise InvalidJobError(
                [f"job: no job given: pass a job file, '-' for standard input, or set {described}"]
            )
        log.info("reading the job from %s (no job file given)", described)
    elif source == STDIN_SOURCE:
        stream = sys.stdin if stdin is None else stdin
        try:
            text = stream.read(MAX_JOB_SIZE_BYTES + 1)
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidJobError([f"job: cannot read {described}: {error}"]) from None
    else:
        text = _read_file(source)
    job = parse_job_json(text, source=described)
    log.debug("job %s read from %s", job.recording_id, described)
    return job
