"""Storage of recordings: spool, S3 streaming multipart upload or local directory, manifest.

Start at `delivery.RecordingDelivery` (what a recording owns) and `from_env.sink_from_env()`; the
design and the recovery procedure are in docs/delivery.md.
"""
