"""`recorder upload`: finishing the delivery of a spool left behind, with or without its sidecar."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from servers import GrowingSpool

from recorder.cli import main
from recorder.errors import ExitCode
from recorder.storage.delivery import RecordingDelivery
from recorder.storage.keys import DeliveryTarget
from recorder.storage.local import LocalSink
from recorder.storage.sidecar import Sidecar, sidecar_path, write_sidecar
from recorder.storage.spool import SpoolProgress


@pytest.fixture
def out_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No bucket: `recorder upload` writes to a local output directory."""
    out = tmp_path / "out"
    monkeypatch.delenv("RECORDER_S3_BUCKET", raising=False)
    monkeypatch.setenv("RECORDER_OUTPUT_DIR", str(out))
    return out


def finished_spool(path: Path, *, seed: int, torn: bool = False) -> GrowingSpool:
    spool = GrowingSpool(path, SpoolProgress(), seed=seed)
    spool.header()
    spool.fragment(200_000)
    spool.fragment(150_000)
    if torn:
        spool.torn_fragment(100_000)
    return spool


def test_a_dead_workers_spool_is_stored_up_to_its_last_whole_fragment(
    out_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool_path = tmp_path / "rec-9.mp4"
    spool = finished_spool(spool_path, seed=21, torn=True)
    playable = spool.progress.durable_bytes
    assert spool.size > playable  # the torn fragment is on disk
    target = DeliveryTarget.for_media_key("crash/rec-9.mp4")
    draft = {
        "manifestVersion": 1,
        "recordingId": "rec-9",
        "startedAt": "2026-11-24T14:00:00.000Z",
        "stoppedAt": None,
        "output": {"key": target.media_key},
        "participants": [],
    }

    async def recording_that_dies() -> None:
        delivery = RecordingDelivery(LocalSink(out_dir), spool_path, target, spool.progress)
        await delivery.start(draft)  # the sidecar is written when the recording starts
        await delivery.abandon()  # ... and the worker dies before the stop

    asyncio.run(recording_that_dies())
    expected = spool.content()[:playable]
    assert main(["upload", str(spool_path)]) == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    stored = out_dir / "crash" / "rec-9.mp4"
    assert stored.read_bytes() == expected
    assert report["sizeBytes"] == playable and report["mediaKey"] == "crash/rec-9.mp4"
    manifest = json.loads((out_dir / "crash" / "rec-9.json").read_text())
    assert manifest["recovered"] is True
    assert manifest["stoppedAt"] is not None and manifest["durationS"] is not None
    assert manifest["output"]["sizeBytes"] == playable
    assert not spool_path.exists() and not sidecar_path(spool_path).exists()


def test_without_a_sidecar_the_key_or_the_job_says_where_it_goes(
    out_dir: Path, tmp_path: Path
) -> None:
    by_key = tmp_path / "a.mp4"
    finished_spool(by_key, seed=22)
    assert main(["upload", str(by_key), "--key", "k/rec-a.mp4"]) == ExitCode.OK
    assert (out_dir / "k" / "rec-a.mp4").exists()
    assert json.loads((out_dir / "k" / "rec-a.json").read_text())["recordingId"] == "rec-a"

    by_job = tmp_path / "b.mp4"
    finished_spool(by_job, seed=23)
    job_file = tmp_path / "job.json"
    job_file.write_text(
        json.dumps(
            {
                "recordingId": "rec-b",
                "awsDirPath": "/from/job/",
                "config": {"mode": "audio"},
                "room": {"connector": "loopback", "url": "ws://127.0.0.1:1", "roomId": "r"},
            }
        )
    )
    assert main(["upload", str(by_job), "--job", str(job_file)]) == ExitCode.OK
    assert (out_dir / "from" / "job" / "rec-b.m4a").exists()
    # Idempotent: the same command again finds it delivered.
    assert main(["upload", str(by_job), "--job", str(job_file)]) == ExitCode.OK


def test_refusals_and_failures_have_their_exit_codes(
    out_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool_path = tmp_path / "c.mp4"
    finished_spool(spool_path, seed=24)
    assert main(["upload", str(spool_path)]) == ExitCode.FAILED
    assert "pass --job or --key" in capsys.readouterr().err
    assert main(["upload", str(spool_path), "--key", "../escape.mp4"]) == ExitCode.INVALID_JOB
    assert "invalid key" in capsys.readouterr().err
    bad_job = tmp_path / "bad.json"
    bad_job.write_text('{"recordingId": "../x"}')
    assert main(["upload", str(spool_path), "--job", str(bad_job)]) == ExitCode.INVALID_JOB
    assert spool_path.exists()  # nothing refused touched the spool

    not_media = tmp_path / "d.mp4"
    not_media.write_bytes(b"\x00\x00\x00\x01junk" * 100)
    write_sidecar(not_media, Sidecar(DeliveryTarget.for_media_key("d.mp4")))
    assert main(["upload", str(not_media)]) == ExitCode.FAILED
    assert "not a recording" in capsys.readouterr().err
    assert not (out_dir / "d.mp4").exists()

    assert main(["upload", str(tmp_path / "never.mp4")]) == ExitCode.FAILED
    assert "nothing to upload" in capsys.readouterr().err
