"""room-recorder: one hidden WebRTC peer per recording that composites, mixes, encodes and uploads."""

__version__ = "0.1.0"
