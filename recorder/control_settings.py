"""Where the worker's control endpoint listens, and the token it requires (no aiohttp here).

Kept apart from the server (`recorder.control`) so that `recorder run` checks its flags before it
imports the network stack: the media starts first (start latency is part of the contract).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_CONTROL_HOST = "127.0.0.1"
CONTROL_TOKEN_ENV_VAR = "RECORDER_CONTROL_TOKEN"


class ControlConfigError(ValueError):
    """The endpoint cannot be served as configured (exposed without a token)."""


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Where the endpoint listens and the token it requires (None: none, loopback only)."""

    port: int
    host: str = DEFAULT_CONTROL_HOST
    token: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ControlConfigError(f"--control-port {self.port} is not a port (0 to 65535)")
        if self.token is None and not is_loopback(self.host):
            raise ControlConfigError(
                f"--control-host {self.host} exposes the control endpoint beyond this machine: "
                f"set {CONTROL_TOKEN_ENV_VAR} to the token callers must send"
            )

    def __repr__(self) -> str:  # never the token
        return f"ControlSettings(host={self.host!r}, port={self.port}, token={bool(self.token)})"


def is_loopback(host: str) -> bool:
    """Whether `host` only reaches this machine (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
