"""OF1.5 group-desc replies and OVS's selection-method group property.

lbaffd decodes group-desc entries itself, with the same action parser as
flow-desc (os-ken's group-desc parsing has been reported to mis-slice
multi-bucket groups, and its bucket actions must be parsed copy_field-safe
anyway).  The selection-method property (Netronome experimenter,
``selection_method=hash,fields(ip_src)``) has no os-ken class at all; it is
carried as a generic ``OFPGroupPropExperimenter``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from lbaffd.openflow.flowdesc import parse_actions

NTR_EXPERIMENTER = 0x0000154D
NTR_SELECTION_METHOD = 1
OFPGBPT_WEIGHT = 0
GROUP_DESC = struct.Struct("!HBxIH6x")  # length, type, group_id, bucket_array_len
BUCKET = struct.Struct("!HHI")  # len, action_array_len, bucket_id
PROP = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class RawBucket:
    bucket_id: int
    weight: int | None
    actions: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class RawGroupProperty:
    type: int
    experimenter: int
    exp_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RawGroup:
    group_id: int
    type: int
    buckets: tuple[RawBucket, ...]
    properties: tuple[RawGroupProperty, ...]
    wire: bytes = b""  # the entry as sent by the switch: identical bytes, identical group


def iter_group_entries(buf: bytes, offset: int = ofp.OFP_MULTIPART_REPLY_SIZE
                       ) -> Iterator[tuple[int, int, bytes]]:
    """(offset, group id, wire bytes) of each ``ofp_group_desc``, without decoding."""
    while offset < len(buf):
        length, _, group_id, _ = GROUP_DESC.unpack_from(buf, offset)
        yield offset, group_id, bytes(buf[offset:offset + length])
        offset += length


def decode_group_entry(buf: bytes, offset: int) -> RawGroup:
    length, gtype, group_id, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    end = offset + length
    pos = offset + GROUP_DESC.size
    buckets_end = pos + bucket_len
    buckets: list[RawBucket] = []
    while pos < buckets_end:
        blen, alen, bucket_id = BUCKET.unpack_from(buf, pos)
        actions = parse_actions(buf, pos + BUCKET.size, alen)
        weight = None
        ppos = pos + BUCKET.size + alen
        while ppos < pos + blen:
            ptype, plen = PROP.unpack_from(buf, ppos)
            if ptype == OFPGBPT_WEIGHT:
                weight = struct.unpack_from("!H", buf, ppos + 4)[0]
            ppos += max(plen, 4)
        buckets.append(RawBucket(bucket_id, weight, actions))
        pos += blen
    props: list[RawGroupProperty] = []
    pos = buckets_end
    while pos < end:
        ptype, plen = PROP.unpack_from(buf, pos)
        exp, exp_type = (struct.unpack_from("!II", buf, pos + 4)
                         if ptype == ofp.OFPGPT_EXPERIMENTER else (0, 0))
        props.append(RawGroupProperty(ptype, exp, exp_type, bytes(buf[pos + 12:pos + plen])))
        pos += (plen + 7) // 8 * 8 if plen else 8
    return RawGroup(group_id, gtype, tuple(buckets), tuple(props), bytes(buf[offset:end]))


def decode_group_desc_body(buf: bytes, offset: int = ofp.OFP_MULTIPART_REPLY_SIZE
                           ) -> list[RawGroup]:
    """Every ``ofp_group_desc`` in one reply message (header included in ``buf``)."""
    return [decode_group_entry(buf, off) for off, _, _ in iter_group_entries(buf, offset)]


def _value_len(header: int, header_len: int) -> int:
    """OXM payload length; an experimenter OXM counts its 4-byte id in it."""
    return (header & 0xFF) - (header_len - 4)


def decode_selection_method(prop: RawGroupProperty) -> tuple[str, int, tuple[str, ...]]:
    """-> (method, param, hashed OXM field names) of an NTR selection-method property.

    OVS encodes each hashed field as an OXM TLV whose *value* is the mask to
    hash with (all ones for a whole field); a partial mask shows up as
    ``name/0x..`` so it never equals a desired whole-field list.
    """
    data = prop.data
    name = data[4:20].split(b"\0", 1)[0].decode()
    (param,) = struct.unpack_from("!Q", data, 20)
    fields: list[str] = []
    pos = 28
    while pos + 4 <= len(data):
        (header,) = struct.unpack_from("!I", data, pos)
        if header == 0:
            break  # padding
        num, hlen = ofp.oxm_parse_header(data, pos)
        vlen = _value_len(header, hlen)
        mask = data[pos + hlen:pos + hlen + vlen]
        field = str(ofp.oxm_to_user_header(num))
        fields.append(field if mask == b"\xff" * vlen else f"{field}/0x{mask.hex()}")
        pos += hlen + vlen
    return name, param, tuple(fields)


def encode_selection_method_property(method: str, param: int, fields: Iterable[str]) -> Any:
    """The NTR selection-method property for a group mod (whole fields hashed)."""
    body = bytearray(b"\0" * 4 + method.encode().ljust(16, b"\0") + struct.pack("!Q", param))
    for name in fields:
        start = len(body)
        hlen = ofp.oxm_serialize_header(ofp.oxm_from_user_header(name), body, start)
        (header,) = struct.unpack_from("!I", body, start)
        body += b"\xff" * _value_len(header, hlen)
    return SelectionMethodProperty(bytes(body))


class SelectionMethodProperty(parser.OFPGroupPropExperimenter):  # type: ignore[misc]
    """os-ken's experimenter property holds 4-byte words, but a hashed field
    list need not be word-sized (``eth_src`` is 4 + 6 bytes) and padding
    inside the property's length reads as a bad OXM to OVS.  Serialize the
    raw body with the length OpenFlow wants (padding excluded)."""

    def __init__(self, body: bytes) -> None:
        super().__init__(type_=ofp.OFPGPT_EXPERIMENTER, experimenter=NTR_EXPERIMENTER,
                         exp_type=NTR_SELECTION_METHOD, data=[])
        self.body = body

    def serialize(self) -> bytearray:
        self.length = 12 + len(self.body)
        buf = bytearray(struct.pack("!HHII", self.type, self.length, self.experimenter,
                                    self.exp_type))
        buf += self.body
        buf += b"\0" * (-len(buf) % 8)
        return buf
