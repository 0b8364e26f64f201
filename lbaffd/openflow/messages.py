"""OpenFlow 1.5 messages lbaffd sends and the entries it reads back.

Out: flow mods and group mods (and the bundle add that carries them) as
bytes, from a ``FlowSpec``/``GroupSpec``, match by ``oxm`` and actions by
``actions``.  A message is encoded once, without its xid (``RawMessage``);
the channel stamps the xid (and wraps it in OFPT_BUNDLE_ADD_MESSAGE) when it
sends it.

In: ``ofp_flow_desc`` and ``ofp_group_desc`` entries of the switch's replies,
straight from their bytes into the same canonical specs, for exactly what
lbaffd writes and OVS re-encodes (OXM/NXM matches, the actions of
``actions`` in one apply-actions instruction; select groups with weighted
buckets and OVS's selection-method property).  Anything else (an unknown
field, action, instruction, flag or statistic, a malformed length) is not
guessed at: the entry goes to ``oskenfallback``, so a foreign edit decodes
with ``Opaque`` actions and is repaired.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Final

from lbaffd.openflow import actions, oskenfallback, oxm
from lbaffd.openflow.actions import encode_all
from lbaffd.openflow.flowdesc import DecodeError
from lbaffd.openflow.flowspec import Action, Bucket, FlowSpec, GroupSpec, Match
from lbaffd.openflow.groupdesc import BUCKET, GROUP_DESC, OFPGPT_EXPERIMENTER
from lbaffd.openflow.oxm import OFPMT_OXM, U16_U16, U32, Unsupported, encode_match

VERSION: Final = 6  # OpenFlow 1.5
OFPT_FLOW_REMOVED: Final = 11
OFPT_FLOW_MOD: Final = 14
OFPT_GROUP_MOD: Final = 15
OFPT_BUNDLE_ADD_MESSAGE: Final = 34
MSG_NAMES: Final = {OFPT_FLOW_MOD: "OFPFlowMod", OFPT_GROUP_MOD: "OFPGroupMod"}

OFPFC_ADD: Final = 0
OFPFC_MODIFY_STRICT: Final = 2
OFPFC_DELETE: Final = 3
OFPFC_DELETE_STRICT: Final = 4
OFPFF_SEND_FLOW_REM: Final = 1
OFPRR_DELETE: Final = 2
OFPGC_ADD: Final = 0
OFPGC_MODIFY: Final = 1
OFPGC_DELETE: Final = 2
OFPGT_SELECT: Final = 1
OFPTT_ALL: Final = 0xFF
OFPG_ALL: Final = 0xFFFFFFFC
OFP_DEFAULT_PRIORITY: Final = 0x8000
OFPBF_ATOMIC: Final = 1
OFPBF_ORDERED: Final = 2
ANY: Final = 0xFFFFFFFF  # OFPP_ANY, OFPG_ANY, OFP_NO_BUFFER, OFPG_BUCKET_ALL
ALL_ONES64: Final = (1 << 64) - 1
OFPIT_APPLY_ACTIONS: Final = 4
OFPGBPT_WEIGHT: Final = 0
NTR_EXPERIMENTER: Final = 0x0000154D  # Netronome: OVS's selection-method property
NTR_SELECTION_METHOD: Final = 1

HEADER = struct.Struct("!BBHI")
# flow mod after the header: cookie, cookie_mask, table, command, idle, hard,
# priority, buffer_id, out_port, out_group, flags, importance
FLOW_MOD = struct.Struct("!QQBBHHHIIIHH")
GROUP_MOD = struct.Struct("!HBxIH2xI")  # command, type, group_id, bucket_array_len, bucket id
# bundle add header and the inner message's header
BUNDLE_ADD = struct.Struct("!BBHII2xHBBHI")
INSTRUCTION = struct.Struct("!HH4x")
WEIGHT = struct.Struct("!HHH2x")
GROUP_PROP = struct.Struct("!HHII")  # type, length, experimenter, exp_type
U64 = struct.Struct("!Q")
# length, table, priority, idle, hard, flags, importance, cookie
FLOW_DESC = struct.Struct("!H2xBxHHHHHQ")
FLOW_DESC_SIZE: Final = FLOW_DESC.size
EMPTY_MATCH: Final = U16_U16.pack(OFPMT_OXM, 4) + bytes(4)

_ZEROS = bytes(8)


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


# ------------------------------------------------------------------ flow mods


def _apply_actions(acts: tuple[Action, ...]) -> bytes:
    """One apply-actions instruction; none for a flow without actions (a
    drop), as OVS reports such a flow back."""
    if not acts:
        return b""
    body = encode_all(acts)
    return INSTRUCTION.pack(OFPIT_APPLY_ACTIONS, 8 + len(body)) + body  # 8-byte multiples


def flow_add(spec: FlowSpec) -> RawMessage:
    """OFPFC_ADD: creates, or replaces a flow with the same key (and cookie)."""
    return RawMessage(OFPT_FLOW_MOD, FLOW_MOD.pack(
        spec.cookie, 0, spec.table, OFPFC_ADD, spec.idle_timeout, spec.hard_timeout,
        spec.priority, ANY, ANY, ANY, spec.flags, 0)
        + encode_match(spec.match) + _apply_actions(spec.actions))


def flow_modify(spec: FlowSpec) -> RawMessage:
    """OFPFC_MODIFY_STRICT, restricted to the spec's cookie: keeps counters."""
    return RawMessage(OFPT_FLOW_MOD, FLOW_MOD.pack(
        spec.cookie, ALL_ONES64, spec.table, OFPFC_MODIFY_STRICT, spec.idle_timeout,
        spec.hard_timeout, spec.priority, ANY, ANY, ANY, spec.flags, 0)
        + encode_match(spec.match) + _apply_actions(spec.actions))


