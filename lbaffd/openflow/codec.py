"""FlowSpec/GroupSpec <-> os-ken OpenFlow 1.5 messages.

Encoding builds os-ken objects; decoding turns what ovs-vswitchd reports back
into the *same* canonical specs, absorbing OVS's own encodings (OF1.5
``copy_field`` for ``move``, NXM vs OXM register loads, omitted full masks), so
that an unchanged flow compares equal and the diff is empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from lbaffd.openflow.flowdesc import RawFlow
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
    LearnSpec,
    Match,
    MatchValue,
    Move,
    Nat,
    Opaque,
    Output,
    Resubmit,
    SetField,
)
from lbaffd.openflow.groupdesc import (
    NTR_EXPERIMENTER,
    NTR_SELECTION_METHOD,
    RawGroup,
    decode_selection_method,
    encode_selection_method_property,
)

DP = ProtocolDesc(version=ofp.OFP_VERSION)

NX_NAT_F_SRC = 1
NX_NAT_F_DST = 2
OFPGC15_ADD_OR_MOD = 0x8000  # not defined by os-ken


# ------------------------------------------------------------------ match


def canonical_match(items: Iterable[tuple[str, Any]]) -> Match:
    """Fold full masks, pre-mask values and split 64-bit ``xregN`` into the
    two 32-bit registers they cover, so both sides of a diff agree.

    OVS reports ``reg0=1,reg1=2`` in OF1.5 replies as ``xreg0=0x100000002``
    (OXM_OF_PKT_REG), with a half mask when only one of the pair is matched.
    """
    out: dict[str, MatchValue] = {}
    for key, value in items:
        if key.startswith("xreg"):
            _split_xreg(int(key[4:]), value, out)
        elif isinstance(value, tuple):
            out[key] = _fold_mask(key, value)
        else:
            out[key] = value
    return Match(tuple(sorted(out.items())))


def _fold_mask(key: str, value: tuple[Any, Any]) -> MatchValue:
    v, m = value
    _, _, mask_bytes = ofp.oxm_from_user(key, (v, m))
    if mask_bytes is None or mask_bytes == b"\xff" * len(mask_bytes):
        return v  # type: ignore[no-any-return]
    if isinstance(v, int) and isinstance(m, int):
        return (v & m, m)
    return value


def _split_xreg(n: int, value: Any, out: dict[str, MatchValue]) -> None:
    v, m = value if isinstance(value, tuple) else (value, (1 << 64) - 1)
    for reg, shift in ((2 * n, 32), (2 * n + 1, 0)):
        half_v = (v >> shift) & 0xFFFFFFFF
        half_m = (m >> shift) & 0xFFFFFFFF
        if half_m == 0xFFFFFFFF:
            out[f"reg{reg}"] = half_v
        elif half_m:
            out[f"reg{reg}"] = (half_v & half_m, half_m)


def encode_match(match: Match) -> Any:
    return parser.OFPMatch(**match.as_dict())


# ------------------------------------------------------------------ actions


def encode_action(a: Action) -> Any:
    if isinstance(a, Output):
        return parser.OFPActionOutput(a.port, max_len=a.max_len)
    if isinstance(a, SetField):
        return parser.OFPActionSetField(**{a.field: a.value})
    if isinstance(a, Move):
        # OF1.5 copy_field: OVS 3.1 rejects os-ken's NXAST_REG_MOVE encoding
        # (OFPBAC_BAD_EXP_TYPE) and reports moves back as copy_field anyway.
        return parser.OFPActionCopyField(
            n_bits=a.n_bits, src_offset=a.src_ofs, dst_offset=a.dst_ofs,
            oxm_ids=[parser.OFPOxmId(type_=a.src), parser.OFPOxmId(type_=a.dst)])
    if isinstance(a, Resubmit):
        return parser.NXActionResubmitTable(in_port=a.in_port, table_id=a.table)
    if isinstance(a, Group):
        return parser.OFPActionGroup(a.group_id)
    if isinstance(a, Ct):
        return _encode_ct(a)
    if isinstance(a, Learn):
        return _encode_learn(a)
    raise TypeError(f"lbaffd never sends {a!r}")


class PaddedNAT(parser.NXActionNAT):  # type: ignore[misc]
    """os-ken's NXActionNAT sets its length rounded up to 8 bytes but does not
    write the padding: with an IPv6 range (or an address without ports) the
    next action inside ``ct()`` lands in the wrong place and OVS rejects the
    message.  Pad the body so header (10) + body is a multiple of 8."""

    def serialize_body(self) -> bytearray:
        data: bytearray = super().serialize_body()
        data += b"\0" * (-(10 + len(data)) % 8)
        return data


def _encode_ct(a: Ct) -> Any:
    nested = []
    if a.nat is not None:
        n = a.nat
        kw: dict[str, Any] = {}
        family = "ipv6" if ":" in n.ip_min else "ipv4"
        if n.ip_min:
            kw[f"range_{family}_min"] = n.ip_min
        if n.ip_max:
            kw[f"range_{family}_max"] = n.ip_max
        if n.port_min:
            kw["range_proto_min"] = n.port_min
        if n.port_max:
            kw["range_proto_max"] = n.port_max
        flags = {"dst": NX_NAT_F_DST, "src": NX_NAT_F_SRC, "": 0}[n.kind]
        nested.append(PaddedNAT(flags=flags, **kw))
    if a.mark is not None:
        nested.append(parser.OFPActionSetField(ct_mark=a.mark))
    if a.zone_field:
        zone_src, zone_ofs_nbits = a.zone_field, nicira_ext.ofs_nbits(0, 15)
    else:
        zone_src, zone_ofs_nbits = "", a.zone
    return parser.NXActionCT(
        flags=nicira_ext.NX_CT_F_COMMIT if a.commit else 0,
        zone_src=zone_src,
        zone_ofs_nbits=zone_ofs_nbits,
        recirc_table=nicira_ext.NX_CT_RECIRC_NONE if a.table is None else a.table,
        alg=0,
        actions=nested,
    )


def _encode_learn(a: Learn) -> Any:
    specs: list[Any] = []
    for s in a.specs:
        if isinstance(s, LearnMatchField):
            specs.append(parser.NXFlowSpecMatch(src=(s.src, 0), dst=(s.dst, 0), n_bits=s.n_bits))
        elif isinstance(s, LearnMatchValue):
            specs.append(parser.NXFlowSpecMatch(src=s.value, dst=(s.dst, 0), n_bits=s.n_bits))
        elif isinstance(s, LearnLoadValue):
            specs.append(parser.NXFlowSpecLoad(src=s.value, dst=(s.dst, 0), n_bits=s.n_bits))
        else:
            specs.append(parser.NXFlowSpecLoad(src=(s.src, 0), dst=(s.dst, 0), n_bits=s.n_bits))
    return parser.NXActionLearn(
        table_id=a.table, specs=specs, idle_timeout=a.idle_timeout, hard_timeout=a.hard_timeout,
        priority=a.priority, cookie=a.cookie, flags=a.flags,
        fin_idle_timeout=a.fin_idle_timeout, fin_hard_timeout=a.fin_hard_timeout,
    )


def decode_action(o: Any) -> Action:
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
            nat = Nat(
                kind=kind,
                ip_min=ip_min,
                ip_max="" if ip_max == ip_min else ip_max,
                port_min=port_min,
                port_max=inner.range_proto_max or port_min,
            )
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


def _oxm_name(field: Any) -> str:
    """Learn specs carry NXM headers; os-ken names NXM_OF_* fields ``*_nxm``
    (``eth_type_nxm``), which are the same fields as the OXM ones we emit."""
    name = str(field[0] if isinstance(field, tuple) else field)
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


def encode_actions(actions: Iterable[Action]) -> list[Any]:
    return [encode_action(a) for a in actions]


def decode_actions(objs: Iterable[Any]) -> tuple[Action, ...]:
    return tuple(decode_action(o) for o in objs)


# ------------------------------------------------------------------ flows


def flow_add(spec: FlowSpec) -> Any:
    """OFPFC_ADD: creates, or replaces a flow with the same key (and cookie)."""
    return _flow_mod(spec, ofp.OFPFC_ADD)


def flow_modify(spec: FlowSpec) -> Any:
    """OFPFC_MODIFY_STRICT, restricted to lbaffd's cookie: keeps counters."""
    return _flow_mod(spec, ofp.OFPFC_MODIFY_STRICT, cookie_mask=(1 << 64) - 1)


