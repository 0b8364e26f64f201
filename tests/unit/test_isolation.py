"""Pass isolation, pure parts: what a refusal blames and how long a VIP stays out."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from lbaffd.compile import isolation
from lbaffd.compile.layout import STANDALONE as P
from lbaffd.compile.state import CompiledGroup, collect, compile_state, compile_stream
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow.packed import cookie

DP1 = DatapathRow("dp-1", 1, "ls1")
TOPO = Topology(local_ports=(LocalPort(11, "cli1", DP1),), macs=MappingProxyType({}))


def lbs(**vips_by_lb: dict[str, str]) -> tuple[LoadBalancer, ...]:
    rows = [LoadBalancerRow(uuid=name, name=name, vips=MappingProxyType(vips),
                            options=MappingProxyType({"affinity_timeout": "60"}),
                            datapaths=("dp-1",)) for name, vips in vips_by_lb.items()]
    out, issues = parse_all(rows, {"dp-1": DP1}, {})
    assert not issues
    return out


BE = "10.0.0.21:8080,10.0.0.22:8080"


def test_exclusions_last_while_the_row_is_unchanged() -> None:
    a, b = lbs(a={"10.0.0.1:80": BE, "10.0.0.2:80": BE}, b={"10.0.0.3:80": BE})
    ex = isolation.Exclusions()
    ex.add(own.vip_owner("a", "10.0.0.1:80"), a, "OFPBMC_BAD_FIELD")
    kept, issues = ex.apply((a, b))
    assert [v.key for v in kept[0].vips] == ["10.0.0.2:80"] and kept[1] is b
    assert [(i.lb, i.vip, i.reason) for i in issues] == [("a", "10.0.0.1:80",
                                                          isolation.SWITCH_ERROR)]
    assert ex.apply((a, b))[1] == issues  # reported the same every pass (logged once)
    changed = replace(a, vips=a.vips[:1])  # any change to the row: tried again
    kept, issues = ex.apply((changed, b))
    assert kept[0] is changed and issues == () and len(ex) == 0


def test_incremental_exclusions_touch_only_the_changed_lb() -> None:
    a, b = lbs(a={"10.0.0.1:80": BE}, b={"10.0.0.3:80": BE})
    ex = isolation.Exclusions()
    ex.add(own.vip_owner("a", "10.0.0.1:80"), a, "x")
    ex.add(own.vip_owner("b", "10.0.0.3:80"), b, "y")
    same, issues = ex.one(a)
    assert same is not None and same.vips == () and len(issues) == 1
    retried, issues = ex.one(replace(b, affinity_timeout=61))
    assert retried is not None and len(retried.vips) == 1 and issues == ()
    assert ex.known(own.vip_owner("a", "10.0.0.1:80"))
    assert not ex.known(own.vip_owner("b", "10.0.0.3:80"))
    assert ex.one(None) == (None, ())


def test_a_refused_message_blames_its_vip() -> None:
    parsed = lbs(a={"10.0.0.1:80": BE}, b={"10.0.0.3:80": BE, "10.0.0.4:80": BE})
    ids = own.allocate_group_ids(vip_owners(parsed, TOPO), {})
    state = compile_state(parsed, TOPO, ids, P)
    owner_b3 = own.vip_owner("b", "10.0.0.3:80")
    users: dict[int, tuple[own.OwnerKey, ...]] = {}
    for fid, owners in state.shared_refs.items():
        users[cookie(state.state.flows[fid])] = owners
    # its group, by id
    assert isolation.blamed_owners(ids[owner_b3], state.owners, state.vips, users) == (
        owner_b3,)
    # its own flow, by cookie
    assert isolation.blamed_owners(own.owner_cookie(owner_b3), state.owners, state.vips,
                                   users) == (owner_b3,)
    # a shared flow (the ARP responder of its address): the VIPs that need it
    arp = own.owner_cookie(("arp", "1", "10.0.0.3"))
    assert isolation.blamed_owners(arp, state.owners, state.vips, users) == (owner_b3,)
    # the static pipeline is no VIP's: nothing to leave out
    assert isolation.blamed_owners(own.owner_cookie(own.GLOBAL_OWNER), state.owners,
                                   state.vips, users) == ()


def test_the_ledger_maps_positions_to_keys() -> None:
    ledger = isolation.BundleLedger()
    ledger.group(own.GROUP_ID_MIN + 7)
    ledger.flow(own.MANAGED_COOKIE | 5)
    assert [ledger.at(i) for i in (-1, 0, 1, 2)] == [None, own.GROUP_ID_MIN + 7,
                                                    own.MANAGED_COOKIE | 5, None]
    assert own.MANAGED_COOKIE > 0xFFFFFFFF  # a cookie is never taken for a group id


def test_a_refused_part_group_is_its_vips() -> None:
    from lbaffd.compile import groupsplit
    many = ",".join(f"10.1.0.{i}:8080" for i in range(1, 101))
    parsed = lbs(a={"10.0.0.1:80": many}, b={"10.0.0.3:80": BE})
    ids = own.allocate_group_ids(vip_owners(parsed, TOPO), {})
    groupsplit.set_limit(4096)
    try:
        state = compile_state(parsed, TOPO, ids, P)
    finally:
        groupsplit.set_limit(groupsplit.GROUP_BODY_LIMIT)
    parts = [gid for gid in state.state.groups if not own.is_vip_group(gid)]
    assert len(parts) >= 2
    top = ids[own.vip_owner("a", "10.0.0.1:80")]
    assert {isolation.vip_group_of_part(p, state.state.groups) for p in parts} == {top}
    assert isolation.vip_group_of_part(own.PART_GROUP_MAX, state.state.groups) is None


def test_an_encoding_error_leaves_only_its_vip_out() -> None:
    """An error while one VIP's part is built (here the one ``struct`` raised
    for a group mod over 65535 bytes before groups were split) costs that
    VIP, before anything of it is handed on, and nothing else."""
    import struct

    from lbaffd.compile.layout import Pipeline
    from lbaffd.compile.state import VipCache
    from lbaffd.compile.vip import VipPart
    from lbaffd.model.plan import VipPlan

    class Failing(VipCache):
        def get(self, plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology) -> VipPart:
            if plan.lb.name == "a":
                struct.pack("!H", 70000)
            return super().get(plan, p, max_idle, topo)

    parsed = lbs(a={"10.0.0.1:80": BE}, b={"10.0.0.3:80": BE})
    ids = own.allocate_group_ids(vip_owners(parsed, TOPO), {})
    items, state = collect(compile_stream(parsed, TOPO, ids, P, cache=Failing()))
    sent = [item.group_id for item in items if isinstance(item, CompiledGroup)]
    assert [p.lb.name for p in state.vips] == ["b"]
    assert sent == [ids[own.vip_owner("b", "10.0.0.3:80")]]
    issue, = state.issues
    assert (issue.lb, issue.vip, issue.reason) == ("a", "10.0.0.1:80", isolation.ENCODE_ERROR)
    assert issue.detail.startswith("error: ") and "65535" in issue.detail  # struct.error
    assert own.owner_cookie(own.vip_owner("a", "10.0.0.1:80")) not in state.owners
