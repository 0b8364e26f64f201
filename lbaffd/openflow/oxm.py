"""OXM match fields: how each is written and read, side by side.

A ``Field`` is built once per field name (encoding) or header (decoding)
from os-ken's field table (``oskenfallback.field_type``), so names and value
types agree with os-ken by construction: integers as ints, IPv4/IPv6 as
their canonical text, MACs as ``aa:bb:..``.  Fields of other types fall back
to os-ken's encoder (``oskenfallback.oxm_tlv``) and converter.

Encoding is canonical, as OVS writes a match for OF1.5 (its field order,
registers as xregs, masked values ANDed with the mask), so equal matches are
equal bytes and OVS reports lbaffd's flows back in the bytes lbaffd sent.
Decoding gives the canonical ``Match``: full masks folded away, int
values pre-masked, and OVS's ``xregN`` (OXM_OF_PKT_REG, how OF1.5 reports
``reg2N``/``reg2N+1``) split back into the 32-bit registers lbaffd matches on.

A new match field of an integer, address or MAC type needs no code here.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any, Final

from lbaffd.openflow import oskenfallback
from lbaffd.openflow.flowspec import Match, MatchValue

OFPMT_OXM: Final = 1
OFPXMC_EXPERIMENTER: Final = 0xFFFF
U16_U16 = struct.Struct("!HH")
U32 = struct.Struct("!I")
_ZEROS = bytes(8)

# Bounded memos of encoded and decoded TLVs: what recurs (a VIP's id in its
# flows, the common fields) is hit while hot; 8k entries are ~2 MB.
CACHE_LIMIT = 1 << 13
MEMO_LIMIT = 1 << 14


class Unsupported(ValueError):
    """Not in what the codec decodes (or malformed): the entry goes to
    ``oskenfallback``."""


class NotCanonical(ValueError):
    """A value written in a form the fast encoder does not take."""


# ------------------------------------------------------------------ values


def _ipv4_bytes(text: str) -> bytes:
    raw = socket.inet_pton(socket.AF_INET, text)
    if socket.inet_ntop(socket.AF_INET, raw) != text:
        raise NotCanonical(text)
    return raw


def _ipv6_bytes(text: str) -> bytes:
    raw = socket.inet_pton(socket.AF_INET6, text)
    if socket.inet_ntop(socket.AF_INET6, raw) != text:
        raise NotCanonical(text)
    return raw


def _mac_bytes(text: str) -> bytes:
    if len(text) != 17 or text[2::3] != ":::::":
        raise NotCanonical(text)
    return bytes.fromhex(text.replace(":", ""))


def ipv4_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def ipv6_text(raw: bytes) -> str:
    """RFC 5952 text, as os-ken's netaddr conversion gives (unit-tested)."""
    return socket.inet_ntop(socket.AF_INET6, raw)


def _mac_text(raw: bytes) -> str:
    return raw.hex(":")


def uint(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def address_bytes(text: str, v6: bool) -> bytes:
    """An address as bytes (canonical text fast, any other through os-ken)."""
    try:
        return _ipv6_bytes(text) if v6 else _ipv4_bytes(text)
    except (NotCanonical, OSError):
        return oskenfallback.address_bytes(text, v6)


# value type -> (encoder, decoder); "int" is built per size
_CODECS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "ipv4": (_ipv4_bytes, ipv4_text),
    "ipv6": (_ipv6_bytes, ipv6_text),
    "mac": (_mac_bytes, _mac_text),
}


