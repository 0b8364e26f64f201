"""The reference encoder: FlowSpec/GroupSpec -> os-ken OpenFlow 1.5 messages.

lbaffd encodes its messages itself (``lbaffd.openflow.messages``, ``oxm``,
``actions``); these are os-ken's encoders of the same messages, kept here as
what that codec is checked against byte for byte (``test_encode_vs_osken``,
``test_codec_reference``), os-ken's quirks worked around as lbaffd's own
encoder reproduces them (``PaddedNAT``, ``SelectionMethodProperty``, ``move``
as OF1.5 copy_field).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import Any

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from lbaffd.openflow import oxm
from lbaffd.openflow.flowspec import (
    Action,
    Ct,
    FlowSpec,
    Group,
    GroupSpec,
    Learn,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    Match,
    Move,
    Output,
    Resubmit,
    SetField,
)
from lbaffd.openflow.messages import NTR_EXPERIMENTER, NTR_SELECTION_METHOD

DP = ProtocolDesc(version=ofp.OFP_VERSION)

NX_NAT_F_SRC = 1
NX_NAT_F_DST = 2
OFPGC15_ADD_OR_MOD = 0x8000  # not defined by os-ken


# ------------------------------------------------------------------ match


def encode_match(match: Match) -> Any:
    """os-ken's OFPMatch of the fields as OVS writes them for OF1.5: the
    32-bit registers as halves of the xregs (``flow_get_xreg``: reg2N high),
    os-ken's TLVs put in OVS's order (``oxm.OVS_ORDER``, held against
    ovs-vswitchd by ``tests/integration/test_decode_vs_ovs.py``)."""
    fields: dict[str, Any] = {}
    xregs: dict[int, list[int]] = {}
    for name, value in match.as_dict().items():
        if re.fullmatch(r"reg\d+", name) and int(name[3:]) < 16:
            v, m = value if isinstance(value, tuple) else (value, 0xFFFFFFFF)
            assert isinstance(v, int) and isinstance(m, int)
            shift = 32 if int(name[3:]) % 2 == 0 else 0
            acc = xregs.setdefault(int(name[3:]) // 2, [0, 0])
            acc[0] |= (v & m) << shift
            acc[1] |= m << shift
        else:
            fields[name] = value
    for n, (v, m) in xregs.items():
        fields[f"xreg{n}"] = v if m == (1 << 64) - 1 else (v, m)
    built = parser.OFPMatch(**fields)
    rank = {name: i for i, name in enumerate(oxm.OVS_ORDER)}
    built._fields2.sort(key=lambda kv: rank.get(kv[0], len(rank)))  # stable: os-ken's after
    return built


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


def _nxm(name: str) -> str:
    """os-ken's name of the field's NXM_OF_* header, where it has one (what
    OVS writes a learn spec's fields with)."""
    try:
        ofp.oxm_from_user_header(f"{name}_nxm")
    except KeyError:
        return name
    return f"{name}_nxm"


def _encode_learn(a: Learn) -> Any:
    specs: list[Any] = []
    for s in a.specs:
        dst = (_nxm(s.dst), 0)
        if isinstance(s, LearnMatchField):
            specs.append(parser.NXFlowSpecMatch(src=(_nxm(s.src), 0), dst=dst, n_bits=s.n_bits))
        elif isinstance(s, LearnMatchValue):
            specs.append(parser.NXFlowSpecMatch(src=s.value, dst=dst, n_bits=s.n_bits))
        elif isinstance(s, LearnLoadValue):
            specs.append(parser.NXFlowSpecLoad(src=s.value, dst=dst, n_bits=s.n_bits))
        else:
            specs.append(parser.NXFlowSpecLoad(src=(_nxm(s.src), 0), dst=dst, n_bits=s.n_bits))
    return parser.NXActionLearn(
        table_id=a.table, specs=specs, idle_timeout=a.idle_timeout, hard_timeout=a.hard_timeout,
        priority=a.priority, cookie=a.cookie, flags=a.flags,
        fin_idle_timeout=a.fin_idle_timeout, fin_hard_timeout=a.fin_hard_timeout,
    )


def encode_actions(actions: Iterable[Action]) -> list[Any]:
    return [encode_action(a) for a in actions]


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
    # a drop without an (empty) instruction, as OVS reports it
    inst = ([parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, encode_actions(spec.actions))]
            if spec.actions else [])
    return parser.OFPFlowMod(
        DP, cookie=spec.cookie, cookie_mask=cookie_mask, table_id=spec.table, command=command,
        idle_timeout=spec.idle_timeout, hard_timeout=spec.hard_timeout, priority=spec.priority,
        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        flags=spec.flags, match=encode_match(spec.match), instructions=inst,
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


def encode_selection_method_property(method: str, param: int, fields: Iterable[str]) -> Any:
    """The NTR selection-method property for a group mod (whole fields hashed)."""
    body = bytearray(b"\0" * 4 + method.encode().ljust(16, b"\0") + struct.pack("!Q", param))
    for name in fields:
        start = len(body)
        hlen = ofp.oxm_serialize_header(ofp.oxm_from_user_header(name), body, start)
        (header,) = struct.unpack_from("!I", body, start)
        body += b"\xff" * ((header & 0xFF) - (hlen - 4))
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
