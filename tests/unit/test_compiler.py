"""Compiler output for a given model (pure: no switch needed)."""

from __future__ import annotations

import ipaddress
from types import MappingProxyType

from lbaffd.compile.layout import STANDALONE as P
from lbaffd.compile.state import CompiledGroup, collect, compile_state, compile_stream
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import Endpoint, LoadBalancer, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow.flowspec import (
    LEARN_DELETE_LEARNED,
    LEARN_SEND_FLOW_REM,
    Ct,
    FlowSpec,
    Group,
    Learn,
    Nat,
    Resubmit,
    SetField,
)
from lbaffd.openflow.packed import cookie, unpack_flow
from tests.switchstate import specs

DP1 = DatapathRow("dp-1", 1, "ls1")
DP9 = DatapathRow("dp-9", 9, "remote-only")
DPS = {"dp-1": DP1, "dp-9": DP9}
TOPO = Topology(
    local_ports=(LocalPort(11, "cli1", DP1), LocalPort(21, "be1", DP1)),
    macs=MappingProxyType({(1, ipaddress.ip_address("10.0.0.21")): "02:00:00:00:00:21"}),
)


def lbs(timeout: str | None = "30", **vips: str) -> tuple[LoadBalancer, ...]:
    rows = [LoadBalancerRow(
        uuid="lb-1", name="lb1",
        vips=MappingProxyType(vips or {"10.0.0.100:80": "10.0.0.21:8080,10.0.0.22:8080"}),
        options=MappingProxyType({} if timeout is None else {"affinity_timeout": timeout}),
        datapaths=("dp-1", "dp-9"))]
    parsed, issues = parse_all(rows, DPS, {})
    assert not issues
    return parsed


def compiled(parsed: tuple[LoadBalancer, ...]):  # type: ignore[no-untyped-def]
    ids = own.allocate_group_ids(vip_owners(parsed, TOPO), {})
    return compile_state(parsed, TOPO, ids, P), ids


def flows_in(state, table: int) -> list[FlowSpec]:  # type: ignore[no-untyped-def]
    return sorted((f for f in specs(state.state).flows.values() if f.table == table),
                  key=lambda f: (-f.priority, str(f.match)))


def test_deterministic_and_all_cookies_are_lbaffd_managed() -> None:
    a, _ = compiled(lbs())
    b, _ = compiled(lbs())
    assert a.state == b.state
    assert all(own.is_managed(f.cookie) for f in specs(a.state).flows.values())
    assert all(own.is_lbaffd_group(g) for g in a.state.groups)


def test_affinity_vip_pipeline() -> None:
    desired, ids = compiled(lbs())
    (gid,) = ids.values()
    (group,) = specs(desired.state).groups.values()
    assert group.group_id == gid
    # miss path selection is a function of the client: back-to-back safe
    assert group.selection_method == "hash" and group.fields == ("ipv4_src",)
    assert sorted((b.actions for b in group.buckets), key=str) == [
        (Ct(commit=True, zone_field="reg13", table=P.learn,
            nat=Nat(kind="dst", ip_min="10.0.0.21", port_min=8080, port_max=8080), mark=gid),),
        (Ct(commit=True, zone_field="reg13", table=P.learn,
            nat=Nat(kind="dst", ip_min="10.0.0.22", port_min=8080, port_max=8080), mark=gid),),
    ]
    (vip_flow,) = [f for f in flows_in(desired, P.dispatch) if f.priority == 200]
    m = vip_flow.match.as_dict()
    assert m["metadata"] == 1 and m["ipv4_dst"] == "10.0.0.100" and m["tcp_dst"] == 80
    assert vip_flow.actions == (SetField("reg6", gid), Resubmit(P.affinity), Resubmit(P.lb))
    # only the local datapath gets the VIP (dp 9 has no local port)
    assert all(f.match.as_dict().get("metadata") in (None, 1)
               for f in specs(desired.state).flows.values())

    lb_flows = flows_in(desired, P.lb)
    assert [f.priority for f in lb_flows] == [100, 100, 50]
    assert lb_flows[-1].actions == (SetField("reg2", 0), Group(gid))  # miss clears hit bit

    learn_flows = [f for f in flows_in(desired, P.learn) if f.priority == 100]
    assert len(learn_flows) == 2
    for f in learn_flows:
        learn, nxt = f.actions
        assert isinstance(learn, Learn)
        assert learn.table == P.affinity and learn.idle_timeout == 30
        assert learn.flags == LEARN_DELETE_LEARNED | LEARN_SEND_FLOW_REM
        assert own.is_learned(learn.cookie)
        assert nxt == Resubmit(P.forward)  # the learning packet is not dropped
        assert f.match.as_dict()["reg2"] == 0
    assert len({f.actions[0].cookie for f in learn_flows}) == 2  # type: ignore[union-attr]


