"""Incremental updates give exactly what a full compile gives, and decline
when the result could depend on other load balancers."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace
from types import MappingProxyType

import pytest

from lbaffd.compile import state
from lbaffd.compile.layout import STANDALONE as P
from lbaffd.compile.state import VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow.packed import PackedState, flow_id, group_id
from lbaffd.reconcile.incremental import DesiredIndex

DP1 = DatapathRow("dp-1", 1, "ls1")
TOPO = Topology(
    local_ports=(LocalPort(11, "cli1", DP1),),
    macs=MappingProxyType({(1, ipaddress.ip_address(f"10.0.0.{n}")): f"02:00:00:00:00:{n:02x}"
                           for n in range(20, 30)}),
)


def lb(n: int, backends: list[int], **options: str) -> LoadBalancer:
    vips = {f"10.1.{n // 250}.{n % 250}:80": ",".join(f"10.0.0.{b}:8080" for b in backends)}
    row = LoadBalancerRow(uuid=f"lb-{n}", name=f"lb{n}", vips=MappingProxyType(vips),
                          options=MappingProxyType(options), datapaths=("dp-1",))
    (parsed,), issues = parse_all([row], {"dp-1": DP1}, {})
    assert not issues
    return parsed


def full(lbs: dict[str, LoadBalancer], ids: dict[own.OwnerKey, int]):  # type: ignore[no-untyped-def]
    t = tuple(lbs.values())
    ids = own.allocate_group_ids(vip_owners(t, TOPO), ids)
    return compile_state(t, TOPO, ids, P), ids


def test_random_changes_match_a_full_compile() -> None:
    rnd = random.Random(7)
    lbs = {f"lb-{n}": lb(n, [20 + n % 5, 21 + n % 5], affinity_timeout="30") for n in range(40)}
    desired, ids = full(lbs, {})
    index, cache = DesiredIndex(desired, ids), VipCache()
    installed = PackedState(dict(desired.state.flows), dict(desired.state.groups))
    for step in range(60):
        n = rnd.randrange(50)
        uuid = f"lb-{n}"
        if uuid in lbs and rnd.random() < 0.3:
            new: LoadBalancer | None = None
            del lbs[uuid]
        else:
            opts = {"affinity_timeout": "30"} if rnd.random() < 0.5 else {}
            new = lb(n, rnd.sample(range(20, 30), rnd.randint(0, 4)), **opts)
            lbs[uuid] = new
        changes = index.apply({uuid: new}, TOPO, P, cache, 65535, "balanced", 1)
        assert changes is not None, step
        # apply the change set to what was installed: it must equal the index
        flows, groups = dict(installed.flows), dict(installed.groups)
        for f in changes.del_flows:
            del flows[flow_id(f)]
        for f in changes.add_flows + changes.mod_flows:
            flows[flow_id(f)] = f
        for g in changes.add_groups + changes.mod_groups:
            groups[group_id(g)] = g
        for gid in changes.del_groups:
            del groups[gid]
        installed = PackedState(flows, groups)
        assert installed.flows == index.flows and installed.groups == index.groups, step
        assert {k: f for c in index.chunks for k, f in c.items()} == index.flows, step
        want, _ = full(lbs, index.group_ids)
        assert index.flows == dict(want.state.flows), step
        assert index.groups == dict(want.state.groups), step
        assert index.owners == dict(want.owners), step  # none of a shared flow gone
        assert len(changes) <= 40  # O(change), not O(N)


def test_declines_when_another_lb_holds_the_slot() -> None:
    lbs = {"lb-1": lb(1, [20]), "lb-2": lb(2, [21])}
    desired, ids = full(lbs, {})
    index = DesiredIndex(desired, ids)
    clash = lb(2, [22])
    clash = LoadBalancer(clash.uuid, clash.name, lbs["lb-1"].vips, clash.datapaths, None)
    assert index.apply({"lb-2": clash}, TOPO, P, VipCache(), 65535, "balanced", 1) is None


def test_declines_for_a_contested_slot() -> None:
    one = lb(1, [20])
    two = LoadBalancer("lb-2", "lb2", one.vips, one.datapaths, None)
    desired, ids = full({"lb-1": one, "lb-2": two}, {})
    assert desired.contested
    index = DesiredIndex(desired, ids)
    # lb1 holds the slot lb2 also wants: whatever happens to lb1, a full pass decides
    assert index.apply({"lb-1": None}, TOPO, P, VipCache(), 65535, "balanced", 1) is None


def big(n: int, count: int, **options: str) -> LoadBalancer:
    vips = {f"10.1.{n // 250}.{n % 250}:80": ",".join(
        f"10.2.{b // 250}.{b % 250 + 1}:8080" for b in range(n * 7, n * 7 + count))}
    row = LoadBalancerRow(uuid=f"lb-{n}", name=f"lb{n}", vips=MappingProxyType(vips),
                          options=MappingProxyType(options), datapaths=("dp-1",))
    (parsed,), issues = parse_all([row], {"dp-1": DP1}, {})
    assert not issues
    return parsed


def test_split_groups_change_incrementally_as_a_full_compile() -> None:
    """VIPs whose groups are split in parts (limit capped: ~24 buckets a
    part) grow, shrink and go; the index's groups (parts included) stay
    what a full compile gives, and a change touches only its VIP's groups."""
    from lbaffd.compile import groupsplit
    groupsplit.set_limit(2048)
    try:
        rnd = random.Random(11)
        lbs = {f"lb-{n}": big(n, rnd.randint(1, 120), affinity_timeout="30") for n in range(8)}
        desired, ids = full(lbs, {})
        assert any(not own.is_vip_group(g) for g in desired.state.groups)  # split ones exist
        index, cache = DesiredIndex(desired, ids), VipCache()
        for step in range(30):
            n = rnd.randrange(10)
            uuid = f"lb-{n}"
            if uuid in lbs and rnd.random() < 0.2:
                new: LoadBalancer | None = None
                del lbs[uuid]
            else:
                opts = {"affinity_timeout": "30"} if rnd.random() < 0.5 else {}
                new = big(n, rnd.randint(1, 120), **opts)
                lbs[uuid] = new
            changes = index.apply({uuid: new}, TOPO, P, cache, 65535, "balanced", 1)
            assert changes is not None, step
            want, _ = full(lbs, index.group_ids)
            assert index.groups == dict(want.state.groups), step
            assert index.flows == dict(want.state.flows), step
            assert len(changes.add_groups) + len(changes.mod_groups) + len(
                changes.del_groups) <= 2 * (groupsplit.MAX_PARTS + 1), step
    finally:
        groupsplit.set_limit(groupsplit.GROUP_BODY_LIMIT)


