"""Everything lbaffd still takes from os-ken for OpenFlow, in one place.

lbaffd encodes and decodes what it writes itself (``oxm``, ``actions``,
``messages``).  os-ken is kept for what that codec does not cover:

- its OXM field table (names, numbers, value types), read once per field
  name by ``oxm``, and its encoder for values the fast path does not take
  (non-canonical address text, fields of unusual types);
- entries lbaffd did not write, or wrote and someone changed: a flow-desc or
  group-desc entry ``messages`` declines is parsed here into os-ken objects
  (``decode_entry``, ``decode_group_entry``) and their actions turned into
  lbaffd's (``decode_actions``), anything else into ``Opaque`` so that the
  entry never equals a desired one and is repaired;
- the replies the daemon reads but does not decode itself (group stats,
  the learned entries' loads for ``ovs-appctl``, asynchronous messages);
- the channel's few control messages (features, barrier, bundle control,
  async config, packet-out, flow monitor, dump requests) and OpenFlow's
  constants (``constants``): the channel imports no os-ken of its own.

os-ken 4.2's ``OFPActionCopyField.parser`` slices past the end of the action
(it reads ``len_`` bytes *after* the fixed part), and OVS reports every
``move`` as copy_field, so copy_field is parsed here by hand.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from os_ken import utils
from os_ken.lib import type_desc
from os_ken.ofproto import nicira_ext, ofproto_parser
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from lbaffd.openflow.flowdesc import DecodeError
from lbaffd.openflow.flowspec import (
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
    Opaque,
    Output,
    Resubmit,
    SetField,
)
from lbaffd.openflow.groupdesc import BUCKET, GROUP_DESC, PROP, entry_framed

DP = ProtocolDesc(version=ofp.OFP_VERSION)
# OpenFlow 1.5's numbers (os-ken's ofproto_v1_5) for modules that import no os-ken
constants: Any = ofp

NX_NAT_F_SRC = 1
NX_NAT_F_DST = 2


# ------------------------------------------------------------------ the OXM field table


@dataclass(frozen=True, slots=True)
class FieldType:
    """What os-ken's field table says about one OXM/NXM field.

    ``num`` is os-ken's number (class << 7 | field; a tuple for experimenter
    fields), ``kind`` one of ``int``, ``ipv4``, ``ipv6``, ``mac`` or
    ``other`` (then ``to_user`` converts a value), ``size`` its value bytes
    (0: a field os-ken gives no size)."""

    name: str
    num: Any
    kind: str
    size: int
    to_user: Callable[[bytes], Any] | None = None


def field_type(name: str) -> FieldType:
    """The field called ``name``; KeyError for a name os-ken does not know."""
    num, kind = ofp.oxm_get_field_info_by_name(name)
    if isinstance(kind, type_desc.IntDescr):
        return FieldType(name, num, "int", kind.size)
    for tag, cls in (("ipv4", type_desc.IPv4Addr), ("ipv6", type_desc.IPv6Addr),
                     ("mac", type_desc.MacAddr)):
        if kind is cls:
            return FieldType(name, num, tag, kind.size)
    return FieldType(name, num, "other", getattr(kind, "size", 0),
                     getattr(kind, "to_user", None))


def field_name(num: int) -> str:
    """The name os-ken gives field number ``num`` (header >> 9); KeyError if none."""
    return str(ofp.oxm_to_user_header(num))


def field_headers(num: Any, size: int) -> tuple[bytes, bytes]:
    """(plain, masked) OXM headers of a field, an experimenter id included."""
    zero = bytes(size)
    plain, masked = bytearray(), bytearray()
    ofp.oxm_serialize(num, zero, None, plain, 0)
    ofp.oxm_serialize(num, zero, zero, masked, 0)
    return bytes(plain[: len(plain) - size]), bytes(masked[: len(masked) - 2 * size])


def field_header(name: str) -> bytes:
    """The header NX actions (ct zone, learn) name a whole field by."""
    buf = bytearray()
    ofp.oxm_serialize_header(ofp.oxm_from_user_header(name), buf, 0)
    return bytes(buf)


def parse_field_header(data: bytes, pos: int) -> tuple[str, int]:
    """(name, header length) of the OXM header at ``pos`` (experimenter ones too)."""
    num, hlen = ofp.oxm_parse_header(data, pos)
    return field_name(num), hlen


def oxm_tlv(name: str, value: Any, normalize: bool) -> bytes:
    """os-ken's own OXM TLV encoding (``normalize``: as OFPMatch does)."""
    if normalize:
        name, value = ofp.oxm_normalize_user(name, value)
    num, v, m = ofp.oxm_from_user(name, value)
    buf = bytearray()
    ofp.oxm_serialize(num, v, m, buf, 0)
    return bytes(buf)


