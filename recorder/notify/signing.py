"""Webhook signatures: `X-Recorder-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.

The HMAC covers `"<t>.<body>"` with the deployment's `RECORDER_WEBHOOK_SECRET`, so a receiver
can check that a request comes from us (the HMAC) and is not a replay (`t` within its tolerance,
`SIGNATURE_TOLERANCE_S` by default). Each retry is signed afresh with the time it is sent; the
body is the same, so receivers deduplicate by `recordingId` and `sequence`. Several `v1` values
may appear (a receiver accepts any), which lets a deployment rotate its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Recorder-Signature"
SECRET_ENV_VAR = "RECORDER_WEBHOOK_SECRET"
SIGNATURE_SCHEME = "v1"
SIGNATURE_TOLERANCE_S = 300.0


def _hmac_hex(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The signature header's value for `body`, signed now (or at `timestamp`)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},{SIGNATURE_SCHEME}={_hmac_hex(secret, t, body)}"


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    now: float | None = None,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:
    """True when `header` signs exactly `body` with `secret`, at a time within `tolerance_s`.

    For receivers: pass the raw request body (before any JSON parsing) and the header's value.
    """
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == SIGNATURE_SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _hmac_hex(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
