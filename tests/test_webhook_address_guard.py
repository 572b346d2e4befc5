"""The SSRF guard: which addresses a webhook may go to, checked for every address a host has."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from recorder.notify.address_guard import (
    ForbiddenAddressError,
    GuardedResolver,
    allow_private_from_env,
    check_url,
    forbidden_reason,
)


class CannedResolver(AbstractResolver):
    """Answers from a table: public DNS cannot be reached from the tests."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "private"),  # documentation range: not routable
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fd00:ec2::254", "cloud metadata"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "embeds 127.0.0.1: loopback"),
        ("::ffff:169.254.169.254", "embeds 169.254.169.254: cloud metadata"),
        ("64:ff9b::a00:1", "embeds 10.0.0.1: private"),
        ("2002:7f00:1::", "embeds 127.0.0.1: loopback"),
        ("2001:db8::1", "private"),
    ],
)
def test_non_public_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "172.32.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_allowing_private_addresses_never_allows_cloud_metadata() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "fc00::1", "100.64.0.1"):
        assert forbidden_reason(ipaddress.ip_address(address), allow_private=True) is None
    for address in ("169.254.169.254", "fd00:ec2::254"):
        assert forbidden_reason(ipaddress.ip_address(address), allow_private=True) == (
            "cloud metadata"
        )


def test_the_environment_switch() -> None:
    assert allow_private_from_env({"RECORDER_WEBHOOK_ALLOW_PRIVATE": "1"})
    assert allow_private_from_env({"RECORDER_WEBHOOK_ALLOW_PRIVATE": "true"})
    assert not allow_private_from_env({"RECORDER_WEBHOOK_ALLOW_PRIVATE": "0"})
    assert not allow_private_from_env({})


async def test_a_host_is_refused_if_any_of_its_addresses_is_forbidden() -> None:
    canned = CannedResolver(
        {
            "public.test": ["93.184.216.34", "2606:4700:4700::1111"],
            "mixed.test": ["93.184.216.34", "10.0.0.7"],
            "metadata.test": ["169.254.169.254"],
        }
    )
    resolver = GuardedResolver(allow_private=False, inner=canned)
    await check_url("https://public.test/hook", resolver)
    with pytest.raises(ForbiddenAddressError) as raised:
        await check_url("https://mixed.test/hook", resolver)
    assert raised.value.address == "10.0.0.7" and raised.value.reason == "private"
    with pytest.raises(ForbiddenAddressError, match="cloud metadata"):
        await check_url("http://metadata.test/latest/meta-data/", resolver)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_ip_literals_are_checked_without_a_resolver(url: str) -> None:
    canned = CannedResolver({})
    with pytest.raises(ForbiddenAddressError):
        await check_url(url, GuardedResolver(allow_private=False, inner=canned))
    assert canned.asked == []


async def test_a_name_for_loopback_is_refused_through_the_real_resolver() -> None:
    with pytest.raises(ForbiddenAddressError, match="loopback"):
        await check_url("http://localhost:9/hook", GuardedResolver(allow_private=False))
