"""Companion mode on a gateway chassis, pure parts: the SB rows and the
localnet patch port exactly as northd and ovn-controller 23.03 wrote them in
``tests/integration/test_companion_gateway.py`` (gr0 with
``options:chassis=chassis-1`` behind lr0 through a join switch, an external
switch ``ext`` with the localnet port ``ln-ext``), turned into local ports,
scopes, take-over and flows."""

from __future__ import annotations

from types import MappingProxyType

from lbaffd.compile.layout import COMPANION_ZONE, PRIO_INTERCEPT, PRIO_REPLY_HOOK, companion
from lbaffd.compile.state import compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.ovnlayout import OvnLayout, discover, output_flow_match
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import (
    DatapathRow,
    InterfaceRow,
    LoadBalancerRow,
    PortBindingRow,
    SbSnapshot,
)
from lbaffd.model.topology import Topology, build_topology
from lbaffd.openflow.flowspec import Ct, FlowSpec, Match, Nat, Opaque, Output, SetField
from lbaffd.ovn.takeover import TAKE_OVER_AFFINITY, scopes, take_over
from tests.switchstate import specs

P = companion()
SW0 = DatapathRow("dp-sw0", 1, "sw0")
LR0 = DatapathRow("dp-lr0", 3, "lr0", is_router=True)
JOIN = DatapathRow("dp-join", 4, "join")
EXT = DatapathRow("dp-ext", 5, "ext")
GR0 = DatapathRow("dp-gr0", 6, "gr0", is_router=True)
DPS = {d.uuid: d for d in (SW0, LR0, JOIN, EXT, GR0)}
PATCH_OFPORT = 2  # br-int's end of patch-br-int-to-ln-ext


def _pb(name: str, dp: str, key: int, type_: str = "", chassis: str | None = None,
        macs: tuple[str, ...] = (), **options: str) -> PortBindingRow:
    return PortBindingRow(name, name, dp, key, macs=macs, chassis=chassis, type=type_,
                          options=MappingProxyType(options))


def _pair(a: str, a_dp: str, a_key: int, b: str, b_dp: str, b_key: int,
          type_: str) -> tuple[PortBindingRow, PortBindingRow]:
    """A router port and its switch peer; northd makes both ``l3gateway``
    (bound to the gateway chassis) when the router is a gateway router."""
    extra = {"l3gateway-chassis": "chassis-1"} if type_ == "l3gateway" else {}
    ch = "chassis-1" if type_ == "l3gateway" else None
    return (_pb(a, a_dp, a_key, type_, ch, peer=b, **extra),
            _pb(b, b_dp, b_key, type_, ch, peer=a, **extra))


PBS = (
    _pb("cli1", "dp-sw0", 2, chassis="chassis-1", macs=("02:00:00:00:00:0b 10.0.0.11",)),
    _pb("be1", "dp-sw0", 3, chassis="chassis-1", macs=("02:00:00:00:00:15 10.0.0.21",)),
    _pb("be3", "dp-sw0", 5, chassis="chassis-2", macs=("02:00:00:00:00:17 10.0.0.23",)),
    *_pair("sw0-lr0", "dp-sw0", 1, "lr0-sw0", "dp-lr0", 1, "patch"),
    *_pair("join-lr0", "dp-join", 1, "lr0-join", "dp-lr0", 3, "patch"),
    *_pair("join-gr0", "dp-join", 2, "gr0-join", "dp-gr0", 1, "l3gateway"),
    *_pair("ext-gr0", "dp-ext", 1, "gr0-ext", "dp-gr0", 2, "l3gateway"),
    # a localnet port is bound to no chassis: it is on every chassis that maps its network
    _pb("ln-ext", "dp-ext", 2, "localnet", macs=("unknown",), network_name="physnet"),
)
# sb.bridge: the patch port's iface_id comes from its Port's external_ids:ovn-localnet-port
IFACES = (InterfaceRow("lxcli1", 11, "cli1"), InterfaceRow("lxbe1", 21, "be1"),
          InterfaceRow("patch-br-int-to-ln-ext", PATCH_OFPORT, "ln-ext"))
SNAP = SbSnapshot(load_balancers=MappingProxyType({}), datapaths=MappingProxyType(DPS),
                  dp_groups=MappingProxyType({}),
                  port_bindings=MappingProxyType({pb.uuid: pb for pb in PBS}),
                  interfaces=IFACES, chassis_name="chassis-1")
# OVN 23.03's output flows as the switch reported them (table 65)
LAYOUT = OvnLayout(65, ((11, Match.of(metadata=1, reg15=2)), (21, Match.of(metadata=1, reg15=3)),
                        (PATCH_OFPORT, Match.of(metadata=5, reg15=2))))


def lb(name: str, datapaths: tuple[str, ...], vip: str = "172.21.0.10:80") -> LoadBalancer:
    row = LoadBalancerRow(
        uuid=f"uuid-{name}", name=name,
        vips=MappingProxyType({vip: "10.0.0.21:8080,10.0.0.23:8080"}),
        options=MappingProxyType({"affinity_timeout": "120"}), datapaths=datapaths)
    parsed, issues = parse_all([row], DPS, {})
    assert not issues
    return parsed[0]


def topo() -> Topology:
    t = build_topology(SNAP)
    return Topology(t.local_ports, t.macs, t.down, t.attached, t.local_ips, ovn=LAYOUT)


