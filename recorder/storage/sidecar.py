"""The sidecar next to a spool (`<spool>.job.json`): where the recording goes, and its manifest.

Written when the recording starts (with a draft manifest), rewritten while it records whenever the
draft changed (at most every `SIDECAR_REFRESH_S`, `recorder.storage.sidecar_refresh`), and again
when it stops (with the final one), so that if the store is unreachable or the worker dies,
`recorder upload <spool>` knows the keys and the manifest without the job. It holds no secrets:
keys, ids and the manifest only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.errors import StorageError
from recorder.storage.atomic import write_atomically
from recorder.storage.keys import DeliveryTarget

SIDECAR_SUFFIX = ".job.json"
SIDECAR_VERSION = 1


@dataclass(frozen=True, slots=True)
class Sidecar:
    target: DeliveryTarget
    manifest: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        data = {
            "sidecarVersion": SIDECAR_VERSION,
            "recordingId": self.target.recording_id,
            "mediaKey": self.target.media_key,
            "manifestKey": self.target.manifest_key,
            "contentType": self.target.content_type,
            "manifest": self.manifest,
        }
        # Compact: the draft is rewritten while recording (`sidecar_refresh`), and Python's json
        # module has a C encoder only without `indent`: a long, busy room's draft (an hour of 50
        # people's speaking turns) is 0.35 MB and 12 ms compact, 1.1 MB and 46 ms indented.
        # Readers are programs (`recorder upload`); `jq` shows it to a person.
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, *, source: str) -> Sidecar:
        """Parse and check a sidecar; the keys in it are checked as strictly as a job's."""
        try:
            data = json.loads(raw)
            if data.get("sidecarVersion") != SIDECAR_VERSION:
                raise ValueError(f"unknown sidecarVersion {data.get('sidecarVersion')!r}")
            target = DeliveryTarget.for_media_key(
                str(data["mediaKey"]), recording_id=str(data["recordingId"])
            )
            if data.get("manifestKey") != target.manifest_key:
                raise ValueError("manifestKey does not sit next to mediaKey")
            manifest = data.get("manifest")
            if manifest is not None and not isinstance(manifest, dict):
                raise ValueError("manifest is not an object")
        except (ValueError, KeyError, AttributeError, TypeError) as error:
            raise StorageError(f"the sidecar {source} is not valid: {error}") from None
        return cls(target=target, manifest=manifest)


def sidecar_path(spool: Path) -> Path:
    return spool.with_name(spool.name + SIDECAR_SUFFIX)


def write_sidecar(spool: Path, sidecar: Sidecar) -> Path:
    """Write (or replace) the sidecar of `spool` atomically; its path."""
    path = sidecar_path(spool)
    try:
        write_atomically(path, sidecar.to_json())
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error}", local_path=str(spool)) from None
    return path


def read_sidecar(spool: Path) -> Sidecar | None:
    """The sidecar of `spool`, or None when there is none."""
    path = sidecar_path(spool)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StorageError(f"cannot read {path}: {error}", local_path=str(spool)) from None
    return Sidecar.from_json(raw, source=str(path))
