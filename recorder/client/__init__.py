"""The embedded room's Python participant client: `participant = await join(url, name)`.

See `recorder.client.participant.RoomParticipant` for the calls, and `recorder.client.media` for
publishing generated frames as live tracks.
"""

from recorder.client.participant import (
    ParticipantInfo,
    RecordingState,
    RoomParticipant,
    join,
)

__all__ = ["ParticipantInfo", "RecordingState", "RoomParticipant", "join"]
