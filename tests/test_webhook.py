"""Webhook delivery to a real aiohttp receiver on 127.0.0.1.

Order under failures and timeouts, signatures, refused destinations (private addresses,
rebinding, redirects), and the promise that a receiver never delays or breaks the recording.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from servers import STALL_FOREVER_S, Reply, WebhookReceiver, start_receiver

from recorder.errors import StorageError
from recorder.lifecycle import Lifecycle, RecordingIds, Status, StopReason
from recorder.notify.payload import payload_for, stopped_details
from recorder.notify.signing import SIGNATURE_HEADER, verify_signature
from recorder.notify.webhook import WebhookNotifier, redact_url
from recorder.retry import RetryPolicy
from recorder.storage.delivery import DeliveredRecording
from recorder.storage.sink import StoredObject

QUICK_RETRY = RetryPolicy(attempts=5, base_delay_s=0.001, max_delay_s=0.005)
IDS = RecordingIds(recording_id="rec-1", meeting_id="room-9", session_id="s-1")
SECRET = "whsec-SECRET-value"


def notifier_for(receiver: WebhookReceiver, **options: Any) -> WebhookNotifier:
    options.setdefault("allow_private", True)  # the receiver is on loopback
    options.setdefault("retry", QUICK_RETRY)
    options.setdefault("request_timeout_s", 2.0)
    options.setdefault("drain_timeout_s", 10.0)
    return WebhookNotifier(receiver.url, **options)


def sequences(receiver: WebhookReceiver) -> list[int]:
    return [json.loads(r.body)["data"]["sequence"] for r in receiver.accepted()]


def lifecycle_with(notifier: WebhookNotifier) -> Lifecycle:
    clock = iter(datetime(2026, 11, 24, 14, 0, s, tzinfo=UTC) for s in range(60))
    lifecycle = Lifecycle(IDS, clock=lambda: next(clock))
    lifecycle.add_listener(notifier.on_transition)
    return lifecycle


def delivered_recording() -> DeliveredRecording:
    media = StoredObject(
        key="team/rec-1.mp4",
        url="http://127.0.0.1:9/b/team/rec-1.mp4",
        size_bytes=123_456,
        sha256_hex="cd" * 32,
        content_type="video/mp4",
        verified=("size", "sha256"),
    )
    manifest = StoredObject(
        key="team/rec-1.json",
        url="http://127.0.0.1:9/b/team/rec-1.json",
        size_bytes=900,
        sha256_hex="ef" * 32,
        content_type="application/json",
        verified=("size",),
    )
    document = {
        "durationS": 61.5,
        "output": {
            "format": "mp4",
            "video": {"codec": "h264", "width": 1280, "height": 720},
            "audio": {"codec": "aac"},
        },
    }
    return DeliveredRecording(media=media, manifest=manifest, manifest_document=document)


async def test_statuses_arrive_in_order_despite_failures_and_carry_the_contract_fields(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.script = [Reply(500), Reply(503), Reply(200), Reply(429), Reply(200)]
    notifier = notifier_for(webhook_receiver)
    await notifier.start()
    lifecycle = lifecycle_with(notifier)
    lifecycle.begin()
    lifecycle.started()
    lifecycle.stop(StopReason.CONTROL)
    lifecycle.stopped(stopped_details(delivered_recording()))
    report = await notifier.close()

    assert sequences(webhook_receiver) == [1, 2, 3, 4]
    assert len(webhook_receiver.received) == 7  # three answers asked for a retry
    assert report.delivered == [1, 2, 3, 4] and report.undelivered == []
    bodies = [json.loads(r.body) for r in webhook_receiver.accepted()]
    assert [b["webhookType"] for b in bodies] == [
        "recording-starting",
        "recording-started",
        "recording-stopping",
        "recording-stopped",
    ]
    started = bodies[1]["data"]
    assert started == {
        "meetingId": "room-9",
        "sessionId": "s-1",
        "recordingId": "rec-1",
        "status": "RECORDING_STARTED",
        "sequence": 2,
        "timestamp": "2026-11-24T14:00:01.000Z",
    }
    stopped = bodies[3]["data"]
    assert stopped["stopReason"] == "control"
    assert stopped["filePath"] == "team/rec-1.mp4"
    assert stopped["fileUrl"].endswith("/team/rec-1.mp4")
    assert stopped["fileSize"] == 123_456
    assert stopped["duration"] == 61.5
    assert stopped["format"] == "mp4"
    assert stopped["codecs"] == {"video": "h264", "audio": "aac"}
    assert stopped["resolution"] == {"width": 1280, "height": 720}
    assert stopped["manifestKey"] == "team/rec-1.json"
    for request in webhook_receiver.received:
        assert request.headers["Content-Type"] == "application/json"
        assert SIGNATURE_HEADER not in request.headers  # no secret configured: unsigned


async def test_a_failure_carries_a_reason_with_the_local_copy() -> None:
    lifecycle = Lifecycle(IDS)
    seen: list[dict[str, Any]] = []
    lifecycle.add_listener(lambda t: seen.append(payload_for(t)))
    lifecycle.begin()
    lifecycle.started()
    lifecycle.stop(StopReason.SIGNAL)
    lifecycle.fail(StorageError("S3 unreachable", local_path="/spool/rec-1.mp4"))
    failed = seen[-1]
    assert failed["webhookType"] == "recording-failed"
    assert failed["data"]["status"] == "RECORDING_FAILED"
    assert failed["data"]["sequence"] == 4
    assert failed["data"]["reason"] == {
        "code": "STORAGE_FAILED",
        "message": "S3 unreachable",
        "fault": "deployment",
        "localPath": "/spool/rec-1.mp4",
    }


async def test_a_request_that_times_out_is_sent_again_and_order_holds(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.script = [Reply(200, stall_s=1.0)]  # slower than the client's timeout
    notifier = notifier_for(webhook_receiver, request_timeout_s=0.2)
    await notifier.start()
    lifecycle = lifecycle_with(notifier)
    lifecycle.begin()
    lifecycle.started()
    report = await notifier.close()
    assert webhook_receiver.received[0].answered is None  # the client gave up on that one
    assert sequences(webhook_receiver) == [1, 2]
    assert report.delivered == [1, 2]


async def test_client_errors_are_not_retried_but_408_and_429_are(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.script = [Reply(404), Reply(408), Reply(200), Reply(400)]
    notifier = notifier_for(webhook_receiver)
    await notifier.start()
    for sequence in (1, 2, 3):
        notifier.notify({"webhookType": "recording-started", "data": {"sequence": sequence}})
    report = await notifier.close()
    assert report.undelivered == [1, 3]
    assert report.delivered == [2]
    assert len(webhook_receiver.received) == 4


async def test_requests_are_signed_and_receivers_can_check_them(
    webhook_receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    webhook_receiver.script = [Reply(500)]
    url = webhook_receiver.url + "?token=url-SECRET"
    notifier = WebhookNotifier(url, secret=SECRET, allow_private=True, retry=QUICK_RETRY)
    await notifier.start()
    lifecycle = lifecycle_with(notifier)
    lifecycle.begin()
    lifecycle.started()
    await notifier.close()
    assert len(webhook_receiver.received) == 3
    for request in webhook_receiver.received:
        header = request.headers[SIGNATURE_HEADER]
        assert verify_signature(request.body, header, SECRET)
        assert not verify_signature(request.body.replace(b"rec-1", b"rec-2"), header, SECRET)
        assert not verify_signature(request.body, header, "not-the-secret")
    # Secrets stay out of the logs and the notifier's repr.
    assert "SECRET" not in caplog.text
    assert "SECRET" not in repr(notifier)
    assert redact_url("https://u:p@h.example/x?token=1#f") == "https://h.example/x"


async def test_private_addresses_are_refused_unless_the_deployment_allows_them(
    webhook_receiver: WebhookReceiver,
) -> None:
    for url in (webhook_receiver.url, webhook_receiver.url.replace("127.0.0.1", "localhost")):
        refused = WebhookNotifier.from_env(url, {}, retry=QUICK_RETRY)
        await refused.start()
        refused.notify({"webhookType": "recording-starting", "data": {"sequence": 1}})
        report = await refused.close()
        assert report.undelivered == [1]
    assert webhook_receiver.received == []

    allowed = WebhookNotifier.from_env(
        webhook_receiver.url, {"RECORDER_WEBHOOK_ALLOW_PRIVATE": "1"}, retry=QUICK_RETRY
    )
    await allowed.start()
    allowed.notify({"webhookType": "recording-starting", "data": {"sequence": 1}})
    assert (await allowed.close()).delivered == [1]
    assert len(webhook_receiver.received) == 1


class RebindingResolver(AbstractResolver):
    """A name that resolves to a public address first, then to loopback (DNS rebinding)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        address = "93.184.216.34" if self.calls == 1 else "127.0.0.1"
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


