"""OpenFlow actions: per action, its encoder and decoder side by side.

Each action lbaffd writes (``flowspec.Action``) has one section here: how it
goes on the wire and how ovs-vswitchd's report of it reads back into the
very same value (OVS writes ``move`` as OF1.5 copy_field, names learn fields
by NXM headers, fills NAT ranges in: the decoders give the canonical form,
so an unchanged flow compares equal and re-encodes to the bytes that were
sent).  The encoders follow os-ken's encoding byte for byte
(``tests/reference_codec.py`` holds them to it), its quirks included
(``PaddedNAT``, ``move`` as copy_field).

Adding an action: its dataclass in ``flowspec``, an encoder in ``_ENCODERS``
and a decoder in ``decode`` here, a flow with it in the tests' corpus.

Decoders raise ``oxm.Unsupported`` (or a struct/value error) on anything
lbaffd does not write; the whole entry then goes to ``oskenfallback``.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any, Final

from lbaffd.openflow import oxm
from lbaffd.openflow.flowspec import (
    OFPP_CONTROLLER,
    Action,
    Ct,
    Group,
    Learn,
    LearnLoadField,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    LearnSpec,
    Move,
    Nat,
    Output,
    Resubmit,
    SetField,
)
from lbaffd.openflow.oxm import Unsupported, address_bytes, ipv4_text, ipv6_text, uint

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

U16 = struct.Struct("!H")
U16_U16 = struct.Struct("!HH")
NX_HEADER = struct.Struct("!4xIH")  # experimenter, subtype
_ZEROS = bytes(8)

CACHE_LIMIT = oxm.CACHE_LIMIT
MEMO_LIMIT = oxm.MEMO_LIMIT


# ------------------------------------------------------------------ output

OUTPUT = struct.Struct("!HHIH6x")


def _encode_output(a: Output) -> bytes:
    return OUTPUT.pack(OFPAT_OUTPUT, 16, a.port, a.max_len)


def _decode_output(raw: bytes) -> Output:
    if len(raw) != 16:
        raise Unsupported("output length")
    _, _, port, max_len = OUTPUT.unpack(raw)
    return Output(port, max_len if port == OFPP_CONTROLLER else 0)


# ------------------------------------------------------------------ group

GROUP = struct.Struct("!HHI")


def _encode_group(a: Group) -> bytes:
    return GROUP.pack(OFPAT_GROUP, 8, a.group_id)


def _decode_group(raw: bytes) -> Group:
    if len(raw) != 8:
        raise Unsupported("group length")
    return Group(GROUP.unpack(raw)[2])


# ------------------------------------------------------------------ set_field


@functools.lru_cache(maxsize=CACHE_LIMIT)
def set_field_bytes(name: str, value: int | str) -> bytes:
    """OFPAT_SET_FIELD of a whole field (also nested in ``ct``)."""
    tlv = oxm.tlv(name, value, False)
    size = (4 + len(tlv) + 7) // 8 * 8
    return U16_U16.pack(OFPAT_SET_FIELD, size) + tlv + _ZEROS[: size - 4 - len(tlv)]


def _encode_set_field(a: SetField) -> bytes:
    return set_field_bytes(a.field, a.value)


def _decode_set_field(raw: bytes) -> SetField:
    name, value = oxm.value_of(raw, 4)
    return SetField(name, value)


# ------------------------------------------------------------------ move (copy_field)

COPY_FIELD = struct.Struct("!HHHHH2x")  # type, len, n_bits, src_ofs, dst_ofs
COPY_FIELD_IDS = struct.Struct("!4xHHH2xII")  # ... and the src and dst OXM ids


def _encode_move(a: Move) -> bytes:
    """OF1.5 copy_field: OVS 3.1 rejects NXAST_REG_MOVE as os-ken encodes it
    (OFPBAC_BAD_EXP_TYPE) and reports moves as copy_field anyway."""
    body = oxm.oxm_id(a.src) + oxm.oxm_id(a.dst)
    size = (12 + len(body) + 7) // 8 * 8
    return (COPY_FIELD.pack(OFPAT_COPY_FIELD, size, a.n_bits, a.src_ofs, a.dst_ofs) + body
            + _ZEROS[: size - 12 - len(body)])


def _decode_move(raw: bytes) -> Move:
    if len(raw) < COPY_FIELD_IDS.size:
        raise Unsupported("short copy_field")
    n_bits, src_ofs, dst_ofs, src, dst = COPY_FIELD_IDS.unpack_from(raw)
    return Move(oxm.name_of(src), oxm.name_of(dst), n_bits, src_ofs, dst_ofs)


# ------------------------------------------------------------------ resubmit (NX)

RESUBMIT = struct.Struct("!HHIHHB3x")  # type, len, experimenter, subtype, in_port, table


def _encode_resubmit(a: Resubmit) -> bytes:
    return RESUBMIT.pack(OFPAT_EXPERIMENTER, 16, NX_EXPERIMENTER, NXAST_RESUBMIT_TABLE,
                         a.in_port, a.table)


def _decode_resubmit(raw: bytes) -> Resubmit:
    if len(raw) != 16:
        raise Unsupported("resubmit length")
    in_port, table = RESUBMIT.unpack(raw)[4:]
    return Resubmit(table, in_port)


# ------------------------------------------------------------------ nat (NX, inside ct)

NAT = struct.Struct("!HHIH2xHH")  # type, len, experimenter, subtype, flags, range_present
NX_NAT_F_SRC: Final = 1
NX_NAT_F_DST: Final = 2
NX_NAT_FLAGS: Final = {"dst": NX_NAT_F_DST, "src": NX_NAT_F_SRC, "": 0}
NX_NAT_RANGE_IPV4_MIN: Final = 1
NX_NAT_RANGE_IPV4_MAX: Final = 2
NX_NAT_RANGE_IPV6_MIN: Final = 4
NX_NAT_RANGE_IPV6_MAX: Final = 8
NX_NAT_RANGE_PROTO_MIN: Final = 16
NX_NAT_RANGE_PROTO_MAX: Final = 32


def _encode_nat(n: Nat) -> bytes:
    """NXAST_NAT padded to 8 bytes (os-ken sets the padded length but does
    not write the padding: the reference's ``PaddedNAT``)."""
    present = 0
    opt = b""
    v6 = ":" in n.ip_min
    if n.ip_min:
        present |= NX_NAT_RANGE_IPV6_MIN if v6 else NX_NAT_RANGE_IPV4_MIN
        opt += address_bytes(n.ip_min, v6)
    if n.ip_max:
        present |= NX_NAT_RANGE_IPV6_MAX if v6 else NX_NAT_RANGE_IPV4_MAX
        opt += address_bytes(n.ip_max, v6)
    if n.port_min:
        present |= NX_NAT_RANGE_PROTO_MIN
        opt += U16.pack(n.port_min)
    if n.port_max:
        present |= NX_NAT_RANGE_PROTO_MAX
        opt += U16.pack(n.port_max)
    size = (16 + len(opt) + 7) // 8 * 8
    return (NAT.pack(OFPAT_EXPERIMENTER, size, NX_EXPERIMENTER, NXAST_NAT,
                     NX_NAT_FLAGS[n.kind], present) + opt + _ZEROS[: size - 16 - len(opt)])


_NAT_RANGES: tuple[tuple[int, int, Callable[[bytes], str | int]], ...] = (
    (NX_NAT_RANGE_IPV4_MIN, 4, ipv4_text), (NX_NAT_RANGE_IPV4_MAX, 4, ipv4_text),
    (NX_NAT_RANGE_IPV6_MIN, 16, ipv6_text), (NX_NAT_RANGE_IPV6_MAX, 16, ipv6_text),
    (NX_NAT_RANGE_PROTO_MIN, 2, uint), (NX_NAT_RANGE_PROTO_MAX, 2, uint))


def _decode_nat(raw: bytes) -> Nat:
    """NXAST_NAT in canonical form (a single address has no ip_max, a
    single port has port_max == port_min: ovs-ofctl may write either)."""
    flags, present = NAT.unpack_from(raw)[4:]
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


# ------------------------------------------------------------------ ct (NX)

# type, len, experimenter, subtype, flags, zone_src, zone_ofs_nbits, recirc_table, alg
CT = struct.Struct("!HHIHH4sHB3xH")
CT_FIELDS = struct.Struct("!10xHIHB3xH")  # the same with zone_src as a header
NX_CT_F_COMMIT: Final = 1
NX_CT_RECIRC_NONE: Final = 0xFF
NX_CT_ZONE_LOW16: Final = 15  # ofs_nbits(0, 15): a register's low 16 bits hold the zone
assert CT.size == 24 and NAT.size == 16


@functools.lru_cache(maxsize=CACHE_LIMIT)
def _encode_ct(a: Ct) -> bytes:
    nested = b""
    if a.nat is not None:
        nested += _encode_nat(a.nat)
    if a.mark is not None:
        nested += set_field_bytes("ct_mark", a.mark)
    if a.zone_field:
        zone_src, zone = oxm.header(a.zone_field), NX_CT_ZONE_LOW16
    else:
        zone_src, zone = bytes(4), a.zone
    size = (24 + len(nested) + 7) // 8 * 8
    return (CT.pack(OFPAT_EXPERIMENTER, size, NX_EXPERIMENTER, NXAST_CT,
                    NX_CT_F_COMMIT if a.commit else 0, zone_src, zone,
                    NX_CT_RECIRC_NONE if a.table is None else a.table, 0)
            + nested + _ZEROS[: size - 24 - len(nested)])


def _decode_ct(raw: bytes) -> Ct:
    flags, zone_src, zone_ofs_nbits, recirc_table, alg = CT_FIELDS.unpack_from(raw)
    if flags & ~NX_CT_F_COMMIT or alg:
        raise Unsupported("ct flags or alg lbaffd never sets")
    zone_field = ""
    if zone_src:
        zone_field = oxm.name_of(zone_src)
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
            name, value = oxm.value_of(inner, 4)
            if name != "ct_mark":
                raise Unsupported(f"ct: set_field {name}")
            mark = int(value)
        elif (atype == OFPAT_EXPERIMENTER
              and NX_HEADER.unpack_from(inner) == (NX_EXPERIMENTER, NXAST_NAT)):
            nat = _decode_nat(inner)
        else:
            raise Unsupported(f"ct: nested action type {atype}")
        pos += length
    return Ct(commit=bool(flags & NX_CT_F_COMMIT), zone_field=zone_field,
              zone=0 if zone_field else zone_ofs_nbits,
              table=None if recirc_table == NX_CT_RECIRC_NONE else recirc_table,
              nat=nat, mark=mark)


# ------------------------------------------------------------------ learn (NX)

# type, len, experimenter, subtype, idle, hard, priority, cookie, flags, table,
# fin_idle, fin_hard
LEARN = struct.Struct("!HHIHHHHQHBxHH")
LEARN_FIELDS = struct.Struct("!10xHHHQHBxHH")
SUBFIELD = struct.Struct("!IH")  # NXM/OXM header, bit offset
assert LEARN.size == 32
# learn spec headers: src immediate (1 << 13), dst load (1 << 11), n_bits below
_LEARN_SPEC_TYPES: dict[type, int] = {
    LearnMatchField: 0, LearnMatchValue: 0x2000, LearnLoadValue: 0x2800, LearnLoadField: 0x0800}


@functools.cache  # bounded by the field names
def _subfield(name: str) -> bytes:
    """A learn spec's field: its header and bit offset 0.  The NXM header
    where the field has one (os-ken's ``*_nxm``), as OVS writes a learn
    action back (``nx_put_mff_header`` with version 0, lib/learn.c)."""
    return nxm_header(name) + b"\0\0"


def nxm_header(name: str) -> bytes:
    """A whole field's header as NXM writes it: ``NXM_OF_*`` for the
    fields that have one, else the field's own (NXM_NX_* or OXM)."""
    try:
        return oxm.header(f"{name}_nxm")
    except (KeyError, ValueError):
        return oxm.header(name)


def _encode_learn(a: Learn) -> bytes:
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


# Learn specs by their bytes: a VIP's learn action is its own, but most of
# its specs (the fields it learns) are every VIP's.
_LEARN_SPECS: dict[bytes, LearnSpec] = {}


def _decode_learn(raw: bytes) -> Learn:
    (idle, hard, priority, cookie, flags, table, fin_idle,
     fin_hard) = LEARN_FIELDS.unpack_from(raw)
    specs: list[LearnSpec] = []
    memo = _LEARN_SPECS
    pos, end = LEARN.size, len(raw)
    while pos < end:
        (h,) = U16.unpack_from(raw, pos)
        if not h:  # an all-zero header is padding
            pos += 2
            continue
        nxt = pos + _learn_spec_size(h)
        key = raw[pos:nxt]
        spec = memo.get(key)
        if spec is None:
            spec = _decode_learn_spec(raw, pos + 2, h, nxt)
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


def _learn_spec_size(h: int) -> int:
    """Bytes of a match or load spec, its header included."""
    if h & 0xC400 or (h & 0x1800) > 0x0800:  # unknown bits; output spec
        raise Unsupported(f"learn spec {h:#x}")
    if h & 0x2000:  # immediate source
        return 2 + ((h & 0x3FF) + 15) // 16 * 2 + SUBFIELD.size
    return 2 + 2 * SUBFIELD.size


def _decode_learn_spec(raw: bytes, pos: int, h: int, end: int) -> LearnSpec:
    """A match or load spec, from a whole field (offset 0) or an immediate;
    ``pos`` is past the header, ``end`` past the spec."""
    if end > len(raw):
        raise Unsupported("learn spec past the action")
    load = bool(h & 0x0800)
    n_bits = h & 0x3FF
    dst = _learn_subfield(raw, end - SUBFIELD.size)
    if h & 0x2000:
        value = uint(raw[pos:end - SUBFIELD.size])
        if load:
            return LearnLoadValue(value, dst, n_bits)
        return LearnMatchValue(value, dst, n_bits)
    src = _learn_subfield(raw, pos)
    return (LearnLoadField if load else LearnMatchField)(src, dst, n_bits)


def _learn_subfield(raw: bytes, pos: int) -> str:
    h, ofs = SUBFIELD.unpack_from(raw, pos)
    if ofs:
        raise Unsupported("learn spec on part of a field")
    # os-ken names NXM_OF_* fields ``*_nxm``: the same fields as the OXM ones we emit
    return oxm.name_of(h).removesuffix("_nxm")


# ------------------------------------------------------------------ dispatch

_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Output: _encode_output,
    SetField: _encode_set_field,
    Move: _encode_move,
    Resubmit: _encode_resubmit,
    Group: _encode_group,
    Ct: _encode_ct,
    Learn: _encode_learn,
}
_DECODERS: dict[int, Callable[[bytes], Action]] = {
    OFPAT_OUTPUT: _decode_output,
    OFPAT_GROUP: _decode_group,
    OFPAT_SET_FIELD: _decode_set_field,
    OFPAT_COPY_FIELD: _decode_move,
}
_NX_DECODERS: dict[int, Callable[[bytes], Action]] = {
    NXAST_RESUBMIT_TABLE: _decode_resubmit,
    NXAST_CT: _decode_ct,
    NXAST_LEARN: _decode_learn,
}


