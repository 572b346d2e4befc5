"""Peer connections whose media never leaves 127.0.0.1.

The embedded room is for local runs, tests and the demo: every publisher and the hidden recorder
run on one machine, and their traffic must stay on the loopback interface. aioice gathers host
candidates on every interface except loopback (`aioice.ice.get_host_addresses` leaves out
127.0.0.1 and ::1) and aiortc adds Google's STUN server by default, so a plain
`RTCPeerConnection` would talk over the machine's other interfaces and to the Internet.

`LoopbackPeerConnection` fixes both for its own gathering only:
- no ICE servers (no STUN, no TURN);
- host candidates only on 127.0.0.1, through one patch point: `aioice.ice.get_host_addresses` is
  wrapped once to return the addresses pinned in a context variable, which this class sets only
  while its own `setLocalDescription` gathers (aiortc gathers there and nowhere else). Other peer
  connections in the same process (a Janus connector on a real interface) are not affected;
- remote candidates other than 127.0.0.1 are removed from every remote description, so no
  connectivity check (nor an mDNS lookup of a `.local` name) is ever sent elsewhere.
"""

from __future__ import annotations

import contextvars
import re

import aioice.ice
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

LOOPBACK_ADDRESS = "127.0.0.1"

_pinned_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "pinned_host_addresses", default=None
)
# `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...`
_CANDIDATE_LINE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (?P<address>\S+) \d+ ")


def _install_host_address_pin() -> None:
    """Wrap aioice's host address discovery once, so a context can pin the addresses."""
    current = aioice.ice.get_host_addresses
    if getattr(current, "_pin_aware", False):
        return
    original = current

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        pinned = _pinned_host_addresses.get()
        if pinned is not None:
            return list(pinned)
        return original(use_ipv4, use_ipv6)

    get_host_addresses._pin_aware = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


def only_loopback_candidates(sdp: str) -> str:
    """The SDP without `a=candidate` lines whose address is not 127.0.0.1."""
    kept = []
    for line in sdp.splitlines():
        match = _CANDIDATE_LINE.match(line)
        if match is None or match["address"] == LOOPBACK_ADDRESS:
            kept.append(line)
    return "\r\n".join(kept) + "\r\n"


def candidate_addresses(sdp: str) -> set[str]:
    """Every address named by an `a=candidate` line (tests check they are all 127.0.0.1)."""
    return {match["address"] for line in sdp.splitlines() if (match := _CANDIDATE_LINE.match(line))}


class LoopbackPeerConnection(RTCPeerConnection):
    """An aiortc peer connection that gathers, and accepts, ICE candidates on 127.0.0.1 only.

    It also bundles every m-line on one transport (`max-bundle`): one ICE and DTLS session per
    peer connection, whatever the number of tracks.
    """

    def __init__(self) -> None:
        _install_host_address_pin()
        super().__init__(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))

    async def setLocalDescription(
        self, sessionDescription: RTCSessionDescription | None = None
    ) -> None:
        token = _pinned_host_addresses.set((LOOPBACK_ADDRESS,))
        try:
            await super().setLocalDescription(sessionDescription)
        finally:
            _pinned_host_addresses.reset(token)

    async def setRemoteDescription(self, sessionDescription: RTCSessionDescription) -> None:
        await super().setRemoteDescription(
            RTCSessionDescription(
                sdp=only_loopback_candidates(sessionDescription.sdp),
                type=sessionDescription.type,
            )
        )
