"""Companion mode's pure parts: the table layout, the flows a VIP and a port
put on a bridge ovn-controller owns, which LBs are taken over for which
ports, OVN's output stage read from its flows, and flush recovery."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace
from types import MappingProxyType

import pytest

from lbaffd.compile.layout import (
    COMPANION_ZONE,
    PRIO_INTERCEPT,
    PRIO_INTERCEPT_UNSNAT,
    PRIO_REPLY_HOOK,
    SCRATCH_REGS,
    companion,
)
from lbaffd.compile.state import compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.ovnlayout import OvnLayout, discover, merge
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow, PortBindingRow, SbSnapshot
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow.flowspec import Ct, FlowSpec, Match, Move, Nat, Output, Resubmit, SetField
from lbaffd.openflow.packed import flow_id, pack_flow
from lbaffd.ops.metrics import Metrics
from lbaffd.ovn.flushrecovery import FlushRecovery
from lbaffd.ovn.runtime import CompanionRuntime
from lbaffd.ovn.takeover import TAKE_OVER_ALL, ovn_zones, scopes, take_over, zone_clash
from lbaffd.reconcile.longidle import RemovedEntry
from tests.switchstate import specs

P = companion()
SW0 = DatapathRow("dp-sw0", 1, "sw0")
SW1 = DatapathRow("dp-sw1", 3, "sw1")
LR0 = DatapathRow("dp-lr0", 2, "lr0", is_router=True)
DPS = {d.uuid: d for d in (SW0, SW1, LR0)}
IP = ipaddress.ip_address
# OVN 23.03's output flows (table 65) as the switch reports them
LAYOUT = OvnLayout(65, ((11, Match.of(metadata=1, reg15=2)), (21, Match.of(metadata=1, reg15=3)),
                        (31, Match.of(metadata=3, reg15=2))))
PORTS = (LocalPort(11, "cli1", SW0, frozenset({IP("10.0.0.11")})),
         LocalPort(21, "be1", SW0, frozenset({IP("10.0.0.21")})),
         LocalPort(31, "cli2", SW1, frozenset({IP("10.0.1.11")})))
TOPO = Topology(local_ports=PORTS,
                macs=MappingProxyType({(1, IP("10.0.0.21")): "02:00:00:00:00:21",
                                       (1, IP("10.0.0.22")): "02:00:00:00:00:22"}),
                local_ips=frozenset({IP("10.0.0.11"), IP("10.0.0.21"), IP("10.0.1.11")}),
                ovn=LAYOUT)


def _pb(name: str, dp: str, key: int, type_: str = "", peer: str = "") -> PortBindingRow:
    return PortBindingRow(name, name, dp, key, type=type_,
                          options=MappingProxyType({"peer": peer} if peer else {}))


SNAP = SbSnapshot(
    load_balancers=MappingProxyType({}), datapaths=MappingProxyType(DPS),
    dp_groups=MappingProxyType({}),
    port_bindings=MappingProxyType({pb.uuid: pb for pb in (
        _pb("cli1", "dp-sw0", 2), _pb("be1", "dp-sw0", 3), _pb("cli2", "dp-sw1", 2),
        _pb("sw0-lr0", "dp-sw0", 1, "patch", "lr0-sw0"),
        _pb("lr0-sw0", "dp-lr0", 1, "patch", "sw0-lr0"),
        _pb("sw1-lr0", "dp-sw1", 1, "patch", "lr0-sw1"),
        _pb("lr0-sw1", "dp-lr0", 2, "patch", "sw1-lr0"))}),
    interfaces=())


def lb(name: str, datapaths: tuple[str, ...], timeout: str | None = "30",
       vip: str = "172.16.0.10:80") -> LoadBalancer:
    row = LoadBalancerRow(
        uuid=f"uuid-{name}", name=name,
        vips=MappingProxyType({vip: "10.0.0.21:8080,10.0.0.22:8080"}),
        options=MappingProxyType({} if timeout is None else {"affinity_timeout": timeout}),
        datapaths=datapaths)
    parsed, issues = parse_all([row], DPS, {})
    assert not issues
    return parsed[0]


def compiled(lbs: tuple[LoadBalancer, ...], topo: Topology = TOPO):  # type: ignore[no-untyped-def]
    taken = take_over(lbs, scopes(SNAP, topo), TAKE_OVER_ALL).lbs
    ids = own.allocate_group_ids(vip_owners(taken, topo), {})
    return specs(compile_state(taken, topo, ids, P).state).flows.values()


def test_companion_tables_sit_above_ovn_and_have_no_classify_or_pre_lb() -> None:
    assert list(P.tables) == list(range(200, 207))
    assert (P.dispatch, P.affinity, P.lb, P.learn, P.forward, P.hairpin, P.reply) == tuple(
        range(200, 207))
    assert P.classify is None
    with pytest.raises(ValueError):
        _ = P.pre_lb
    with pytest.raises(ValueError):
        companion(table_base=0)


def test_interception_per_client_port_above_ovn_table0_flows() -> None:
    flows = list(compiled((lb("lb-sw", ("dp-sw0",)),)))
    table0 = [f for f in flows if f.table == 0]
    intercepts = [f for f in table0 if f.priority == PRIO_INTERCEPT]
    # a switch LB applies to the switch's own ports only (OVN skips LB stages
    # for traffic from router ports): cli1 and be1 on sw0, not cli2 on sw1
    assert sorted(f.match.as_dict()["in_port"] for f in intercepts) == [11, 21]
    for f in intercepts:
        m = f.match.as_dict()
        assert m["metadata"] == 0  # packets lbaffd hands back (metadata set) never loop
        assert m["ipv4_dst"] == "172.16.0.10" and m["tcp_dst"] == 80 and m["ip_proto"] == 6
        assert f.actions[:2] == (SetField("metadata", 1), SetField("reg13", COMPANION_ZONE))
        assert f.actions[2] == Ct(zone_field="reg13", table=P.dispatch, nat=Nat())
    # be1 is a live backend on a local port: its hairpin replies are intercepted
    unsnat = [f for f in table0 if f.priority == PRIO_INTERCEPT_UNSNAT]
    assert [f.match.as_dict()["in_port"] for f in unsnat] == [21]
    # nothing else of lbaffd in table 0 (OVN's flows stay the only port classifiers)
    assert len(table0) == len(intercepts) + len(unsnat)
    # ARP/ND for VIPs stays OVN's
    assert not any(f.match.as_dict().get("eth_type") == 0x0806 for f in flows)


def test_router_lb_reaches_clients_of_every_patched_switch() -> None:
    flows = list(compiled((lb("lb-lr", ("dp-lr0",)),)))
    ports = sorted(f.match.as_dict()["in_port"] for f in flows
                   if f.table == 0 and f.priority == PRIO_INTERCEPT)
    assert ports == [11, 21, 31]
    dispatch = {f.match.as_dict()["metadata"] for f in flows
                if f.table == P.dispatch and "ipv4_dst" in f.match.as_dict()}
    assert dispatch == {1, 3}  # keyed by the client's switch


def test_exits_return_to_ovn_table0_with_scratch_registers_cleared() -> None:
    flows = list(compiled((lb("lb-sw", ("dp-sw0",)),)))
    exits = [f for f in flows if f.actions and f.actions[-1] == Resubmit(0)]
    assert exits
    for f in exits:
        cleared = {a.field for a in f.actions if isinstance(a, SetField) and a.value == 0}
        assert set(SCRATCH_REGS) <= cleared
    # a backend on the client's switch is reached by its MAC, then OVN switches it
    fwd = [f for f in flows if f.table == P.forward and f.match.as_dict().get("ipv4_dst")]
    assert {f.actions[0] for f in fwd} >= {SetField("eth_dst", "02:00:00:00:00:21")}
    assert all(f.table != 0 or f.priority >= PRIO_INTERCEPT_UNSNAT for f in flows)


def test_reply_hooks_at_ovn_output_table_per_programmed_port() -> None:
    flows = list(compiled((lb("lb-sw", ("dp-sw0",)),)))
    hooks = [f for f in flows if f.table == 65]
    assert {f.priority for f in hooks} == {PRIO_REPLY_HOOK}
    assert len(hooks) == 2 * len(PORTS)  # IPv4 and IPv6 per port
    hook = next(f for f in hooks if f.match.as_dict().get("reg15") == 3)
    m = hook.match.as_dict()
    assert m["metadata"] == 1 and m["reg10"] == (0, 1 << 31)
    assert hook.actions == (Ct(zone=COMPANION_ZONE, table=P.reply, nat=Nat()),)
    (back,) = [f for f in flows if f.table == P.reply]
    assert back.actions == (Move("ct_state", "reg10", 1, 5, 31), Resubmit(65))


def test_no_reply_hooks_or_reply_stage_before_ovn_programmed_the_bridge() -> None:
    topo = Topology(local_ports=PORTS, macs=TOPO.macs, local_ips=TOPO.local_ips, ovn=None)
    flows = list(compiled((lb("lb-sw", ("dp-sw0",)),), topo))
    assert not [f for f in flows if f.table == 65 or f.table == P.reply]


def test_take_over_affinity_leaves_the_others_to_ovn() -> None:
    lbs = (lb("aff", ("dp-sw0",)), lb("plain", ("dp-sw0",), None, "172.16.0.11:80"))
    taken = take_over(lbs, scopes(SNAP, TOPO), "affinity")
    assert [x.name for x in taken.lbs] == ["aff"]
    assert taken.left_to_ovn == ("plain",)
    assert [d.tunnel_key for d in taken.lbs[0].datapaths] == [1]
    with pytest.raises(ValueError):
        take_over(lbs, scopes(SNAP, TOPO), "some")


@pytest.mark.parametrize("policy", ["affinity", "all"])
def test_left_to_ovn_follows_changes_as_a_full_take_over(policy: str) -> None:
    """``after_change`` keeps what is left to OVN in O(change): after random
    LB additions, removals, renames and affinity toggles it equals the
    policy applied to the whole set again, and the gauge follows."""
    rnd = random.Random(11)
    metrics = Metrics()
    rt = CompanionRuntime(companion(), policy, metrics)
    current = {f"uuid-l{i}": lb(f"l{i}", ("dp-sw0",), rnd.choice((None, "30")),
                                f"172.16.1.{i}:80") for i in range(30)}
    rt.scope = scopes(SNAP, TOPO)
    rt._set_left(take_over(current.values(), rt.scope, policy).left)
    for _ in range(60):
        changed: dict[str, LoadBalancer | None] = {}
        for _ in range(rnd.randrange(1, 4)):
            i = rnd.randrange(40)
            if f"uuid-l{i}" in current and rnd.random() < 0.3:
                changed[f"uuid-l{i}"] = None
            else:
                new = lb(f"l{i}", ("dp-sw0",), rnd.choice((None, "30")), f"172.16.1.{i}:80")
                if rnd.random() < 0.2:
                    new = replace(new, name=f"renamed{i}")
                changed[new.uuid] = new
        for uuid, new in changed.items():
            if new is None:
                current.pop(uuid, None)
            else:
                current[uuid] = new
        rt.after_change(changed)
        want = take_over(current.values(), rt.scope, policy).left_to_ovn
        assert rt.left_to_ovn == want
        assert metrics.lbs_left_to_ovn._value.get() == len(want)
    assert policy == "all" or rt.left_to_ovn  # not vacuous


def test_ovn_layout_read_from_output_flows() -> None:
    def out(table: int, port: int, **m: int) -> FlowSpec:
        return FlowSpec(table, 100, Match.of(m), (Output(port),), cookie=0x1234)
    layout = discover({
        11: [out(65, 11, metadata=1, reg15=2),
             FlowSpec(0, 100, Match.of(in_port=11), (Output(11),), cookie=0)],  # not reg-keyed
        21: [out(65, 21, metadata=1, reg15=3)],
        22: [],  # not programmed yet
        31: [out(65, 31, metadata=3, reg15=2),
             FlowSpec(65, 100, Match.of(metadata=3, reg15=2),
                      (Output(31),), cookie=own.MANAGED_COOKIE | 1)],  # lbaffd's own: ignored
    })
    assert layout is not None and layout.output_table == 65
    assert layout.known_ports == {11, 21, 31}
    assert layout.output_match(21) == Match.of(metadata=1, reg15=3)
    assert discover({11: []}) is None


def test_zones_of_ovn_checked() -> None:
    zones = ovn_zones({"ct-zone-cli1": "1", "ct-zone-lr0_dnat": "3", "other": "x",
                       "ct-zone-bad": "\uff11"})  # a full-width digit
    assert zones == {"cli1": 1, "lr0_dnat": 3}
    assert zone_clash(zones, (3, 65521)) == ["lr0_dnat"]
    assert zone_clash(zones, (65521,)) == []


def _entry(cookie: int, reason: int = 2) -> RemovedEntry:
    return RemovedEntry(cookie, 201, 100, Match.of(metadata=1), 300, 0, reason)


def test_flush_recovery_restores_only_after_a_flush_and_once_repaired() -> None:
    fr = FlushRecovery()
    fr.hold([_entry(1)], now=10.0)  # a backend removed: delete_learned, no flush
    fr.repaired()
    assert fr.take(now=10.5) is None
    fr.hold([_entry(2)], now=20.0)
    fr.noticed(now=20.0)
    assert fr.take(now=20.1) is None  # flows not back yet
    fr.ages.update({Match.of(metadata=1): 40}, now=15.0)
    fr.repaired()
    got = fr.take(now=20.2)
    assert got is not None and got.first
    assert [r.entry.cookie for r in got.restores] == [2]
    assert got.seconds == pytest.approx(0.2)
    assert got.restores[0].idle_so_far == 40 + 5  # idle at the poll + time since
    assert fr.take(now=20.25) is None  # nothing new
    fr.hold([_entry(3)], now=20.5)  # reported after the flows were back
    late = fr.take(now=20.6)
    assert late is not None and [r.entry.cookie for r in late.restores] == [3]
    assert not late.first
    # a second wave of the same flush (groups deleted after flows): repaired again
    fr.noticed(now=20.7)
    assert fr.take(now=20.75) is None
    fr.repaired()
    wave = fr.take(now=20.9)
    assert wave is not None and not wave.first and wave.seconds == pytest.approx(0.9)
    assert fr.take(now=40.0) is None


def test_layout_kept_through_ovn_flush_and_moved_on_upgrade() -> None:
    before = LAYOUT
    ports = frozenset({11, 21, 31})
    # ovn-controller just cleared the bridge: nothing found, hooks stay put
    assert merge(before, None, ports) == before
    # half re-installed: known ports keep their match, found ones are updated
    partial = OvnLayout(65, ((11, Match.of(metadata=1, reg15=9)),))
    merged = merge(before, partial, ports)
    assert merged is not None and merged.output_match(11) == Match.of(metadata=1, reg15=9)
    assert merged.known_ports == ports
    # a port gone from the chassis is forgotten
    assert merge(before, None, frozenset({11})).known_ports == {11}  # type: ignore[union-attr]
    # an upgraded ovn-controller outputs from another table: follow it
    moved = OvnLayout(67, ((21, Match.of(metadata=1, reg15=3)),))
    assert merge(before, moved, ports) == moved
    assert merge(None, None, ports) is None


def test_never_a_flow_with_the_key_of_another_controllers_flow() -> None:
    flows = list(compiled((lb("lb-sw", ("dp-sw0",)),)))
    victim = next(f for f in flows if f.table == 0 and f.priority == PRIO_INTERCEPT)
    hook = next(f for f in flows if f.table == 65)
    ids = frozenset(flow_id(pack_flow(replace(f, actions=(), cookie=0)))
                    for f in (victim, hook))
    guarded = list(compiled((lb("lb-sw", ("dp-sw0",)),), replace(TOPO, foreign=ids)))
    keys = {f.key for f in guarded}
    assert victim.key not in keys and hook.key not in keys
    assert len(guarded) == len(flows) - 2