class Field:
    """One OXM/NXM field: its name, headers (plain/masked, experimenter id
    included), value size, value encoder and decoder, and os-ken's sort key.
    ``encode`` is None for types left to os-ken."""

    __slots__ = ("decode", "encode", "is_int", "masked", "name", "num", "plain", "size",
                 "sort_key")

    def __init__(self, ft: oskenfallback.FieldType) -> None:
        self.name = ft.name
        self.num = ft.num
        self.sort_key: int = ft.num[0] if isinstance(ft.num, tuple) else ft.num
        self.size = size = ft.size
        self.is_int = ft.kind == "int"
        self.encode: Callable[[Any], bytes] | None = None
        self.decode: Callable[[bytes], Any] | None = ft.to_user
        self.plain = self.masked = b""
        if self.is_int:
            limit = (1 << (8 * size)) - 1
            self.encode = lambda v: (v & limit).to_bytes(size, "big")
            self.decode = uint
        elif ft.kind in _CODECS:
            self.encode, self.decode = _CODECS[ft.kind]
        else:
            return  # encoded by os-ken (see tlv)
        self.plain, self.masked = oskenfallback.field_headers(ft.num, size)


@functools.cache  # bounded by the OXM field names
def field(name: str) -> Field:
    return Field(oskenfallback.field_type(name))


_BY_NUM: dict[int, Field | None] = {}


def field_of(header: int) -> Field:
    """The field named by a (non-experimenter) OXM header; hasmask and length
    are ignored.  Raises Unsupported for fields os-ken does not know."""
    key = header >> 9  # class | field: what os-ken numbers fields by
    if key not in _BY_NUM:
        _BY_NUM[key] = _lookup(key)
    f = _BY_NUM[key]
    if f is None:
        raise Unsupported(f"OXM header {header:#x}")
    return f


def _lookup(num: int) -> Field | None:
    if num >> 7 == OFPXMC_EXPERIMENTER:
        return None
    try:
        ft = oskenfallback.field_type(oskenfallback.field_name(num))
    except KeyError:
        return None
    if ft.num != num or not ft.size:
        return None
    return Field(ft)


# ------------------------------------------------------------------ field ids


@functools.cache  # bounded by the field names
def oxm_id(name: str) -> bytes:
    """OFPOxmId: the 4-byte header of a whole (unmasked) basic/NXM field."""
    f = field(name)
    return U32.pack((f.num << 9) | f.size)


@functools.cache  # bounded by the field names
def header(name: str) -> bytes:
    """What NX actions (ct zone, learn) name a whole field by."""
    return oskenfallback.field_header(name)


def name_of(h: int) -> str:
    """A field named by its header alone (copy_field, ct zone, learn spec):
    as lbaffd and OVS write it, unmasked and with the field's own length."""
    if h >> 16 == OFPXMC_EXPERIMENTER:
        raise Unsupported(f"experimenter field {h:#x}")
    f = field_of(h)
    if h & 0x1FF != f.size:
        raise Unsupported(f"field id {h:#x}")
    return f.name


# ------------------------------------------------------------------ TLVs


def tlv(name: str, value: Any, normalize: bool) -> bytes:
    """One OXM TLV.  ``normalize`` (matches): a masked value is ANDed with
    its mask, as os-ken's OFPMatch does."""
    f = field(name)
    enc = f.encode
    if enc is None:
        return oskenfallback.oxm_tlv(name, value, normalize)
    try:
        if isinstance(value, tuple | list):
            v, m = value
            vb, mb = enc(v), enc(m)
            if normalize:
                vb = bytes(a & b for a, b in zip(vb, mb, strict=True))
            return f.masked + vb + mb
        return f.plain + enc(value)
    except (NotCanonical, OSError, TypeError, ValueError, AttributeError):
        return oskenfallback.oxm_tlv(name, value, normalize)


def value_of(raw: bytes, pos: int) -> tuple[str, Any]:
    """(name, value) of the whole-field TLV at ``pos`` (set_field: masked
    ones are register loads lbaffd never writes)."""
    (h,) = U32.unpack_from(raw, pos)
    if h >> 16 == OFPXMC_EXPERIMENTER or h & 0x100:
        raise Unsupported("experimenter or masked field")
    f = field_of(h)
    if (h & 0xFF) != f.size or pos + 4 + f.size > len(raw):
        raise Unsupported(f"{f.name}: bad length")
    if f.decode is None:
        raise Unsupported(f"{f.name}: no value type")
    return f.name, f.decode(raw[pos + 4:pos + 4 + f.size])


