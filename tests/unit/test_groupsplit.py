"""Large VIPs: groups split so that group-desc can report every one of them."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from types import MappingProxyType

import pytest

from lbaffd.compile import groupsplit, isolation
from lbaffd.compile.layout import STANDALONE as P
from lbaffd.compile.state import DesiredState, VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, parse_all
from lbaffd.model.plan import vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow import messages
from lbaffd.openflow.flowspec import Group, GroupSpec
from lbaffd.openflow.packed import unpack_group

DP1 = DatapathRow("dp-1", 1, "ls1")
TOPO = Topology(local_ports=(LocalPort(11, "cli1", DP1),), macs=MappingProxyType({}))
MULTIPART_HEADER = 16


def backends(n: int, first: int = 0, v6: bool = False, port: str = ":8080") -> str:
    if v6:
        return ",".join(f"[fd00::{(first + i):x}]{port}" for i in range(1, n + 1))
    base = int(ipaddress.IPv4Address("10.1.0.0")) + first
    return ",".join(f"{ipaddress.IPv4Address(base + i)}{port}" for i in range(1, n + 1))


def lb(uuid: str, vips: dict[str, str], options: dict[str, str] | None = None) -> LoadBalancerRow:
    return LoadBalancerRow(uuid=uuid, name=uuid, vips=MappingProxyType(vips),
                           options=MappingProxyType(options or {}), datapaths=("dp-1",))


def parsed(*rows: LoadBalancerRow) -> tuple[LoadBalancer, ...]:
    out, issues = parse_all(list(rows), {"dp-1": DP1}, {})
    assert not issues
    return out


def compile_(lbs: tuple[LoadBalancer, ...], cache: VipCache | None = None,
             ids: dict[own.OwnerKey, int] | None = None) -> DesiredState:
    ids = ids or own.allocate_group_ids(vip_owners(lbs, TOPO), {})
    return compile_state(lbs, TOPO, ids, P, cache=cache)


def groups_of(state: DesiredState) -> dict[int, GroupSpec]:
    return {gid: unpack_group(body) for gid, body in state.state.groups.items()}


def flatten(groups: dict[int, GroupSpec], gid: int) -> Iterator[int]:
    """The backend bucket ids reachable from ``gid``, in order."""
    for b in groups[gid].buckets:
        jumps = [a for a in b.actions if isinstance(a, Group)]
        if jumps:
            yield from flatten(groups, jumps[0].group_id)
        else:
            yield b.bucket_id


@pytest.fixture(autouse=True)
def _default_limit() -> Iterator[None]:
    yield
    groupsplit.set_limit(groupsplit.GROUP_BODY_LIMIT)


def test_a_small_vip_keeps_one_group() -> None:
    state = compile_(parsed(lb("a", {"10.0.0.1:80": backends(800)}, {"affinity_timeout": "60"})))
    (gid, body), = state.state.groups.items()  # 800 buckets of 80 bytes: no split
    assert own.is_vip_group(gid) and len(body) <= groupsplit.GROUP_BODY_LIMIT
    assert len(unpack_group(body).buckets) == 800


@pytest.mark.parametrize("n,v6", [(1000, False), (5000, False), (5000, True)])
def test_large_affinity_vip_is_split_into_reportable_parts(n: int, v6: bool) -> None:
    vip = "[fd00::ffff]:80" if v6 else "10.0.0.1:80"
    lbs = parsed(lb("a", {vip: backends(n, v6=v6)}, {"affinity_timeout": "60"}))
    state = compile_(lbs)
    plan, = state.vips
    groups = groups_of(state)
    top = groups[plan.group_id]
    parts = [a.group_id for b in top.buckets for a in b.actions if isinstance(a, Group)]
    assert len(parts) == len(top.buckets) >= 2 and set(groups) == {plan.group_id, *parts}
    for gid, body in state.state.groups.items():
        # group-desc reports it: the entry fits its 16-bit length and a reply of its own;
        # the group mod in its bundle add message (16 + 8 + body) fits that one's
        assert len(body) + MULTIPART_HEADER <= 0xFFFF
        assert len(messages.RawMessage(messages.OFPT_GROUP_MOD, body).bundle_add(1, 1, 0)) <= 0xFFFF
        assert own.is_lbaffd_group(gid)
        assert groups[gid].selection_method == "hash"
        assert groups[gid].fields == (("ipv6_src",) if v6 else ("ipv4_src",))
    assert all(not own.is_vip_group(p) for p in parts)
    # the same buckets (ids and order) as one group would have, spread evenly
    assert list(flatten(groups, plan.group_id)) == [bid for bid, _ in plan.buckets]
    sizes = [len(groups[p].buckets) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    # two levels never share one hash: the top has a basis of its own
    assert top.selection_param == groupsplit.TOP_PARAM
    assert {groups[p].selection_param for p in parts} == {0}
    # the fewest parts that fit: one part fewer would not
    sizes_ = [len(messages.encode_bucket(b)) for p in parts for b in groups[p].buckets]
    fixed = len(messages.group_add(GroupSpec(1, (), "hash", groups[parts[0]].fields)).body)
    fewer = groupsplit.slices(n, len(parts) - 1)
    assert len(parts) == 2 or max(fixed + sum(sizes_[s:e]) for s, e in fewer) > (
        groupsplit.GROUP_BODY_LIMIT)


def test_split_dp_hash_vip_hashes_the_connection_at_both_levels() -> None:
    state = compile_(parsed(lb("a", {"10.0.0.1:80": backends(1500)}),
                            lb("b", {"10.0.0.2": backends(1500, first=5000, port="")})))
    by_vip = {p.vip.key: p for p in state.vips}
    groups = groups_of(state)
    fields = {"10.0.0.1:80": ("ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst"),
              "10.0.0.2": ("ipv4_src", "ipv4_dst")}  # IP-only: no ports
    for key, plan in by_vip.items():
        top = groups[plan.group_id]
        assert top.selection_method == "hash" and top.fields == fields[key]
        for b in top.buckets:
            part = groups[b.actions[0].group_id]  # type: ignore[union-attr]
            assert part.selection_method == "hash" and part.fields == fields[key]


def test_split_is_deterministic_and_stable_under_a_backend_change() -> None:
    """Same inputs, same bytes (a restart sends nothing); one backend more
    moves at most one bucket across each part boundary."""
    rows = lb("a", {"10.0.0.1:80": backends(3000)}, {"affinity_timeout": "60"})
    a, b = compile_(parsed(rows)), compile_(parsed(rows))
    assert a.state == b.state
    grown = compile_(parsed(lb("a", {"10.0.0.1:80": backends(3001)},
                               {"affinity_timeout": "60"})))

    def where(state: DesiredState) -> dict[int, int]:
        groups = groups_of(state)
        top = groups[state.vips[0].group_id]
        return {bid: j for j, b in enumerate(top.buckets)
                for bid in flatten(groups, b.actions[0].group_id)}  # type: ignore[union-attr]

    before, after = where(a), where(grown)
    moved = [bid for bid, j in before.items() if after[bid] != j]
    assert len(after) == len(before) + 1
    assert len(moved) <= len(set(before.values())) - 1


def test_templates_route_large_vips_through_the_stages() -> None:
    """Many large VIPs of one shape compile to the same state with and
    without templates (the templates fill groups bucket by bucket)."""
    rows = [lb(f"lb{i}", {f"10.0.0.{i + 1}:80": backends(900, first=1000 * i)},
               {"affinity_timeout": "60"}) for i in range(3)]
    rows += [lb(f"small{i}", {f"10.0.1.{i + 1}:80": backends(3, first=9000 + 4 * i)},
                {"affinity_timeout": "60"}) for i in range(4)]
    lbs = parsed(*rows)
    templated = compile_(lbs, VipCache())
    assert templated == compile_(lbs, VipCache(templates=False))
    assert len(templated.state.groups) == 3 * 3 + 4


def test_a_vip_too_large_for_every_part_is_left_out_alone() -> None:
    groupsplit.set_limit(2048)  # ~24 buckets a group: 16 parts hold ~390
    lbs = parsed(lb("big", {"10.0.0.1:80": backends(600)}, {"affinity_timeout": "60"}),
                 lb("ok", {"10.0.0.2:80": backends(300, first=1000)}, {"affinity_timeout": "60"}))
    state = compile_(lbs)
    assert [p.lb.name for p in state.vips] == ["ok"]
    issue, = state.issues
    assert (issue.lb, issue.vip, issue.reason) == ("big", "10.0.0.1:80", isolation.GROUP_TOO_LARGE)
    ok_groups = groups_of(state)
    assert len(ok_groups) > 2 and all(len(b) <= 2048 for b in state.state.groups.values())
    # nothing of the big VIP is in the state
    big = own.owner_cookie(own.vip_owner("big", "10.0.0.1:80"))
    assert big not in state.owners


def test_part_group_id_clash_leaves_the_second_vip_out() -> None:
    groupsplit.set_limit(4096)
    lbs = parsed(lb("a", {"10.0.0.1:80": backends(100)}, {"affinity_timeout": "60"}),
                 lb("b", {"10.0.0.2:80": backends(100, first=1000)}, {"affinity_timeout": "60"}))
    owners = vip_owners(lbs, TOPO)
    # two VIP ids whose slots agree in their low 24 bits: their parts' ids meet
    ids = {owners[0]: own.GROUP_ID_MIN + 5, owners[1]: own.GROUP_ID_MIN + (1 << 24) + 5}
    state = compile_(lbs, ids=ids)
    assert [p.lb.name for p in state.vips] == ["a"]
    assert [(i.lb, i.reason) for i in state.issues] == [("b", isolation.GROUP_ID_CLASH)]


def test_part_ids_are_in_their_own_range() -> None:
    for gid in (own.GROUP_ID_MIN, own.GROUP_ID_MAX, own.GROUP_ID_MIN + 0x123456):
        ids = {groupsplit.part_group_id(gid, j) for j in range(groupsplit.MAX_PARTS)}
        assert len(ids) == groupsplit.MAX_PARTS
        assert all(own.PART_GROUP_MIN <= i <= own.PART_GROUP_MAX for i in ids)
        assert not any(own.is_vip_group(i) for i in ids)


def test_the_limit_is_the_tighter_of_group_desc_and_bundle_add() -> None:
    """A body of exactly the limit is reported by group-desc and fits a
    bundle add; one byte more fails one of them."""
    limit = groupsplit.GROUP_BODY_LIMIT
    assert limit + MULTIPART_HEADER <= 0xFFFF
    biggest = messages.RawMessage(messages.OFPT_GROUP_MOD, bytes(limit))
    assert len(biggest.bundle_add(1, 1, 0)) == 0xFFFF
    with pytest.raises(struct.error):
        messages.RawMessage(messages.OFPT_GROUP_MOD, bytes(limit + 1)).bundle_add(1, 1, 0)


def test_no_bucket_exceeds_the_bound_that_skips_measuring() -> None:
    """``may_split`` trusts ``MAX_BUCKET_BYTES``: the largest bucket lbaffd
    writes (IPv6 backend with a port, the largest ids) stays within it, and so
    do the largest properties (a method name and four IPv6/L4 fields)."""
    from lbaffd.openflow.flowspec import Bucket, Ct, Nat
    big = Bucket(0x7FFFFFFF, (Ct(commit=True, zone_field="reg13", table=255,
                                 nat=Nat(kind="dst", ip_min="ffff:" * 7 + "ffff",
                                         port_min=65535, port_max=65535),
                                 mark=own.GROUP_ID_MAX),))
    assert len(messages.encode_bucket(big)) <= groupsplit.MAX_BUCKET_BYTES
    props = messages.selection_method_property(
        "dp_hash", groupsplit.TOP_PARAM, ("ipv6_src", "ipv6_dst", "sctp_src", "sctp_dst"))
    assert len(props) <= 128


def test_a_vip_too_large_is_not_compiled_again_while_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding a VIP too large costs a compile of all its buckets: the cache
    remembers the failure for the passes that see the same plan."""
    from lbaffd.compile import state as compiler
    calls: list[str] = []
    real = compiler.compile_vip

    def counting(plan, p, max_idle, topo):  # type: ignore[no-untyped-def]
        calls.append(plan.lb.name)
        return real(plan, p, max_idle, topo)

    monkeypatch.setattr(compiler, "compile_vip", counting)
    groupsplit.set_limit(2048)
    lbs = parsed(lb("big", {"10.0.0.1:80": backends(600)}, {"affinity_timeout": "60"}),
                 lb("ok", {"10.0.0.2:80": backends(3, first=1000)}, {"affinity_timeout": "60"}))
    cache = VipCache(templates=False)
    first = compile_(lbs, cache)
    second = compile_(lbs, cache)
    assert first.issues == second.issues and [i.reason for i in first.issues] == [
        isolation.GROUP_TOO_LARGE]
    assert calls == ["big", "ok"]  # each compiled once over two passes
    grown = parsed(lb("big", {"10.0.0.1:80": backends(601)}, {"affinity_timeout": "60"}),
                   lb("ok", {"10.0.0.2:80": backends(3, first=1000)}, {"affinity_timeout": "60"}))
    compile_(grown, cache)
    assert calls == ["big", "ok", "big"]  # a changed row is tried again
