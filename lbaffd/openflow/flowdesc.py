"""Framing of OF1.5 flow-desc multipart replies (OFPMP_FLOW_DESC) and
flow-monitor updates: where each entry starts and ends, without decoding it
(``messages.decode_flow`` does that; entries it declines go to
``oskenfallback``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

MULTIPART_REPLY_SIZE: Final = 16  # ofp_multipart_reply: header, type, flags, pad
FLOW_DESC_SIZE: Final = 24  # ofp_flow_desc before its match


class DecodeError(ValueError):
    """What a decoder of switch replies raises on bytes it cannot decode
    (malformed, truncated, or outside what the os-ken path parses): the one
    error the decoders of ``messages`` and ``oskenfallback`` and the framing
    here and in ``groupdesc`` document."""


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def iter_entries(buf: bytes, offset: int = MULTIPART_REPLY_SIZE
                 ) -> Iterator[tuple[int, int, bytes]]:
    """(offset, length, identity) of each ``ofp_flow_desc`` in a reply message.

    ``identity`` is the entry without its length and stats, which change on
    every dump: two entries with the same identity decode to the same flow.
    """
    total = len(buf)
    while offset < total:
        if offset + FLOW_DESC_SIZE + 4 > total:
            raise DecodeError(f"truncated flow-desc entry at offset {offset}")
        (length,) = struct.unpack_from("!H", buf, offset)
        end = offset + length
        pos = offset + FLOW_DESC_SIZE
        match_end = pos + _pad8(struct.unpack_from("!H", buf, pos + 2)[0])
        if length < FLOW_DESC_SIZE or end > total or match_end + 4 > end:
            raise DecodeError(f"bad flow-desc entry length {length} at offset {offset}")
        stats_end = match_end + _pad8(
            struct.unpack_from("!H", buf, match_end + 2)[0])
        if stats_end > end:
            raise DecodeError(f"flow-desc stats past the entry at offset {offset}")
        identity = bytes(buf[offset + 2:match_end]) + bytes(buf[stats_end:end])
        yield offset, length, identity
        offset = end


OFPMP_FLOW_MONITOR = 16
_UPDATE_EVENTS_WITH_COOKIE = (1, 2, 3)  # OFPFME_ADDED, _REMOVED, _MODIFIED


def monitor_update_cookies(buf: bytes) -> list[int]:
    """Cookies of the flows another controller added, removed or modified, from
    one OFPMP_FLOW_MONITOR reply (os-ken 4.2 cannot parse these).  The
    requester's own changes arrive abbreviated, without a cookie, and are skipped."""
    if len(buf) < 16 or struct.unpack_from("!H", buf, 8)[0] != OFPMP_FLOW_MONITOR:
        return []
    cookies: list[int] = []
    offset = MULTIPART_REPLY_SIZE
    while offset + 4 <= len(buf):
        length, event = struct.unpack_from("!HH", buf, offset)
        if length < 4:
            break
        if event in _UPDATE_EVENTS_WITH_COOKIE and offset + 24 <= len(buf):
            cookies.append(struct.unpack_from("!Q", buf, offset + 16)[0])
        offset += length
    return cookies
