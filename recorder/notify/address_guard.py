"""Keep a caller's webhook URL away from our own network (SSRF).

A `webhookUrl` comes from whoever started the recording, and the worker runs inside the
deployment's network, next to cloud metadata services and internal APIs. Every address a webhook
host resolves to is checked, and the host is refused if any of them is loopback, private,
link-local, unique-local, multicast, unspecified, carrier-grade NAT, reserved, or otherwise not
globally routable, unless the deployment sets `RECORDER_WEBHOOK_ALLOW_PRIVATE=1` (in-cluster
receivers, tests). Cloud metadata addresses are refused even then: no webhook lives there.

The check runs inside the HTTP client's resolver (`GuardedResolver`), so the addresses checked are
the addresses connected to: a name that resolves to a public address for the check and to a
private one for the connection (DNS rebinding) is caught at connect time. An IP literal in the URL
never reaches a resolver, so `check_url` checks it before each request.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

ALLOW_PRIVATE_ENV_VAR = "RECORDER_WEBHOOK_ALLOW_PRIVATE"

IPAddress = IPv4Address | IPv6Address

# Instance metadata and credential endpoints of cloud providers (AWS IMDS v4 and v6, ECS task
# credentials, Alibaba); most are link-local anyway, but they are named so the refusal says why.
CLOUD_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
CARRIER_GRADE_NAT = IPv4Network("100.64.0.0/10")
UNIQUE_LOCAL = IPv6Network("fc00::/7")
NAT64_PREFIX = IPv6Network("64:ff9b::/96")


class ForbiddenAddressError(OSError):
    """The webhook host resolves to an address we do not send to.

    An OSError so that the HTTP client treats it like a failed resolution and never connects.
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"webhook host {host!r} resolves to {address} ({reason}): refused")
        self.host = host
        self.address = address
        self.reason = reason


def allow_private_from_env(environ: Mapping[str, str]) -> bool:
    return environ.get(ALLOW_PRIVATE_ENV_VAR, "").strip().lower() in ("1", "true", "yes")


def forbidden_reason(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why `address` is refused as a webhook destination, or None when it may be used."""
    if address in CLOUD_METADATA_ADDRESSES:
        return "cloud metadata"
    if allow_private:
        return None
    if isinstance(address, IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64_PREFIX:
            embedded = IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            return f"embeds {embedded}: {reason}" if reason else None
    checks: list[tuple[bool, str]] = [
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (isinstance(address, IPv4Address) and address in CARRIER_GRADE_NAT, "carrier-grade NAT"),
        (isinstance(address, IPv6Address) and address in UNIQUE_LOCAL, "unique-local"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "not globally routable"),
    ]
    return next((reason for failed, reason in checks if failed), None)


def check_address(host: str, address: str, *, allow_private: bool) -> None:
    """`ForbiddenAddressError` unless `address` (a resolved or literal IP) may be sent to."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 scope id
    except ValueError:
        raise ForbiddenAddressError(host, address, "not an IP address") from None
    reason = forbidden_reason(parsed, allow_private=allow_private)
    if reason is not None:
        raise ForbiddenAddressError(host, address, reason)


class GuardedResolver(AbstractResolver):
    """A resolver that refuses a host if any address it resolves to is forbidden."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(f"webhook host {host!r} resolves to no address")
        for result in results:
            check_address(host, result["host"], allow_private=self.allow_private)
        return results

    async def close(self) -> None:
        await self._inner.close()


async def check_url(url: str, resolver: GuardedResolver) -> None:
    """`ForbiddenAddressError` if the URL's host is, or resolves to, a forbidden address.

    Checked before each request so that a refused URL fails at once and for good; the resolver
    checks again at connect time.
    """
    parsed = URL(url)
    host = parsed.raw_host or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        await resolver.resolve(host, parsed.port or 0, socket.AF_UNSPEC)
        return
    check_address(host, host, allow_private=resolver.allow_private)
