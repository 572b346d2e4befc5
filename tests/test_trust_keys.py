"""awsDirPath and object keys against unicode tricks: what reads as another folder is refused.

tests/test_job.py already covers traversal (`..`, `.`, empty segments), absolute paths, backslashes,
control characters, invalid UTF-8 and the 512-byte limit. Here: what a person reading a key (or a
tool that folds compatibility characters) would read differently from what is stored: bidi
overrides and isolates, zero-width characters, the byte order mark, line separators, composed
and decomposed spellings of one name, and look-alikes of `.`, `..`, `/` and `\\`. The job refuses
them (or, for NFC/NFD, stores one spelling), and the storage's own check (`check_key`, which also
guards `recorder upload --key` and sidecars) refuses the invisible ones too.
"""

from __future__ import annotations

import unicodedata

import pytest

from recorder.errors import InvalidJobError
from recorder.job import MAX_AWS_DIR_PATH_BYTES, validate_job
from recorder.storage.keys import DeliveryTarget, UnsafeKeyError, check_key

ROOM = {"connector": "loopback", "url": "ws://127.0.0.1:1/ws", "roomId": "r"}


def _job(aws_dir_path: object) -> dict[str, object]:
    return {"room": ROOM, "recordingId": "rec-1", "awsDirPath": aws_dir_path}


def _refusal(aws_dir_path: object) -> str:
    with pytest.raises(InvalidJobError) as refused:
        validate_job(_job(aws_dir_path))
    (line,) = refused.value.problems
    assert line.startswith("awsDirPath: "), line
    return line


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("invoices/\u202efdp.exe", "holds invisible formatting characters"),  # RTL override
        ("a\u2066b\u2069", "holds invisible formatting characters"),  # bidi isolate
        ("\u200eleft-to-right mark", "holds invisible formatting characters"),
        ("pay\u200bpal", "holds invisible formatting characters"),  # zero-width space
        ("a\u200db", "holds invisible formatting characters"),  # zero-width joiner
        ("\ufeffbom", "holds invisible formatting characters"),
        ("soft\u00adhyphen", "holds invisible formatting characters"),
        ("line\u2028separator", "holds invisible formatting characters"),
        ("para\u2029separator", "holds invisible formatting characters"),
        ("a/\u2025/b", "that reads as '..'"),  # two-dot leader
        ("\uff0e\uff0e/etc", "that reads as '..'"),  # fullwidth full stops
        ("a/\u2024", "that reads as '.'"),  # one-dot leader
        ("a\uff0fb", "that reads as 'a/b'"),  # fullwidth solidus
        ("a\uff3cb", "that reads as 'a\\\\b'"),  # fullwidth reverse solidus
        ("a\u2215..\u2215b", "that reads as 'a∕..∕b'"),  # division slash: no folding, same look
        ("a\u2044b", "that reads as"),  # fraction slash
    ],
)
def test_aws_dir_path_tricks_are_refused_naming_why(given: str, reason: str) -> None:
    line = _refusal(given)
    assert reason in line, line
    assert "allowed: a relative '/'-separated path" in line


def test_composed_and_decomposed_spellings_are_one_folder() -> None:
    composed, decomposed = "réunions/équipe", unicodedata.normalize("NFD", "réunions/équipe")
    assert composed != decomposed  # the same to the eye, not to S3
    keys = {validate_job(_job(text)).media_key() for text in (composed, decomposed)}
    assert keys == {"réunions/équipe/rec-1.mp4"}
    assert unicodedata.is_normalized("NFC", keys.pop())


def test_over_long_prefixes_are_refused_by_bytes_after_normalisation() -> None:
    # 256 decomposed "é" are 768 bytes, 512 once composed: at the limit, accepted.
    at_limit = unicodedata.normalize("NFD", "é" * (MAX_AWS_DIR_PATH_BYTES // 2))
    assert len(at_limit.encode()) > MAX_AWS_DIR_PATH_BYTES
    assert validate_job(_job(at_limit)).aws_dir_path == "é" * (MAX_AWS_DIR_PATH_BYTES // 2)
    assert "is longer than 512 bytes" in _refusal("€" * 171)  # 513 bytes
    assert "is longer than 512 bytes" in _refusal("/".join(["x" * 100] * 6))


def test_names_that_only_look_unusual_are_still_accepted() -> None:
    for fine in ("会議/録画", "a.b/..x/x..", "2026-11-24/team a", "emoji/🎥", "ﬁle"):
        assert validate_job(_job(fine)).aws_dir_path == unicodedata.normalize("NFC", fine)


@pytest.mark.parametrize(
    "key",
    [
        "a/\u202efdp.mp4",
        "a/b\u200b/rec.mp4",
        "\ufeffrec.mp4",
        "a\u2028b/rec.mp4",
    ],
)
def test_the_storage_refuses_invisible_characters_in_keys_from_anywhere(key: str) -> None:
    with pytest.raises(UnsafeKeyError, match="invisible formatting characters"):
        check_key(key)
    with pytest.raises(UnsafeKeyError):
        DeliveryTarget.for_media_key(key)  # `recorder upload --key`, a sidecar's mediaKey