def test_no_affinity_goes_straight_to_a_dp_hash_group() -> None:
    desired, ids = compiled(lbs(timeout=None))
    (gid,) = ids.values()
    (group,) = specs(desired.state).groups.values()
    assert group.selection_method == "dp_hash" and group.fields == ()
    (vip_flow,) = [f for f in flows_in(desired, P.dispatch) if f.priority == 200]
    assert vip_flow.actions[-1] == Group(gid)
    assert flows_in(desired, P.lb) == []
    assert [f.priority for f in flows_in(desired, P.learn)] == [0]


def test_backend_mac_rewrite_and_arp_responder() -> None:
    desired, _ = compiled(lbs())
    fwd = [f for f in flows_in(desired, P.forward) if f.priority <= 100]
    assert [f.match.as_dict().get("ipv4_dst") for f in fwd] == ["10.0.0.21", None]
    assert fwd[0].actions[0] == SetField("eth_dst", "02:00:00:00:00:21")
    arp = [f for f in flows_in(desired, P.pre_lb) if f.priority == 200]
    assert [f.match.as_dict()["arp_tpa"] for f in arp] == ["10.0.0.100"]


def test_changing_one_lb_touches_only_its_owner() -> None:
    two = {"10.0.0.100:80": "10.0.0.21:8080", "10.0.0.200:80": "10.0.0.22:8080"}
    before, _ = compiled(lbs(**two))
    two["10.0.0.200:80"] = "10.0.0.22:8080,10.0.0.23:8080"
    after, _ = compiled(lbs(**two))
    changed = {k for k in before.state.flows.keys() | after.state.flows.keys()
               if before.state.flows.get(k) != after.state.flows.get(k)}
    owners = {after.owners.get(cookie(after.state.flows[k])) if k in after.state.flows
              else before.owners[cookie(before.state.flows[k])] for k in changed}
    assert owners == {own.vip_owner("lb-1", "10.0.0.200:80")}


def test_same_vip_on_same_datapath_in_two_lbs_is_a_conflict() -> None:
    rows = [LoadBalancerRow(uuid=f"lb-{i}", name=f"lb{i}",
                            vips=MappingProxyType({"10.0.0.100:80": f"10.0.0.2{i}:8080"}),
                            datapaths=("dp-1",)) for i in (1, 2)]
    parsed, _ = parse_all(rows, DPS, {})
    desired, _ = compiled(parsed)
    assert len(desired.state.groups) == 1
    assert [(i.lb, i.reason) for i in desired.issues] == [("lb2", "vip_conflict")]


def test_group_ids_are_stable_and_collision_free() -> None:
    owners = [own.vip_owner(f"lb-{i}", "10.0.0.1:80") for i in range(3000)]
    ids = own.allocate_group_ids(owners, {})
    assert len(set(ids.values())) == len(owners)
    again = own.allocate_group_ids(owners[:1500], ids)
    assert all(again[o] == ids[o] for o in owners[:1500])
    # a forced collision: the previous holder keeps its id, the newcomer probes
    forced = own.allocate_group_ids(owners[:2], {owners[0]: ids[owners[1]]})
    assert forced[owners[0]] == ids[owners[1]] and forced[owners[1]] != ids[owners[1]]


def test_bucket_ids_do_not_shift_when_backends_change() -> None:
    three = lbs(**{"10.0.0.100:80": "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080"})
    two = lbs(**{"10.0.0.100:80": "10.0.0.21:8080,10.0.0.23:8080"})

    def ids(parsed: tuple[LoadBalancer, ...]) -> dict[str, int]:
        (g,) = specs(compiled(parsed)[0].state).groups.values()
        return {b.actions[0].nat.ip_min: b.bucket_id for b in g.buckets}  # type: ignore[union-attr]

    a, b = ids(three), ids(two)
    assert b == {k: v for k, v in a.items() if k != "10.0.0.22"}