async def test_an_address_that_changes_after_the_check_is_refused_at_connect(
    webhook_receiver: WebhookReceiver,
) -> None:
    resolver = RebindingResolver(webhook_receiver.port)
    url = f"http://rebind.test:{webhook_receiver.port}/hook"
    notifier = WebhookNotifier(url, allow_private=False, retry=QUICK_RETRY, resolver=resolver)
    await notifier.start()
    notifier.notify({"webhookType": "recording-starting", "data": {"sequence": 1}})
    report = await notifier.close()
    assert resolver.calls == 2  # checked, then resolved again at connect: loopback, refused
    assert report.undelivered == [1]
    assert webhook_receiver.received == []


async def test_redirects_are_not_followed(webhook_receiver: WebhookReceiver) -> None:
    elsewhere = WebhookReceiver()
    runner = await start_receiver(elsewhere)
    try:
        webhook_receiver.default = Reply(307, location=elsewhere.url)
        notifier = notifier_for(webhook_receiver)
        await notifier.start()
        notifier.notify({"webhookType": "recording-starting", "data": {"sequence": 1}})
        report = await notifier.close()
        assert report.undelivered == [1]
        assert len(webhook_receiver.received) == 1  # not retried either
        assert elsewhere.received == []
    finally:
        await runner.cleanup()