def flow_delete(spec: FlowSpec) -> RawMessage:
    """OFPFC_DELETE_STRICT of exactly this flow *with this cookie*: never
    removes someone else's flow that happens to share the key."""
    return RawMessage(OFPT_FLOW_MOD, FLOW_MOD.pack(
        spec.cookie, ALL_ONES64, spec.table, OFPFC_DELETE_STRICT, 0, 0, spec.priority,
        ANY, ANY, ANY, 0, 0) + encode_match(spec.match))


def flow_delete_by_cookie(cookie: int, cookie_mask: int) -> RawMessage:
    """OFPFC_DELETE of every flow, in every table, whose cookie matches."""
    return RawMessage(OFPT_FLOW_MOD, FLOW_MOD.pack(
        cookie, cookie_mask, OFPTT_ALL, OFPFC_DELETE, 0, 0, OFP_DEFAULT_PRIORITY, ANY, ANY,
        ANY, 0, 0) + EMPTY_MATCH)


# ------------------------------------------------------------------ group mods


def forget() -> None:
    """Empty the group property memo (``compile.memos``)."""
    selection_method_property.cache_clear()


@functools.lru_cache(maxsize=1024)
def selection_method_property(method: str, param: int, fields: tuple[str, ...]) -> bytes:
    """OVS's NTR selection-method group property (``selection_method=hash,
    fields(ip_src)``): each hashed field an OXM TLV whose value is the mask
    to hash with, all ones here.  Its length excludes the padding (which
    OVS would read as a bad OXM)."""
    body = bytes(4) + method.encode().ljust(16, b"\0") + U64.pack(param)
    for name in fields:
        f = oxm.field(name)
        if f.encode is None:
            h = oxm.header(name)
            (word,) = U32.unpack_from(h)
            body += h + b"\xff" * ((word & 0xFF) - (len(h) - 4))
        else:
            body += f.plain + b"\xff" * f.size
    size = 12 + len(body)
    return (GROUP_PROP.pack(OFPGPT_EXPERIMENTER, size, NTR_EXPERIMENTER, NTR_SELECTION_METHOD)
            + body + _ZEROS[: -size % 8])