def test_backend_reported_down_leaves_group_hit_and_learn_flows() -> None:
    down = Topology(TOPO.local_ports, TOPO.macs,
                    frozenset({(ipaddress.ip_address("10.0.0.22"), 8080, "tcp")}))
    parsed = lbs()
    ids = own.allocate_group_ids(vip_owners(parsed, down), {})
    desired = compile_state(parsed, down, ids, P)
    (plan,) = desired.vips
    assert [str(b) for b in plan.live_backends] == ["10.0.0.21:8080"]
    (group,) = specs(desired.state).groups.values()
    assert [b.actions[0].nat.ip_min for b in group.buckets] == ["10.0.0.21"]  # type: ignore[union-attr]
    text = " ".join(str(f) for f in specs(desired.state).flows.values())
    assert "10.0.0.22" not in text and str(int(ipaddress.ip_address("10.0.0.22"))) not in text
    udp_down = Topology(TOPO.local_ports, TOPO.macs,
                        frozenset({(ipaddress.ip_address("10.0.0.22"), 8080, "udp")}))
    assert len(compile_state(parsed, udp_down, ids, P).vips[0].live_backends) == 2


def test_learned_idle_timeout_is_capped() -> None:
    parsed = lbs(timeout="86400")
    ids = own.allocate_group_ids(vip_owners(parsed, TOPO), {})
    for cap, want in ((65535, 65535), (2, 2)):
        desired = compile_state(parsed, TOPO, ids, P, max_idle=cap)
        learns = [a for f in specs(desired.state).flows.values() for a in f.actions
                  if isinstance(a, Learn)]
        assert learns and {a.idle_timeout for a in learns} == {want}


def test_service_monitor_matching() -> None:
    from lbaffd.model.records import ServiceMonitorRow
    from lbaffd.model.topology import unhealthy

    ip = ipaddress.ip_address("10.0.0.22")
    bound = {"be2": frozenset({ip}), "be9": frozenset({ipaddress.ip_address("10.0.0.99")})}

    def mon(status: str, lport: str = "be2", port: int = 8080) -> ServiceMonitorRow:
        return ServiceMonitorRow("u", "10.0.0.22", port, "tcp", lport, status)

    assert unhealthy([mon("offline")], bound) == {(ip, 8080, "tcp")}
    assert unhealthy([mon("error")], bound) == {(ip, 8080, "tcp")}
    assert unhealthy([mon("online"), mon("")], bound) == frozenset()
    assert unhealthy([mon("offline", lport="be9")], bound) == frozenset()  # other port's IP
    assert unhealthy([mon("offline", lport="unknown")], bound) == {(ip, 8080, "tcp")}


def test_a_realized_vip_keeps_a_contested_slot() -> None:
    rows = [LoadBalancerRow(uuid=f"lb-{i}", name=name,
                            vips=MappingProxyType({"10.0.0.100:80": f"10.0.0.2{i}:8080"}),
                            datapaths=("dp-1",)) for i, name in ((1, "zz-first"), (2, "aa-new"))]
    parsed, _ = parse_all(rows, DPS, {})
    incumbent = frozenset({own.vip_owner("lb-1", "10.0.0.100:80")})
    ids = own.allocate_group_ids(vip_owners(parsed, TOPO, incumbent), {})
    desired = compile_state(parsed, TOPO, ids, P, incumbents=incumbent)
    assert [p.lb.name for p in desired.vips] == ["zz-first"]
    assert [(i.lb, i.reason) for i in desired.issues] == [("aa-new", "vip_conflict")]
    fresh = compile_state(parsed, TOPO, own.allocate_group_ids(vip_owners(parsed, TOPO), {}), P)
    assert [p.lb.name for p in fresh.vips] == ["aa-new"]  # no incumbent: by name


def test_compile_stream_yields_every_flow_once_and_each_group_before_its_flows() -> None:
    """A full pass sends what compile_stream yields while it runs:
    exactly the state it returns, no flow twice, a group before any flow
    that points at it (the bundle is ordered)."""
    parsed = lbs(**{"10.0.0.100:80": "10.0.0.21:8080,10.0.0.22:8080",
                    "10.0.0.101:80": "10.0.0.21:8080,10.0.0.23:8080"})
    ids = own.allocate_group_ids(vip_owners(parsed, TOPO), {})
    items, state = collect(compile_stream(parsed, TOPO, ids, P))
    seen: list[tuple[str, object, bytes]] = [
        ("group", item.group_id, item.body) if isinstance(item, CompiledGroup)
        else ("flow", item.flow_id, item.body) for item in items]
    flows = [(fid, body) for kind, fid, body in seen if kind == "flow"]
    groups = {gid: body for kind, gid, body in seen if kind == "group"}
    assert len(flows) == len(dict(flows)) == len(state.state.flows)
    assert dict(flows) == state.state.flows
    assert groups == state.state.groups
    for i, (kind, _, body) in enumerate(seen):
        if kind != "flow":
            continue
        spec = unpack_flow(body)
        for gid in (a.group_id for a in spec.actions if isinstance(a, Group)):
            first_use = i
            assert any(k == "group" and g == gid for k, g, _ in seen[:first_use]), i


