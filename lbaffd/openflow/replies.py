"""What a request to the switch comes back with: ``Reply`` (one message of a
reply, raw), ``SkippedEntry`` (an entry a reply could not carry), the ways a
wait for it ends otherwise (``OpenFlowError``, ``ConnectionLost``,
``OpenFlowTimeout``), and what is waited on: a ``Waiter`` per request, an
``XidSpan`` for a bundle's adds.

A module of their own because both ``channel`` (the connection) and
``bundle`` (built over it) raise and catch them, and callers that only read
replies or handle their errors need neither.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from lbaffd.openflow import oskenfallback as fallback
from lbaffd.openflow.oskenfallback import constants as ofp

OFPMPF_REPLY_MORE = 1


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """An entry of a reply that the channel left out because OpenFlow cannot
    carry it (reported to ``on_skipped``)."""

    kind: str  # "group"
    group_id: int
    size: int  # its true length in bytes
    buckets: int


class OpenFlowError(Exception):
    """The switch answered with OFPT_ERROR."""

    def __init__(self, err_type: int, code: int, xid: int, data: bytes = b"") -> None:
        self.err_type, self.code, self.xid, self.data = err_type, code, xid, data
        super().__init__(f"OpenFlow error {fallback.error_name(err_type, code)} (xid {xid})")


class ConnectionLost(Exception):
    """The OpenFlow connection went away while waiting."""


class OpenFlowTimeout(Exception):
    """No reply in time."""


@dataclass
class Reply:
    """One message of a reply: raw bytes (always) and its header fields."""

    msg_type: int
    xid: int
    raw: bytes

    @property
    def more(self) -> bool:
        return (self.msg_type == ofp.OFPT_MULTIPART_REPLY and len(self.raw) >= 12
                and bool(struct.unpack_from("!H", self.raw, 10)[0] & OFPMPF_REPLY_MORE))

    def parse(self) -> Any:
        """The os-ken object, or None where os-ken cannot parse it."""
        return fallback.parse_message(self.msg_type, self.xid, self.raw)


@dataclass
class Waiter:
    """One request's reply as the channel's reader collects it."""

    done: threading.Event = field(default_factory=threading.Event)
    replies: list[Reply] = field(default_factory=list)
    error: Exception | None = None


@dataclass(slots=True, eq=False)
class XidSpan:
    """The xids from ``first`` to ``last`` (wrapping at 2^32) that no request
    of its own claims: a bundle's adds, which are only ever answered by an
    error (``OpenFlowChannel.watch_errors``).  One span instead of a waiter
    entry per add (at 85k adds those were ~7 MB for the length of a bundle).
    ``last`` moves forward as adds are sent; ``error`` is the first error the
    switch reported for any of them."""

    first: int
    last: int
    waiter: Waiter = field(default_factory=Waiter)

    def __contains__(self, xid: int) -> bool:
        if self.first <= self.last:
            return self.first <= xid <= self.last
        return xid >= self.first or xid <= self.last

    @property
    def error(self) -> Exception | None:
        return self.waiter.error
