"""The codec (``messages``) is byte-identical to os-ken's encoders (``tests/reference_codec``).

Every flow and group the compiler emits for a wide set of load balancers
(IPv4/IPv6, affinity on/off, selection_fields, hairpin_snat_ip, reject, UDP,
SCTP, IP-only, backends down, router datapaths, standalone and embedded
pipelines) is encoded both ways, as the bare message and as the
OFPT_BUNDLE_ADD_MESSAGE the channel sends, and compared byte for byte.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from lbaffd.compile.layout import STANDALONE, Pipeline, embedded
from lbaffd.compile.state import DesiredState, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import IPAddress, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow import messages
from lbaffd.openflow.flowspec import (
    OFPP_CONTROLLER,
    Bucket,
    Ct,
    FlowSpec,
    GroupSpec,
    Learn,
    LearnLoadField,
    LearnMatchValue,
    Match,
    Move,
    Nat,
    Opaque,
    Output,
    SetField,
)
from lbaffd.openflow.packed import unpack_flow, unpack_group
from lbaffd.reconcile.diff import ChangeSet
from lbaffd.reconcile.sending import to_messages
from tests import reference_codec
from tests.switchstate import specs

XID = 0x01020304
BUNDLE_ID = 0x0A0B0C0D
FLAGS = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED

LS = DatapathRow("dp-ls", 1, "ls1")
LR = DatapathRow("dp-lr", 2, "lr1", is_router=True)
FAR = DatapathRow("dp-far", 3, "far")
DPS = {d.uuid: d for d in (LS, LR, FAR)}


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


TOPO = Topology(
    local_ports=(LocalPort(11, "cli1", LS), LocalPort(21, "be1", LS), LocalPort(22, "be2", LS)),
    macs=MappingProxyType({
        (1, _ip("10.0.0.21")): "02:00:00:00:00:21",
        (1, _ip("10.0.0.22")): "02:00:00:00:00:22",
        (2, _ip("10.0.0.21")): "02:00:00:00:00:21",
        (1, _ip("fd00::21")): "02:00:00:00:01:21",
    }),
    down=frozenset({(_ip("10.0.0.23"), 8080, "tcp"), (_ip("fd00::23"), 8080, "tcp"),
                    (_ip("10.0.1.2"), 53, "udp")}),
    attached=frozenset({2}),
    # be1/be2 are local ports: their hairpin flows (ct_mark matches) are in the corpus
    local_ips=frozenset({_ip("10.0.0.21"), _ip("10.0.0.22"), _ip("fd00::21")}),
)


def _row(uuid: str, vips: dict[str, str], protocol: str = "", dps: tuple[str, ...] = (
        "dp-ls", "dp-lr", "dp-far"), **options: str) -> LoadBalancerRow:
    return LoadBalancerRow(uuid=uuid, name=uuid.replace("lb-", "name-"),
                           vips=MappingProxyType(vips), protocol=protocol,
                           options=MappingProxyType(options), datapaths=dps)


ROWS = (
    _row("lb-aff4", {"10.0.0.100:80": "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080"},
         affinity_timeout="30"),
    _row("lb-long", {"10.0.0.101:443": "10.0.0.21:8443,10.0.0.22:8443"},
         affinity_timeout="86400"),
    _row("lb-plain", {"10.0.0.102:80": "10.0.0.21:8080,10.0.0.22:8080,10.0.0.24:8080"}),
    _row("lb-ovsdef", {"10.0.0.103:80": "10.0.0.21:8080,10.0.0.25:8080,10.0.0.26:8080"},
         distribution="ovs-default"),
    _row("lb-sel", {"10.0.0.104:80": "10.0.0.21:8080,10.0.0.22:8080",
                    "[fd00::104]:80": "[fd00::21]:8080,[fd00::22]:8080"},
         selection_fields="ip_src,ip_dst,tp_src,tp_dst,eth_src,eth_dst"),
    _row("lb-sel-eth", {"10.0.0.105": "10.0.0.21,10.0.0.22"}, selection_fields="eth_src"),
    _row("lb-sel-tp", {"10.0.0.106:80": "10.0.0.21:8080"}, selection_fields="tp_dst"),
    _row("lb-snat", {"10.0.0.107:80": "10.0.0.21:8080,10.0.0.22:8080",
                     "[fd00::107]:80": "[fd00::21]:8080"},
         hairpin_snat_ip="192.168.99.1 fd00::99", affinity_timeout="60"),
    _row("lb-reject", {"10.0.0.108:80": "", "[fd00::108]:80": ""}, reject="true"),
    _row("lb-drop", {"10.0.0.109:80": ""}),
    _row("lb-down", {"10.0.0.110:80": "10.0.0.23:8080"}, affinity_timeout="30"),
    _row("lb-udp", {"10.0.1.1:53": "10.0.1.2:53,10.0.1.3:53"}, "udp", affinity_timeout="10"),
    _row("lb-sctp", {"10.0.1.10:9000": "10.0.1.11:9001,10.0.1.12:9001"}, "sctp"),
    _row("lb-iponly", {"10.0.2.1": "10.0.0.21,10.0.0.22", "fd00::201": "fd00::21"},
         affinity_timeout="30"),
    _row("lb-v6", {"[fd00::100]:80": "[fd00::21]:8080,[fd00::22]:8080,[fd00::23]:8080",
                   "[2001:db8::1]:443": "[2001:db8:0:1::5]:443"}, affinity_timeout="300"),
    _row("lb-v6-plain", {"[fd00::111]:80": "[fd00::21]:8080,[fd00::22]:8080"}),
    _row("lb-many", {"10.0.3.1:80": ",".join(f"10.0.4.{i}:8080" for i in range(1, 12))}),
    _row("lb-router", {"10.0.0.200:80": "10.0.0.21:8080"}, dps=("dp-lr",),
         affinity_timeout="30"),
)


def _compile(p: Pipeline) -> DesiredState:
    lbs, _ = parse_all(ROWS, DPS, {})
    ids = own.allocate_group_ids(vip_owners(lbs, TOPO), {})
    return compile_state(lbs, TOPO, ids, p, max_idle=0xFFFF)


PIPELINES = (STANDALONE, embedded(40, 70), Pipeline(base=100), embedded(1, 0))
STATES = [_compile(p) for p in PIPELINES]

# what the compiler never emits but other senders may: non-canonical text,
# masks left to normalize, NAT ranges, learn loads from fields, odd actions
EXTRA_FLOWS = (
    FlowSpec(3, 100, Match.of(eth_dst="02:AB:cd:00:00:01", ipv4_src=("10.1.0.7", "255.255.0.0"),
                              eth_type=0x800, reg5=(0x1234, 0xF0F0), metadata=(7, 0xFF)),
             (Output(OFPP_CONTROLLER, 0xFFFF), SetField("eth_src", "02:AA:BB:CC:DD:EE")),
             own.owner_cookie(("x",)), idle_timeout=77, hard_timeout=88, flags=1),
    FlowSpec(3, 101, Match.of(eth_type=0x86DD, ipv6_dst="FD00:0:0::1", ipv6_src="fd00::/64"),
             (Ct(commit=True, zone=7, table=4,
                 nat=Nat("src", "fd00::1", "fd00::9", 1000, 2000), mark=0xFFFFFFFF),
              Ct(nat=Nat("dst", "10.0.0.1", "10.0.0.9")), Ct(nat=Nat("src", port_min=5)),
              Ct(commit=True, zone_field="reg13", nat=Nat("dst", "10.0.0.1"))),
             0x1BAF000000000001),
    FlowSpec(4, 5, Match.of(in_port=3, tcp_src=1, ip_proto=6, eth_type=0x800),
             (Learn(table=9, specs=(LearnMatchValue(0x86DD, "eth_type", 16),
                                    LearnLoadField("reg1", "reg2", 16),
                                    LearnLoadField("ipv6_src", "reg8", 128),
                                    LearnMatchValue(5, "ip_proto", 8)),
                    hard_timeout=9, fin_idle_timeout=3, fin_hard_timeout=4),
              Move("reg0", "reg1", 16, 4, 8), Move("ipv6_src", "ipv6_dst", 128),
              SetField("ipv4_dst", "10.0.0.1"), SetField("ipv6_dst", "fd00::1"),
              SetField("ip_dscp", 10)),
             0x1BAF000000000002),
    FlowSpec(0, 0, Match(), (), 0),
)
EXTRA_GROUPS = (
    GroupSpec(0xB0000001, (), "dp_hash"),
    GroupSpec(0xB0000002, (Bucket(1, (Output(1),), weight=0), Bucket(0x7FFFFFFF, (), 65535)),
              "hash", ("ipv6_src", "ipv6_dst", "eth_dst", "udp_src", "ip_proto"), 0x5),
)


def _flows() -> Iterator[FlowSpec]:
    for state in STATES:
        yield from specs(state.state).flows.values()
    yield from EXTRA_FLOWS


def _groups() -> Iterator[GroupSpec]:
    for state in STATES:
        yield from specs(state.state).groups.values()
    yield from EXTRA_GROUPS


def os_ken_bytes(msg: Any) -> tuple[bytes, bytes]:
    """The bare message and its bundle add, serialized the old way."""
    msg.xid = XID
    msg.serialize()
    plain = bytes(msg.buf)
    msg.xid = None
    add = parser.OFPBundleAddMsg(reference_codec.DP, BUNDLE_ID, FLAGS, msg, [])
    add.xid = XID
    msg.xid = XID
    add.serialize()
    return plain, bytes(add.buf)


def raw_bytes(msg: messages.RawMessage) -> tuple[bytes, bytes]:
    return msg.with_xid(XID), msg.bundle_add(XID, BUNDLE_ID, FLAGS)


def test_corpus_is_rich() -> None:
    flows = list(_flows())
    actions = {type(a) for f in flows for a in f.actions}
    actions |= {type(a) for g in _groups() for b in g.buckets for a in b.actions}
    assert {"Output", "SetField", "Move", "Resubmit", "Group", "Ct", "Learn"} <= {
        t.__name__ for t in actions}
    fields = {k for f in flows for k, _ in f.match.fields}
    assert {"ipv6_dst", "ipv6_nd_target", "arp_tpa", "udp_dst", "sctp_dst", "ct_mark",
            "ct_state", "reg8", "icmpv6_type", "in_port"} <= fields
    methods = {(g.selection_method, g.fields) for g in _groups()}
    assert ("hash", ("ipv4_src",)) in methods and ("dp_hash", ()) in methods
    assert any(len(f) >= 5 for _, f in methods)
    assert len(flows) > 1000


@pytest.mark.parametrize("name", ["flow_add", "flow_modify", "flow_delete"])
def test_flow_mods_are_byte_identical(name: str) -> None:
    old, new = getattr(reference_codec, name), getattr(messages, name)
    count = 0
    for spec in _flows():
        assert raw_bytes(new(spec)) == os_ken_bytes(old(spec)), spec
        count += 1
    assert count > 1000


@pytest.mark.parametrize("name", ["group_add", "group_modify"])
def test_group_mods_are_byte_identical(name: str) -> None:
    old, new = getattr(reference_codec, name), getattr(messages, name)
    for spec in _groups():
        assert raw_bytes(new(spec)) == os_ken_bytes(old(spec)), spec


def test_group_delete_is_byte_identical() -> None:
    for gid in [*(g.group_id for g in _groups()), 0, 0xFFFFFFFF]:
        old = reference_codec.group_delete(gid)
        assert raw_bytes(messages.group_delete(gid)) == os_ken_bytes(old)


def test_cached_encodings_stay_identical() -> None:
    """A second pass (field, set-field and ct caches warm) gives the same bytes."""
    for spec in list(_flows())[:300]:
        first = messages.flow_add(spec)
        assert messages.flow_add(spec) == first
        assert raw_bytes(first) == os_ken_bytes(reference_codec.flow_add(spec))


def test_to_messages_keeps_the_bundle_order() -> None:
    """The packed bodies a ChangeSet holds become exactly the os-ken messages."""
    state = STATES[0].state
    bodies, gbodies = list(state.flows.values()), list(state.groups.values())
    flows, groups = list(map(unpack_flow, bodies)), list(map(unpack_group, gbodies))
    cs = ChangeSet(add_flows=tuple(bodies[:5]), mod_flows=tuple(bodies[5:8]),
                   del_flows=tuple(bodies[8:10]), add_groups=tuple(gbodies[:2]),
                   mod_groups=tuple(gbodies[2:3]),
                   del_groups=tuple(g.group_id for g in groups[3:5]))
    expected = ([reference_codec.group_add(g) for g in groups[:2]]
                + [reference_codec.group_modify(g) for g in groups[2:3]]
                + [reference_codec.flow_delete(f) for f in flows[8:10]]
                + [reference_codec.flow_add(f) for f in flows[:5]]
                + [reference_codec.flow_modify(f) for f in flows[5:8]]
                + [reference_codec.group_delete(g.group_id) for g in groups[3:5]])
    got = to_messages(cs)
    assert all(isinstance(m, messages.RawMessage) for m in got)
    assert [raw_bytes(m) for m in got] == [os_ken_bytes(m) for m in expected]


def test_bundle_add_of_a_serialized_message() -> None:
    msg = reference_codec.flow_delete_by_cookie(own.MANAGED_COOKIE, own.MAGIC_MASK)
    plain, add = os_ken_bytes(msg)
    assert messages.bundle_add(plain, XID, BUNDLE_ID, FLAGS) == add


def test_unknown_actions_are_refused() -> None:
    with pytest.raises(TypeError):
        messages.flow_add(FlowSpec(0, 0, Match(), (Opaque("x"),), 0))
