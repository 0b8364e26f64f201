"""FlowSpec/GroupSpec -> OpenFlow 1.5 wire bytes, without os-ken objects.

The os-ken encoder (``codec``) builds a tree of message, match, instruction
and action objects for every flow mod and serializes it through many small
``struct`` calls: at 10^5 flows that is most of a cold pass.  This module
writes the very same bytes directly (``tests/unit/test_wire_encode.py`` holds
it byte-identical to ``codec`` for everything the compiler emits, os-ken's
quirks included: ``PaddedNAT``, the selection-method property, ``move`` as
OF1.5 ``copy_field``).

A message is encoded once, without its xid (``RawMessage``); the channel
stamps the xid (and wraps it in OFPT_BUNDLE_ADD_MESSAGE) when it sends it.
OXM field headers are derived from os-ken's field table once per field name;
encoded match entries and actions are cached by value.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from os_ken.lib import type_desc
from os_ken.ofproto import ofproto_v1_5 as ofp

from lbaffd.openflow.flowspec import (
    Action,
    Bucket,
    Ct,
    FlowSpec,
    Group,
    GroupSpec,
    Learn,
    LearnLoadField,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    Match,
    MatchValue,
    Move,
    Nat,
    Output,
    Resubmit,
    SetField,
)
from lbaffd.openflow.groupdesc import NTR_EXPERIMENTER, NTR_SELECTION_METHOD

VERSION: Final = 6  # OpenFlow 1.5
OFPT_FLOW_MOD: Final = 14
OFPT_GROUP_MOD: Final = 15
OFPT_BUNDLE_ADD_MESSAGE: Final = 34
MSG_NAMES: Final = {OFPT_FLOW_MOD: "OFPFlowMod", OFPT_GROUP_MOD: "OFPGroupMod"}

OFPFC_ADD: Final = 0
OFPFC_MODIFY_STRICT: Final = 2
OFPFC_DELETE_STRICT: Final = 4
OFPGC_ADD: Final = 0
OFPGC_MODIFY: Final = 1
OFPGC_DELETE: Final = 2
OFPGT_SELECT: Final = 1
ANY: Final = 0xFFFFFFFF  # OFPP_ANY, OFPG_ANY, OFP_NO_BUFFER, OFPG_BUCKET_ALL
ALL_ONES64: Final = (1 << 64) - 1

OFPAT_OUTPUT: Final = 0
OFPAT_GROUP: Final = 22
OFPAT_SET_FIELD: Final = 25
OFPAT_COPY_FIELD: Final = 28
OFPAT_EXPERIMENTER: Final = 0xFFFF
NX_EXPERIMENTER: Final = 0x00002320
NXAST_RESUBMIT_TABLE: Final = 14
NXAST_LEARN: Final = 16
NXAST_CT: Final = 35
NXAST_NAT: Final = 36
NX_CT_F_COMMIT: Final = 1
NX_CT_RECIRC_NONE: Final = 0xFF
NX_NAT_FLAGS: Final = {"dst": 2, "src": 1, "": 0}
NX_NAT_RANGE_IPV4_MIN: Final = 1
NX_NAT_RANGE_IPV4_MAX: Final = 2
NX_NAT_RANGE_IPV6_MIN: Final = 4
NX_NAT_RANGE_IPV6_MAX: Final = 8
NX_NAT_RANGE_PROTO_MIN: Final = 16
NX_NAT_RANGE_PROTO_MAX: Final = 32
OFPGBPT_WEIGHT: Final = 0
OFPGPT_EXPERIMENTER: Final = 0xFFFF
OFPIT_APPLY_ACTIONS: Final = 4
OFPMT_OXM: Final = 1

HEADER = struct.Struct("!BBHI")
# flow mod after the header: cookie, cookie_mask, table, command, idle, hard,
# priority, buffer_id, out_port, out_group, flags, importance
FLOW_MOD = struct.Struct("!QQBBHHHIIIHH")
GROUP_MOD = struct.Struct("!HBxIH2xI")  # command, type, group_id, bucket_array_len, bucket id
# bundle add header and the inner message's header
BUNDLE_ADD = struct.Struct("!BBHII2xHBBHI")
U16_U16 = struct.Struct("!HH")
INSTRUCTION = struct.Struct("!HH4x")
OUTPUT = struct.Struct("!HHIH6x")
GROUP = struct.Struct("!HHI")
COPY_FIELD = struct.Struct("!HHHHH2x")
NX_HEADER = struct.Struct("!HHIH")  # type, len, experimenter, subtype
RESUBMIT = struct.Struct("!HHIHHB3x")
CT = struct.Struct("!HHIHH4sHB3xH")
NAT = struct.Struct("!HHIH2xHH")
LEARN = struct.Struct("!HHIHHHHQHBxHH")
BUCKET = struct.Struct("!HHI")
WEIGHT = struct.Struct("!HHH2x")
SELECTION_METHOD = struct.Struct("!HHII")
U16 = struct.Struct("!H")
U64 = struct.Struct("!Q")

_ZEROS = bytes(8)


def _pad8(n: int) -> bytes:
    return _ZEROS[: -n % 8]


# ------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One encoded OpenFlow 1.5 message but for its xid: ``body`` is
    everything after the 8-byte header (the channel adds header and xid)."""

    msg_type: int
    body: bytes

    @property
    def name(self) -> str:
        return MSG_NAMES.get(self.msg_type, f"OFPType{self.msg_type}")

    def with_xid(self, xid: int) -> bytes:
        return HEADER.pack(VERSION, self.msg_type, 8 + len(self.body), xid) + self.body

    def bundle_add(self, xid: int, bundle_id: int, flags: int) -> bytes:
        """OFPT_BUNDLE_ADD_MESSAGE carrying this message; both headers carry
        ``xid`` (OF1.5 7.3.9.2), no properties."""
        size = 8 + len(self.body)
        return BUNDLE_ADD.pack(VERSION, OFPT_BUNDLE_ADD_MESSAGE, 16 + size, xid, bundle_id,
                               flags, VERSION, self.msg_type, size, xid) + self.body