async def test_a_receiver_that_never_answers_never_blocks_and_shutdown_is_bounded(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.default = Reply(200, stall_s=STALL_FOREVER_S)
    drain_s = 0.5
    notifier = notifier_for(webhook_receiver, request_timeout_s=0.2, drain_timeout_s=drain_s)
    await notifier.start()
    lifecycle = lifecycle_with(notifier)
    started = time.perf_counter()
    lifecycle.begin()
    lifecycle.started()
    lifecycle.stop(StopReason.MAX_DURATION)
    for sequence in range(4, 24):  # a burst from another thread (the media thread) too
        payload = {"webhookType": "recording-started", "data": {"sequence": sequence}}
        worker = threading.Thread(target=notifier.notify, args=(payload,))
        worker.start()
        worker.join()
    enqueue_s = time.perf_counter() - started
    assert enqueue_s < 1.0  # nothing waited for the network
    assert lifecycle.state is Status.STOPPING
    await webhook_receiver.wait_for(1)

    closing = time.perf_counter()
    report = await notifier.close()
    close_s = time.perf_counter() - closing
    assert close_s < drain_s + 2.0  # the drain time plus the cancelled task's short grace
    assert report.delivered == []
    assert sorted(s for s in report.undelivered if s is not None) == list(range(1, 24))


async def test_a_full_queue_drops_and_counts_instead_of_blocking(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.default = Reply(200, stall_s=STALL_FOREVER_S)
    notifier = notifier_for(
        webhook_receiver, queue_size=2, request_timeout_s=0.1, drain_timeout_s=0.2
    )
    await notifier.start()
    for sequence in range(1, 6):  # no await in between: the delivery task has not run yet
        notifier.notify({"webhookType": "recording-started", "data": {"sequence": sequence}})
    report = await notifier.close()
    assert report.dropped == 3
    assert sorted(s for s in report.undelivered if s is not None) == [1, 2, 3, 4, 5]


async def test_notify_before_start_is_a_programming_error() -> None:
    notifier = WebhookNotifier("https://hooks.example.com/x")
    with pytest.raises(RuntimeError):
        notifier.notify({"webhookType": "recording-starting", "data": {"sequence": 1}})
    assert (await notifier.close()).delivered == []


def test_stopped_details_for_an_audio_recording() -> None:
    recording = delivered_recording()
    document = {
        "durationS": 3.0,
        "output": {"format": "m4a", "video": None, "audio": {"codec": "aac"}},
    }
    audio = DeliveredRecording(recording.media, recording.manifest, document)
    details = stopped_details(audio)
    assert details["codecs"] == {"video": None, "audio": "aac"}
    assert details["resolution"] is None
    assert details["format"] == "m4a"
    assert timedelta(seconds=details["duration"]) == timedelta(seconds=3)
