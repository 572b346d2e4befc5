"""Object keys and local paths: `<awsDirPath>/<recordingId>.mp4|.m4a|.json`, never outside it.

The job already normalises `awsDirPath` and checks `recordingId` (recorder/job.py); the storage
checks again where a key is used (defence in depth), because a key also arrives from the command
line (`recorder upload --key`) and from a sidecar file on disk, and because the local sink turns a
key into a path where `..` or a symlink could climb out of the output directory.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from recorder.errors import Fault, RecorderError
from recorder.job import INVISIBLE_CATEGORIES, RECORDING_ID_PATTERN, normalize_aws_dir_path

if TYPE_CHECKING:
    from recorder.job import Job

MEDIA_CONTENT_TYPES: dict[str, str] = {".mp4": "video/mp4", ".m4a": "audio/mp4"}
MANIFEST_EXTENSION = ".json"
MANIFEST_CONTENT_TYPE = "application/json"
MAX_KEY_BYTES = 1024  # S3's limit on an object key


class UnsafeKeyError(RecorderError, ValueError):
    """A key that could escape its prefix or the output directory; refused, never repaired."""

    code = "UNSAFE_KEY"
    fault = Fault.CALLER


def check_key(key: str, *, prefix: str = "") -> str:
    """`key` itself when it is a plain relative key under `prefix`, else `UnsafeKeyError`.

    A plain key has non-empty segments, none of them `.` or `..`, no backslash and no control
    characters, at most `MAX_KEY_BYTES`; under `prefix` means it starts with `prefix/`.
    """
    if not key or key.startswith("/") or "\\" in key:
        raise UnsafeKeyError(f"key {key!r} is not a relative '/'-separated key")
    if any(unicodedata.category(char) == "Cc" for char in key):
        raise UnsafeKeyError(f"key {key!r} holds control characters")
    if any(unicodedata.category(char) in INVISIBLE_CATEGORIES for char in key):
        raise UnsafeKeyError(f"key {key!r} holds invisible formatting characters")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafeKeyError(f"key {key!r} is not valid UTF-8 text") from None
    if size > MAX_KEY_BYTES:
        raise UnsafeKeyError(f"key {key!r} is longer than {MAX_KEY_BYTES} bytes")
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise UnsafeKeyError(f"key {key!r} has an empty, '.' or '..' segment")
    if prefix:
        check_key(prefix)
        if not key.startswith(prefix + "/"):
            raise UnsafeKeyError(f"key {key!r} is not under the prefix {prefix!r}")
    return key


def media_key(prefix: str, recording_id: str, extension: str) -> str:
    """The media file's key, `<prefix>/<recording_id><extension>`, checked.

    The job builds the same key (`Job.media_key()`); this is the storage's own check of it and
    the way to build one without a job (`recorder upload --key`).
    """
    if extension not in MEDIA_CONTENT_TYPES:
        raise UnsafeKeyError(f"extension {extension!r} is not one of {sorted(MEDIA_CONTENT_TYPES)}")
    return _key(prefix, recording_id, extension)


def manifest_key_for(media_key_: str) -> str:
    """The manifest's key next to a media key: `P/R.mp4` → `P/R.json`."""
    path = PurePosixPath(check_key(media_key_))
    if path.suffix not in MEDIA_CONTENT_TYPES:
        raise UnsafeKeyError(f"key {media_key_!r} is not a media key (.mp4 or .m4a)")
    return check_key(str(path.with_suffix(MANIFEST_EXTENSION)))


def split_media_key(key: str) -> tuple[str, str, str]:
    """`(prefix, recording_id, extension)` of a media key, each part checked like the job's."""
    path = PurePosixPath(check_key(key))
    prefix = "" if str(path.parent) == "." else str(path.parent)
    _key(prefix, path.stem, path.suffix)  # refuses what a job would refuse
    if path.suffix not in MEDIA_CONTENT_TYPES:
        raise UnsafeKeyError(f"key {key!r} is not a media key (.mp4 or .m4a)")
    return prefix, path.stem, path.suffix


def content_type_for(key: str) -> str:
    """`video/mp4`, `audio/mp4` or `application/json`, from the key's extension."""
    suffix = PurePosixPath(key).suffix
    if suffix == MANIFEST_EXTENSION:
        return MANIFEST_CONTENT_TYPE
    try:
        return MEDIA_CONTENT_TYPES[suffix]
    except KeyError:
        raise UnsafeKeyError(f"key {key!r} has no known content type") from None


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """Where one recording goes: its media key, the manifest's key next to it, the content type."""

    recording_id: str
    media_key: str
    manifest_key: str
    content_type: str

    @classmethod
    def for_media_key(cls, key: str, *, recording_id: str | None = None) -> DeliveryTarget:
        """The target of a media key `<prefix>/<recordingId>.mp4|.m4a`, every part checked."""
        _prefix, stem, _extension = split_media_key(key)
        if recording_id is not None and recording_id != stem:
            raise UnsafeKeyError(f"key {key!r} does not name the recording {recording_id!r}")
        return cls(
            recording_id=stem,
            media_key=key,
            manifest_key=manifest_key_for(key),
            content_type=content_type_for(key),
        )

    @classmethod
    def for_job(cls, job: Job) -> DeliveryTarget:
        """The job's keys (`Job.media_key()`), checked again to lie under its `awsDirPath`."""
        key = check_key(job.media_key(), prefix=job.aws_dir_path)
        target = cls.for_media_key(key, recording_id=job.recording_id)
        if target.manifest_key != job.manifest_key():
            raise UnsafeKeyError(
                f"manifest key {job.manifest_key()!r} does not sit next to {key!r}"
            )
        return target


def local_path_for(root: Path, key: str) -> Path:
    """Where `key` lives under the local output directory `root`, refusing any way out of it.

    Symlinks are resolved: a directory inside `root` that links elsewhere is refused too.
    """
    check_key(key)
    base = root.resolve()
    path = base.joinpath(*key.split("/"))
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        raise UnsafeKeyError(f"key {key!r} leads outside {os.fspath(base)!r}")
    return resolved


def _key(prefix: str, recording_id: str, extension: str) -> str:
    try:
        normalized = normalize_aws_dir_path(prefix)
    except ValueError as error:  # the job's validator raises a pydantic error (a ValueError)
        raise UnsafeKeyError(f"prefix {prefix!r} is not a safe key prefix: {error}") from None
    if normalized != prefix:
        raise UnsafeKeyError(f"prefix {prefix!r} is not normalised (expected {normalized!r})")
    if not re.fullmatch(RECORDING_ID_PATTERN, recording_id, flags=re.ASCII):
        raise UnsafeKeyError(f"recording id {recording_id!r} is not a safe id")
    name = f"{recording_id}{extension}"
    key = f"{prefix}/{name}" if prefix else name
    return check_key(key, prefix=prefix)
