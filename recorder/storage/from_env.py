"""The sink the deployment configured (CONTRACT.md §2).

S3 when `RECORDER_S3_BUCKET` is set, otherwise the directory `RECORDER_OUTPUT_DIR` (default
`./recordings`) under the same keys. boto3 is imported only when the S3 sink is chosen, so a
worker writing locally does not pay for it at start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from recorder.storage.local import LocalSink
from recorder.storage.sink import S3_BUCKET_ENV_VAR, Sink

OUTPUT_DIR_ENV_VAR = "RECORDER_OUTPUT_DIR"
DEFAULT_OUTPUT_DIR = "./recordings"


def sink_from_env(environ: Mapping[str, str] | None = None) -> Sink:
    """The S3 sink when a bucket is configured, else the local directory sink."""
    env = os.environ if environ is None else environ
    if env.get(S3_BUCKET_ENV_VAR, "").strip():
        from recorder.storage.s3 import S3Settings, S3Sink  # noqa: PLC0415 - boto3 on demand

        return S3Sink(S3Settings.from_env(env))
    return LocalSink(Path(env.get(OUTPUT_DIR_ENV_VAR) or DEFAULT_OUTPUT_DIR))