def bundle_add(message: bytes, xid: int, bundle_id: int, flags: int) -> bytes:
    """Wrap an already serialized message (its xid set to ``xid``)."""
    return BUNDLE_ADD.pack(VERSION, OFPT_BUNDLE_ADD_MESSAGE, 16 + len(message), xid, bundle_id,
                           flags, *HEADER.unpack_from(message)) + message[8:]


# ------------------------------------------------------------------ OXM fields


class _Field:
    """How one OXM field is written: headers (plain/masked, experimenter id
    included), its value size, a value encoder and os-ken's sort key."""

    __slots__ = ("encode", "masked", "name", "plain", "size", "sort_key")

    def __init__(self, name: str) -> None:
        num, kind = ofp.oxm_get_field_info_by_name(name)
        self.name = name
        self.sort_key: int = num[0] if isinstance(num, tuple) else num
        self.encode: Callable[[Any], bytes] | None = None
        self.size = 0
        self.plain = self.masked = b""
        if isinstance(kind, type_desc.IntDescr):
            limit = (1 << (8 * kind.size)) - 1
            size = kind.size
            self.encode = lambda v: (v & limit).to_bytes(size, "big")
        elif kind is type_desc.IPv4Addr:
            self.encode = _ipv4
        elif kind is type_desc.IPv6Addr:
            self.encode = _ipv6
        elif kind is type_desc.MacAddr:
            self.encode = _mac
        else:
            return  # left to os-ken (see _oxm_tlv)
        self.size = size = kind.size
        zero = bytes(size)
        buf = bytearray()
        ofp.oxm_serialize(num, zero, None, buf, 0)
        self.plain = bytes(buf[: len(buf) - size])
        buf = bytearray()
        ofp.oxm_serialize(num, zero, zero, buf, 0)
        self.masked = bytes(buf[: len(buf) - 2 * size])


class _NotCanonical(ValueError):
    pass


def _ipv4(text: str) -> bytes:
    raw = socket.inet_pton(socket.AF_INET, text)
    if socket.inet_ntop(socket.AF_INET, raw) != text:
        raise _NotCanonical(text)
    return raw


def _ipv6(text: str) -> bytes:
    raw = socket.inet_pton(socket.AF_INET6, text)
    if socket.inet_ntop(socket.AF_INET6, raw) != text:
        raise _NotCanonical(text)
    return raw


def _mac(text: str) -> bytes:
    if len(text) != 17 or text[2::3] != ":::::":
        raise _NotCanonical(text)
    return bytes.fromhex(text.replace(":", ""))


@functools.cache  # bounded by the OXM field names
def _field(name: str) -> _Field:
    return _Field(name)


