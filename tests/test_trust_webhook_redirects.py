"""Webhook receivers that answer with a redirect to a private or cloud-metadata address.

tests/test_webhook.py shows one 307 to another receiver is not followed. Here every redirect
status points where an attacker would want a server-side request to go (cloud metadata, the
worker's own loopback, a link-local or private address), with the deployment allowing private
receivers (the worst case): the notifier never follows, never retries the 3xx, and answers at
once. A followed redirect would be seen by the second receiver on 127.0.0.1, or would hang on
connecting to an address nothing here answers, which the time bound catches.
"""

from __future__ import annotations

import time

import pytest
from servers import Reply, WebhookReceiver, start_receiver

from recorder.notify.webhook import DeliveryReport, WebhookNotifier
from recorder.retry import RetryPolicy

QUICK_RETRY = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.005)
NOT_FOLLOWED_WITHIN_S = 2.0  # one request and its answer; a connect to a blackhole takes longer

TARGETS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://10.0.0.1/internal",
    "http://[::ffff:169.254.169.254]/",
    "http://169.254.170.2/v2/credentials",
]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_the_workers_own_loopback_is_not_followed(
    status: int, webhook_receiver: WebhookReceiver
) -> None:
    inside = WebhookReceiver()
    runner = await start_receiver(inside)
    try:
        webhook_receiver.default = Reply(status, location=inside.url)
        report = await _send_one(webhook_receiver)
    finally:
        await runner.cleanup()
    assert report.undelivered == [1]
    assert len(webhook_receiver.received) == 1  # a 3xx is final: not retried
    assert inside.received == []


@pytest.mark.parametrize("target", TARGETS)
async def test_a_redirect_to_metadata_or_private_addresses_is_not_followed(
    target: str, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.default = Reply(307, location=target)
    began = time.monotonic()
    report = await _send_one(webhook_receiver)
    assert time.monotonic() - began < NOT_FOLLOWED_WITHIN_S
    assert report.undelivered == [1]
    assert len(webhook_receiver.received) == 1


async def _send_one(receiver: WebhookReceiver) -> DeliveryReport:
    notifier = WebhookNotifier(
        receiver.url,
        secret="whsec-redirect",
        allow_private=True,  # the receiver is on loopback; metadata stays refused regardless
        retry=QUICK_RETRY,
        request_timeout_s=NOT_FOLLOWED_WITHIN_S,
        drain_timeout_s=NOT_FOLLOWED_WITHIN_S,
    )
    await notifier.start()
    notifier.notify({"webhookType": "recording-starting", "data": {"sequence": 1}})
    return await notifier.close()
