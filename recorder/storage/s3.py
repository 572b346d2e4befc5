"""The S3 sink: a streaming multipart upload that sends the spool while it is being recorded.

Every `PART_SIZE_BYTES` of durable spool becomes one part as soon as it is written, at most
`MAX_CONCURRENT_PARTS` at a time, so when the recording stops only the tail is left to send. Each
boto3 call runs in a thread (`asyncio.to_thread`) with boto3's own retries (standard mode:
throttling, 5xx, timeouts) and a part-level retry of ours on top, with exponential backoff and
full jitter. A part that still fails while the recording runs is not fatal: it is re-read from the
spool and sent again after the stop, when the tail goes. Only a definitive failure (access
denied, no such bucket, retries exhausted after the stop) aborts the multipart upload.

After completion the object is verified before the spool may be removed: its size and content
type; the composite SHA-256 the store computed from the per-part checksums we sent (S3 checks
every part against its checksum on receipt); the multipart ETag where it is an MD5 (not with
SSE-KMS or SSE-C); and the spool re-read from disk, which must still hash to what was sent.

Bucket from `RECORDER_S3_BUCKET`; region, endpoint (`AWS_ENDPOINT_URL_S3`) and credentials from
boto3's own chain, which also keeps them out of our logs. `RECORDER_S3_CHECKSUM=off` turns the
SHA-256 checksums off for S3-compatible stores that refuse them (size and ETag still verify).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import random
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from recorder.errors import StorageError
from recorder.retry import RetryPolicy
from recorder.storage.keys import check_key
from recorder.storage.sink import S3_BUCKET_ENV_VAR, StoredObject
from recorder.storage.spool import SpoolProgress, SpoolReader, check_unchanged, read_range

log = logging.getLogger(__name__)

MIN_PART_SIZE_BYTES = 5 * 1024 * 1024  # S3's minimum for every part but the last
PART_SIZE_BYTES = 8 * 1024 * 1024  # 10,000 parts of this hold 80 GiB: a day at "high" is ~50
MAX_PARTS = 10_000  # S3's limit
MAX_CONCURRENT_PARTS = 4  # parts in flight; each holds PART_SIZE_BYTES of memory
PART_RETRY = RetryPolicy(attempts=5, base_delay_s=0.5, max_delay_s=8.0)
BOTO_MAX_ATTEMPTS = 3  # boto3's own tries per call, under each of our attempts
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # a part of 8 MiB at 2 Mbit/s takes ~35 s
CHECKSUM_ENV_VAR = "RECORDER_S3_CHECKSUM"  # "sha256" (default) or "off"
# The part size in bytes, from MIN_PART_SIZE_BYTES up (default PART_SIZE_BYTES). Smaller parts
# start the streaming upload sooner (tests use the minimum to see parts sent while recording);
# larger ones make fewer requests.
PART_SIZE_ENV_VAR = "RECORDER_S3_PART_SIZE_BYTES"

# Error codes worth another try; with any 5xx, 408 and 429, and connection errors and timeouts.
RETRYABLE_ERROR_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
    }
)
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}(-\d+)?$")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """What the deployment configured; credentials stay in boto3's chain, never here."""

    bucket: str
    checksums: bool = True
    part_size_bytes: int = PART_SIZE_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if environ is None else environ
        bucket = env.get(S3_BUCKET_ENV_VAR, "").strip()
        if not bucket:
            raise StorageError(f"no bucket configured: set {S3_BUCKET_ENV_VAR}")
        checksum = env.get(CHECKSUM_ENV_VAR, "sha256").strip().lower()
        if checksum not in ("sha256", "off"):
            raise StorageError(f"{CHECKSUM_ENV_VAR} must be 'sha256' or 'off', not {checksum!r}")
        part_size = env.get(PART_SIZE_ENV_VAR, "").strip()
        try:
            part_size_bytes = int(part_size) if part_size else PART_SIZE_BYTES
        except ValueError:
            part_size_bytes = -1
        if part_size_bytes < MIN_PART_SIZE_BYTES:
            raise StorageError(
                f"{PART_SIZE_ENV_VAR} must be a number of bytes from {MIN_PART_SIZE_BYTES} up, "
                f"not {part_size!r}"
            )
        return cls(bucket=bucket, checksums=checksum == "sha256", part_size_bytes=part_size_bytes)


