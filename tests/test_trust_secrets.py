"""Secrets never leave the worker: a run with known secret values, and all it produced grepped.

The worker records into S3 (moto) with distinctive AWS credentials (and a session token), signs
webhooks with a distinctive secret, joins with a room token, guards its control endpoint with a
control token, and is given a webhook URL that carries credentials of its own (user info and a
query parameter). Each secret is first shown to be in effect (the signature verifies with it, the
endpoint refuses a request without the token, the store accepted the upload, the room let the
recorder in), then looked for in everything the run produced: its standard output and log, every
webhook body and the headers that are not the receiver's own credentials, the sidecar while it
exists, every object in the bucket (manifest and media), and the control endpoint's answers.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
from servers import S3Env, WebhookReceiver
from worker_helpers import (
    STARTED_TIMEOUT_S,
    WorkerProcess,
    reap_workers,  # noqa: F401 - autouse fixture
    room_job,
    statuses_of,
    until,
    worker_env,
)

from recorder.embedded_room.server import RoomServer
from recorder.errors import ExitCode
from recorder.lifecycle import Status
from recorder.notify.signing import SIGNATURE_HEADER, verify_signature

AWS_ACCESS_KEY = "AKIATRUSTACCESS7Q2X"
AWS_SECRET_KEY = "trust/aws+secret-key-3b9f0c1d2e"
AWS_SESSION_TOKEN = "trust-aws-session-token-51c7"
WEBHOOK_SECRET = "whsec-trust-8d1e6a"
CONTROL_TOKEN = "ctl-trust-token-0a7f4b"
HOOK_PASSWORD = "hook-pass-e29c"
HOOK_QUERY_KEY = "hook-query-key-7712"
REQUEST_TIMEOUT_S = 5.0


async def _get(http: aiohttp.ClientSession, url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as response:
        return response.status, await response.text()


async def test_no_secret_appears_in_logs_manifests_webhooks_or_answers(
    tmp_path: Path, s3_env: S3Env, webhook_receiver: WebhookReceiver
) -> None:
    env = worker_env(
        tmp_path,
        RECORDER_S3_BUCKET=s3_env.bucket,
        AWS_ACCESS_KEY_ID=AWS_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET_KEY,
        AWS_SESSION_TOKEN=AWS_SESSION_TOKEN,
        RECORDER_WEBHOOK_SECRET=WEBHOOK_SECRET,
        RECORDER_CONTROL_TOKEN=CONTROL_TOKEN,
    )
    hook_url = (
        webhook_receiver.url.replace("http://", f"http://hookuser:{HOOK_PASSWORD}@")
        + f"?key={HOOK_QUERY_KEY}"
    )
    produced: dict[str, str] = {}
    async with RoomServer() as server:
        job = room_job(
            server,
            awsDirPath="secrets",
            webhookUrl=hook_url,
            config={"quality": "low"},
            limits={"emptyRoomTimeoutSec": 0},
        )
        room_token = job["room"]["token"]
        worker = await WorkerProcess.launch(job, env, "--control-port", "0")
        control = await worker.control_url()
        await worker.wait_for_log("RECORDING_STARTED")
        spool_dir = tmp_path / "spool"
        await until(
            lambda: any(spool_dir.glob("*.job.json")), STARTED_TIMEOUT_S, "the sidecar is written"
        )
        for sidecar in spool_dir.glob("*.job.json"):
            produced[f"sidecar {sidecar.name}"] = sidecar.read_text()
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            refused, answer = await _get(http, f"{control}/status", None)
            assert refused == 401  # the control token is in effect
            produced["control 401"] = answer
            for route in ("status", "metrics", "healthz"):
                code, answer = await _get(http, f"{control}/{route}", CONTROL_TOKEN)
                assert code == 200, (route, answer)
                produced[f"control /{route}"] = answer
        worker.signal(signal.SIGTERM)
        result = await worker.finish()
    assert result.returncode == ExitCode.OK, result.stderr
    produced["stdout"], produced["log"] = result.stdout, result.stderr

    await webhook_receiver.wait_for(4)
    assert statuses_of([json.loads(r.body) for r in webhook_receiver.received]) == [
        Status.STARTING, Status.STARTED, Status.STOPPING, Status.STOPPED,
    ]  # fmt: skip
    for index, request in enumerate(webhook_receiver.received):
        # The webhook secret is in effect: every body verifies with it.
        assert verify_signature(request.body, request.headers[SIGNATURE_HEADER], WEBHOOK_SECRET)
        produced[f"webhook {index} body"] = request.body.decode()
        # Basic auth to the receiver is the receiver's own credential, sent on purpose.
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        produced[f"webhook {index} headers"] = json.dumps(headers)

    listed = s3_env.client.list_objects_v2(Bucket=s3_env.bucket)["Contents"]
    assert {item["Key"].rsplit(".", 1)[1] for item in listed} == {"mp4", "json"}  # creds worked
    for item in listed:
        body = s3_env.client.get_object(Bucket=s3_env.bucket, Key=item["Key"])["Body"].read()
        produced[f"object {item['Key']}"] = body.decode("latin-1")

    secrets: dict[str, Any] = {
        "AWS access key": AWS_ACCESS_KEY,
        "AWS secret key": AWS_SECRET_KEY,
        "AWS session token": AWS_SESSION_TOKEN,
        "webhook secret": WEBHOOK_SECRET,
        "control token": CONTROL_TOKEN,
        "room token": room_token,
        "webhook URL password": HOOK_PASSWORD,
        "webhook URL query": HOOK_QUERY_KEY,
    }
    leaks = [
        f"{secret_name} in {where}"
        for secret_name, value in secrets.items()
        for where, text in produced.items()
        if value in text
    ]
    # What was searched is the real thing: the log, the sidecar and the manifest name the recording.
    manifest = next(text for where, text in produced.items() if where.endswith(".json"))
    recording_id = json.loads(manifest)["recordingId"]
    for where in ("log", "control /status", "webhook 3 body"):
        assert recording_id in produced[where], where
    assert any(where.startswith("sidecar") and recording_id in t for where, t in produced.items())
    assert leaks == []
    assert len(room_token) >= 16 and "left room" in result.stderr  # the token let it in
