"""NXT_CT_FLUSH (OVS >= 3.1): flush the conntrack entries that match a zone
and parts of the original and reply tuples.

Layout, as OVS's ``ofp_ct_match_encode`` (lib/ofp-ct.c) writes it and
``ovs-ofctl ct-flush`` sends it (checked byte for byte against ovs-ofctl 3.1
in tests/unit/test_ctflush.py): a Nicira experimenter message (vendor
0x2320, subtype 32) whose body is ``struct nx_ct_flush`` (ip_proto, 7 pad
bytes) and then OpenFlow properties: ``NXT_CT_ORIG_TUPLE`` (0) and
``NXT_CT_REPLY_TUPLE`` (1), each a nested property list (4 pad bytes after
its header) of ``NXT_CT_TUPLE_SRC``/``_DST`` (0/1: a 16-byte IPv6 address,
IPv4 as ``::ffff:a.b.c.d``) and ``_SRC_PORT``/``_DST_PORT`` (2/3: 16-bit,
padded to 8 bytes as ``ofpprop_put_be16`` does), and ``NXT_CT_ZONE_ID``
(2: 16-bit).  A tuple field left out is a wildcard: ovs-vswitchd then walks
the zone's entries and compares the given fields (``ct_dpif_flush_tuple``
with ``ct_dpif_tuple_ip_cmp_partial``); only a complete original 5-tuple
without a reply tuple is looked up directly.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from lbaffd.openflow.messages import RawMessage

OFPT_EXPERIMENTER = 4
NX_VENDOR = 0x00002320
NXT_CT_FLUSH = 32
ORIG_TUPLE, REPLY_TUPLE, ZONE_ID = 0, 1, 2
TUPLE_SRC, TUPLE_DST, TUPLE_SRC_PORT, TUPLE_DST_PORT = 0, 1, 2, 3

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class CtTuple:
    """The parts of a conntrack tuple to match; None is a wildcard."""

    src: Address | None = None
    dst: Address | None = None
    src_port: int | None = None
    dst_port: int | None = None

    @property
    def empty(self) -> bool:
        return self.src is None and self.dst is None and not self.src_port \
            and not self.dst_port


@dataclass(frozen=True, slots=True)
class CtFlush:
    """Flush the entries of ``zone`` (all zones if None) of protocol
    ``ip_proto`` whose tuples match ``orig`` and ``reply``."""

    zone: int | None
    ip_proto: int
    orig: CtTuple = CtTuple()
    reply: CtTuple = CtTuple()

    def message(self) -> RawMessage:
        body = struct.pack("!IIB7x", NX_VENDOR, NXT_CT_FLUSH, self.ip_proto)
        body += _tuple(ORIG_TUPLE, self.orig) + _tuple(REPLY_TUPLE, self.reply)
        if self.zone is not None:
            body += _u16(ZONE_ID, self.zone)
        return RawMessage(OFPT_EXPERIMENTER, body)


def _prop(ptype: int, value: bytes) -> bytes:
    """An OpenFlow property: type, length (header + value), value, padding to 8."""
    raw = struct.pack("!HH", ptype, 4 + len(value)) + value
    return raw + bytes(-len(raw) % 8)


def _u16(ptype: int, value: int) -> bytes:
    """16-bit properties carry 2 bytes of padding inside their length (8)."""
    return _prop(ptype, struct.pack("!H2x", value))


def _address(ip: Address) -> bytes:
    if ip.version == 4:
        return bytes(10) + b"\xff\xff" + ip.packed
    return ip.packed


def _tuple(ptype: int, t: CtTuple) -> bytes:
    if t.empty:
        return b""
    nested = b""
    if t.src is not None:
        nested += _prop(TUPLE_SRC, _address(t.src))
    if t.dst is not None:
        nested += _prop(TUPLE_DST, _address(t.dst))
    if t.src_port:
        nested += _u16(TUPLE_SRC_PORT, t.src_port)
    if t.dst_port:
        nested += _u16(TUPLE_DST_PORT, t.dst_port)
    # a nested property list starts 8 bytes in (ofpprop_put_nested: 4 pad bytes)
    return struct.pack("!HH4x", ptype, 8 + len(nested)) + nested
