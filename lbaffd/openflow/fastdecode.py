"""Raw ``ofp_flow_desc`` bytes -> FlowSpec, without os-ken objects.

Reading lbaffd's flows back (audits, restart) through os-ken builds a match,
a stats and an object per action for every entry, and ``codec`` then turns
them into a FlowSpec: ~0.1 ms per flow, ~10 s at 80k flows.  This module
decodes the entry straight from its bytes into the *same* canonical FlowSpec
(equal, ``==``, to ``codec.decode_flow(flowdesc.decode_entry(...))``), for
exactly what lbaffd writes and OVS re-encodes: OXM/NXM matches (``xreg``
pairs split, full masks folded), output, group, set_field, copy_field,
resubmit, ct (nat, ct_mark) and learn in one apply-actions instruction; and
group-desc entries (select groups, weighted buckets of those actions, the
selection-method property) equal to ``codec.decode_group``'s.

Anything else (an unknown field, action, instruction or flag, a malformed
length) is not guessed at: ``decode_flow`` hands that entry to the os-ken
path, so foreign edits still decode as before (``Opaque`` and all).

Field names and value types come from os-ken's field table (once per OXM
header), so names agree with the os-ken path by construction.  Recurring
match TLVs and actions (a VIP's id, eth_type, resubmits, moves) are decoded
once (bounded memos).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any, Final

from os_ken.lib import type_desc
from os_ken.ofproto import ofproto_v1_5 as ofp

from lbaffd.openflow import codec
from lbaffd.openflow.flowdesc import DecodeError, decode_entry
from lbaffd.openflow.flowspec import (
    OFPP_CONTROLLER,
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
    LearnSpec,
    Match,
    MatchValue,
    Move,
    Nat,
    Output,
    Resubmit,
    SetField,
)
from lbaffd.openflow.groupdesc import (
    BUCKET,
    GROUP_DESC,
    NTR_EXPERIMENTER,
    NTR_SELECTION_METHOD,
    OFPGBPT_WEIGHT,
    RawGroupProperty,
    decode_group_entry,
    decode_selection_method,
)
from lbaffd.openflow.wire import (  # the same wire constants, one definition
    NX_CT_F_COMMIT,
    NX_CT_RECIRC_NONE,
    NX_EXPERIMENTER,
    NX_NAT_RANGE_IPV4_MAX,
    NX_NAT_RANGE_IPV4_MIN,
    NX_NAT_RANGE_IPV6_MAX,
    NX_NAT_RANGE_IPV6_MIN,
    NX_NAT_RANGE_PROTO_MAX,
    NX_NAT_RANGE_PROTO_MIN,
    NXAST_CT,
    NXAST_LEARN,
    NXAST_NAT,
    NXAST_RESUBMIT_TABLE,
    OFPAT_COPY_FIELD,
    OFPAT_EXPERIMENTER,
    OFPAT_GROUP,
    OFPAT_OUTPUT,
    OFPAT_SET_FIELD,
    OFPGPT_EXPERIMENTER,
    OFPGT_SELECT,
    OFPIT_APPLY_ACTIONS,
    OFPMT_OXM,
    U16,
    U16_U16,
    WEIGHT,
)

OFPXMC_EXPERIMENTER: Final = 0xFFFF
NX_CT_ZONE_LOW16: Final = 15  # ofs_nbits(0, 15): what lbaffd writes for a register zone
NX_NAT_F_SRC: Final = 1
NX_NAT_F_DST: Final = 2

FLOW_DESC = struct.Struct("!H2xBxHHHHHQ")  # as ofp.OFP_FLOW_DESC_0_PACK_STR
FLOW_DESC_SIZE: Final = FLOW_DESC.size
U32 = struct.Struct("!I")
OUTPUT = struct.Struct("!4xIH6x")
GROUP = struct.Struct("!4xI")
COPY_FIELD = struct.Struct("!4xHHH2xII")  # n_bits, src_ofs, dst_ofs, src and dst OXM ids
NX_HEADER = struct.Struct("!4xIH")  # experimenter, subtype
RESUBMIT = struct.Struct("!10xHB3x")
CT = struct.Struct("!10xHIHB3xH")  # flags, zone_src, zone_ofs_nbits, recirc_table, alg
NAT = struct.Struct("!10x2xHH")  # flags, range_present
LEARN = struct.Struct("!10xHHHQHBxHH")
SUBFIELD = struct.Struct("!IH")  # NXM/OXM header, bit offset

assert FLOW_DESC_SIZE == ofp.OFP_FLOW_DESC_0_SIZE
assert CT.size == 24 and LEARN.size == 32 and NAT.size == 16

# Bounded memos (cleared when full): recurring TLVs and actions hit while hot.
MEMO_LIMIT = 1 << 14


class Unsupported(ValueError):
    """Not in lbaffd's subset (or malformed): the entry takes the os-ken path."""


