"""What a request to the switch comes back with: ``Reply`` (one message of a
reply, raw), ``SkippedEntry`` (an entry a reply could not carry), and the
ways a wait for it ends otherwise (``OpenFlowError``, ``ConnectionLost``,
``OpenFlowTimeout``).

A module of their own because both ``channel`` (the connection) and
``bundle`` (built over it) raise and catch them, and callers that only read
replies or handle their errors need neither.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
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