def decode_selection_method(data: bytes) -> tuple[str, int, tuple[str, ...]]:
    """-> (method, param, hashed field names) of a selection-method
    property's ``data`` (after its 12-byte header).  A partial mask shows up
    as ``name/0x..`` so it never equals a desired whole-field list."""
    if len(data) < 28:
        raise DecodeError(f"selection method property of {len(data)} bytes")
    try:
        name = data[4:20].split(b"\0", 1)[0].decode("ascii")
        (param,) = U64.unpack_from(data, 20)
        fields: list[str] = []
        pos = 28
        while pos + 4 <= len(data):
            (h,) = U32.unpack_from(data, pos)
            if h == 0:
                break  # padding
            field, hlen = oskenfallback.parse_field_header(data, pos)
            vlen = (h & 0xFF) - (hlen - 4)  # an experimenter OXM counts its id
            if vlen <= 0 or pos + hlen + vlen > len(data):
                raise DecodeError(f"hashed field {h:#x}: bad length")
            mask = data[pos + hlen:pos + hlen + vlen]
            fields.append(field if mask == b"\xff" * vlen else f"{field}/0x{mask.hex()}")
            pos += hlen + vlen
    except DecodeError:
        raise
    except Exception as exc:  # os-ken on an unknown or damaged OXM header
        raise DecodeError(f"selection method property: {exc!r}") from exc
    return name, param, tuple(fields)


def encode_bucket(b: Bucket) -> bytes:
    """One OF1.5 bucket: header, actions, weight property, padding."""
    acts = encode_all(b.actions)
    size = (16 + len(acts) + 7) // 8 * 8
    return b"".join((BUCKET.pack(size, len(acts), b.bucket_id), acts,
                     WEIGHT.pack(OFPGBPT_WEIGHT, 8, b.weight),
                     _ZEROS[: size - 16 - len(acts)]))


def with_bucket_weight(bucket: bytes, weight: int) -> bytes:
    """An encoded bucket (``encode_bucket``) with another weight: the weight
    property follows the actions (``action_array_len`` in the header)."""
    at = BUCKET.size + BUCKET.unpack_from(bucket)[1]
    assert bucket[at:at + 4] == WEIGHT.pack(OFPGBPT_WEIGHT, 8, 0)[:4], "no weight property"
    return b"".join((bucket[:at + 4], weight.to_bytes(2, "big"), bucket[at + 6:]))


def split_group_mod(body: bytes) -> tuple[list[bytes], bytes]:
    """A group-mod body's buckets (``encode_bucket``'s bytes, in order) and
    what follows them (its properties)."""
    bucket_len: int = GROUP_MOD.unpack_from(body)[3]
    pos, end = GROUP_MOD.size, GROUP_MOD.size + bucket_len
    buckets = []
    while pos < end:
        size: int = BUCKET.unpack_from(body, pos)[0]
        buckets.append(body[pos:pos + size])
        pos += size
    return buckets, body[end:]


def join_group_mod(group_id: int, buckets: bytes, props: bytes,
                   command: int = OFPGC_ADD) -> bytes:
    """A select group-mod body of ``buckets`` (``encode_bucket``'s bytes, joined)
    and ``props``: what ``split_group_mod`` takes apart."""
    return GROUP_MOD.pack(command, OFPGT_SELECT, group_id, len(buckets), ANY) + buckets + props


def _group_mod(spec: GroupSpec, command: int) -> RawMessage:
    return RawMessage(OFPT_GROUP_MOD, join_group_mod(
        spec.group_id, b"".join([encode_bucket(b) for b in spec.buckets]),
        selection_method_property(spec.selection_method, spec.selection_param, spec.fields),
        command))


def group_add(spec: GroupSpec) -> RawMessage:
    return _group_mod(spec, OFPGC_ADD)


def group_modify(spec: GroupSpec) -> RawMessage:
    """OFPGC_MODIFY replaces type, buckets and properties of an existing group."""
    return _group_mod(spec, OFPGC_MODIFY)


def group_delete(group_id: int) -> RawMessage:
    return RawMessage(OFPT_GROUP_MOD, GROUP_MOD.pack(OFPGC_DELETE, OFPGT_SELECT, group_id, 0, ANY))


# ------------------------------------------------------------------ flow-desc entries

# Everything a foreign or damaged entry can raise on the way through the codec.
_FALLBACK_ERRORS = (Unsupported, struct.error, ValueError, IndexError, KeyError, TypeError,
                    OSError)


def decode_fast(buf: bytes, offset: int) -> FlowSpec | None:
    """The entry at ``offset`` as a FlowSpec, or None when it holds anything
    outside lbaffd's subset (``decode_flow`` then takes the os-ken path)."""
    try:
        return _flow(buf, offset)
    except _FALLBACK_ERRORS:
        return None