def encode(a: Action) -> bytes:
    enc = _ENCODERS.get(type(a))
    if enc is None:
        raise TypeError(f"lbaffd never sends {a!r}")
    return enc(a)


def encode_all(actions: tuple[Action, ...]) -> bytes:
    encoders = _ENCODERS
    try:
        return b"".join([encoders[type(a)](a) for a in actions])
    except KeyError:
        for a in actions:
            encode(a)  # raises the TypeError naming the action
        raise


def decode(raw: bytes) -> Action:
    """One action (exactly ``raw``); Unsupported for what lbaffd never writes."""
    (atype,) = U16.unpack_from(raw)
    if atype == OFPAT_EXPERIMENTER:
        experimenter, subtype = NX_HEADER.unpack_from(raw)
        dec = _NX_DECODERS.get(subtype) if experimenter == NX_EXPERIMENTER else None
    else:
        dec = _DECODERS.get(atype)
    if dec is None:
        raise Unsupported(f"action type {atype}")
    return dec(raw)


_ACTIONS: dict[bytes, Action] = {}


def forget() -> None:
    """Empty the memos of encoded and decoded action values (``compile.memos``)."""
    set_field_bytes.cache_clear()
    _encode_ct.cache_clear()
    _ACTIONS.clear()
    _LEARN_SPECS.clear()


def decode_all(buf: bytes, pos: int, end: int) -> tuple[Action, ...]:
    """The actions in ``buf[pos:end]``; recurring ones decoded once."""
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
            action = decode(raw)
            if not isinstance(action, Learn):  # per backend: a memo would only cost memory
                if len(memo) >= MEMO_LIMIT:
                    memo.clear()
                memo[raw] = action
        out.append(action)
        pos = nxt
    return tuple(out)


def clear_caches() -> None:
    """Forget memoized encodings and decodings (benchmarks; bounded anyway)."""
    set_field_bytes.cache_clear()
    _encode_ct.cache_clear()
    _ACTIONS.clear()
    _LEARN_SPECS.clear()
