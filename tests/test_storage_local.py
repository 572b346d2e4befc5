"""The local directory sink: same keys, atomic publication, verification, no way out of the root."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest
from servers import GrowingSpool

from recorder.errors import StorageError
from recorder.storage.delivery import RecordingDelivery
from recorder.storage.from_env import DEFAULT_OUTPUT_DIR, sink_from_env
from recorder.storage.keys import DeliveryTarget, UnsafeKeyError
from recorder.storage.local import COPY_CHUNK_BYTES, LocalSink
from recorder.storage.sidecar import read_sidecar, sidecar_path
from recorder.storage.spool import SpoolProgress

MIB = 1024 * 1024
WAIT_S = 10.0


def hidden_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if p.is_file()]


async def wait_until_copied(directory: Path, size: int) -> Path:
    """The temporary file once it holds `size` bytes (bounded polling of the disk)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            for temp in hidden_files(directory):
                if temp.stat().st_size >= size:
                    return temp
            await asyncio.sleep(0.01)


async def test_the_copy_grows_hidden_and_appears_whole_under_its_final_name(
    tmp_path: Path,
) -> None:
    root = tmp_path / "out"
    spool_path = tmp_path / "spool" / "rec-1.mp4"
    spool_path.parent.mkdir()
    progress = SpoolProgress()
    spool = GrowingSpool(spool_path, progress, seed=11)
    target = DeliveryTarget.for_media_key("a/b/rec-1.mp4")
    delivery = RecordingDelivery(LocalSink(root), spool_path, target, progress)
    await delivery.start({"recordingId": "rec-1", "stoppedAt": None})
    spool.header()
    spool.fragment(3 * MIB)
    # While recording: the bytes are being copied, but only under a hidden temporary name.
    temp = await wait_until_copied(root, 3 * MIB)
    final = root / "a" / "b" / "rec-1.mp4"
    assert not final.exists()
    assert temp.parent == final.parent and temp.name.startswith(".rec-1.mp4.")

    spool.fragment(500_000)
    spool.close()
    expected = spool.content()
    delivered = await delivery.finish({"recordingId": "rec-1", "stoppedAt": "2026-11-24T14:01Z"})
    assert final.read_bytes() == expected
    assert hidden_files(root) == []  # no temporary file left
    assert delivered.media.sha256_hex == hashlib.sha256(expected).hexdigest()
    assert delivered.media.url == final.as_uri()
    assert delivered.media.verified == ("size", "sha256", "spool")
    document = json.loads((root / "a" / "b" / "rec-1.json").read_text())
    assert document["output"]["sizeBytes"] == len(expected)
    assert document["stoppedAt"] == "2026-11-24T14:01Z"
    assert not spool_path.exists() and not sidecar_path(spool_path).exists()


async def test_a_failed_copy_leaves_no_file_and_keeps_the_spool(tmp_path: Path) -> None:
    root = tmp_path / "out"
    spool_path = tmp_path / "rec-2.mp4"
    progress = SpoolProgress()
    spool = GrowingSpool(spool_path, progress, seed=12)
    spool.header()
    spool.fragment(2 * COPY_CHUNK_BYTES)
    progress.finish(spool.size + 10_000)  # claims bytes the file does not hold
    target = DeliveryTarget.for_media_key("rec-2.mp4")
    delivery = RecordingDelivery(LocalSink(root), spool_path, target, progress)
    await delivery.start(None)
    with pytest.raises(StorageError) as raised:
        await delivery.finish({"recordingId": "rec-2", "stoppedAt": "2026-11-24T14:01Z"})
    assert raised.value.local_path == str(spool_path)
    assert "fewer than" in raised.value.message
    assert not (root / "rec-2.mp4").exists()
    assert not (root / "rec-2.json").exists()
    assert hidden_files(root) == []
    assert spool_path.exists()
    sidecar = read_sidecar(spool_path)
    assert sidecar is not None and sidecar.manifest is not None


async def test_a_changed_spool_is_not_published(tmp_path: Path) -> None:
    root = tmp_path / "out"
    progress = SpoolProgress()
    spool = GrowingSpool(tmp_path / "rec-3.mp4", progress, seed=13)
    spool.header()
    spool.fragment(2 * MIB)
    store = asyncio.create_task(
        LocalSink(root).store_spool(spool.path, progress, "rec-3.mp4", content_type="video/mp4")
    )
    await wait_until_copied(root, 2 * MIB)
    with spool.path.open("r+b") as file:  # rewritten below the watermark, after it was copied
        file.seek(50)
        file.write(b"\x00" * 8)
    spool.close()
    with pytest.raises(StorageError, match="changed"):
        await store
    assert not (root / "rec-3.mp4").exists()


async def test_replacing_a_file_is_atomic(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    first = await sink.store_bytes(b'{"v": 1}', "m/r.json", content_type="application/json")
    second = await sink.store_bytes(b'{"v": 2}', "m/r.json", content_type="application/json")
    assert (tmp_path / "m" / "r.json").read_bytes() == b'{"v": 2}'
    assert first.sha256_hex != second.sha256_hex
    assert hidden_files(tmp_path) == []
    found = await sink.find("m/r.json")
    assert found is not None and found.size_bytes == 8
    assert await sink.find("m/none.json") is None


async def test_keys_cannot_leave_the_output_directory(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")  # a folder inside that points elsewhere
    sink = LocalSink(root)
    for key in ("../evil.json", "a/../../evil.json", "/etc/evil.json", "link/evil.json"):
        with pytest.raises(UnsafeKeyError):
            await sink.store_bytes(b"x", key, content_type="application/json")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "evil.json").exists()


def test_sink_from_env_writes_locally_without_a_bucket(tmp_path: Path) -> None:
    sink = sink_from_env({"RECORDER_OUTPUT_DIR": str(tmp_path)})
    assert isinstance(sink, LocalSink) and sink.root == tmp_path
    default = sink_from_env({})
    assert isinstance(default, LocalSink) and default.root == Path(DEFAULT_OUTPUT_DIR)
