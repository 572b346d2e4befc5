"""Webhook signatures: what a receiver checks, and what it must refuse."""

from __future__ import annotations

import hashlib
import hmac

from recorder.notify.signing import SIGNATURE_TOLERANCE_S, sign, verify_signature

SECRET = "whsec-test"
BODY = b'{"webhookType":"recording-started","data":{"sequence":2}}'
T = 1_800_000_000


def test_the_header_is_t_and_v1_over_t_dot_body() -> None:
    header = sign(BODY, SECRET, timestamp=T)
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"
    assert verify_signature(BODY, header, SECRET, now=T + 1)


def test_tampering_a_wrong_secret_or_a_replay_is_refused() -> None:
    header = sign(BODY, SECRET, timestamp=T)
    assert not verify_signature(BODY.replace(b"2", b"3"), header, SECRET, now=T)
    assert not verify_signature(BODY + b" ", header, SECRET, now=T)
    assert not verify_signature(BODY, header, "another-secret", now=T)
    assert not verify_signature(BODY, header, SECRET, now=T + SIGNATURE_TOLERANCE_S + 1)
    assert not verify_signature(BODY, header, SECRET, now=T - SIGNATURE_TOLERANCE_S - 1)
    moved = header.replace(f"t={T}", f"t={T + 10}")  # a fresher time on an old signature
    assert not verify_signature(BODY, moved, SECRET, now=T + 10)


def test_malformed_headers_are_refused() -> None:
    for header in (None, "", "v1=abc", f"t={T}", "t=soon,v1=abc", "garbage"):
        assert not verify_signature(BODY, header, SECRET, now=T)


def test_any_of_several_signatures_may_match_during_a_secret_rotation() -> None:
    old = sign(BODY, "old-secret", timestamp=T)
    new = sign(BODY, SECRET, timestamp=T)
    both = f"{old},{new.split(',')[1]}"
    assert verify_signature(BODY, both, SECRET, now=T)
    assert verify_signature(BODY, both, "old-secret", now=T)