def test_locality_and_health_changes_match_a_full_compile() -> None:
    """Backends becoming local ports or not (their VIPs' parts relocated,
    not compiled: ``VipCache.relocate``), going down or up, MACs learned:
    the LBs using the changed backends applied with the old topology give
    what a full compile under the new one gives."""
    rnd = random.Random(11)
    lbs = {f"lb-{n}": lb(n, rnd.sample(range(20, 32), rnd.randint(1, 5)),
                         **({"affinity_timeout": "30"} if n % 2 else {}))
           for n in range(40)}

    def compiled(topo: Topology, ids: dict[own.OwnerKey, int]):  # type: ignore[no-untyped-def]
        t = tuple(lbs.values())
        ids = own.allocate_group_ids(vip_owners(t, topo), ids)
        return compile_state(t, topo, ids, P), ids

    topo = TOPO
    desired, ids = compiled(topo, {})
    index, cache = DesiredIndex(desired, ids), VipCache()
    for plan in index.plans.values():  # the cache holds what the full pass compiled
        cache.get(plan, P, 65535, topo)
    for step in range(40):
        addr = ipaddress.ip_address(f"10.0.0.{rnd.randrange(20, 32)}")
        kind = rnd.choice(("local", "local", "down", "mac"))
        if kind == "local":
            new_topo = Topology(topo.local_ports, topo.macs, topo.down, topo.attached,
                                topo.local_ips ^ {addr})
        elif kind == "down":
            new_topo = Topology(topo.local_ports, topo.macs, topo.down ^ {(addr, 8080, "tcp")},
                                topo.attached, topo.local_ips)
        else:
            macs = dict(topo.macs)
            macs[(1, addr)] = f"02:00:00:00:01:{step:02x}"
            new_topo = Topology(topo.local_ports, MappingProxyType(macs), topo.down,
                                topo.attached, topo.local_ips)
        users = {u: x for u, x in lbs.items()
                 if any(be.ip == addr for v in x.vips for be in v.backends)}
        if not users:
            continue
        changes = index.apply(users, new_topo, P, cache, 65535, "balanced", 1, old_topo=topo)
        assert changes is not None, step
        topo = new_topo
        want, _ = compiled(topo, index.group_ids)
        assert index.flows == dict(want.state.flows), (step, kind)
        assert index.groups == dict(want.state.groups), (step, kind)
    assert cache.derived >= 5