def make_s3_client(
    *,
    max_pool_connections: int = MAX_CONCURRENT_PARTS + 2,
    max_attempts: int = BOTO_MAX_ATTEMPTS,
) -> Any:
    """A boto3 S3 client from the environment's chain, with bounded timeouts and retries."""
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        max_pool_connections=max_pool_connections,
    )
    return boto3.session.Session().client("s3", config=config)


def is_retryable(error: BaseException) -> bool:
    """Whether another try can help: throttling, 5xx, 408/429, connection errors, timeouts."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in RETRYABLE_ERROR_CODES or status >= 500 or status in (408, 429)
    # HTTPClientError: the connection broke or timed out mid-request; ConnectionError: the store
    # could not be reached at all (refused, connect timeout), i.e. it is down for now.
    return isinstance(error, HTTPClientError | BotoConnectionError)


def _error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return type(error).__name__


class _GaveUp(Exception):
    """A transient failure outlasted its retries; the same request may work later."""


class _Refused(StorageError):
    """The store refused for good (no such bucket, access denied, no such upload)."""

    retryable = False

    def __init__(self, message: str, *, aws_code: str, local_path: str | None = None) -> None:
        super().__init__(message, local_path=local_path)
        self.aws_code = aws_code


@dataclass(slots=True)
class _Part:
    number: int
    offset: int
    length: int
    sha256: bytes
    md5: bytes
    etag: str | None = None
    during_recording: bool = False


@dataclass(slots=True)
class _Upload:
    """One multipart upload in progress."""

    key: str
    content_type: str
    spool: Path
    hurry: threading.Event | None
    progress: SpoolProgress | None = None  # told of each part sent (the upload-lag metric)
    upload_id: str | None = None
    parts: dict[int, _Part] = field(default_factory=dict)
    deferred: list[_Part] = field(default_factory=list)
    create_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class S3Sink:
    """Stores recordings in one S3 (or S3-compatible) bucket."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        client: Any = None,
        part_size_bytes: int | None = None,
        max_concurrent_parts: int = MAX_CONCURRENT_PARTS,
        retry: RetryPolicy = PART_RETRY,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if part_size_bytes is None:
            part_size_bytes = settings.part_size_bytes
        if part_size_bytes < MIN_PART_SIZE_BYTES:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE_BYTES} bytes")
        if max_concurrent_parts < 1:
            raise ValueError("at least one part must be allowed in flight")
        self.settings = settings
        self._client = client or make_s3_client(max_pool_connections=max_concurrent_parts + 2)
        self.part_size_bytes = part_size_bytes
        self.max_concurrent_parts = max_concurrent_parts
        self.retry = retry
        self._rng = rng
        self._sleep = sleep

    @property
    def description(self) -> str:
        return f"s3://{self.settings.bucket}"

    def object_url(self, key: str) -> str:
        """An https URL of the object: virtual-hosted on AWS, path-style on other endpoints."""
        endpoint = str(self._client.meta.endpoint_url).rstrip("/")
        bucket = self.settings.bucket
        host = urlsplit(endpoint).hostname or ""
        if host.endswith(".amazonaws.com") and "." not in bucket:
            scheme, _, rest = endpoint.partition("://")
            return f"{scheme}://{bucket}.{rest}/{quote(key)}"
        return f"{endpoint}/{bucket}/{quote(key)}"

    # --- the spool ---------------------------------------------------------------------------

    async def store_spool(
        self,
        spool: Path,
        progress: SpoolProgress,
        key: str,
        *,
        content_type: str,
        hurry: threading.Event | None = None,
    ) -> StoredObject:
        check_key(key)
        upload = _Upload(
            key=key, content_type=content_type, spool=spool, hurry=hurry, progress=progress
        )
        reader = SpoolReader(spool, progress)
        try:
            await self._stream_parts(upload, reader)
            await self._send_deferred(upload)
            await self._complete(upload)
            stored = await self._verify(upload, reader)
        except (StorageError, _GaveUp) as error:
            await self._abort(upload)
            reason = error.message if isinstance(error, StorageError) else str(error)
            raise StorageError(
                f"could not store {self.description}/{key}: {reason}", local_path=str(spool)
            ) from error
        during = sum(part.during_recording for part in upload.parts.values())
        log.info(
            "stored %s/%s: %d bytes in %d parts (%d sent while recording), verified by %s",
            self.description,
            key,
            stored.size_bytes,
            len(upload.parts),
            during,
            ", ".join(stored.verified),
        )
        return stored

    async def _stream_parts(self, upload: _Upload, reader: SpoolReader) -> None:
        """Send each part as soon as it is durable, at most `max_concurrent_parts` at a time."""
        slots = asyncio.Semaphore(self.max_concurrent_parts)
        chunks = reader.chunks(self.part_size_bytes)
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    await slots.acquire()  # a free slot before reading: memory stays bounded
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        slots.release()
                        break
                    number = len(upload.parts) + 1
                    if number > MAX_PARTS:
                        slots.release()
                        raise StorageError(f"the recording needs more than {MAX_PARTS} parts")
                    part = _Part(
                        number=number,
                        offset=chunk.offset,
                        length=len(chunk.data),
                        sha256=chunk.sha256,
                        md5=chunk.md5,
                        during_recording=not reader.progress.finished,
                    )
                    upload.parts[number] = part
                    group.create_task(
                        self._send_streamed_part(upload, part, chunk.data, slots),
                        name=f"s3-part-{number}",
                    )
        except* StorageError as group_error:
            raise group_error.exceptions[0] from None
        finally:
            await chunks.aclose()

    async def _send_streamed_part(
        self, upload: _Upload, part: _Part, data: bytes, slots: asyncio.Semaphore
    ) -> None:
        try:
            await self._send_part(upload, part, data)
        except _GaveUp as error:
            # Not fatal while recording: the bytes stay in the spool and go again after the stop.
            log.warning("part %d of %s deferred: %s", part.number, upload.key, error)
            upload.deferred.append(part)
        finally:
            slots.release()

    async def _send_deferred(self, upload: _Upload) -> None:
        """After the stop: send again, from the spool, the parts that failed while recording."""
        for part in sorted(upload.deferred, key=lambda p: p.number):
            data = await asyncio.to_thread(read_range, upload.spool, part.offset, part.length)
            if hashlib.sha256(data).digest() != part.sha256:
                raise StorageError(f"the spool changed under part {part.number}")
            try:
                await self._send_part(upload, part, data)
            except _GaveUp as error:
                raise StorageError(f"part {part.number} could not be sent: {error}") from None
        upload.deferred.clear()

    async def _ensure_upload(self, upload: _Upload) -> str:
        async with upload.create_lock:
            if upload.upload_id is None:
                arguments: dict[str, Any] = {
                    "Bucket": self.settings.bucket,
                    "Key": upload.key,
                    "ContentType": upload.content_type,
                }
                if self.settings.checksums:
                    arguments["ChecksumAlgorithm"] = "SHA256"
                response = await self._call(
                    "create_multipart_upload", arguments, hurry=upload.hurry
                )
                upload.upload_id = str(response["UploadId"])
                log.debug("multipart upload of %s started", upload.key)
            return upload.upload_id

    async def _send_part(self, upload: _Upload, part: _Part, data: bytes) -> None:
        upload_id = await self._ensure_upload(upload)
        arguments: dict[str, Any] = {
            "Bucket": self.settings.bucket,
            "Key": upload.key,
            "UploadId": upload_id,
            "PartNumber": part.number,
            "Body": data,
        }
        if self.settings.checksums:
            arguments["ChecksumSHA256"] = base64.b64encode(part.sha256).decode("ascii")
        response = await self._call("upload_part", arguments, hurry=upload.hurry)
        part.etag = str(response["ETag"])
        if upload.progress is not None:
            upload.progress.stored(part.length)
        log.debug("part %d of %s sent (%d bytes)", part.number, upload.key, part.length)

    async def _complete(self, upload: _Upload) -> None:
        upload_id = await self._ensure_upload(upload)
        parts = []
        for number in sorted(upload.parts):
            part = upload.parts[number]
            entry: dict[str, Any] = {"PartNumber": number, "ETag": part.etag}
            if self.settings.checksums:
                entry["ChecksumSHA256"] = base64.b64encode(part.sha256).decode("ascii")
            parts.append(entry)
        arguments = {
            "Bucket": self.settings.bucket,
            "Key": upload.key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": parts},
        }
        try:
            await self._call("complete_multipart_upload", arguments, hurry=upload.hurry)
        except _Refused as error:
            if error.aws_code != "NoSuchUpload":
                raise
            # A retried completion whose first try succeeded: verification decides.
            log.info("completion of %s answered NoSuchUpload; verifying the object", upload.key)
        except _GaveUp as error:
            raise StorageError(f"the upload could not be completed: {error}") from None
        upload.upload_id = None  # completed: nothing left to abort

    async def _verify(self, upload: _Upload, reader: SpoolReader) -> StoredObject:
        parts = [upload.parts[number] for number in sorted(upload.parts)]
        head = await self._head(upload.key, hurry=upload.hurry)
        size = reader.bytes_read
        composite = hashlib.sha256(b"".join(part.sha256 for part in parts)).digest()
        etag = hashlib.md5(b"".join(part.md5 for part in parts), usedforsecurity=False)
        verified = _check_head(
            head,
            key=upload.key,
            size_bytes=size,
            content_type=upload.content_type,
            checksum_b64=base64.b64encode(composite).decode("ascii"),
            etag=f"{etag.hexdigest()}-{len(parts)}",
        )
        await check_unchanged(upload.spool, size_bytes=size, sha256_hex=reader.sha256_hex)
        return StoredObject(
            key=upload.key,
            url=self.object_url(upload.key),
            size_bytes=size,
            sha256_hex=reader.sha256_hex,
            content_type=upload.content_type,
            verified=(*verified, "spool"),
        )

    async def _abort(self, upload: _Upload) -> None:
        """Abort an unfinished multipart upload so its parts are not kept (best effort)."""
        if upload.upload_id is None:
            return
        arguments = {
            "Bucket": self.settings.bucket,
            "Key": upload.key,
            "UploadId": upload.upload_id,
        }
        try:
            await asyncio.to_thread(self._client.abort_multipart_upload, **arguments)
            log.info("multipart upload of %s aborted", upload.key)
        except (BotoCoreError, ClientError) as error:
            log.warning(
                "could not abort the multipart upload of %s (%s); a bucket lifecycle rule "
                "(AbortIncompleteMultipartUpload) removes it",
                upload.key,
                _error_code(error),
            )
        upload.upload_id = None

    # --- small documents ---------------------------------------------------------------------

    async def store_bytes(self, data: bytes, key: str, *, content_type: str) -> StoredObject:
        check_key(key)
        sha256 = hashlib.sha256(data).digest()
        arguments: dict[str, Any] = {
            "Bucket": self.settings.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
        }
        if self.settings.checksums:
            arguments["ChecksumSHA256"] = base64.b64encode(sha256).decode("ascii")
        try:
            await self._call("put_object", arguments)
            head = await self._head(key)
        except _GaveUp as error:
            raise StorageError(f"could not store {self.description}/{key}: {error}") from None
        verified = _check_head(
            head,
            key=key,
            size_bytes=len(data),
            content_type=content_type,
            checksum_b64=base64.b64encode(sha256).decode("ascii"),
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        )
        return StoredObject(
            key=key,
            url=self.object_url(key),
            size_bytes=len(data),
            sha256_hex=sha256.hex(),
            content_type=content_type,
            verified=verified,
        )

    async def find(self, key: str) -> StoredObject | None:
        check_key(key)
        try:
            head = await self._head(key)
        except _Refused as error:
            if error.aws_code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        except _GaveUp as error:
            raise StorageError(f"could not reach {self.description}: {error}") from None
        return StoredObject(
            key=key,
            url=self.object_url(key),
            size_bytes=int(head["ContentLength"]),
            sha256_hex="",
            content_type=str(head.get("ContentType", "")),
            verified=(),
        )

    # --- calls -------------------------------------------------------------------------------

    async def _head(self, key: str, *, hurry: threading.Event | None = None) -> Mapping[str, Any]:
        arguments: dict[str, Any] = {"Bucket": self.settings.bucket, "Key": key}
        if self.settings.checksums:
            arguments["ChecksumMode"] = "ENABLED"
        return await self._call("head_object", arguments, hurry=hurry)

    async def _call(
        self, operation: str, arguments: Mapping[str, Any], *, hurry: threading.Event | None = None
    ) -> Mapping[str, Any]:
        """One boto3 call in a thread, retried on transient failures with backoff and jitter.

        Raises `_Refused` on a definitive failure and `_GaveUp` when retries are exhausted (or
        cut short by `hurry`).
        """
        method = getattr(self._client, operation)
        failures = 0
        while True:
            try:
                return await asyncio.to_thread(method, **arguments)
            except (BotoCoreError, ClientError) as error:
                code = _error_code(error)
                if not is_retryable(error):
                    raise _Refused(f"{operation} refused: {code}: {error}", aws_code=code) from None
                failures += 1
                hurried = hurry is not None and hurry.is_set()
                if failures >= self.retry.attempts or hurried:
                    raise _GaveUp(f"{operation} failed {failures} times, last: {code}") from None
                delay_s = self.retry.delay_s(failures, self._rng)
                log.warning(
                    "%s of %s failed (%s); try %d of %d in %.2f s",
                    operation,
                    arguments.get("Key"),
                    code,
                    failures + 1,
                    self.retry.attempts,
                    delay_s,
                )
                await self._sleep(delay_s)