# ------------------------------------------------------------------ match: encode


# The order OVS writes a match's fields in for OpenFlow 1.5 (``nx_put_raw``
# and ``nxm_put_ip``, lib/nx-match.c; IP and ARP fields never meet), so that
# what lbaffd sends is what OVS reports back (``readback.flow_body``).
OVS_ORDER: Final = (
    "packet_type", "dp_hash", "recirc_id", "conj_id", "in_port", "actset_output",
    "eth_src", "eth_dst", "eth_type", "vlan_vid", "vlan_pcp",
    "mpls_tc", "mpls_bos", "mpls_ttl", "mpls_label",
    "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "ip_frag", "ip_dscp", "ip_ecn", "nw_ttl",
    "ipv6_flabel", "ip_proto", "tcp_src", "tcp_dst", "tcp_flags", "udp_src", "udp_dst",
    "sctp_src", "sctp_dst", "icmpv4_type", "icmpv4_code", "icmpv6_type", "icmpv6_code",
    "ipv6_nd_target", "ipv6_nd_sll", "ipv6_nd_tll",
    "arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha",
    "tunnel_id", "tun_ipv4_src", "tun_ipv4_dst",
    *(f"xreg{i}" for i in range(8)),
    "pkt_mark", "ct_state", "ct_zone", "ct_mark", "ct_label", "ct_nw_src", "ct_ipv6_src",
    "ct_nw_dst", "ct_ipv6_dst", "ct_nw_proto", "ct_tp_src", "ct_tp_dst", "metadata")