def address_bytes(text: str, v6: bool) -> bytes:
    """An address in any text form os-ken accepts."""
    kind = type_desc.IPv6Addr if v6 else type_desc.IPv4Addr
    return bytes(kind.from_user(text))


def mask_is_full(name: str, value: Any, mask: Any) -> bool:
    """Whether ``mask`` covers all of field ``name`` (os-ken's conversion)."""
    _, _, mask_bytes = ofp.oxm_from_user(name, (value, mask))
    return mask_bytes is None or bool(mask_bytes == b"\xff" * len(mask_bytes))


# ------------------------------------------------------------------ flow-desc entries


@dataclass(frozen=True, slots=True)
class RawInstruction:
    type: int
    actions: tuple[Any, ...]  # os-ken action objects (apply/write actions)


@dataclass(frozen=True, slots=True)
class RawFlow:
    table_id: int
    priority: int
    idle_timeout: int
    hard_timeout: int
    flags: int
    cookie: int
    match: Any  # os-ken OFPMatch
    instructions: tuple[RawInstruction, ...]
    stats: Mapping[str, Any] = field(default_factory=dict)  # OXS: duration, idle_time, ...


NX_VENDOR = 0x00002320
# Nicira actions that nest an action list after a fixed part: os-ken's parsers
# walk it by each nested action's length and loop forever on a length of 0
# (ct: 24-byte fixed part; clone: 16).
_NX_NESTING = {35: 24, 42: 16}


def parse_actions(buf: bytes, offset: int, length: int) -> tuple[Any, ...]:
    """Parse ``length`` bytes of actions, copy_field included; ``DecodeError``
    on anything malformed or that os-ken cannot parse."""
    end = offset + length
    if end > len(buf):
        raise DecodeError(f"actions past the buffer ({end} > {len(buf)})")
    out: list[Any] = []
    while offset < end:
        type_, len_ = _action_header(buf, offset, end, "action")
        _check_nested(buf, offset, len_, type_)
        try:
            if type_ == ofp.OFPAT_COPY_FIELD:
                out.append(_parse_copy_field(buf, offset, len_))
            else:
                out.append(parser.OFPAction.parser(buf, offset))
        except Exception as exc:
            raise DecodeError(f"action type {type_} at offset {offset}: {exc!r}") from exc
        offset += len_
    return tuple(out)


def _check_nested(buf: bytes, offset: int, len_: int, type_: int) -> None:
    """The nested action list of a ct/clone action is framed (see _NX_NESTING)."""
    if type_ != ofp.OFPAT_EXPERIMENTER or len_ < 10:
        return
    vendor, subtype = struct.unpack_from("!IH", buf, offset + 4)
    fixed = _NX_NESTING.get(subtype) if vendor == NX_VENDOR else None
    if fixed is None:
        return
    pos, end = offset + fixed, offset + len_
    while pos < end:
        ntype, nlen = _action_header(buf, pos, end, "nested action")
        _check_nested(buf, pos, nlen, ntype)
        pos += nlen