def test_health_flips_compile_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend of one VIP of a two-VIP LB goes down and comes back: the
    flipped VIP's part is derived (``vip.derived``) and the other VIP's
    stays cached, so neither step compiles anything (the second step used to
    compile the other VIP's old part again, only to take it off), and the
    index equals a full compile after each."""
    vips = {"10.2.0.1:80": "10.0.0.20:8080,10.0.0.21:8080",
            "10.2.0.1:443": "10.0.0.22:8443,10.0.0.23:8443"}
    row = LoadBalancerRow(uuid="lb-2v", name="two", vips=MappingProxyType(vips),
                          options=MappingProxyType({"affinity_timeout": "60"}),
                          datapaths=("dp-1",))
    (two,), issues = parse_all([row], {"dp-1": DP1}, {})
    assert not issues
    lbs = {"lb-2v": two, **{f"lb-{n}": lb(n, [24, 25]) for n in range(3)}}
    desired, ids = full(lbs, {})
    index, cache = DesiredIndex(desired, ids), VipCache(templates=False)
    for plan in index.plans.values():
        cache.get(plan, P, 65535, TOPO)
    compiled: list[object] = []
    real = state.compile_vip
    monkeypatch.setattr(state, "compile_vip", lambda *a: compiled.append(a) or real(*a))
    topo = TOPO
    down = replace(TOPO, down=frozenset({(ipaddress.ip_address("10.0.0.20"), 8080, "tcp")}))
    for new_topo in (down, TOPO, down):
        changes = index.apply({"lb-2v": two}, new_topo, P, cache, 65535, "balanced", 1,
                              old_topo=topo)
        assert changes is not None and not changes.empty and compiled == []
        topo = new_topo
        want = compile_state(tuple(lbs.values()), topo, index.group_ids, P)
        assert index.flows == dict(want.state.flows)
        assert index.groups == dict(want.state.groups)
        compiled.clear()  # (the full compile's own)
    assert cache.derived == 3


def test_vip_owners_are_interned_while_their_vips_are_in_the_state() -> None:
    """Services replaced (new LB uuids) for hundreds of steps, with a full
    pass now and then: the interned owner keys are those of the VIPs in the
    state, not of every VIP churn ever brought (an ``lru_cache`` of 16k kept
    those until full, ~360 bytes each), and a VIP's key stays one shared
    tuple while it is in use."""
    rnd = random.Random(5)
    lbs = {f"lb-{n}": lb(n, [20 + n % 5, 21 + n % 5]) for n in range(30)}
    cache = VipCache()
    t = tuple(lbs.values())
    ids = own.allocate_group_ids(vip_owners(t, TOPO), {})
    desired = compile_state(t, TOPO, ids, P, cache=cache)
    index = DesiredIndex(desired, ids)
    next_n = 30
    for step in range(300):
        if step % 50 == 49:  # a full pass, which also finds two services gone
            for gone in rnd.sample(sorted(lbs), 2):
                del lbs[gone]
            t = tuple(lbs.values())
            ids = own.allocate_group_ids(vip_owners(t, TOPO), index.group_ids)
            desired = compile_state(t, TOPO, ids, P, cache=cache)
            index = DesiredIndex(desired, ids)
            live = set(vip_owners(t, TOPO))
            assert set(own._VIP_OWNERS) == live, step
            continue
        gone = rnd.choice(sorted(lbs))  # a service replaced: its LB goes, a new one comes
        del lbs[gone]
        new = lb(next_n, [20 + next_n % 5])
        next_n += 1
        lbs[new.uuid] = new
        assert index.apply({gone: None, new.uuid: new}, TOPO, P, cache, 65535, "balanced",
                           1) is not None, step
        live = set(vip_owners(tuple(lbs.values()), TOPO))
        assert not {o for o in own._VIP_OWNERS if o[1] == gone}, step
        assert own.vip_owners_held() <= len(live) + 1, step
    for lbr in lbs.values():  # one tuple per VIP in use
        for vip in lbr.vips:
            assert own.vip_owner(lbr.uuid, vip.key) is own.vip_owner(lbr.uuid, vip.key)
    owners = {own.vip_owner(u, k) for (_, u, k) in own._VIP_OWNERS}
    assert all(any(o is held for held in own._VIP_OWNERS.values()) for o in owners)
