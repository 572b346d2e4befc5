"""The embedded room: signalling server and control service for local runs, tests and the demo.

`server.RoomServer` serves the protocol of docs/room-protocol.md on 127.0.0.1; `control` launches
one worker per recording; `channel` is the client end shared by the participant client and the
recorder's loopback connector; `ice` keeps every peer connection's media on 127.0.0.1.
"""
