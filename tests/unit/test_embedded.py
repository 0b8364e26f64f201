"""Embedded mode and router datapaths, as pure compiler/topology output."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from types import MappingProxyType

import pytest

from lbaffd.compile.layout import STANDALONE, Pipeline, embedded
from lbaffd.compile.state import compile_state
from lbaffd.config import Settings
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import (
    DatapathRow,
    InterfaceRow,
    LoadBalancerRow,
    PortBindingRow,
    SbSnapshot,
)
from lbaffd.model.topology import build_topology
from lbaffd.openflow.flowspec import Action, Output, Resubmit
from tests.switchstate import specs

LS = DatapathRow("dp-ls", 1, "ls1")
LR = DatapathRow("dp-lr", 2, "lr1", is_router=True)
FAR = DatapathRow("dp-far", 3, "ls-far")
GW = DatapathRow("dp-gw", 4, "gw1", is_router=True)


def snapshot(chassis: str = "hv1") -> SbSnapshot:
    pbs = [
        PortBindingRow("pb1", "cli1", "dp-ls", 1, ("02:00:00:00:00:11 10.0.0.11",)),
        PortBindingRow("pb2", "ls1-lr1", "dp-ls", 2, type="patch",
                       options=MappingProxyType({"peer": "lr1-ls1"})),
        PortBindingRow("pb3", "lr1-ls1", "dp-lr", 1, type="patch",
                       options=MappingProxyType({"peer": "ls1-lr1"})),
        # a gateway router pinned to this chassis, with no patch to a local switch
        PortBindingRow("pb4", "gw1-ext", "dp-gw", 1, type="l3gateway",
                       options=MappingProxyType({"l3gateway-chassis": chassis})),
        PortBindingRow("pb5", "far1", "dp-far", 1),  # a switch with no local port
    ]
    lb = LoadBalancerRow(
        uuid="lb-r", name="lb-router",
        vips=MappingProxyType({"10.0.0.200:80": "10.0.0.21:8080"}),
        options=MappingProxyType({"affinity_timeout": "60"}),
        datapaths=("dp-lr", "dp-far", "dp-gw"))
    return SbSnapshot(
        load_balancers={"lb-r": lb},
        datapaths={d.uuid: d for d in (LS, LR, FAR, GW)},
        dp_groups={}, port_bindings={p.uuid: p for p in pbs},
        interfaces=(InterfaceRow("veth-cli1", 5, "cli1"),), chassis_name="hv1")


def test_router_behind_local_switch_and_local_gateway_are_local() -> None:
    topo = build_topology(snapshot())
    assert topo.local_datapaths == frozenset({1, 2, 4})  # not the far switch
    assert build_topology(snapshot("hv2")).local_datapaths == frozenset({1, 2})


def _compile(p: Pipeline):  # type: ignore[no-untyped-def]
    snap = snapshot()
    topo = build_topology(snap)
    lbs, issues = parse_all(snap.load_balancers.values(), snap.datapaths, {})
    assert not issues
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    return compile_state(lbs, topo, ids, p)


def test_router_lb_is_scoped_to_the_router_metadata() -> None:
    desired = _compile(STANDALONE)
    vip_flows = [f for f in specs(desired.state).flows.values()
                 if f.table == STANDALONE.dispatch and f.priority == 200]
    assert sorted(f.match.as_dict()["metadata"] for f in vip_flows) == [2, 4]


def _exits(actions: tuple[Action, ...]) -> list[Action]:
    return [a for a in actions if isinstance(a, Output | Resubmit)]


def test_embedded_mode_uses_only_its_tables_and_leaves_to_next_table() -> None:
    p = embedded(40, 70)
    assert (p.entry, p.pre_lb, p.forward, p.hairpin, p.classify) == (40, 40, 45, 46, None)
    desired = _compile(p)
    flows = specs(desired.state).flows.values()
    assert {f.table for f in flows} <= set(range(40, 47))
    assert not any("in_port" in f.match.as_dict() for f in flows)
    outputs = [a for f in flows for a in _exits(f.actions) if isinstance(a, Output)]
    # only the ARP responder outputs (to IN_PORT); nothing uses NORMAL
    assert outputs and all(a.port != 0xFFFFFFFA for a in outputs)
    exits = {a.table for f in flows for a in _exits(f.actions) if isinstance(a, Resubmit)}
    assert 70 in exits and exits <= set(range(40, 47)) | {70}


def test_standalone_mode_keeps_table_zero_and_normal() -> None:
    flows = specs(_compile(STANDALONE).state).flows.values()
    assert any(f.table == 0 and "in_port" in f.match.as_dict() for f in flows)
    assert any(isinstance(a, Output) and a.port == 0xFFFFFFFA
               for f in flows for a in f.actions)


@pytest.mark.parametrize(("kwargs", "expect"), [
    ({"mode": "embedded"}, (180, 187)),  # above OVN's tables (0-78 in 23.03)
    ({"mode": "embedded", "table_base": 30}, (30, 37)),
    ({"mode": "embedded", "table_base": 30, "next_table": 10}, (30, 10)),
])
def test_settings_pipeline(kwargs: dict[str, object], expect: tuple[int, int]) -> None:
    p = Settings(**kwargs).pipeline()  # type: ignore[arg-type]
    assert p.embedded and (p.base, p.next_table) == expect


@pytest.mark.parametrize("kwargs", [
    {"mode": "bogus"},
    {"mode": "embedded", "table_base": 30, "next_table": 32},
    {"mode": "embedded", "table_base": 248},
])
def test_settings_pipeline_rejects_clashes(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Settings(**kwargs).pipeline()  # type: ignore[arg-type]


def test_hairpin_flows_only_for_backends_on_local_ports() -> None:
    snap = snapshot()
    topo = build_topology(snap)
    assert topo.local_ips == frozenset({ipaddress.ip_address("10.0.0.11")})
    lbs, _ = parse_all(snap.load_balancers.values(), snap.datapaths, {})
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    flows = specs(compile_state(lbs, topo, ids, STANDALONE).state).flows.values()
    assert not any("ct_mark" in f.match.as_dict() for f in flows)  # 10.0.0.21 is remote
    local = replace(topo, local_ips=frozenset({ipaddress.ip_address("10.0.0.21")}))
    flows = specs(compile_state(lbs, local, ids, STANDALONE).state).flows.values()
    assert sum("ct_mark" in f.match.as_dict() for f in flows) == 2  # on the router and gateway