def _check_head(
    head: Mapping[str, Any],
    *,
    key: str,
    size_bytes: int,
    content_type: str,
    checksum_b64: str,
    etag: str,
) -> tuple[str, ...]:
    """Compare what the store reports with what was sent; what could be compared."""
    verified = ["size", "content-type"]
    stored_size = int(head.get("ContentLength", -1))
    if stored_size != size_bytes:
        raise StorageError(f"{key} holds {stored_size} bytes in the store, {size_bytes} were sent")
    stored_type = str(head.get("ContentType", ""))
    if stored_type != content_type:
        raise StorageError(f"{key} has the content type {stored_type!r}, not {content_type!r}")
    stored_checksum = head.get("ChecksumSHA256")
    if stored_checksum:
        # A multipart object reports the checksum of its part checksums, with "-<parts>" on AWS.
        if str(stored_checksum).split("-", 1)[0] != checksum_b64:
            raise StorageError(
                f"{key} has the SHA-256 checksum {stored_checksum}, not the one sent"
            )
        verified.append("sha256")
    stored_etag = str(head.get("ETag", "")).strip('"')
    encrypted_by_key = str(head.get("ServerSideEncryption", "")).startswith("aws:kms") or bool(
        head.get("SSECustomerAlgorithm")
    )
    if _MD5_ETAG.match(stored_etag) and not encrypted_by_key:
        if stored_etag != etag:
            raise StorageError(f"{key} has the ETag {stored_etag}, expected {etag}")
        verified.append("etag")
    return tuple(verified)