# Everything a foreign or damaged entry can raise on the way through here.
_FALLBACK_ERRORS = (Unsupported, struct.error, ValueError, IndexError, KeyError, TypeError,
                    OSError)


# ------------------------------------------------------------------ fields


def _ipv4(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def _ipv6(raw: bytes) -> str:
    """RFC 5952 text, as os-ken's netaddr conversion gives (unit-tested)."""
    return socket.inet_ntop(socket.AF_INET6, raw)


def _mac(raw: bytes) -> str:
    return raw.hex(":")


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


class _Field:
    """One OXM/NXM field as os-ken names it and converts its value."""

    __slots__ = ("is_int", "name", "size", "to_user")

    def __init__(self, name: str, size: int, to_user: Callable[[bytes], Any], is_int: bool):
        self.name = name
        self.size = size
        self.to_user = to_user
        self.is_int = is_int


_FIELDS: dict[int, _Field | None] = {}


def _field(header: int) -> _Field:
    """The field named by a (non-experimenter) OXM header; hasmask and length
    are ignored.  Raises Unsupported for fields os-ken does not know."""
    key = header >> 9  # class | field: what os-ken numbers fields by
    if key not in _FIELDS:
        _FIELDS[key] = _lookup(key)
    f = _FIELDS[key]
    if f is None:
        raise Unsupported(f"OXM header {header:#x}")
    return f


def _lookup(num: int) -> _Field | None:
    if num >> 7 == OFPXMC_EXPERIMENTER:
        return None
    try:
        name = ofp.oxm_to_user_header(num)
        found, kind = ofp.oxm_get_field_info_by_name(name)
    except KeyError:
        return None
    if found != num or not hasattr(kind, "size"):
        return None
    if isinstance(kind, type_desc.IntDescr):
        return _Field(name, kind.size, _int, True)
    if kind is type_desc.IPv4Addr:
        return _Field(name, 4, _ipv4, False)
    if kind is type_desc.IPv6Addr:
        return _Field(name, 16, _ipv6, False)
    if kind is type_desc.MacAddr:
        return _Field(name, 6, _mac, False)
    return _Field(name, kind.size, kind.to_user, False)  # os-ken's own conversion


def _field_id(header: int) -> str:
    """A field named by its header alone (copy_field, ct zone, learn spec):
    as lbaffd and OVS write it, unmasked and with the field's own length."""
    if header >> 16 == OFPXMC_EXPERIMENTER:
        raise Unsupported(f"experimenter field {header:#x}")
    f = _field(header)
    if header & 0x1FF != f.size:
        raise Unsupported(f"field id {header:#x}")
    return f.name


# ------------------------------------------------------------------ match

MatchPairs = tuple[tuple[str, MatchValue], ...]
_TLVS: dict[bytes, MatchPairs] = {}


def _tlv_pairs(header: int, tlv: bytes) -> MatchPairs:
    """What one match TLV contributes to ``codec.canonical_match``: the
    (name, value) pair with a full mask folded away and an int value
    pre-masked, or the two 32-bit registers an ``xregN`` covers."""
    if header >> 16 == OFPXMC_EXPERIMENTER:
        raise Unsupported("experimenter OXM")
    f = _field(header)
    hasmask = header & 0x100
    size = f.size
    if len(tlv) != 4 + (2 * size if hasmask else size):
        raise Unsupported(f"{f.name}: length {len(tlv)}")
    raw_v = tlv[4:4 + size]
    raw_m = tlv[4 + size:] if hasmask else b""
    if f.name.startswith("xreg"):
        return _xreg_pairs(int(f.name[4:]), _int(raw_v),
                           _int(raw_m) if hasmask else (1 << 64) - 1)
    value: MatchValue
    if not hasmask or raw_m == b"\xff" * size:
        value = f.to_user(raw_v)
    elif f.is_int:
        v, m = _int(raw_v), _int(raw_m)
        value = (v & m, m)
    else:
        value = (f.to_user(raw_v), f.to_user(raw_m))
    return ((f.name, value),)


def _xreg_pairs(n: int, v: int, m: int) -> MatchPairs:
    """OVS reports reg0/reg1 as xreg0 (OXM_OF_PKT_REG), half-masked when only
    one of the pair is matched: back to the 32-bit registers we match on."""
    out: list[tuple[str, MatchValue]] = []
    for reg, shift in ((2 * n, 32), (2 * n + 1, 0)):
        half_v = (v >> shift) & 0xFFFFFFFF
        half_m = (m >> shift) & 0xFFFFFFFF
        if half_m == 0xFFFFFFFF:
            out.append((f"reg{reg}", half_v))
        elif half_m:
            out.append((f"reg{reg}", (half_v & half_m, half_m)))
    return tuple(out)


def _match(buf: bytes, pos: int, end: int) -> Match:
    """``codec.canonical_match`` of the TLVs, built from interned pairs as
    ``Match.of`` builds them (a later TLV for the same name wins, as there)."""
    fields: dict[str, tuple[str, MatchValue]] = {}
    tlvs = _TLVS
    while pos < end:
        (header,) = U32.unpack_from(buf, pos)
        nxt = pos + 4 + (header & 0xFF)
        if nxt > end:
            raise Unsupported("OXM past the match")
        tlv = buf[pos:nxt]
        pairs = tlvs.get(tlv)
        if pairs is None:
            pairs = _tlv_pairs(header, tlv)
            if len(tlvs) >= MEMO_LIMIT:
                tlvs.clear()
            tlvs[tlv] = pairs
        for pair in pairs:
            fields[pair[0]] = pair
        pos = nxt
    # names are unique: sorting the pairs never compares two values
    return Match(tuple(sorted(fields.values())))


# ------------------------------------------------------------------ actions

_ACTIONS: dict[bytes, Action] = {}


def _actions(buf: bytes, pos: int, end: int) -> tuple[Action, ...]:
    out: list[Action] = []
    memo = _ACTIONS
    while pos < end:
        _, length = U16_U16.unpack_from(buf, pos)
        nxt = pos + length
        if length < 8 or length % 8 or nxt > end:
            raise Unsupported(f"action length {length}")
        raw = buf[pos:nxt]
        action = memo.get(raw)
        if action is None:
            action = _action(raw)
            if not isinstance(action, Learn):  # per backend: a memo would only cost memory
                if len(memo) >= MEMO_LIMIT:
                    memo.clear()
                memo[raw] = action
        out.append(action)
        pos = nxt
    return tuple(out)


def _action(raw: bytes) -> Action:
    (atype,) = U16.unpack_from(raw)
    if atype == OFPAT_OUTPUT and len(raw) == 16:
        port, max_len = OUTPUT.unpack(raw)
        return Output(port, max_len if port == OFPP_CONTROLLER else 0)
    if atype == OFPAT_GROUP and len(raw) == 8:
        return Group(GROUP.unpack(raw)[0])
    if atype == OFPAT_SET_FIELD:
        name, value = _set_field(raw)
        return SetField(name, value)
    if atype == OFPAT_COPY_FIELD:
        return _copy_field(raw)
    if atype == OFPAT_EXPERIMENTER:
        experimenter, subtype = NX_HEADER.unpack_from(raw)
        if experimenter == NX_EXPERIMENTER:
            if subtype == NXAST_RESUBMIT_TABLE and len(raw) == 16:
                in_port, table = RESUBMIT.unpack(raw)
                return Resubmit(table, in_port)
            if subtype == NXAST_CT:
                return _ct(raw)
            if subtype == NXAST_LEARN:
                return _learn(raw)
    raise Unsupported(f"action type {atype}")


def _set_field(raw: bytes) -> tuple[str, Any]:
    """A whole-field set_field (masked ones are register loads lbaffd never writes)."""
    (header,) = U32.unpack_from(raw, 4)
    if header >> 16 == OFPXMC_EXPERIMENTER or header & 0x100:
        raise Unsupported("experimenter or masked set_field")
    f = _field(header)
    if (header & 0xFF) != f.size or 8 + f.size > len(raw):
        raise Unsupported(f"set_field {f.name}: bad length")
    return f.name, f.to_user(raw[8:8 + f.size])


def _copy_field(raw: bytes) -> Move:
    """OF1.5 copy_field: how OVS reports every ``move``."""
    if len(raw) < COPY_FIELD.size:
        raise Unsupported("short copy_field")
    n_bits, src_ofs, dst_ofs, src, dst = COPY_FIELD.unpack_from(raw)
    return Move(_field_id(src), _field_id(dst), n_bits, src_ofs, dst_ofs)


def _ct(raw: bytes) -> Ct:
    flags, zone_src, zone_ofs_nbits, recirc_table, alg = CT.unpack_from(raw)
    if flags & ~NX_CT_F_COMMIT or alg:
        raise Unsupported("ct flags or alg lbaffd never sets")
    zone_field = ""
    if zone_src:
        zone_field = _field_id(zone_src)
        if zone_ofs_nbits != NX_CT_ZONE_LOW16:
            raise Unsupported("ct zone from another part of a field")
    nat: Nat | None = None
    mark: int | None = None
    pos, end = CT.size, len(raw)
    while pos < end:
        atype, length = U16_U16.unpack_from(raw, pos)
        if length < 8 or length % 8 or pos + length > end:
            raise Unsupported(f"ct: nested action length {length}")
        inner = raw[pos:pos + length]
        if atype == OFPAT_SET_FIELD:
            name, value = _set_field(inner)
            if name != "ct_mark":
                raise Unsupported(f"ct: set_field {name}")
            mark = int(value)
        elif (atype == OFPAT_EXPERIMENTER
              and NX_HEADER.unpack_from(inner) == (NX_EXPERIMENTER, NXAST_NAT)):
            nat = _nat(inner)
        else:
            raise Unsupported(f"ct: nested action type {atype}")
        pos += length
    return Ct(commit=bool(flags & NX_CT_F_COMMIT), zone_field=zone_field,
              zone=0 if zone_field else zone_ofs_nbits,
              table=None if recirc_table == NX_CT_RECIRC_NONE else recirc_table,
              nat=nat, mark=mark)


def _nat(raw: bytes) -> Nat:
    """NXAST_NAT in ``codec._decode_ct``'s canonical form (a single address
    has no ip_max, a single port has port_max == port_min)."""
    flags, present = NAT.unpack_from(raw)
    if flags & ~(NX_NAT_F_SRC | NX_NAT_F_DST) or flags == NX_NAT_F_SRC | NX_NAT_F_DST:
        raise Unsupported(f"nat flags {flags:#x}")
    if present & ~0x3F or (present & 0x3 and present & 0xC):
        raise Unsupported(f"nat ranges {present:#x}")
    pos = NAT.size
    parts: dict[int, str | int] = {}
    for bit, size, conv in _NAT_RANGES:
        if present & bit:
            if pos + size > len(raw):
                raise Unsupported("short nat")
            parts[bit] = conv(raw[pos:pos + size])
            pos += size
    ip_min = str(parts.get(NX_NAT_RANGE_IPV4_MIN) or parts.get(NX_NAT_RANGE_IPV6_MIN) or "")
    ip_max = str(parts.get(NX_NAT_RANGE_IPV4_MAX) or parts.get(NX_NAT_RANGE_IPV6_MAX) or "")
    port_min = int(parts.get(NX_NAT_RANGE_PROTO_MIN) or 0)
    return Nat(kind="dst" if flags & NX_NAT_F_DST else "src" if flags & NX_NAT_F_SRC else "",
               ip_min=ip_min, ip_max="" if ip_max == ip_min else ip_max, port_min=port_min,
               port_max=int(parts.get(NX_NAT_RANGE_PROTO_MAX) or port_min))


_NAT_RANGES: tuple[tuple[int, int, Callable[[bytes], str | int]], ...] = (
    (NX_NAT_RANGE_IPV4_MIN, 4, _ipv4), (NX_NAT_RANGE_IPV4_MAX, 4, _ipv4),
    (NX_NAT_RANGE_IPV6_MIN, 16, _ipv6), (NX_NAT_RANGE_IPV6_MAX, 16, _ipv6),
    (NX_NAT_RANGE_PROTO_MIN, 2, _int), (NX_NAT_RANGE_PROTO_MAX, 2, _int))


def _learn(raw: bytes) -> Learn:
    (idle, hard, priority, cookie, flags, table, fin_idle,
     fin_hard) = LEARN.unpack_from(raw)
    specs: list[LearnSpec] = []
    memo = _LEARN_SPECS
    pos, end = LEARN.size, len(raw)
    while pos < end:
        (header,) = U16.unpack_from(raw, pos)
        if not header:  # an all-zero header is padding
            pos += 2
            continue
        nxt = pos + _learn_spec_size(header)
        key = raw[pos:nxt]
        spec = memo.get(key)
        if spec is None:
            spec = _learn_spec(raw, pos + 2, header, nxt)
            if len(memo) >= MEMO_LIMIT:
                memo.clear()
            memo[key] = spec
        specs.append(spec)
        pos = nxt
    if pos != end:
        raise Unsupported("learn specs past the action")
    return Learn(table=table, specs=tuple(specs), idle_timeout=idle, hard_timeout=hard,
                 priority=priority, cookie=cookie, flags=flags, fin_idle_timeout=fin_idle,
                 fin_hard_timeout=fin_hard)


# Learn specs by their bytes: a VIP's learn action is its own, but most of
# its specs (the fields it learns) are every VIP's.
_LEARN_SPECS: dict[bytes, LearnSpec] = {}


def _learn_spec_size(header: int) -> int:
    """Bytes of a match or load spec, its header included."""
    if header & 0xC400 or (header & 0x1800) > 0x0800:  # unknown bits; output spec
        raise Unsupported(f"learn spec {header:#x}")
    if header & 0x2000:  # immediate source
        return 2 + ((header & 0x3FF) + 15) // 16 * 2 + SUBFIELD.size
    return 2 + 2 * SUBFIELD.size


def _learn_spec(raw: bytes, pos: int, header: int, end: int) -> LearnSpec:
    """A match or load spec, from a whole field (offset 0) or an immediate;
    ``pos`` is past the header, ``end`` past the spec."""
    if end > len(raw):
        raise Unsupported("learn spec past the action")
    load = bool(header & 0x0800)
    n_bits = header & 0x3FF
    dst = _learn_subfield(raw, end - SUBFIELD.size)
    if header & 0x2000:
        value = _int(raw[pos:end - SUBFIELD.size])
        if load:
            return LearnLoadValue(value, dst, n_bits)
        return LearnMatchValue(value, dst, n_bits)
    src = _learn_subfield(raw, pos)
    return (LearnLoadField if load else LearnMatchField)(src, dst, n_bits)


def _learn_subfield(raw: bytes, pos: int) -> str:
    header, ofs = SUBFIELD.unpack_from(raw, pos)
    if ofs:
        raise Unsupported("learn spec on part of a field")
    # os-ken names NXM_OF_* fields ``*_nxm``: the same fields as the OXM ones we emit
    return _field_id(header).removesuffix("_nxm")


# ------------------------------------------------------------------ flows


def decode_fast(buf: bytes, offset: int) -> FlowSpec | None:
    """The entry at ``offset`` as a FlowSpec, or None when it holds anything
    outside lbaffd's subset (the caller then takes the os-ken path)."""
    try:
        return _flow(buf, offset)
    except _FALLBACK_ERRORS:
        return None


def decode_flow(buf: bytes, offset: int) -> FlowSpec:
    """The entry at ``offset``: directly when lbaffd wrote it, else through
    os-ken (``codec.decode_flow``), which also raises what it raised before."""
    spec = decode_fast(buf, offset)
    if spec is None:
        raw = decode_entry(buf, offset)  # raises DecodeError itself
        try:
            spec = codec.decode_flow(raw)
        except Exception as exc:
            raise DecodeError(f"flow at offset {offset}: {exc!r}") from exc
    return spec


def _flow(buf: bytes, offset: int) -> FlowSpec:
    (length, table, priority, idle, hard, flags, _importance,
     cookie) = FLOW_DESC.unpack_from(buf, offset)
    end = offset + length
    if end > len(buf):
        raise Unsupported("entry past the buffer")
    pos = offset + FLOW_DESC_SIZE
    mtype, mlen = U16_U16.unpack_from(buf, pos)
    if mtype != OFPMT_OXM or mlen < 4:
        raise Unsupported(f"match type {mtype}")
    match = _match(buf, pos + 4, pos + mlen)
    pos += (mlen + 7) & ~7
    pos = _skip_stats(buf, pos)
    actions: tuple[Action, ...] = ()
    if pos < end:
        itype, ilen = U16_U16.unpack_from(buf, pos)
        if itype != OFPIT_APPLY_ACTIONS or pos + ilen != end or ilen < 8:
            raise Unsupported(f"instruction type {itype}")
        actions = _actions(buf, pos + 8, end)
    elif pos > end:
        raise Unsupported("match or stats past the entry")
    return FlowSpec(table, priority, match, actions, cookie, idle, hard, flags)


# OXS stats OVS reports (duration, idle_time, flow_count, packet_count,
# byte_count): header -> its OpenFlow-basic value size
_OXS_BASIC: Final = 0x8002
_STATS_SIZES: Final = {(_OXS_BASIC << 16) | (field << 9) | size: size
                       for field, size in ((0, 8), (1, 8), (3, 4), (4, 8), (5, 8))}


# What OVS sends for every flow: duration, idle_time, packet and byte counts
STATS4 = struct.Struct("!HHI8xI8xI8xI8x4x")
_STATS4_USUAL: Final = (0, STATS4.size - 4, *(
    (_OXS_BASIC << 16) | (field << 9) | 8 for field in (0, 1, 4, 5)))


def _skip_stats(buf: bytes, pos: int) -> int:
    """Past the stats (not part of a FlowSpec), checking they are what os-ken
    parses: unknown statistics or a bad length are not for this decoder."""
    if STATS4.unpack_from(buf, pos) == _STATS4_USUAL:
        return pos + STATS4.size
    slen: int = U16_U16.unpack_from(buf, pos)[1]
    end = pos + slen
    p = pos + 4
    while p < end:
        (header,) = U32.unpack_from(buf, p)
        size = _STATS_SIZES.get(header)
        if size is None:
            raise Unsupported(f"OXS header {header:#x}")
        p += 4 + size
    if p != end or slen < 4:
        raise Unsupported("stats length")
    return pos + ((slen + 7) & ~7)


def match_and_idle(buf: bytes, offset: int) -> tuple[Match, int] | None:
    """The match of the entry at ``offset`` and its idle age in seconds (the
    OXS idle_time OVS reports with every flow), without its actions; None
    when the stats are not the usual four."""
    pos = offset + FLOW_DESC_SIZE
    mtype, mlen = U16_U16.unpack_from(buf, pos)
    if mtype != OFPMT_OXM or mlen < 4:
        return None
    match = _match(buf, pos + 4, pos + mlen)
    pos += (mlen + 7) & ~7
    if STATS4.unpack_from(buf, pos) != _STATS4_USUAL:
        return None
    return match, U32.unpack_from(buf, pos + 20)[0]  # idle_time: seconds, nanoseconds


# ------------------------------------------------------------------ groups

GROUP_PROP = struct.Struct("!HHII")  # type, length, experimenter, exp_type


def decode_group_fast(buf: bytes, offset: int) -> GroupSpec | None:
    """The ``ofp_group_desc`` at ``offset`` as a GroupSpec, or None when it
    holds anything outside what lbaffd writes (a select group whose buckets
    carry a weight and actions from the flow subset, and the selection-method
    property)."""
    try:
        return _group(buf, offset)
    except (*_FALLBACK_ERRORS, AssertionError):  # os-ken asserts on a bad hashed-field OXM
        return None


def decode_group(buf: bytes, offset: int) -> GroupSpec:
    """The group at ``offset``: directly when lbaffd wrote it, else through os-ken."""
    spec = decode_group_fast(buf, offset)
    if spec is None:
        raw = decode_group_entry(buf, offset)  # raises DecodeError itself
        try:
            spec = codec.decode_group(raw)
        except Exception as exc:
            raise DecodeError(f"group at offset {offset}: {exc!r}") from exc
    return spec


def _group(buf: bytes, offset: int) -> GroupSpec:
    length, gtype, group_id, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    end = offset + length
    pos = offset + GROUP_DESC.size
    buckets_end = pos + bucket_len
    if gtype != OFPGT_SELECT or end > len(buf) or buckets_end > end:
        raise Unsupported(f"group type {gtype} or length")
    buckets: list[Bucket] = []
    while pos < buckets_end:
        buckets.append(_bucket(buf, pos, buckets_end))
        pos += BUCKET.unpack_from(buf, pos)[0]
    method, param, fields = "", 0, tuple[str, ...]()
    while pos < end:
        ptype, plen, experimenter, exp_type = GROUP_PROP.unpack_from(buf, pos)
        if (ptype != OFPGPT_EXPERIMENTER or experimenter != NTR_EXPERIMENTER
                or exp_type != NTR_SELECTION_METHOD or plen < GROUP_PROP.size
                or pos + plen > end):
            raise Unsupported(f"group property {ptype}")
        prop = RawGroupProperty(ptype, experimenter, exp_type, bytes(buf[pos + 12:pos + plen]))
        method, param, fields = decode_selection_method(prop)
        pos += (plen + 7) // 8 * 8
    return GroupSpec(group_id, tuple(buckets), method or "dp_hash", fields, param)


def _bucket(buf: bytes, pos: int, end: int) -> Bucket:
    """One bucket: its actions and at most its weight property."""
    blen, alen, bucket_id = BUCKET.unpack_from(buf, pos)
    actions_end = pos + BUCKET.size + alen
    bucket_end = pos + blen
    if blen < BUCKET.size + 8 or bucket_end > end or actions_end > bucket_end:
        raise Unsupported("bucket length")
    actions = _actions(buf, pos + BUCKET.size, actions_end)
    weight = 100
    ppos = actions_end
    while ppos < bucket_end:
        ptype, plen, value = WEIGHT.unpack_from(buf, ppos)
        if ptype != OFPGBPT_WEIGHT or plen != WEIGHT.size:
            raise Unsupported(f"bucket property {ptype}")
        weight = value
        ppos += plen
    if ppos != bucket_end:
        raise Unsupported("bucket properties length")
    return Bucket(bucket_id, actions, weight)


def clear_memos() -> None:
    """Forget memoized TLVs and actions (benchmarks; memory is bounded anyway)."""
    _TLVS.clear()
    _ACTIONS.clear()
    _LEARN_SPECS.clear()