def _action_header(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Type and length of the action at ``pos``, framed within ``end`` (a
    length that is short, unaligned or past the list would loop or overrun)."""
    if pos + 4 > end:
        raise DecodeError(f"truncated {what} header at offset {pos}")
    type_, len_ = struct.unpack_from("!HH", buf, pos)
    if len_ < 8 or len_ % 8 or pos + len_ > end:
        raise DecodeError(f"bad {what} length {len_} at offset {pos}")
    return type_, len_


def _parse_copy_field(buf: bytes, offset: int, len_: int) -> Any:
    _, _, n_bits, src_ofs, dst_ofs = struct.unpack_from(
        ofp.OFP_ACTION_COPY_FIELD_PACK_STR, buf, offset)
    rest = bytes(buf[offset + ofp.OFP_ACTION_COPY_FIELD_SIZE:offset + len_])
    ids = []
    for _ in range(2):  # src and dst OXM headers; the rest is padding
        oxm_id, rest = parser.OFPOxmId.parse(rest)
        ids.append(oxm_id)
    return parser.OFPActionCopyField(n_bits=n_bits, src_offset=src_ofs, dst_offset=dst_ofs,
                                     oxm_ids=ids)


def decode_entry(buf: bytes, offset: int, with_actions: bool = True) -> RawFlow:
    """One ``ofp_flow_desc`` at ``offset`` (its instructions left out when
    ``with_actions`` is false: counters need only the match and the stats)."""
    try:
        (length, table_id, priority, idle, hard, flags, _importance,
         cookie) = struct.unpack_from(ofp.OFP_FLOW_DESC_0_PACK_STR, buf, offset)
        end = offset + length
        if end > len(buf) or length < ofp.OFP_FLOW_DESC_0_SIZE:
            raise DecodeError(f"bad flow-desc entry length {length} at offset {offset}")
        pos = offset + ofp.OFP_FLOW_DESC_0_SIZE
        match = parser.OFPMatch.parser(buf, pos)
        pos += utils.round_up(match.length, 8)
        stats = parser.OFPStats.parser(buf, pos)
        pos += utils.round_up(stats.length, 8)
        items = dict(stats.items())
    except DecodeError:
        raise
    except Exception as exc:  # os-ken on a damaged match or stats block
        raise DecodeError(f"flow-desc entry at offset {offset}: {exc!r}") from exc
    insts: list[RawInstruction] = []
    while with_actions and pos < end:
        if pos + 4 > end:
            raise DecodeError(f"truncated instruction at offset {pos}")
        itype, ilen = struct.unpack_from("!HH", buf, pos)
        if ilen < ofp.OFP_INSTRUCTION_ACTIONS_SIZE or pos + ilen > end:  # would never advance
            raise DecodeError(f"bad instruction length {ilen} at offset {pos}")
        if itype in (ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_WRITE_ACTIONS):
            actions = parse_actions(buf, pos + ofp.OFP_INSTRUCTION_ACTIONS_SIZE,
                                    ilen - ofp.OFP_INSTRUCTION_ACTIONS_SIZE)
        else:
            actions = ()
        insts.append(RawInstruction(itype, actions))
        pos += ilen
    return RawFlow(table_id, priority, idle, hard, flags, cookie, match, tuple(insts), items)


def match_items(flow: RawFlow) -> Iterable[tuple[str, Any]]:
    """The (name, value) pairs of an entry's match, as os-ken gives them."""
    items: Iterable[tuple[str, Any]] = flow.match.items()
    return items


def instruction_actions(flow: RawFlow) -> tuple[Action, ...]:
    """An entry's actions; instructions lbaffd never writes decode as
    ``Opaque`` so that the flow differs and gets repaired."""
    actions: list[Action] = []
    for inst in flow.instructions:
        if inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions.extend(decode_actions(inst.actions))
        else:
            actions.append(Opaque(f"instruction type {inst.type}"))
    return tuple(actions)


def set_fields(flow: RawFlow) -> dict[str, Any]:
    """field -> value of every set_field of an entry (masks dropped)."""
    out: dict[str, Any] = {}
    for inst in flow.instructions:
        for a in inst.actions:
            if isinstance(a, parser.OFPActionSetField):
                value = a.value[0] if isinstance(a.value, tuple) else a.value
                out[a.key] = value
    return out


# ------------------------------------------------------------------ group-desc entries


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


def decode_group_entry(buf: bytes, offset: int) -> RawGroup:
    """The ``ofp_group_desc`` at ``offset``; ``DecodeError`` unless it is framed.

    Decoded here rather than by os-ken's group-desc parser (reported to
    mis-slice multi-bucket groups), with the copy_field-safe action parser."""
    if offset + GROUP_DESC.size > len(buf):
        raise DecodeError(f"truncated group-desc entry at offset {offset}")
    length, gtype, group_id, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    if not entry_framed(buf, offset, length, bucket_len):
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
            if ptype == 0:  # OFPGBPT_WEIGHT
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


# ------------------------------------------------------------------ the channel's own messages
# The few control messages ``channel`` sends, built by os-ken: none is sent
# often enough for its encoding to matter, and none carries lbaffd's actions.


def group_stats_request() -> Any:
    """OFPMP_GROUP_STATS of every group (its reply is parsed by os-ken)."""
    return parser.OFPGroupStatsRequest(DP, 0, ofp.OFPG_ALL)


def group_desc_request(group_id: int = ofp.OFPG_ALL) -> Any:
    """OFPMP_GROUP_DESC of one group, or of every group."""
    return parser.OFPGroupDescStatsRequest(DP, 0, group_id)


def flow_desc_request(cookie: int, cookie_mask: int, table_id: int = ofp.OFPTT_ALL,
                      out_port: int = ofp.OFPP_ANY) -> Any:
    """OFPMP_FLOW_DESC of the flows whose cookie matches (and that output to
    ``out_port``, unless it is OFPP_ANY)."""
    return parser.OFPFlowDescStatsRequest(DP, 0, table_id, out_port, ofp.OFPG_ANY,
                                          cookie, cookie_mask, parser.OFPMatch())


def features_request(xid: int) -> bytes:
    """OFPT_FEATURES_REQUEST, encoded (sent before the reader thread runs)."""
    feat = parser.OFPFeaturesRequest(DP)
    feat.xid = xid
    feat.serialize()
    return bytes(feat.buf)


def barrier_request() -> Any:
    return parser.OFPBarrierRequest(DP)


def bundle_control(bundle_id: int, kind: int, flags: int) -> Any:
    """OFPT_BUNDLE_CONTROL (open, commit or discard) of bundle ``bundle_id``."""
    return parser.OFPBundleCtrlMsg(DP, bundle_id, kind, flags, [])


def async_config_request() -> Any:
    """OFPT_SET_ASYNC asking for FLOW_REMOVED (every reason), PACKET_IN of
    ``output:CONTROLLER`` actions (the reject flows) and REQUESTFORWARD of
    group and meter mods, as master and as slave."""
    removed = ((1 << ofp.OFPRR_IDLE_TIMEOUT) | (1 << ofp.OFPRR_HARD_TIMEOUT)
               | (1 << ofp.OFPRR_DELETE) | (1 << ofp.OFPRR_GROUP_DELETE))
    forward = (1 << ofp.OFPRFR_GROUP_MOD) | (1 << ofp.OFPRFR_METER_MOD)
    packet_in = 1 << ofp.OFPR_APPLY_ACTION
    props = [parser.OFPAsyncConfigPropReasons(type_=t, mask=mask)
             for t, mask in ((ofp.OFPACPT_FLOW_REMOVED_MASTER, removed),
                             (ofp.OFPACPT_FLOW_REMOVED_SLAVE, removed),
                             (ofp.OFPACPT_PACKET_IN_MASTER, packet_in),
                             (ofp.OFPACPT_PACKET_IN_SLAVE, packet_in),
                             (ofp.OFPACPT_REQUESTFORWARD_MASTER, forward),
                             (ofp.OFPACPT_REQUESTFORWARD_SLAVE, forward))]
    return parser.OFPSetAsync(DP, properties=props)


def packet_out(out_port: int, data: bytes) -> Any:
    """OFPT_PACKET_OUT of ``data`` through ``out_port``, as from the controller."""
    return parser.OFPPacketOut(
        DP, buffer_id=ofp.OFP_NO_BUFFER, match=parser.OFPMatch(in_port=ofp.OFPP_CONTROLLER),
        actions=[parser.OFPActionOutput(out_port, 0)], data=data)


def flow_monitor_request() -> Any:
    """An OF1.5 flow monitor (id 1) of additions, removals and modifications
    in every table."""
    return parser.OFPFlowMonitorRequest(
        DP, flags=0, monitor_id=1, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        monitor_flags=ofp.OFPFMF_ADD | ofp.OFPFMF_REMOVED | ofp.OFPFMF_MODIFY,
        table_id=ofp.OFPTT_ALL, command=ofp.OFPFMC_ADD, match=parser.OFPMatch())


def parse_message(msg_type: int, xid: int, raw: bytes) -> Any:
    """The os-ken object of a whole message, or None where os-ken cannot
    parse it (asynchronous messages, the learned entries' loads)."""
    try:
        return ofproto_parser.msg(DP, ofp.OFP_VERSION, msg_type, len(raw), xid, raw)
    except Exception:
        return None


def error_name(err_type: int, code: int) -> str:
    """``OFPET_…/OFPxxC_…`` of an OFPT_ERROR, numbers where os-ken has no name."""
    types = {v: k for k, v in vars(ofp).items() if k.startswith("OFPET_") and isinstance(v, int)}
    tname = types.get(err_type, str(err_type))
    suffix = {"OFPET_BAD_REQUEST": "OFPBRC_", "OFPET_BAD_ACTION": "OFPBAC_",
              "OFPET_BAD_MATCH": "OFPBMC_", "OFPET_FLOW_MOD_FAILED": "OFPFMFC_",
              "OFPET_GROUP_MOD_FAILED": "OFPGMFC_", "OFPET_BUNDLE_FAILED": "OFPBFC_",
              "OFPET_BAD_INSTRUCTION": "OFPBIC_"}.get(tname)
    cname = str(code)
    if suffix:
        codes = {v: k for k, v in vars(ofp).items()
                 if k.startswith(suffix) and isinstance(v, int)}
        cname = codes.get(code, cname)
    return f"{tname}/{cname}"


# ------------------------------------------------------------------ os-ken actions -> lbaffd's


def decode_actions(objs: Iterable[Any]) -> tuple[Action, ...]:
    return tuple(decode_action(o) for o in objs)


def decode_action(o: Any) -> Action:
    """An os-ken action object as lbaffd's; what lbaffd never writes is ``Opaque``."""
    if isinstance(o, parser.OFPActionOutput):
        return Output(o.port, o.max_len if o.port == ofp.OFPP_CONTROLLER else 0)
    if isinstance(o, parser.OFPActionSetField):
        return SetField(o.key, o.value)
    if isinstance(o, parser.OFPActionCopyField):
        src, dst = (oid.type for oid in o.oxm_ids)
        return Move(src, dst, o.n_bits, o.src_offset, o.dst_offset)
    if isinstance(o, parser.NXActionRegMove):
        return Move(o.src_field, o.dst_field, o.n_bits, o.src_ofs, o.dst_ofs)
    if isinstance(o, parser.NXActionResubmitTable):
        return Resubmit(o.table_id, o.in_port)
    if isinstance(o, parser.OFPActionGroup):
        return Group(o.group_id)
    if isinstance(o, parser.NXActionCT):
        return _decode_ct(o)
    if isinstance(o, parser.NXActionLearn):
        return _decode_learn(o)
    return Opaque(type(o).__name__)


def _decode_ct(o: Any) -> Ct | Opaque:
    nat: Nat | None = None
    mark: int | None = None
    for inner in o.actions:
        if isinstance(inner, parser.OFPActionSetField) and inner.key == "ct_mark":
            value = inner.value
            if isinstance(value, tuple):  # masked: lbaffd only writes whole marks
                if value[1] != 0xFFFFFFFF:
                    return Opaque(f"ct(..., set_field:{value}->ct_mark)")
                value = value[0]
            mark = int(value)
        elif isinstance(inner, parser.NXActionNAT):
            kind = ("dst" if inner.flags & NX_NAT_F_DST
                    else "src" if inner.flags & NX_NAT_F_SRC else "")
            ip_min = inner.range_ipv4_min or inner.range_ipv6_min or ""
            ip_max = inner.range_ipv4_max or inner.range_ipv6_max or ""
            port_min = inner.range_proto_min or 0
            # A single address/port may come with or without its max (ovs-ofctl
            # omits it); canonical form: no ip_max, port_max == port_min.
            nat = Nat(kind=kind, ip_min=ip_min, ip_max="" if ip_max == ip_min else ip_max,
                      port_min=port_min, port_max=inner.range_proto_max or port_min)
        else:
            return Opaque(f"ct(..., {type(inner).__name__})")
    zone_field = o.zone_src or ""
    return Ct(
        commit=bool(o.flags & nicira_ext.NX_CT_F_COMMIT),
        zone_field=zone_field,
        zone=0 if zone_field else o.zone_ofs_nbits,
        table=None if o.recirc_table == nicira_ext.NX_CT_RECIRC_NONE else o.recirc_table,
        nat=nat,
        mark=mark,
    )


def _oxm_name(f: Any) -> str:
    """Learn specs carry NXM headers; os-ken names NXM_OF_* fields ``*_nxm``
    (``eth_type_nxm``), which are the same fields as the OXM ones we emit."""
    name = str(f[0] if isinstance(f, tuple) else f)
    return name.removesuffix("_nxm")


def _decode_learn(o: Any) -> Learn | Opaque:
    specs: list[LearnSpec] = []
    for s in o.specs:
        dst = _oxm_name(s.dst)
        immediate = not isinstance(s.src, tuple)
        if isinstance(s, parser.NXFlowSpecMatch):
            specs.append(LearnMatchValue(s.src, dst, s.n_bits) if immediate
                         else LearnMatchField(_oxm_name(s.src), dst, s.n_bits))
        elif isinstance(s, parser.NXFlowSpecLoad):
            specs.append(LearnLoadValue(s.src, dst, s.n_bits) if immediate
                         else LearnLoadField(_oxm_name(s.src), dst, s.n_bits))
        else:
            return Opaque(f"learn(..., {type(s).__name__})")
    return Learn(
        table=o.table_id, specs=tuple(specs), idle_timeout=o.idle_timeout,
        hard_timeout=o.hard_timeout, priority=o.priority, cookie=o.cookie, flags=o.flags,
        fin_idle_timeout=o.fin_idle_timeout, fin_hard_timeout=o.fin_hard_timeout,
    )
