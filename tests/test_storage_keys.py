"""Keys never escape their prefix; the sidecar and the spool progress behave as documented."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.errors import StorageError
from recorder.job import validate_job
from recorder.storage.atomic import write_atomically
from recorder.storage.keys import (
    DeliveryTarget,
    UnsafeKeyError,
    check_key,
    content_type_for,
    local_path_for,
    manifest_key_for,
    media_key,
)
from recorder.storage.sidecar import Sidecar, read_sidecar, sidecar_path, write_sidecar
from recorder.storage.spool import SpoolProgress, SpoolReader

ROOM = {"connector": "loopback", "url": "ws://127.0.0.1:1/room", "roomId": "r"}


def test_keys_of_a_job_follow_the_contract() -> None:
    job = validate_job({"recordingId": "rec-1", "awsDirPath": "/team/2026/", "room": ROOM})
    target = DeliveryTarget.for_job(job)
    assert target.media_key == "team/2026/rec-1.mp4"
    assert target.manifest_key == "team/2026/rec-1.json"
    assert target.content_type == "video/mp4"
    audio = validate_job({"recordingId": "a", "config": {"mode": "audio"}, "room": ROOM})
    assert DeliveryTarget.for_job(audio).media_key == "a.m4a"
    assert DeliveryTarget.for_job(audio).content_type == "audio/mp4"


def test_key_building_and_content_types() -> None:
    assert media_key("", "r", ".mp4") == "r.mp4"
    assert media_key("a/b", "r", ".m4a") == "a/b/r.m4a"
    assert manifest_key_for("a/b/r.m4a") == "a/b/r.json"
    assert content_type_for("x/r.mp4") == "video/mp4"
    assert content_type_for("x/r.m4a") == "audio/mp4"
    assert content_type_for("x/r.json") == "application/json"
    with pytest.raises(UnsafeKeyError):
        content_type_for("x/r.exe")


@pytest.mark.parametrize(
    "key",
    [
        "../r.mp4",
        "a/../../r.mp4",
        "./r.mp4",
        "a//r.mp4",
        "/r.mp4",
        "a\\..\\r.mp4",
        "a/\x00/r.mp4",
        "a/\n/r.mp4",
        "",
        "a/" * 600 + "r.mp4",
    ],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        check_key(key)


@pytest.mark.parametrize(
    ("prefix", "recording_id", "extension"),
    [
        ("..", "r", ".mp4"),
        ("a/..", "r", ".mp4"),
        ("/a", "r", ".mp4"),  # not normalised: the job drops the slash, keys do not repair
        ("a", "../r", ".mp4"),
        ("a", ".hidden", ".mp4"),
        ("a", "r", ".sh"),
    ],
)
def test_media_keys_refuse_what_a_job_would(prefix: str, recording_id: str, extension: str) -> None:
    with pytest.raises(UnsafeKeyError):
        media_key(prefix, recording_id, extension)


def test_a_key_outside_its_prefix_is_refused() -> None:
    assert check_key("p/q/r.mp4", prefix="p/q") == "p/q/r.mp4"
    with pytest.raises(UnsafeKeyError):
        check_key("p/qr.mp4", prefix="p/q")
    with pytest.raises(UnsafeKeyError):
        check_key("other/r.mp4", prefix="p")


@given(st.text(max_size=40))
def test_no_accepted_key_climbs_out_of_the_output_directory(key: str) -> None:
    root = Path("/srv/recordings")
    try:
        path = local_path_for(root, key)
    except UnsafeKeyError:
        return
    assert path.is_relative_to(root)
    assert ".." not in Path(key).parts


def test_the_media_key_given_on_the_command_line_is_checked_like_a_job() -> None:
    assert DeliveryTarget.for_media_key("x/r-1.mp4").recording_id == "r-1"
    for bad in ("x/../r.mp4", "x/r.json", "x/.r.mp4", "r.txt"):
        with pytest.raises(UnsafeKeyError):
            DeliveryTarget.for_media_key(bad)
    with pytest.raises(UnsafeKeyError):
        DeliveryTarget.for_media_key("x/r.mp4", recording_id="other")


def test_the_sidecar_round_trips_and_refuses_tampered_keys(tmp_path: Path) -> None:
    spool = tmp_path / "r.mp4"
    target = DeliveryTarget.for_media_key("p/r.mp4")
    write_sidecar(spool, Sidecar(target, {"recordingId": "r"}))
    assert sidecar_path(spool) == tmp_path / "r.mp4.job.json"
    assert read_sidecar(spool) == Sidecar(target, {"recordingId": "r"})
    assert read_sidecar(tmp_path / "none.mp4") is None
    raw = sidecar_path(spool).read_text().replace("p/r.mp4", "../r.mp4")
    sidecar_path(spool).write_text(raw)
    with pytest.raises(StorageError, match="not valid"):
        read_sidecar(spool)
    sidecar_path(spool).write_text("{not json")
    with pytest.raises(StorageError, match="not valid"):
        read_sidecar(spool)


def test_atomic_write_leaves_the_old_content_when_it_fails(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_atomically(path, b"old")
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


async def test_progress_wakes_a_waiter_from_another_thread() -> None:
    progress = SpoolProgress()
    waiter = asyncio.create_task(progress.wait_until(100))
    await asyncio.sleep(0)
    assert not waiter.done()
    thread = threading.Thread(target=progress.advance, args=(150,))
    thread.start()
    thread.join()
    async with asyncio.timeout(5):
        assert await waiter == (150, False)
    progress.advance(120)  # stale reports never lower the watermark
    assert progress.durable_bytes == 150
    finisher = threading.Thread(target=progress.finish, args=(180,))
    finisher.start()
    finisher.join()
    async with asyncio.timeout(5):
        assert await progress.wait_finished() == 180
    fresh = SpoolProgress()
    fresh.advance(10)
    with pytest.raises(ValueError):
        fresh.finish(5)  # a final size below what was reported durable is a bug upstream


async def test_the_reader_gives_whole_chunks_then_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "s"
    data = bytes(range(256)) * 10
    path.write_bytes(data)
    reader = SpoolReader(path, SpoolProgress.complete(len(data)))
    chunks = [chunk async for chunk in reader.chunks(1000)]
    assert [len(c.data) for c in chunks] == [1000, 1000, 560]
    assert [c.offset for c in chunks] == [0, 1000, 2000]
    assert b"".join(c.data for c in chunks) == data
    empty = tmp_path / "e"
    empty.write_bytes(b"")
    chunks = [c async for c in SpoolReader(empty, SpoolProgress.complete(0)).chunks(1000)]
    assert [c.data for c in chunks] == [b""]  # an empty spool still gives one (empty) object