def flow_delete(spec: FlowSpec) -> Any:
    """OFPFC_DELETE_STRICT of exactly this flow *with this cookie*: never
    removes someone else's flow that happens to share the key."""
    return parser.OFPFlowMod(
        DP, cookie=spec.cookie, cookie_mask=(1 << 64) - 1, table_id=spec.table,
        command=ofp.OFPFC_DELETE_STRICT, priority=spec.priority,
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=encode_match(spec.match),
        instructions=[],
    )


def flow_delete_by_cookie(cookie: int, cookie_mask: int) -> Any:
    """OFPFC_DELETE of every flow, in every table, whose cookie matches."""
    return parser.OFPFlowMod(
        DP, cookie=cookie, cookie_mask=cookie_mask, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(), instructions=[])


def _flow_mod(spec: FlowSpec, command: int, cookie_mask: int = 0) -> Any:
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, encode_actions(spec.actions))]
    return parser.OFPFlowMod(
        DP, cookie=spec.cookie, cookie_mask=cookie_mask, table_id=spec.table, command=command,
        idle_timeout=spec.idle_timeout, hard_timeout=spec.hard_timeout, priority=spec.priority,
        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        flags=spec.flags, match=encode_match(spec.match), instructions=inst,
    )


def decode_flow(desc: RawFlow) -> FlowSpec:
    """A flow-desc entry -> FlowSpec.  Instructions lbaffd never writes
    decode as ``Opaque`` so that the flow differs and gets repaired."""
    actions: list[Action] = []
    for inst in desc.instructions:
        if inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions.extend(decode_actions(inst.actions))
        else:
            actions.append(Opaque(f"instruction type {inst.type}"))
    return FlowSpec(
        table=desc.table_id, priority=desc.priority, match=canonical_match(desc.match.items()),
        actions=tuple(actions), cookie=desc.cookie, idle_timeout=desc.idle_timeout,
        hard_timeout=desc.hard_timeout, flags=desc.flags,
    )