def test_localnet_patch_port_is_a_local_port_of_the_external_switch() -> None:
    t = build_topology(SNAP)
    ports = {p.logical_port: (p.ofport, p.datapath.name) for p in t.local_ports}
    assert ports == {"cli1": (11, "sw0"), "be1": (21, "sw0"), "ln-ext": (PATCH_OFPORT, "ext")}
    # the gateway router and the join switch are local through gr0's l3gateway ports
    assert {4, 6} <= t.local_datapaths


def test_the_gateway_routers_lb_applies_to_traffic_from_the_physical_network() -> None:
    scope = scopes(SNAP, topo())
    # ext's component: ext, gr0, join, lr0, sw0 -> its own switch and both routers
    assert scope.applies[5] == frozenset({5, 6, 3})
    # OVN 23.03 with install_ls_lb_from_router: the SB row lists gr0's switches
    gw_23_03 = lb("lb-gw", ("dp-ext", "dp-join"))
    # a northd that lists the router itself (lr_datapath_group) reaches ext too
    gw_router = lb("lb-gw-r", ("dp-gr0",), "172.21.0.11:80")
    sw_only = lb("lb-sw", ("dp-sw0",), "172.16.0.10:80")
    taken = take_over((gw_23_03, gw_router, sw_only), scope, TAKE_OVER_AFFINITY)
    clients = {x.name: sorted(d.name for d in x.datapaths) for x in taken.lbs}
    assert clients == {"lb-gw": ["ext"], "lb-gw-r": ["ext", "sw0"], "lb-sw": ["sw0"]}


def _compiled(lbs: tuple[LoadBalancer, ...]) -> list[FlowSpec]:
    t = topo()
    taken = take_over(lbs, scopes(SNAP, t), TAKE_OVER_AFFINITY).lbs
    ids = own.allocate_group_ids(vip_owners(taken, t), {})
    return list(specs(compile_state(taken, t, ids, P).state).flows.values())


def test_intercepted_at_the_patch_port_routed_by_gr0_unDNATed_at_its_output() -> None:
    flows = _compiled((lb("lb-gw", ("dp-ext", "dp-join")),))
    (intercept,) = [f for f in flows if f.table == 0 and f.priority == PRIO_INTERCEPT]
    m = intercept.match.as_dict()
    assert m["in_port"] == PATCH_OFPORT and m["metadata"] == 0
    assert m["ipv4_dst"] == "172.21.0.10" and m["tcp_dst"] == 80
    assert intercept.actions == (SetField("metadata", 5), SetField("reg13", COMPANION_ZONE),
                                 Ct(zone_field="reg13", table=P.dispatch, nat=Nat()))
    # the backends are not on ext: no eth_dst rewrite, the packet keeps gr0's
    # MAC and OVN routes it to the backend (gr0, join, lr0, sw0)
    assert not [f for f in flows if f.table == P.forward
                and any(isinstance(a, SetField) and a.field == "eth_dst" for a in f.actions)]
    hooks = [f for f in flows if f.table == 65 and f.match.as_dict().get("metadata") == 5]
    assert {f.priority for f in hooks} == {PRIO_REPLY_HOOK} and len(hooks) == 2
    assert all(f.match.as_dict()["reg15"] == 2 for f in hooks)


def test_ovn_output_flow_for_the_localnet_port_is_recognized() -> None:
    # as dumped: cookie=0x68330d9c, table=65, priority=100,reg15=0x1,metadata=0x5 actions=output:2
    flow = FlowSpec(65, 100, Match.of(reg15=1, metadata=5), (Output(PATCH_OFPORT),),
                    cookie=0x68330D9C)
    assert output_flow_match(flow, PATCH_OFPORT) == Match.of(reg15=1, metadata=5)


def test_tagged_localnet_output_flow_is_recognized_and_nothing_looser() -> None:
    # as decoded from OVN 23.03 with ln-ext's tag 100: table=65, priority=100,
    # reg15=0x1,metadata=0x4 actions=push_vlan:0x8100,set_field:4196->vlan_vid,output:1,pop_vlan
    match = Match.of(metadata=4, reg15=1)
    tagged = (Opaque("OFPActionPushVlan"), SetField("vlan_vid", 0x1000 | 100),
              Output(PATCH_OFPORT), Opaque("OFPActionPopVlan"))
    assert output_flow_match(FlowSpec(65, 100, match, tagged, cookie=0x3414033F),
                             PATCH_OFPORT) == match
    layout = discover({PATCH_OFPORT: [FlowSpec(65, 100, match, tagged, cookie=0x3414033F)]})
    assert layout is not None and layout.output_match(PATCH_OFPORT) == match
    for actions in (
            (Opaque("OFPActionPushVlan"), SetField("vlan_vid", 4196), Output(7),
             Opaque("OFPActionPopVlan")),  # another port
            (Opaque("OFPActionPushVlan"), SetField("eth_dst", "02:00:00:00:00:01"),
             Output(PATCH_OFPORT), Opaque("OFPActionPopVlan")),  # not a tag
            (Opaque("OFPActionPushVlan"), SetField("vlan_vid", 4196), Output(PATCH_OFPORT)),
            (SetField("vlan_vid", 4196), Output(PATCH_OFPORT)),
            (Output(PATCH_OFPORT), Opaque("OFPActionPopVlan"))):
        assert output_flow_match(FlowSpec(65, 100, match, actions, cookie=1), PATCH_OFPORT) is None