def _oxm_tlv_slow(name: str, value: Any, normalize: bool) -> bytes:
    """os-ken's own encoding, for values the fast path does not take
    (non-canonical address text, CIDR strings, unusual field types)."""
    if normalize:
        name, value = ofp.oxm_normalize_user(name, value)
    num, v, m = ofp.oxm_from_user(name, value)
    buf = bytearray()
    ofp.oxm_serialize(num, v, m, buf, 0)
    return bytes(buf)


def _oxm_tlv(name: str, value: Any, normalize: bool) -> bytes:
    """One OXM TLV.  ``normalize`` (matches): a masked value is ANDed with
    its mask, as os-ken's OFPMatch does."""
    f = _field(name)
    enc = f.encode
    if enc is None:
        return _oxm_tlv_slow(name, value, normalize)
    try:
        if isinstance(value, tuple | list):
            v, m = value
            vb, mb = enc(v), enc(m)
            if normalize:
                vb = bytes(a & b for a, b in zip(vb, mb, strict=True))
            return f.masked + vb + mb
        return f.plain + enc(value)
    except (_NotCanonical, OSError, TypeError, ValueError, AttributeError):
        return _oxm_tlv_slow(name, value, normalize)


# Bounded memos of encoded pieces: what recurs (a VIP's id in its flows, the
# common fields) is hit while it is hot; 8k entries are ~2 MB, 128k were ~27 MB.
CACHE_LIMIT = 1 << 13

@functools.lru_cache(maxsize=CACHE_LIMIT)
def _match_entry(item: tuple[str, MatchValue]) -> tuple[int, bytes]:
    name, value = item
    return _field(name).sort_key, _oxm_tlv(name, value, True)


def _sort_key(entry: tuple[int, bytes]) -> int:
    return entry[0]


def encode_match(match: Match) -> bytes:
    """``ofp_match`` (OXM), padded to 8 bytes; fields in os-ken's order
    (by OXM type number, stable)."""
    entries = [_match_entry(item) for item in match.fields]
    entries.sort(key=_sort_key)
    body = b"".join([tlv for _, tlv in entries])
    size = 4 + len(body)
    return U16_U16.pack(OFPMT_OXM, size) + body + _ZEROS[: -size % 8]


# ------------------------------------------------------------------ actions


def _output(a: Output) -> bytes:
    return OUTPUT.pack(OFPAT_OUTPUT, 16, a.port, a.max_len)


def _group(a: Group) -> bytes:
    return GROUP.pack(OFPAT_GROUP, 8, a.group_id)


@functools.lru_cache(maxsize=CACHE_LIMIT)
def _set_field_bytes(name: str, value: int | str) -> bytes:
    tlv = _oxm_tlv(name, value, False)
    size = (4 + len(tlv) + 7) // 8 * 8
    return U16_U16.pack(OFPAT_SET_FIELD, size) + tlv + _ZEROS[: size - 4 - len(tlv)]


def _set_field(a: SetField) -> bytes:
    return _set_field_bytes(a.field, a.value)


@functools.cache  # bounded by the field names
def _oxm_id(name: str) -> bytes:
    """OFPOxmId: the 4-byte header of a whole (unmasked) basic/NXM field."""
    num, kind = ofp.oxm_get_field_info_by_name(name)
    return struct.pack("!I", (num << 9) | kind.size)


def _subfield_header(name: str) -> bytes:
    """``oxm_serialize_header``: what NX actions (ct zone, learn) name a field by."""
    buf = bytearray()
    ofp.oxm_serialize_header(ofp.oxm_from_user_header(name), buf, 0)
    return bytes(buf)


_header = functools.lru_cache(maxsize=None)(_subfield_header)  # bounded by the field names


def _move(a: Move) -> bytes:
    body = _oxm_id(a.src) + _oxm_id(a.dst)
    size = (12 + len(body) + 7) // 8 * 8
    return (COPY_FIELD.pack(OFPAT_COPY_FIELD, size, a.n_bits, a.src_ofs, a.dst_ofs) + body
            + _ZEROS[: size - 12 - len(body)])


def _resubmit(a: Resubmit) -> bytes:
    return RESUBMIT.pack(OFPAT_EXPERIMENTER, 16, NX_EXPERIMENTER, NXAST_RESUBMIT_TABLE,
                         a.in_port, a.table)