_OVS_RANK: Final = {name: i for i, name in enumerate(OVS_ORDER)}
# OF1.5: OVS writes the 32-bit registers as halves of the 64-bit xregs
# (``flow_get_xreg``: reg2N is the high half of xregN)
_REG_HALF: Final = {f"reg{i}": (i // 2, 32 - 32 * (i % 2)) for i in range(16)}
_FULL32: Final = 0xFFFFFFFF
_FULL64: Final = (1 << 64) - 1


@functools.lru_cache(maxsize=CACHE_LIMIT)
def _match_entry(item: tuple[str, MatchValue]) -> tuple[int, bytes]:
    name, value = item
    rank = _OVS_RANK.get(name)
    return (len(OVS_ORDER) + field(name).sort_key if rank is None else rank,
            tlv(name, value, True))


def _sort_key(entry: tuple[int, bytes]) -> int:
    return entry[0]


def encode_match(match: Match) -> bytes:
    """``ofp_match`` (OXM), padded to 8 bytes, as OVS writes it for OF1.5:
    fields in its order (``OVS_ORDER``; fields it does not list after them,
    by OXM type number), registers as xregs (a half-masked xreg for a lone
    register), masked values ANDed with the mask."""
    entries = []
    xregs: dict[int, tuple[int, int]] | None = None
    for item in match.fields:
        half = _REG_HALF.get(item[0])
        value = item[1]
        if half is None:
            entries.append(_match_entry(item))
            continue
        v, m = value if isinstance(value, tuple) else (value, _FULL32)
        if not isinstance(v, int) or not isinstance(m, int):
            entries.append(_match_entry(item))
            continue
        n, shift = half
        if xregs is None:
            xregs = {}
        xv, xm = xregs.get(n, (0, 0))
        xregs[n] = (xv | (v & m & _FULL32) << shift, xm | (m & _FULL32) << shift)
    if xregs:
        for n, (xv, xm) in xregs.items():
            entries.append(_match_entry((f"xreg{n}", xv if xm == _FULL64 else (xv, xm))))
    entries.sort(key=_sort_key)
    body = b"".join([t for _, t in entries])
    size = 4 + len(body)
    return U16_U16.pack(OFPMT_OXM, size) + body + _ZEROS[: -size % 8]


# ------------------------------------------------------------------ match: decode

MatchPairs = tuple[tuple[str, MatchValue], ...]
_TLVS: dict[bytes, MatchPairs] = {}


def _tlv_pairs(h: int, raw: bytes) -> MatchPairs:
    """What one match TLV contributes to the canonical match: the (name,
    value) pair with a full mask folded away and an int value pre-masked, or
    the two 32-bit registers an ``xregN`` covers."""
    if h >> 16 == OFPXMC_EXPERIMENTER:
        raise Unsupported("experimenter OXM")
    f = field_of(h)
    hasmask = h & 0x100
    size = f.size
    if len(raw) != 4 + (2 * size if hasmask else size):
        raise Unsupported(f"{f.name}: length {len(raw)}")
    raw_v = raw[4:4 + size]
    raw_m = raw[4 + size:] if hasmask else b""
    if f.name.startswith("xreg"):
        return xreg_pairs(int(f.name[4:]), uint(raw_v),
                          uint(raw_m) if hasmask else (1 << 64) - 1)
    to_user = f.decode
    if to_user is None:
        raise Unsupported(f"{f.name}: no value type")
    value: MatchValue
    if not hasmask or raw_m == b"\xff" * size:
        value = to_user(raw_v)
    elif f.is_int:
        v, m = uint(raw_v), uint(raw_m)
        value = (v & m, m)
    else:
        value = (to_user(raw_v), to_user(raw_m))
    return ((f.name, value),)


def xreg_pairs(n: int, v: int, m: int) -> MatchPairs:
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


def forget() -> None:
    """Empty the value memos (``compile.memos``): the field tables stay."""
    _match_entry.cache_clear()
    _TLVS.clear()


def decode_match(buf: bytes, pos: int, end: int) -> Match:
    """The canonical match of the TLVs in ``buf[pos:end]``, built from
    interned pairs as ``Match.of`` builds them (a later TLV for the same name
    wins, as there)."""
    fields: dict[str, tuple[str, MatchValue]] = {}
    tlvs = _TLVS
    while pos < end:
        (h,) = U32.unpack_from(buf, pos)
        nxt = pos + 4 + (h & 0xFF)
        if nxt > end:
            raise Unsupported("OXM past the match")
        raw = buf[pos:nxt]
        pairs = tlvs.get(raw)
        if pairs is None:
            pairs = _tlv_pairs(h, raw)
            if len(tlvs) >= MEMO_LIMIT:
                tlvs.clear()
            tlvs[raw] = pairs
        for pair in pairs:
            fields[pair[0]] = pair
        pos = nxt
    # names are unique: sorting the pairs never compares two values
    return Match(tuple(sorted(fields.values())))


def canonical_match(items: Iterable[tuple[str, Any]]) -> Match:
    """The canonical match of (name, value) pairs as os-ken decodes them
    (FLOW_REMOVED, entries ``oskenfallback`` parsed): the same folding as
    ``decode_match``."""
    out: dict[str, MatchValue] = {}
    for key, value in items:
        if key.startswith("xreg"):
            v, m = value if isinstance(value, tuple) else (value, (1 << 64) - 1)
            out.update(xreg_pairs(int(key[4:]), v, m))
        elif isinstance(value, tuple):
            v, m = value
            if oskenfallback.mask_is_full(key, v, m):
                out[key] = v
            elif isinstance(v, int) and isinstance(m, int):
                out[key] = (v & m, m)
            else:
                out[key] = value
        else:
            out[key] = value
    return Match(tuple(sorted(out.items())))


def clear_caches() -> None:
    """Forget memoized TLVs (benchmarks; memory is bounded anyway)."""
    _match_entry.cache_clear()
    _TLVS.clear()
