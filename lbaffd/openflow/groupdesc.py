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

from lbaffd.openflow.flowdesc import DecodeError, parse_actions

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
    """(offset, group id, wire bytes) of each ``ofp_group_desc``, without
    decoding; ``DecodeError`` where an entry's length does not frame it."""
    while offset < len(buf):
        if offset + GROUP_DESC.size > len(buf):
            raise DecodeError(f"truncated group-desc entry at offset {offset}")
        length, _, group_id, _ = GROUP_DESC.unpack_from(buf, offset)
        if length < GROUP_DESC.size or offset + length > len(buf):
            raise DecodeError(f"bad group-desc entry length {length} at offset {offset}")
        yield offset, group_id, bytes(buf[offset:offset + length])
        offset += length


WRAP = 1 << 16  # OpenFlow lengths are 16-bit


def _props_fit(buf: bytes, pos: int, end: int) -> bool:
    """The group properties from ``pos`` end exactly at ``end``.  OF1.5
    defines one group property type, OFPGPT_EXPERIMENTER (OVS writes only
    the NTR selection method), each padded to 8 bytes."""
    while pos < end:
        if pos + PROP.size > end:
            return False
        ptype, plen = PROP.unpack_from(buf, pos)
        if ptype != ofp.OFPGPT_EXPERIMENTER or plen < 12:
            return False
        pos += (plen + 7) // 8 * 8
    return pos == end


def _entry_framed(buf: bytes, offset: int, length: int, bucket_len: int) -> bool:
    """The entry's buckets (each by its own length) end exactly where the
    bucket list does, and its properties exactly where the entry does."""
    end = offset + length
    pos = offset + GROUP_DESC.size
    buckets_end = pos + bucket_len
    if length < GROUP_DESC.size or end > len(buf) or buckets_end > end:
        return False
    while pos < buckets_end:
        if pos + BUCKET.size > buckets_end:
            return False
        blen, alen, _ = BUCKET.unpack_from(buf, pos)
        if blen < BUCKET.size or alen > blen - BUCKET.size:
            return False
        pos += blen
    return pos == buckets_end and _props_fit(buf, pos, end)


def first_unframed_entry(buf: bytes, offset: int = ofp.OFP_MULTIPART_REPLY_SIZE) -> int | None:
    """Offset of the first ``ofp_group_desc`` of a reply message whose lengths
    do not add up (None: the whole message is well framed)."""
    while offset < len(buf):
        if offset + GROUP_DESC.size > len(buf):
            return offset
        length, _, _, bucket_len = GROUP_DESC.unpack_from(buf, offset)
        if not _entry_framed(buf, offset, length, bucket_len):
            return offset
        offset += length
    return None


def group_desc_framed(buf: bytes) -> bool:
    """A group-desc reply message whose entries add up exactly."""
    return len(buf) >= ofp.OFP_MULTIPART_REPLY_SIZE and first_unframed_entry(buf) is None


def oversized_entry_fits(buf: bytes, offset: int) -> int | None:
    """Where the bucket list of the entry at ``offset`` ends, if the entry is
    a complete, well-framed group that ends exactly at the end of ``buf``, its
    16-bit entry and bucket-list lengths being the true ones modulo 2^16;
    else None.

    OVS 3.1 reports a group whose description exceeds 64 KiB (~800 buckets)
    with every length wrapped: ``ofputil_append_group_desc_reply`` stores the
    entry and bucket list lengths in 16 bits, ``ofpmp_postappend`` moves the
    entry into a message of its own, which ``ofpmsg_update_length`` then
    labels with the wrapped size.  Buckets keep true lengths, so the bucket
    walk finds the true end of the bucket list.
    """
    if offset + GROUP_DESC.size > len(buf):
        return None
    length, _, _, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    true_len = len(buf) - offset
    if true_len % WRAP != length % WRAP or true_len < WRAP:
        return None
    pos = start = offset + GROUP_DESC.size
    while True:
        if (pos - start) % WRAP == bucket_len and _props_fit(buf, pos, len(buf)):
            return pos
        if pos + BUCKET.size > len(buf):
            return None
        blen, alen, _ = BUCKET.unpack_from(buf, pos)
        if blen < BUCKET.size or alen > blen - BUCKET.size:
            return None
        pos += blen


