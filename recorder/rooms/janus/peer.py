"""The recorder's peer connection to Janus: one bundled transport, RTP routed by MID.

Janus offers every stream of the subscription on one transport, and with aiortc's default bundle
policy the second video m-line received nothing, so the connection bundles everything
(`max-bundle`). It also has no STUN or TURN server: Janus and the recorder reach each other by
host candidates in the deployment's own network.

aiortc routes an incoming RTP packet by its SSRC, learnt once when a receiver starts, and, for an
SSRC it does not know, by its payload type only when a single receiver has that type (never the
case with several publishers' VP8 on one transport). Janus reuses a freed m-line for another
feed with a new SSRC, so aiortc dropped that feed's packets silently (aiortc issue 1404). Janus
sends the MID header extension on every packet, so `MidFirstRtpRouter` looks at the MID first
and learns the packet's SSRC for that m-line's receiver (which also routes its RTCP sender
reports); packets without a MID still go by SSRC.

A reused m-line has a second problem: Janus keeps its sequence numbers and timestamps running
across the switch and asks the new publisher for no keyframe, so the m-line's decoder went on
decoding the new feed's delta frames onto the previous feed's picture (a participant who left,
under the name of the one who came). So when an m-line starts carrying another feed, the
connector calls `hold_until_keyframe(mid)`: the router drops that m-line's video packets until
the first packet of a keyframe (VP8 and H.264 are recognised; other codecs are not held), and
`request_keyframe(mid)` sends a PLI, which Janus passes on to the publisher. The decoder's first
input from the new feed is then a keyframe.
"""

from __future__ import annotations

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcdtlstransport import RtpReceiver, RtpRouter
from aiortc.rtp import RtpPacket

H264_IDR, H264_SPS, H264_STAP_A, H264_FU_A = 5, 7, 24, 28
H264_NAL_TYPE_MASK = 0x1F


def is_keyframe_start(codec: str, payload: bytes) -> bool:
    """Whether an RTP payload of `codec` begins a keyframe (True for codecs not recognised, so
    they are never held back)."""
    name = codec.lower()
    if name == "vp8":
        try:
            descriptor, rest = VpxPayloadDescriptor.parse(payload)
        except ValueError:
            return False
        # The first partition of a frame; bit 0 of the VP8 frame tag is 0 for a keyframe.
        return (
            bool(descriptor.partition_start)
            and descriptor.partition_id == 0
            and bool(rest)
            and not rest[0] & 0x01
        )
    if name == "h264":
        if not payload:
            return False
        nal_type = payload[0] & H264_NAL_TYPE_MASK
        if nal_type in (H264_IDR, H264_SPS):
            return True
        if nal_type == H264_STAP_A:  # aggregated NAL units, each with a 2-byte size
            offset = 1
            while offset + 2 < len(payload):
                size = int.from_bytes(payload[offset : offset + 2], "big")
                if payload[offset + 2] & H264_NAL_TYPE_MASK in (H264_IDR, H264_SPS):
                    return True
                offset += 2 + size
            return False
        if nal_type == H264_FU_A and len(payload) > 1:  # a fragment: its start bit and type
            return bool(payload[1] & 0x80) and payload[1] & H264_NAL_TYPE_MASK in (
                H264_IDR,
                H264_SPS,
            )
        return False
    return name != "rtx"  # a retransmission while held is a delta frame's as likely as not


class MidFirstRtpRouter(RtpRouter):
    """aiortc's router, routing by the MID header extension before the SSRC, and dropping a
    held m-line's packets until a keyframe starts."""

    def __init__(self) -> None:
        super().__init__()
        self.codecs: dict[int, str] = {}  # payload type -> codec name, from the remote SDP
        self.held: set[str] = set()  # mids whose packets wait for a keyframe
        self.held_packets = 0

    def route_rtp(self, packet: RtpPacket) -> RtpReceiver | None:
        mid = packet.extensions.mid
        if mid is not None:
            receiver = self.mid_table.get(mid)
            if receiver is not None:
                if mid in self.held:
                    codec = self.codecs.get(packet.payload_type, "")
                    if not is_keyframe_start(codec, packet.payload):
                        self.held_packets += 1
                        return None
                    self.held.discard(mid)
                self.ssrc_table[packet.ssrc] = receiver
                return receiver
        return super().route_rtp(packet)


class JanusPeerConnection(RTCPeerConnection):
    """A receive-side peer connection for a Janus multistream subscription."""

    def __init__(self) -> None:
        super().__init__(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.router = MidFirstRtpRouter()

    async def setRemoteDescription(self, sessionDescription: RTCSessionDescription) -> None:
        await super().setRemoteDescription(sessionDescription)
        for media in aiortc_sdp.SessionDescription.parse(sessionDescription.sdp).media:
            for codec in media.rtp.codecs:
                if codec.payloadType is not None:
                    self.router.codecs[codec.payloadType] = codec.name
        for transceiver in self.getTransceivers():
            transport = transceiver.receiver.transport
            current = getattr(transport, "_rtp_router", None)
            if isinstance(current, RtpRouter) and current is not self.router:
                # Receivers register when the transport connects, after the first description;
                # anything already known is kept.
                self.router.receivers |= current.receivers
                self.router.senders.update(current.senders)
                self.router.mid_table.update(current.mid_table)
                self.router.ssrc_table.update(current.ssrc_table)
                for payload_type, receivers in current.payload_type_table.items():
                    self.router.payload_type_table.setdefault(payload_type, set()).update(receivers)
                transport._rtp_router = self.router

    def hold_until_keyframe(self, mid: str) -> None:
        """Drop the m-line's video packets until a keyframe begins (see the module doc)."""
        self.router.held.add(mid)

    def waiting_for_keyframe(self, mid: str) -> bool:
        return mid in self.router.held

    def remote_ssrcs(self, mid: str) -> list[int]:
        """The media SSRCs (not RTX) the remote description announces for `mid`."""
        description = self.remoteDescription
        if description is None:
            return []
        for media in aiortc_sdp.SessionDescription.parse(description.sdp).media:
            if media.rtp.muxId != mid:
                continue
            rtx = {
                int(item)
                for group in media.ssrc_group
                if group.semantic == "FID"
                for item in group.items[1:]
            }
            return [entry.ssrc for entry in media.ssrc if entry.ssrc not in rtx]
        return []

    async def request_keyframe(self, mid: str) -> bool:
        """Send a PLI for the m-line's current SSRCs; False when there is nothing to ask."""
        transceiver = next((t for t in self.getTransceivers() if t.mid == mid), None)
        if transceiver is None or transceiver.kind != "video":
            return False
        ssrcs = self.remote_ssrcs(mid)
        for ssrc in ssrcs:
            await transceiver.receiver._send_rtcp_pli(ssrc)
        return bool(ssrcs)
