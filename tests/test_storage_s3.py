"""The S3 sink against a real S3-compatible server (moto) on 127.0.0.1, over HTTP with boto3.

Parts go up while the spool grows, the stored object equals the spool byte for byte, content
types are right, verification guards the removal of the spool, an outage keeps the spool and
`recorder upload` finishes the delivery once the store is back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from servers import GrowingSpool, MotoS3Server, S3Env, use_s3

from recorder.cli import main
from recorder.errors import StorageError
from recorder.retry import RetryPolicy
from recorder.storage.delivery import RecordingDelivery
from recorder.storage.from_env import sink_from_env
from recorder.storage.keys import DeliveryTarget, UnsafeKeyError
from recorder.storage.s3 import (
    MIN_PART_SIZE_BYTES,
    PART_SIZE_BYTES,
    S3Settings,
    S3Sink,
    _check_head,
    make_s3_client,
)
from recorder.storage.sidecar import read_sidecar, sidecar_path
from recorder.storage.spool import SpoolProgress

MIB = 1024 * 1024
FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02)
WAIT_S = 15.0  # bound on any polling of the server; loopback answers in milliseconds


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = WAIT_S) -> None:
    """Poll a blocking check in a thread until it holds, at most `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not await asyncio.to_thread(predicate):  # noqa: ASYNC110 - the server's state
            await asyncio.sleep(0.02)


def uploaded_parts(env: S3Env, key: str) -> list[dict[str, Any]]:
    uploads = env.client.list_multipart_uploads(Bucket=env.bucket).get("Uploads", [])
    for upload in uploads:
        if upload["Key"] == key:
            listed = env.client.list_parts(Bucket=env.bucket, Key=key, UploadId=upload["UploadId"])
            return list(listed.get("Parts", []))
    return []


def stored(env: S3Env, key: str) -> tuple[bytes, str]:
    response = env.client.get_object(Bucket=env.bucket, Key=key)
    return response["Body"].read(), response["ContentType"]


def sink_for(env: S3Env, **options: Any) -> S3Sink:
    options.setdefault("part_size_bytes", MIN_PART_SIZE_BYTES)
    options.setdefault("retry", FAST_RETRY)
    return S3Sink(S3Settings.from_env(), **options)


class FaultInjectingClient:
    """The real boto3 client, except that chosen operations first raise prepared errors.

    For failures moto cannot be made to produce on demand (throttling, access denied mid-upload);
    everything else, including the calls after the faults, goes to the real server.
    """

    def __init__(self, client: Any, faults: dict[str, list[Exception]]) -> None:
        self._client = client
        self._faults = faults
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self._faults:
            return attribute

        def call(**arguments: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self._faults[name]:
                raise self._faults[name].pop(0)
            return attribute(**arguments)

        return call


def client_error(code: str, status: int, operation: str = "UploadPart") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


async def test_parts_go_up_while_recording_and_the_object_equals_the_spool(
    s3_env: S3Env, tmp_path: Path
) -> None:
    spool_path = tmp_path / "rec-1.mp4"
    progress = SpoolProgress()
    spool = GrowingSpool(spool_path, progress, seed=1)
    target = DeliveryTarget.for_media_key("team/2026/rec-1.mp4")
    delivery = RecordingDelivery(sink_for(s3_env), spool_path, target, progress)
    await delivery.start({"recordingId": "rec-1", "stoppedAt": None})
    assert read_sidecar(spool_path) is not None  # recovery would know where this goes

    spool.header()
    for _ in range(11):  # ~11 MiB: two full parts of 5 MiB become durable while recording
        spool.fragment(MIB)
    await wait_until(lambda: len(uploaded_parts(s3_env, target.media_key)) == 2)
    assert not progress.finished
    parts = uploaded_parts(s3_env, target.media_key)
    assert [part["Size"] for part in parts] == [MIN_PART_SIZE_BYTES, MIN_PART_SIZE_BYTES]

    spool.fragment(300 * 1024)  # the tail, written at the stop
    spool.close()
    expected = spool.content()
    manifest = {"recordingId": "rec-1", "stoppedAt": "2026-11-24T14:00:10.000Z"}
    delivered = await delivery.finish(manifest)

    body, content_type = stored(s3_env, target.media_key)
    assert body == expected
    assert content_type == "video/mp4"
    head = s3_env.client.head_object(Bucket=s3_env.bucket, Key=target.media_key)
    assert head["ETag"].strip('"').endswith("-3")  # two parts while recording, the tail after
    assert delivered.media.size_bytes == len(expected)
    assert delivered.media.sha256_hex == hashlib.sha256(expected).hexdigest()
    assert set(delivered.media.verified) >= {"size", "content-type", "sha256", "etag", "spool"}
    assert delivered.media.url.endswith(f"/{s3_env.bucket}/team/2026/rec-1.mp4")

    manifest_body, manifest_type = stored(s3_env, "team/2026/rec-1.json")
    assert manifest_type == "application/json"
    document = json.loads(manifest_body)
    assert document == delivered.manifest_document
    assert document["stoppedAt"] == manifest["stoppedAt"]
    assert document["output"]["sizeBytes"] == len(expected)
    assert document["output"]["sha256"] == hashlib.sha256(expected).hexdigest()
    # Delivered: the spool and its sidecar are gone, no multipart upload is left behind.
    assert not spool_path.exists()
    assert not sidecar_path(spool_path).exists()
    assert s3_env.client.list_multipart_uploads(Bucket=s3_env.bucket).get("Uploads", []) == []


async def test_audio_recordings_are_audio_mp4_and_small_ones_take_one_part(
    s3_env: S3Env, tmp_path: Path
) -> None:
    spool_path = tmp_path / "talk.m4a"
    progress = SpoolProgress()
    spool = GrowingSpool(spool_path, progress, seed=2)
    spool.header()
    spool.fragment(40_000)
    spool.close()
    sink = sink_for(s3_env)
    result = await sink.store_spool(
        spool_path,
        progress,
        "talk.m4a",
        content_type=DeliveryTarget.for_media_key("talk.m4a").content_type,
    )
    body, content_type = stored(s3_env, "talk.m4a")
    assert body == spool_path.read_bytes()
    assert content_type == "audio/mp4"
    assert result.verified[:2] == ("size", "content-type")
    assert spool_path.exists()  # the sink never removes the spool; the delivery does


async def test_throttling_is_retried_with_backoff_and_the_object_is_whole(
    s3_env: S3Env, tmp_path: Path
) -> None:
    client = FaultInjectingClient(
        make_s3_client(),
        {"upload_part": [client_error("SlowDown", 503), client_error("InternalError", 500)]},
    )
    delays: list[float] = []

    async def record_sleep(delay_s: float) -> None:
        delays.append(delay_s)

    retry = RetryPolicy(attempts=4, base_delay_s=0.5, max_delay_s=8.0)
    sink = sink_for(s3_env, client=client, retry=retry, rng=lambda: 1.0, sleep=record_sleep)
    progress = SpoolProgress()
    spool = GrowingSpool(tmp_path / "r.mp4", progress, seed=3)
    spool.header()
    spool.fragment(MIB)
    spool.close()
    result = await sink.store_spool(spool.path, progress, "r.mp4", content_type="video/mp4")
    assert stored(s3_env, "r.mp4")[0] == spool.content()
    assert client.calls["upload_part"] == 3  # one part: two throttled tries, then success
    assert delays == [0.5, 1.0]  # exponential backoff (the jitter source at its maximum)
    assert "sha256" in result.verified


async def test_a_definitive_refusal_aborts_the_multipart_upload_and_keeps_the_spool(
    s3_env: S3Env, tmp_path: Path
) -> None:
    client = FaultInjectingClient(
        make_s3_client(), {"upload_part": [client_error("AccessDenied", 403)]}
    )
    sink = sink_for(s3_env, client=client)
    progress = SpoolProgress()
    spool = GrowingSpool(tmp_path / "r.mp4", progress, seed=4)
    spool.header()
    spool.fragment(MIB)
    spool.close()
    with pytest.raises(StorageError) as raised:
        await sink.store_spool(spool.path, progress, "denied.mp4", content_type="video/mp4")
    assert "AccessDenied" in raised.value.message
    assert raised.value.local_path == str(spool.path)
    assert client.calls["upload_part"] == 1  # not retried: another try cannot help
    assert s3_env.client.list_multipart_uploads(Bucket=s3_env.bucket).get("Uploads", []) == []
    assert spool.path.exists()


async def test_a_spool_changed_under_the_upload_fails_verification_and_is_kept(
    s3_env: S3Env, tmp_path: Path
) -> None:
    spool_path = tmp_path / "rec-2.mp4"
    progress = SpoolProgress()
    spool = GrowingSpool(spool_path, progress, seed=5)
    target = DeliveryTarget.for_media_key("rec-2.mp4")
    delivery = RecordingDelivery(sink_for(s3_env), spool_path, target, progress)
    await delivery.start(None)
    spool.header()
    spool.fragment(6 * MIB)
    await wait_until(lambda: len(uploaded_parts(s3_env, target.media_key)) == 1)
    # A muxer that seeks back and rewrites bytes below the durable watermark.
    with spool_path.open("r+b") as file:
        file.seek(100)
        file.write(b"\xff" * 16)
    spool.close()
    manifest = {"recordingId": "rec-2", "stoppedAt": "2026-11-24T14:00:10.000Z"}
    with pytest.raises(StorageError) as raised:
        await delivery.finish(manifest)
    assert raised.value.local_path == str(spool_path)
    assert str(spool_path) in raised.value.message
    assert "recorder upload" in raised.value.message
    assert spool_path.exists()
    sidecar = read_sidecar(spool_path)
    assert sidecar is not None and sidecar.manifest == manifest
    # The manifest is written only after the media is verified: it is not there.
    with pytest.raises(ClientError):
        s3_env.client.head_object(Bucket=s3_env.bucket, Key="rec-2.json")


async def test_storage_down_keeps_the_spool_and_recorder_upload_finishes_later(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = MotoS3Server()
    server.start()
    try:
        env = use_s3(monkeypatch, server)
        sink = sink_for(env, client=make_s3_client(max_attempts=1))
        spool_path = tmp_path / "rec-3.mp4"
        progress = SpoolProgress()
        spool = GrowingSpool(spool_path, progress, seed=6)
        target = DeliveryTarget.for_media_key("meetings/rec-3.mp4")
        delivery = RecordingDelivery(sink, spool_path, target, progress)
        await delivery.start({"recordingId": "rec-3", "stoppedAt": None})
        spool.header()
        spool.fragment(6 * MIB)
        await wait_until(lambda: len(uploaded_parts(env, target.media_key)) == 1)

        server.stop()  # the store goes away in the middle of the recording
        spool.fragment(6 * MIB)
        spool.fragment(200_000)
        spool.close()
        expected = spool.content()
        manifest = {"recordingId": "rec-3", "stoppedAt": "2026-11-24T14:05:00.000Z", "x": 1}
        with pytest.raises(StorageError) as raised:
            await delivery.finish(manifest)
        assert raised.value.local_path == str(spool_path)
        assert raised.value.as_reason()["localPath"] == str(spool_path)
        assert str(spool_path) in raised.value.message
        assert spool_path.read_bytes() == expected
        sidecar = read_sidecar(spool_path)
        assert sidecar is not None and sidecar.manifest == manifest

        server.start()  # back, on the same port, with its buckets
        with pytest.raises(ClientError):
            env.client.head_object(Bucket=env.bucket, Key=target.media_key)
        code = await asyncio.to_thread(main, ["upload", str(spool_path)])
        assert code == 0
        body, content_type = stored(env, target.media_key)
        assert body == expected
        assert content_type == "video/mp4"
        document = json.loads(stored(env, "meetings/rec-3.json")[0])
        assert document["x"] == 1 and "recovered" not in document  # the final manifest
        assert document["output"]["sha256"] == hashlib.sha256(expected).hexdigest()
        assert not spool_path.exists()
        assert not sidecar_path(spool_path).exists()
        # Idempotent: again (the sidecar is gone, so the key is given), it finds the recording
        # delivered and succeeds; without a key there is nothing to go on, and it says so.
        again = ["upload", str(spool_path), "--key", target.media_key]
        assert await asyncio.to_thread(main, again) == 0
        assert await asyncio.to_thread(main, ["upload", str(spool_path)]) == 1
    finally:
        server.stop()


async def test_keys_that_escape_are_refused_before_any_request(
    s3_env: S3Env, tmp_path: Path
) -> None:
    sink = sink_for(s3_env)
    for key in ("../x.json", "/abs.json", "a/../../x.json", "a//b.json", "a\\b.json", ""):
        with pytest.raises(UnsafeKeyError):
            await sink.store_bytes(b"{}", key, content_type="application/json")
    progress = SpoolProgress.complete(0)
    with pytest.raises(UnsafeKeyError):
        await sink.store_spool(tmp_path / "x", progress, "../x.mp4", content_type="video/mp4")
    assert s3_env.client.list_objects_v2(Bucket=s3_env.bucket).get("KeyCount", 0) == 0


async def test_find_reports_stored_objects_and_none_for_missing(s3_env: S3Env) -> None:
    sink = sink_for(s3_env)
    stored_manifest = await sink.store_bytes(
        b'{"a": 1}', "p/r.json", content_type="application/json"
    )
    assert stored_manifest.verified == ("size", "content-type", "etag")
    found = await sink.find("p/r.json")
    assert found is not None and found.size_bytes == 8
    assert found.content_type == "application/json"
    assert await sink.find("p/missing.json") is None


def test_sink_from_env_picks_s3_when_a_bucket_is_set(s3_env: S3Env) -> None:
    sink = sink_from_env()
    assert isinstance(sink, S3Sink)
    assert sink.description == f"s3://{s3_env.bucket}"
    assert sink.part_size_bytes == PART_SIZE_BYTES >= MIN_PART_SIZE_BYTES


def test_part_size_below_the_s3_minimum_is_refused(s3_env: S3Env) -> None:
    with pytest.raises(ValueError, match="at least"):
        S3Sink(S3Settings.from_env(), part_size_bytes=MIN_PART_SIZE_BYTES - 1)


def test_settings_refuse_an_unknown_checksum_mode() -> None:
    with pytest.raises(StorageError):
        S3Settings.from_env({"RECORDER_S3_BUCKET": "b", "RECORDER_S3_CHECKSUM": "md5"})
    assert not S3Settings.from_env(
        {"RECORDER_S3_BUCKET": "b", "RECORDER_S3_CHECKSUM": "off"}
    ).checksums


# --- what the store reports, compared -------------------------------------------------------------

DATA = b"recording bytes"
SHA_B64 = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
MD5 = hashlib.md5(DATA).hexdigest()
GOOD_HEAD = {
    "ContentLength": len(DATA),
    "ContentType": "video/mp4",
    "ChecksumSHA256": f"{SHA_B64}-1",
    "ETag": f'"{MD5}"',
}


def check(head: dict[str, Any]) -> tuple[str, ...]:
    return _check_head(
        head,
        key="k.mp4",
        size_bytes=len(DATA),
        content_type="video/mp4",
        checksum_b64=SHA_B64,
        etag=MD5,
    )


def test_verification_accepts_what_matches_and_names_what_it_compared() -> None:
    assert check(GOOD_HEAD) == ("size", "content-type", "sha256", "etag")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ContentLength": len(DATA) - 1}, "bytes in the store"),
        ({"ContentType": "binary/octet-stream"}, "content type"),
        ({"ChecksumSHA256": base64.b64encode(b"x" * 32).decode()}, "SHA-256"),
        ({"ETag": '"00000000000000000000000000000000"'}, "ETag"),
    ],
)
def test_verification_refuses_any_mismatch(change: dict[str, Any], message: str) -> None:
    with pytest.raises(StorageError, match=message):
        check({**GOOD_HEAD, **change})


def test_an_etag_under_kms_encryption_is_not_an_md5_and_is_not_compared() -> None:
    head = {
        **GOOD_HEAD,
        "ETag": '"0123456789abcdef0123456789abcdef"',
        "ServerSideEncryption": "aws:kms",
    }
    assert check(head) == ("size", "content-type", "sha256")


async def test_a_hurried_stop_gives_up_retrying_and_keeps_the_spool(
    s3_env: S3Env, tmp_path: Path
) -> None:
    client = FaultInjectingClient(
        make_s3_client(), {"upload_part": [client_error("SlowDown", 503) for _ in range(10)]}
    )
    hurry = threading.Event()
    hurry.set()  # a second SIGTERM arrived while stopping
    sink = sink_for(s3_env, client=client, retry=RetryPolicy(5, 0.001, 0.002))
    progress = SpoolProgress()
    spool = GrowingSpool(tmp_path / "r.mp4", progress, seed=7)
    spool.header()
    spool.fragment(MIB)
    spool.close()
    with pytest.raises(StorageError) as raised:
        await sink.store_spool(spool.path, progress, "h.mp4", content_type="video/mp4", hurry=hurry)
    assert client.calls["upload_part"] == 2  # streamed once, resent once after: no retries
    assert raised.value.local_path == str(spool.path)
    assert spool.path.exists()
