"""Whole OpenFlow messages off the switch's socket, and the resynchronization
after a group-desc entry too large for OpenFlow's 16-bit lengths.

The channel's reader thread (``channel.OpenFlowChannel``) reads with these;
they know the wire's framing and nothing of waiters or replies."""

from __future__ import annotations

import select
import socket
import struct
from typing import Final

from lbaffd.openflow import groupdesc
from lbaffd.openflow.oskenfallback import constants as ofp
from lbaffd.openflow.replies import ConnectionLost, SkippedEntry

HEADER: Final = struct.Struct("!BBHI")  # version, type, length, xid
MAX_WRAPS: Final = 64  # an entry of up to 4 MiB (~50k buckets) can be skipped
WRAP_READ_TIMEOUT: Final = 5.0


def read_msg(sock: socket.socket) -> bytes:
    """The next message, whole (blocks until it is)."""
    head = read_exact(sock, 8)
    length = struct.unpack_from("!H", head, 2)[0]
    if length < 8:
        raise ConnectionLost(f"bad OpenFlow length {length}")
    return head + read_exact(sock, length - 8)


def read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionLost("connection closed by peer")
        buf += chunk
    return bytes(buf)


def read_within(sock: socket.socket, n: int, timeout: float) -> bytes:
    """``n`` bytes that the peer has already sent (the rest of a message):
    ConnectionLost if they do not arrive within ``timeout``."""
    buf = bytearray()
    while len(buf) < n:
        readable, _, _ = select.select([sock], [], [], timeout)
        if not readable:
            raise ConnectionLost(f"message cut short: {len(buf)} of {n} bytes")
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionLost("connection closed by peer")
        buf += chunk
    return bytes(buf)


def last_group_desc_part(raw: bytes) -> bool:
    """The last message of a group-desc reply: the only place OVS puts an
    entry too large for 16-bit lengths (``ofpmp_postappend`` aborts
    ovs-vswitchd 3.1 when another group would follow it)."""
    return (len(raw) >= 12 and raw[1] == ofp.OFPT_MULTIPART_REPLY
            and struct.unpack_from("!HH", raw, 8) == (ofp.OFPMP_GROUP_DESC, 0))


def unwrap_oversized_group(sock: socket.socket, raw: bytes
                           ) -> tuple[bytes, SkippedEntry | None]:
    """Resynchronize after a group-desc reply whose last entry is larger
    than OpenFlow's 16-bit lengths (see ``groupdesc.oversized_entry_fits``):
    the header announced the true length modulo 2^16, so the rest of the
    entry, a multiple of 64 KiB, is still in the stream.  Read it (bounded:
    at most ``MAX_WRAPS`` x 64 KiB, each within ``WRAP_READ_TIMEOUT``) and
    give back the message without it and the entry skipped.  Any other
    malformation is left to the decoders (framing is intact): ``raw`` comes
    back unchanged, nothing skipped."""
    offset = groupdesc.first_unframed_entry(raw)
    if offset is None or not groupdesc.looks_wrapped(raw, offset):
        return raw, None
    _, _, group_id, _ = groupdesc.GROUP_DESC.unpack_from(raw, offset)
    buf = raw
    for _ in range(MAX_WRAPS):
        buf += read_within(sock, groupdesc.WRAP, WRAP_READ_TIMEOUT)
        buckets_end = groupdesc.oversized_entry_fits(buf, offset)
        if buckets_end is not None:
            break
    else:
        raise ConnectionLost(f"group-desc entry of group {group_id} larger than "
                             f"{MAX_WRAPS} x 64 KiB: cannot resynchronize")
    skipped = SkippedEntry("group", group_id, len(buf) - offset,
                           groupdesc.count_buckets(buf, offset, buckets_end))
    kept = bytearray(buf[:offset])
    struct.pack_into("!H", kept, 2, len(kept))
    return bytes(kept), skipped