def _nat(n: Nat) -> bytes:
    """NXAST_NAT padded to 8 bytes (as ``codec.PaddedNAT``)."""
    present = 0
    opt = b""
    v6 = ":" in n.ip_min
    if n.ip_min:
        present |= NX_NAT_RANGE_IPV6_MIN if v6 else NX_NAT_RANGE_IPV4_MIN
        opt += _addr(n.ip_min, v6)
    if n.ip_max:
        present |= NX_NAT_RANGE_IPV6_MAX if v6 else NX_NAT_RANGE_IPV4_MAX
        opt += _addr(n.ip_max, v6)
    if n.port_min:
        present |= NX_NAT_RANGE_PROTO_MIN
        opt += U16.pack(n.port_min)
    if n.port_max:
        present |= NX_NAT_RANGE_PROTO_MAX
        opt += U16.pack(n.port_max)
    size = (16 + len(opt) + 7) // 8 * 8
    return (NAT.pack(OFPAT_EXPERIMENTER, size, NX_EXPERIMENTER, NXAST_NAT,
                     NX_NAT_FLAGS[n.kind], present) + opt + _ZEROS[: size - 16 - len(opt)])


def _addr(text: str, v6: bool) -> bytes:
    try:
        return _ipv6(text) if v6 else _ipv4(text)
    except (_NotCanonical, OSError):
        kind = type_desc.IPv6Addr if v6 else type_desc.IPv4Addr
        return bytes(kind.from_user(text))


@functools.lru_cache(maxsize=CACHE_LIMIT)
def _ct(a: Ct) -> bytes:
    nested = b""
    if a.nat is not None:
        nested += _nat(a.nat)
    if a.mark is not None:
        nested += _set_field_bytes("ct_mark", a.mark)
    if a.zone_field:
        zone_src, zone = _header(a.zone_field), 15  # ofs_nbits(0, 15)
    else:
        zone_src, zone = bytes(4), a.zone
    size = (24 + len(nested) + 7) // 8 * 8
    return (CT.pack(OFPAT_EXPERIMENTER, size, NX_EXPERIMENTER, NXAST_CT,
                    NX_CT_F_COMMIT if a.commit else 0, zone_src, zone,
                    NX_CT_RECIRC_NONE if a.table is None else a.table, 0)
            + nested + _ZEROS[: size - 24 - len(nested)])


@functools.cache  # bounded by the field names
def _subfield(name: str) -> bytes:
    """A learn spec's field: its header and bit offset 0."""
    return _header(name) + b"\0\0"


# learn spec headers: src immediate (1 << 13), dst load (1 << 11), n_bits
_LEARN_SPEC_TYPES: dict[type, int] = {
    LearnMatchField: 0, LearnMatchValue: 0x2000, LearnLoadValue: 0x2800, LearnLoadField: 0x0800}


def _learn(a: Learn) -> bytes:
    parts: list[bytes] = []
    for s in a.specs:
        kind = _LEARN_SPEC_TYPES.get(type(s))
        if kind is None:
            raise TypeError(f"lbaffd never sends learn spec {s!r}")
        n_bits = s.n_bits
        if kind & 0x2000:
            size = (n_bits + 15) // 16 * 2
            value: int = s.value  # type: ignore[union-attr]
            src = (value & ((1 << 8 * size) - 1)).to_bytes(size, "big")
        else:
            src = _subfield(s.src)  # type: ignore[union-attr]
        parts += (U16.pack(kind | n_bits), src, _subfield(s.dst))
    specs = b"".join(parts)
    size = (32 + len(specs) + 7) // 8 * 8
    return (LEARN.pack(OFPAT_EXPERIMENTER, size, NX_EXPERIMENTER, NXAST_LEARN,
                       a.idle_timeout, a.hard_timeout, a.priority, a.cookie, a.flags, a.table,
                       a.fin_idle_timeout, a.fin_hard_timeout)
            + specs + _ZEROS[: size - 32 - len(specs)])


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Output: _output,
    SetField: _set_field,
    Move: _move,
    Resubmit: _resubmit,
    Group: _group,
    Ct: _ct,
    Learn: _learn,
}


def encode_action(a: Action) -> bytes:
    enc = _ENCODERS.get(type(a))
    if enc is None:
        raise TypeError(f"lbaffd never sends {a!r}")
    return enc(a)


def encode_actions(actions: tuple[Action, ...]) -> bytes:
    encoders = _ENCODERS
    try:
        return b"".join([encoders[type(a)](a) for a in actions])
    except KeyError:
        for a in actions:
            encode_action(a)  # raises the TypeError naming the action
        raise