def looks_wrapped(buf: bytes, offset: int) -> bool:
    """The entry at ``offset`` ends where ``buf`` does by its (16-bit) length,
    yet its buckets, walked by their own lengths, are all well formed and run
    past the claimed end of the bucket list to the end of ``buf``: the head of
    an entry whose lengths wrapped (see ``oversized_entry_fits``), the rest of
    which is still to come."""
    if offset + GROUP_DESC.size > len(buf):
        return False
    length, _, _, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    if offset + length != len(buf):
        return False
    pos = start = offset + GROUP_DESC.size
    while pos + BUCKET.size <= len(buf):
        blen, alen, _ = BUCKET.unpack_from(buf, pos)
        if blen < BUCKET.size or alen > blen - BUCKET.size:
            return False
        pos += blen
    return bool(pos - start > bucket_len)


def count_buckets(buf: bytes, offset: int, bucket_list_end: int | None = None) -> int:
    """How many buckets the entry at ``offset`` has, walking their lengths up
    to ``bucket_list_end`` (default: the entry's own bucket list length)."""
    _, _, _, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    pos = offset + GROUP_DESC.size
    end = bucket_list_end if bucket_list_end is not None else pos + bucket_len
    n = 0
    while pos + BUCKET.size <= min(end, len(buf)):
        blen = BUCKET.unpack_from(buf, pos)[0]
        if blen < BUCKET.size:
            break
        pos += blen
        n += 1
    return n


def decode_group_entry(buf: bytes, offset: int) -> RawGroup:
    """The ``ofp_group_desc`` at ``offset``; ``DecodeError`` unless it is framed."""
    if offset + GROUP_DESC.size > len(buf):
        raise DecodeError(f"truncated group-desc entry at offset {offset}")
    length, gtype, group_id, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    if not _entry_framed(buf, offset, length, bucket_len):
        raise DecodeError(f"group {group_id}: lengths do not frame the entry")
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
            if ppos + PROP.size > pos + blen:
                raise DecodeError(f"group {group_id}: truncated bucket property")
            ptype, plen = PROP.unpack_from(buf, ppos)
            if ptype == OFPGBPT_WEIGHT:
                if plen < 6 or ppos + 6 > pos + blen:
                    raise DecodeError(f"group {group_id}: short weight property")
                weight = struct.unpack_from("!H", buf, ppos + 4)[0]
            ppos += max(plen, 4)
        buckets.append(RawBucket(bucket_id, weight, actions))
        pos += blen
    props: list[RawGroupProperty] = []
    pos = buckets_end
    while pos < end:  # framed: each an experimenter property of 12+ bytes
        ptype, plen = PROP.unpack_from(buf, pos)
        exp, exp_type = struct.unpack_from("!II", buf, pos + 4)
        props.append(RawGroupProperty(ptype, exp, exp_type, bytes(buf[pos + 12:pos + plen])))
        pos += (plen + 7) // 8 * 8
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
    if len(data) < 28:
        raise DecodeError(f"selection method property of {len(data)} bytes")
    try:
        name = data[4:20].split(b"\0", 1)[0].decode("ascii")
        (param,) = struct.unpack_from("!Q", data, 20)
        fields: list[str] = []
        pos = 28
        while pos + 4 <= len(data):
            (header,) = struct.unpack_from("!I", data, pos)
            if header == 0:
                break  # padding
            num, hlen = ofp.oxm_parse_header(data, pos)
            vlen = _value_len(header, hlen)
            if vlen <= 0 or pos + hlen + vlen > len(data):
                raise DecodeError(f"hashed field {header:#x}: bad length")
            mask = data[pos + hlen:pos + hlen + vlen]
            field = str(ofp.oxm_to_user_header(num))
            fields.append(field if mask == b"\xff" * vlen else f"{field}/0x{mask.hex()}")
            pos += hlen + vlen
    except DecodeError:
        raise
    except Exception as exc:  # os-ken on an unknown or damaged OXM header
        raise DecodeError(f"selection method property: {exc!r}") from exc
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
