"""Where a fragmented MP4 stops being playable: the durable prefix of a file that is still growing.

A fragmented MP4 is a flat sequence of top-level boxes (`ftyp`, `moov`, then `moof`+`mdat` pairs,
an `mfra` index at the very end). Any prefix that ends on a box boundary after an `mdat` (or after
the `moov`) plays up to that point; a prefix that ends inside a box, or right after a `moof` whose
`mdat` is missing, has a damaged tail. The encoder feeds every byte it writes through a
`BoxScanner` to tell the uploader how much is durable while recording, and a later run can call
`durable_length` on a spool a dead worker left behind to know how much of it plays.

Only box headers are parsed (8 or 16 bytes each): the cost does not depend on the media bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

BOX_HEADER_BYTES = 8  # 32-bit size + 4-character type
LARGE_BOX_HEADER_BYTES = 16  # size field 1: a 64-bit size follows the type
# A `moof` is useless until the `mdat` it describes is complete, so it never ends a durable prefix.
INCOMPLETE_ALONE = frozenset({b"moof"})
# A size field of 0 means "to the end of the file": never complete while the file grows.
UNTIL_END_OF_FILE = 2**63


def parse_box_header(header: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """`(box size, box type, header length)` from the start of a box, None if more bytes are needed.

    Raises ValueError for a size smaller than its own header (not an MP4, or corrupt).
    """
    if len(header) < BOX_HEADER_BYTES:
        return None
    size, box_type = struct.unpack(">I4s", bytes(header[:BOX_HEADER_BYTES]))
    header_length = BOX_HEADER_BYTES
    if size == 1:
        if len(header) < LARGE_BOX_HEADER_BYTES:
            return None
        size = struct.unpack(">Q", bytes(header[BOX_HEADER_BYTES:LARGE_BOX_HEADER_BYTES]))[0]
        header_length = LARGE_BOX_HEADER_BYTES
    elif size == 0:
        size = UNTIL_END_OF_FILE
    if size < header_length:
        raise ValueError(f"box {box_type!r} claims {size} bytes, less than its header")
    return size, box_type, header_length


class BoxScanner:
    """Follows the top-level boxes of an MP4 as its bytes arrive, in order, in any chunking.

    `durable_bytes` is the end of the last complete top-level box that can end a playable prefix;
    `fragments` counts complete `mdat` boxes that followed a `moof` (media fragments).
    """

    def __init__(self) -> None:
        self.position = 0  # bytes seen so far
        self.durable_bytes = 0
        self.fragments = 0
        self._header = bytearray()  # the current box's header bytes, until its size is known
        self._box_type = b""
        self._box_end: int | None = None  # the current box's end, once its header is known
        self._previous_type = b""

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Account for `data`, the next bytes of the file. True when `durable_bytes` advanced."""
        advanced = False
        view = memoryview(data).cast("B")
        offset = 0
        while offset < len(view):
            if self._box_end is None:
                take = min(len(view) - offset, LARGE_BOX_HEADER_BYTES - len(self._header))
                box_start = self.position - len(self._header)
                self._header += view[offset : offset + take]
                parsed = parse_box_header(self._header)
                if parsed is None:
                    self.position += take
                    offset += take
                    continue
                size, self._box_type, header_length = parsed
                used = header_length - (len(self._header) - take)  # header bytes of this chunk
                self._header.clear()
                self.position += used
                offset += used
                self._box_end = box_start + size
            else:
                take = min(len(view) - offset, self._box_end - self.position)
                self.position += take
                offset += take
            if self.position == self._box_end:
                advanced |= self._complete_box()
        return advanced

    def _complete_box(self) -> bool:
        box_type = self._box_type
        if box_type == b"mdat" and self._previous_type == b"moof":
            self.fragments += 1
        self._previous_type = box_type
        self._box_end = None
        if box_type in INCOMPLETE_ALONE:
            return False
        self.durable_bytes = self.position
        return True


def durable_length(path: Path) -> int:
    """The length of the playable prefix of the (possibly truncated) fragmented MP4 at `path`.

    Reads box headers only and seeks over the bodies, so it is quick on a multi-gigabyte spool.
    A damaged header ends the playable prefix where it starts.
    """
    durable = 0
    position = 0
    with path.open("rb") as file:
        size = file.seek(0, 2)
        while True:
            file.seek(position)
            try:
                parsed = parse_box_header(file.read(LARGE_BOX_HEADER_BYTES))
            except ValueError:
                break
            if parsed is None:
                break
            box_size, box_type, _ = parsed
            if position + box_size > size:
                break
            position += box_size
            if box_type not in INCOMPLETE_ALONE:
                durable = position
    return durable