def _apply_actions(actions: tuple[Action, ...]) -> bytes:
    body = encode_actions(actions)
    size = 8 + len(body)
    return INSTRUCTION.pack(OFPIT_APPLY_ACTIONS, size) + body  # actions are 8-byte multiples


# ------------------------------------------------------------------ flow mods


def flow_add(spec: FlowSpec) -> RawMessage:
    """OFPFC_ADD (as ``codec.flow_add``)."""
    return RawMessage(OFPT_FLOW_MOD, FLOW_MOD.pack(
        spec.cookie, 0, spec.table, OFPFC_ADD, spec.idle_timeout, spec.hard_timeout,
        spec.priority, ANY, ANY, ANY, spec.flags, 0)
        + encode_match(spec.match) + _apply_actions(spec.actions))


def flow_modify(spec: FlowSpec) -> RawMessage:
    """OFPFC_MODIFY_STRICT restricted to the spec's cookie (as ``codec.flow_modify``)."""
    return RawMessage(OFPT_FLOW_MOD, FLOW_MOD.pack(
        spec.cookie, ALL_ONES64, spec.table, OFPFC_MODIFY_STRICT, spec.idle_timeout,
        spec.hard_timeout, spec.priority, ANY, ANY, ANY, spec.flags, 0)
        + encode_match(spec.match) + _apply_actions(spec.actions))


def flow_delete(spec: FlowSpec) -> RawMessage:
    """OFPFC_DELETE_STRICT of this flow with this cookie (as ``codec.flow_delete``)."""
    return RawMessage(OFPT_FLOW_MOD, FLOW_MOD.pack(
        spec.cookie, ALL_ONES64, spec.table, OFPFC_DELETE_STRICT, 0, 0, spec.priority,
        ANY, ANY, ANY, 0, 0) + encode_match(spec.match))


# ------------------------------------------------------------------ group mods


@functools.lru_cache(maxsize=1024)
def selection_method_property(method: str, param: int, fields: tuple[str, ...]) -> bytes:
    """The NTR selection-method group property (as ``groupdesc.SelectionMethodProperty``)."""
    body = bytes(4) + method.encode().ljust(16, b"\0") + U64.pack(param)
    for name in fields:
        f = _field(name)
        if f.encode is None:
            header = _header(name)
            (h,) = struct.unpack_from("!I", header)
            body += header + b"\xff" * ((h & 0xFF) - (len(header) - 4))
        else:
            body += f.plain + b"\xff" * f.size
    size = 12 + len(body)
    return (SELECTION_METHOD.pack(OFPGPT_EXPERIMENTER, size, NTR_EXPERIMENTER,
                                  NTR_SELECTION_METHOD) + body + _ZEROS[: -size % 8])


def encode_bucket(b: Bucket) -> bytes:
    """One OF1.5 bucket: header, actions, weight property, padding."""
    actions = encode_actions(b.actions)
    size = (16 + len(actions) + 7) // 8 * 8
    return b"".join((BUCKET.pack(size, len(actions), b.bucket_id), actions,
                     WEIGHT.pack(OFPGBPT_WEIGHT, 8, b.weight),
                     _ZEROS[: size - 16 - len(actions)]))


def _group_mod(spec: GroupSpec, command: int) -> RawMessage:
    buckets = b"".join([encode_bucket(b) for b in spec.buckets])
    return RawMessage(OFPT_GROUP_MOD, GROUP_MOD.pack(
        command, OFPGT_SELECT, spec.group_id, len(buckets), ANY) + buckets
        + selection_method_property(spec.selection_method, spec.selection_param, spec.fields))


def group_add(spec: GroupSpec) -> RawMessage:
    return _group_mod(spec, OFPGC_ADD)


def group_modify(spec: GroupSpec) -> RawMessage:
    return _group_mod(spec, OFPGC_MODIFY)


def group_delete(group_id: int) -> RawMessage:
    return RawMessage(OFPT_GROUP_MOD, GROUP_MOD.pack(OFPGC_DELETE, OFPGT_SELECT, group_id, 0, ANY))


def clear_caches() -> None:
    """Forget every cached encoding (benchmarks; memory is bounded anyway)."""
    for memo in (_match_entry, _set_field_bytes, _ct, selection_method_property):
        memo.cache_clear()
