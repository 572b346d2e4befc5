"""The Janus VideoRoom connector (`room.connector = "janus"`).

`api` speaks Janus' JSON API over a WebSocket (sessions, handles, requests, events), `streams`
decides what the recorder's one multistream subscription carries (pure), `simulcast` which layer
a tile needs (pure), `peer` is the receiving peer connection (max-bundle, RTP routed by MID), and
`connector` follows the room with them. docs/janus.md has the design and the measurements.
"""

from recorder.rooms.janus.connector import JanusConnector, JanusTimings

__all__ = ["JanusConnector", "JanusTimings"]
