"""Room connectors, one per room technology, behind `recorder.rooms.base.RoomConnector`.

`connector_for(job.room, sink)` builds the connector a job names. Connectors are imported only
when asked for, so a worker pays for one room technology's imports, not all of them. A platform
adds its connector by adding its name to `recorder.job.ROOM_CONNECTORS` (what a job may say) and
here (where its class is), with the constructor `(room: RoomConfig, sink: FrameSink, *, clock)`.
"""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING

from recorder.errors import JoinError

if TYPE_CHECKING:
    from recorder.job import RoomConfig
    from recorder.rooms.base import FrameSink, MonotonicNow, RoomConnector

# connector name (a job's `room.connector`) -> "module:Class"
CONNECTORS: dict[str, str] = {
    "loopback": "recorder.rooms.loopback:LoopbackConnector",
    "janus": "recorder.rooms.janus:JanusConnector",
}


def connector_for(
    room: RoomConfig, sink: FrameSink, *, clock: MonotonicNow = time.monotonic
) -> RoomConnector:
    """The connector for a job's room, not yet joined; `JoinError` for a name with no connector."""
    target = CONNECTORS.get(room.connector)
    if target is None:
        raise JoinError(
            f"no connector for room technology {room.connector!r} in this build; "
            f"available: {', '.join(CONNECTORS)}"
        )
    module_name, class_name = target.split(":")
    connector_class = getattr(importlib.import_module(module_name), class_name)
    return connector_class(room, sink, clock=clock)