def decode_flow(buf: bytes, offset: int) -> FlowSpec:
    """The entry at ``offset``: directly when lbaffd wrote it, else through
    os-ken; ``DecodeError`` when neither can."""
    spec = decode_fast(buf, offset)
    return decode_flow_fallback(buf, offset) if spec is None else spec


def decode_flow_fallback(buf: bytes, offset: int) -> FlowSpec:
    """The entry at ``offset`` through os-ken (``oskenfallback``): what
    lbaffd did not write, actions it never writes as ``Opaque``."""
    raw = oskenfallback.decode_entry(buf, offset)  # raises DecodeError itself
    try:
        return FlowSpec(
            table=raw.table_id, priority=raw.priority,
            match=oxm.canonical_match(oskenfallback.match_items(raw)),
            actions=oskenfallback.instruction_actions(raw), cookie=raw.cookie,
            idle_timeout=raw.idle_timeout, hard_timeout=raw.hard_timeout, flags=raw.flags)
    except Exception as exc:
        raise DecodeError(f"flow at offset {offset}: {exc!r}") from exc


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
    match = oxm.decode_match(buf, pos + 4, pos + mlen)
    pos += (mlen + 7) & ~7
    pos = _skip_stats(buf, pos)
    acts: tuple[Action, ...] = ()
    if pos < end:
        itype, ilen = U16_U16.unpack_from(buf, pos)
        if itype != OFPIT_APPLY_ACTIONS or pos + ilen != end or ilen < 8:
            raise Unsupported(f"instruction type {itype}")
        acts = actions.decode_all(buf, pos + 8, end)
    elif pos > end:
        raise Unsupported("match or stats past the entry")
    return FlowSpec(table, priority, match, acts, cookie, idle, hard, flags)


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
        (h,) = U32.unpack_from(buf, p)
        size = _STATS_SIZES.get(h)
        if size is None:
            raise Unsupported(f"OXS header {h:#x}")
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
    match = oxm.decode_match(buf, pos + 4, pos + mlen)
    pos += (mlen + 7) & ~7
    if STATS4.unpack_from(buf, pos) != _STATS4_USUAL:
        return None
    return match, U32.unpack_from(buf, pos + 20)[0]  # idle_time: seconds, nanoseconds


# ------------------------------------------------------------------ group-desc entries


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
    return decode_group_fallback(buf, offset) if spec is None else spec


def decode_group_fallback(buf: bytes, offset: int) -> GroupSpec:
    """The group at ``offset`` through os-ken (``oskenfallback``); a group
    type other than select never equals a desired group."""
    raw = oskenfallback.decode_group_entry(buf, offset)  # raises DecodeError itself
    try:
        method, param, fields = "", 0, tuple[str, ...]()
        for prop in raw.properties:
            if prop.experimenter == NTR_EXPERIMENTER and prop.exp_type == NTR_SELECTION_METHOD:
                method, param, fields = decode_selection_method(prop.data)
        buckets = tuple(
            Bucket(b.bucket_id, oskenfallback.decode_actions(b.actions),
                   100 if b.weight is None else b.weight)
            for b in raw.buckets)
        if raw.type != OFPGT_SELECT:
            method = f"group-type-{raw.type}"  # never desired: forces a repair
        return GroupSpec(raw.group_id, buckets, method or "dp_hash", fields, param)
    except Exception as exc:
        raise DecodeError(f"group at offset {offset}: {exc!r}") from exc


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
        method, param, fields = decode_selection_method(bytes(buf[pos + 12:pos + plen]))
        pos += (plen + 7) // 8 * 8
    return GroupSpec(group_id, tuple(buckets), method or "dp_hash", fields, param)


def _bucket(buf: bytes, pos: int, end: int) -> Bucket:
    """One bucket: its actions and at most its weight property."""
    blen, alen, bucket_id = BUCKET.unpack_from(buf, pos)
    actions_end = pos + BUCKET.size + alen
    bucket_end = pos + blen
    if blen < BUCKET.size + 8 or bucket_end > end or actions_end > bucket_end:
        raise Unsupported("bucket length")
    acts = actions.decode_all(buf, pos + BUCKET.size, actions_end)
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
    return Bucket(bucket_id, acts, weight)


def clear_caches() -> None:
    """Forget every memoized encoding and decoding (benchmarks; memory is
    bounded anyway)."""
    oxm.clear_caches()
    actions.clear_caches()
    selection_method_property.cache_clear()