def _reference_buckets(backends: tuple[Endpoint, ...], mode: str
                       ) -> tuple[list[tuple[int, Endpoint]], list[int] | None]:
    """The buckets and weights as documented, written plainly: blake2b-32 of
    "<backend>" per backend, top bit cleared, the next id on a clash, ordered
    by id; for a balanced group whose table does not divide evenly, then a
    filler bucket of the last bucket's backend, id from "<backend>#filler",
    weight 1, the others 255 // n."""
    import hashlib

    def h(text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(),
                              "big") & 0x7FFFFFFF

    ordered = sorted(backends)
    n = len(ordered)
    out: list[tuple[int, Endpoint]] = []
    taken: set[int] = set()
    for be in ordered:
        bid = h(str(be))
        while bid in taken:
            bid = (bid + 1) & 0x7FFFFFFF
        taken.add(bid)
        out.append((bid, be))
    out.sort()
    if mode != "balanced" or n < 2 or n & (n - 1) == 0 or n > 128:
        return out, None
    last = out[-1][1]
    bid = h(f"{last}#filler")
    while bid in taken:
        bid = (bid + 1) & 0x7FFFFFFF
    return [*out, (bid, last)], [255 // n] * n + [1]


def test_balanced_bucket_ids_are_the_hash_of_backend() -> None:
    """The bucket id of a backend is blake2b-32 of "<backend>" (top bit
    cleared, probing on a clash), the filler's of "<backend>#filler",
    whatever code computes them: ids that changed would modify every
    balanced group on the first restart after an upgrade."""
    from lbaffd.model.distribution import BALANCED
    from lbaffd.model.plan import group_buckets

    for n in (2, 3, 7, 100):
        backends = tuple(Endpoint(ipaddress.ip_address(f"10.1.{i // 200}.{i % 200 + 1}"), 8080)
                         for i in range(n))
        if n == 3:  # and one IPv6 backend set
            backends = tuple(Endpoint(ipaddress.ip_address(f"fd00::{i + 1:x}"), 80)
                             for i in range(n))
        got = group_buckets(backends, BALANCED)
        pairs, weights = _reference_buckets(backends, BALANCED)
        assert list(got) == pairs
        assert list(got.weights()) == (weights or [100] * n)
        assert len(got) == (n if n == 2 else n + 1)


def test_group_buckets_equal_the_plain_reference_on_random_backends() -> None:
    """``group_buckets`` builds ``Buckets``' arrays directly (a cold pass's
    hot spot); on random backend sets of both families, with and without
    ports, every size and both kinds of group, it gives the reference's
    buckets, and ``Buckets`` built from the reference's pairs equals it."""
    import random

    from lbaffd.model.plan import Buckets, group_buckets

    rng = random.Random(7)
    for case in range(300):
        n = rng.choice((0, 1, 2, 3, rng.randint(4, 40), rng.randint(41, 300)))
        v6, port = case % 3 == 0, rng.choice((None, 80, rng.randint(1, 65535)))
        ips = {ipaddress.ip_address(f"fd00::{rng.getrandbits(16):x}:{rng.getrandbits(16):x}" if v6
                                    else f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                                         f"{rng.randint(1, 254)}") for _ in range(n)}
        backends = tuple(Endpoint(ip, port) for ip in ips)
        for mode in ("balanced", "client-hash"):
            got = group_buckets(backends, mode)
            want, weights = _reference_buckets(backends, mode)
            assert list(got) == want, (case, mode)
            assert list(got.weights()) == (weights or [100] * len(want)), (case, mode)
            assert got == Buckets(want, weights) and hash(got) == hash(Buckets(want, weights))
            if weights is None:
                assert hash(got) == hash(tuple(want)) and got == tuple(want)
            else:
                assert got != Buckets(want) and got != tuple(want)