# ------------------------------------------------------------------ groups


def group_add(spec: GroupSpec) -> Any:
    return _group_mod(spec, ofp.OFPGC_ADD)


def group_modify(spec: GroupSpec) -> Any:
    """OFPGC_MODIFY replaces type, buckets and properties of an existing group."""
    return _group_mod(spec, ofp.OFPGC_MODIFY)


def _group_mod(spec: GroupSpec, command: int) -> Any:
    buckets = [
        parser.OFPBucket(
            bucket_id=b.bucket_id,
            actions=encode_actions(b.actions),
            properties=[parser.OFPGroupBucketPropWeight(
                type_=ofp.OFPGBPT_WEIGHT, length=8, weight=b.weight)],
        )
        for b in spec.buckets
    ]
    props = [encode_selection_method_property(spec.selection_method, spec.selection_param,
                                              spec.fields)]
    return parser.OFPGroupMod(
        DP, command=command, type_=ofp.OFPGT_SELECT, group_id=spec.group_id,
        command_bucket_id=ofp.OFPG_BUCKET_ALL, buckets=buckets, properties=props,
    )


def group_delete(group_id: int) -> Any:
    return parser.OFPGroupMod(DP, command=ofp.OFPGC_DELETE, type_=ofp.OFPGT_SELECT,
                              group_id=group_id, command_bucket_id=ofp.OFPG_BUCKET_ALL,
                              buckets=[], properties=[])


def decode_group(raw: RawGroup) -> GroupSpec:
    method, param, fields = "", 0, tuple[str, ...]()
    for prop in raw.properties:
        if prop.experimenter == NTR_EXPERIMENTER and prop.exp_type == NTR_SELECTION_METHOD:
            method, param, fields = decode_selection_method(prop)
    buckets = tuple(
        Bucket(b.bucket_id, decode_actions(b.actions), 100 if b.weight is None else b.weight)
        for b in raw.buckets
    )
    if raw.type != ofp.OFPGT_SELECT:
        method = f"group-type-{raw.type}"  # never desired: forces a repair
    return GroupSpec(raw.group_id, buckets, method or "dp_hash", tuple(fields), param)
