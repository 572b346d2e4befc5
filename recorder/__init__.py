"""room-recorder: one hidden WebRTC peer per recording; composites, mixes, encodes, uploads."""

__version__ = "0.1.0"
