"""One VIP's part of the switch: what it puts there, compiled through the stages.

``compile_vip`` is the reference: it runs the pipeline stages for one VIP
(FlowSpecs) and encodes the result (``packed``).  ``templates`` produces the
very same parts for VIPs shaped like one compiled before, from bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lbaffd.compile import groupsplit
from lbaffd.compile.entry import entry_of
from lbaffd.compile.layout import Pipeline
from lbaffd.compile.stages import (
    FlowBuilder,
    addr_text,
    affinity_flows,
    forward_flow,
    hairpin_flows,
    hairpin_reply,
    hairpin_unsnat,
    vip_bucket,
    vip_flows,
    vip_group,
)
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import Endpoint, IPAddress
from lbaffd.model.plan import VipPlan, bucket_weights
from lbaffd.model.topology import Topology
from lbaffd.openflow import messages
from lbaffd.openflow.packed import FlowBody, FlowId, GroupBody, flow_id, pack_flow, pack_group


@dataclass(frozen=True, slots=True)
class VipPart:
    """What one VIP puts on the switch, encoded (``packed``): its own flows
    and group (its cookie), and the shared flows it needs (other cookies;
    other VIPs may need them too) with their owners."""

    flow_ids: tuple[FlowId, ...]
    flows: tuple[FlowBody, ...]  # in flow_ids order
    group_id: int
    group: GroupBody
    shared: tuple[tuple[own.OwnerKey, FlowId, FlowBody], ...]
    # a VIP too large for one group: its part groups (``groupsplit``), which
    # ``group`` (the VIP's own id) selects from
    parts: tuple[tuple[int, GroupBody], ...] = ()

    def groups(self) -> tuple[tuple[int, GroupBody], ...]:
        """Every group of the VIP, parts first (what the top group names)."""
        return (*self.parts, (self.group_id, self.group))


def compile_vip(plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology) -> VipPart:
    own_flows = FlowBuilder()
    vip_flows(own_flows, p, plan, max_idle, topo.local_ips)
    shared = FlowBuilder()
    vip, lb = plan.vip, plan.lb
    ip = addr_text(vip.endpoint.ip)
    snat = addr_text(lb.hairpin_source(vip.endpoint))
    entry = entry_of(p)  # how the VIP's traffic comes in, in this mode
    entry.vip(own_flows, shared, p, plan, topo, snat)
    for tk in plan.datapaths:
        entry.datapath(shared, p, tk, ip, snat)
        hairpin_reply(shared, p, tk, ip)
        entry.unsnat(shared, p, tk, snat)
        hairpin_unsnat(shared, p, tk, snat)
        for be in vip.backends:
            mac = topo.macs.get((tk, be.ip))
            if mac is not None:
                forward_flow(shared, p, tk, addr_text(be.ip), mac)
    bodies = tuple(map(pack_flow, own_flows.flows.values()))
    *parts, group = own_flows.groups  # the VIP's own group last
    return VipPart(tuple(map(flow_id, bodies)), bodies, group.group_id, pack_group(group),
                   _shared_flows(shared),
                   tuple((g.group_id, pack_group(g)) for g in parts))


def _shared_flows(b: FlowBuilder) -> tuple[tuple[own.OwnerKey, FlowId, FlowBody], ...]:
    """The shared flows ``b`` holds, encoded, each with its owner and id."""
    return tuple((b.owners[f.cookie], flow_id(body), body)
                 for f in b.flows.values() for body in (pack_flow(f),))


def relocated(part: VipPart, plan: VipPlan, p: Pipeline, was_local: frozenset[IPAddress],
              now_local: frozenset[IPAddress]) -> VipPart:
    """``part``, compiled when ``was_local`` were the local ports' addresses,
    as ``compile_vip`` makes it when they are ``now_local``, all else equal.

    Of everything a VIP puts on the switch only its hairpin SNAT flows
    depend on which backends are local ports (``stages.vip_flows``): a pod
    plugged in here that backs 20 VIPs changed one flow of each, and
    compiling the 20 VIPs again (groups of up to 256 buckets) was most of
    that change's time at N=5000 (issue 17).  (``derived`` with the plan
    unchanged; ``tests/unit/test_relocate.py`` holds it equal to
    ``compile_vip``.)"""
    out = derived(part, plan, plan, p, 0, was_local, now_local, None)
    assert out is not None  # (only a change of the live backends declines)
    return out


def derived(part: VipPart, was: VipPlan, plan: VipPlan, p: Pipeline, max_idle: int,
            was_local: frozenset[IPAddress], now_local: frozenset[IPAddress],
            topo: Topology | None) -> VipPart | None:
    """``part``, compiled for ``was`` when ``was_local`` were the local ports'
    addresses, as ``compile_vip`` makes it for ``plan`` under ``topo`` (whose
    ``local_ips`` are ``now_local``), when the two plans differ at most in
    which backends are live (a health check flipped) and the topologies at
    most in which addresses are local ports (the caller checks the rest: the
    compile cache's keys).  None when it cannot be derived: a live set empty
    before or after (the dispatch flows change), a group that may need parts,
    a part not laid out as ``compile_vip`` lays it out.

    A health flip of a backend of a 100-backend VIP changes two of its ~200
    own flows (affinity) and its group; compiling the whole VIP again was
    most of the flip's time at N=5000 (issue 17).  What depends on which
    backends are live or local, in ``compile_vip``'s order: the own flows
    are the dispatch flows (one per datapath), the hairpin SNAT flows
    (``stages.hairpin_flows``: per datapath, per live backend that is a local
    port), for an affinity VIP its miss flow then two flows per live backend
    (``stages.affinity_flows``), then the entry's own flows; the shared flows
    start with the entry's that follow the live backends (``EntryStages.live``,
    given ``topo``; with ``topo`` None the live backends must not change).
    Everything else is taken from ``part``: the flows each of these builders
    made for ``was`` are found where that order puts them, checked by id."""
    if was is not plan and replace(plan, live_backends=was.live_backends, buckets=was.buckets,
                                   expected_shares=was.expected_shares) != was:
        return None
    live_changed = was.live_backends != plan.live_backends
    if live_changed and (
            topo is None or part.parts or not was.live_backends or not plan.live_backends
            or groupsplit.may_split(len(plan.buckets))):
        return None
    flows = list(zip(part.flow_ids, part.flows, strict=True))
    at = len(plan.datapaths)  # after the dispatch flows
    hairpinned = [be for be in was.live_backends if be.ip in was_local]
    if hairpinned == [be for be in plan.live_backends if be.ip in now_local]:
        # (the same flows: a health flip of a backend that is no local port)
        came = gone = flows[at:at + len(plan.datapaths) * len(hairpinned)]
    else:
        gone = _hairpins(p, was, was_local)
        if [fid for fid, _ in flows[at:at + len(gone)]] != [fid for fid, _ in gone]:
            return None
        came = _hairpins(p, plan, now_local)
    out = [*flows[:at], *came]
    at += len(gone)
    if live_changed and plan.lb.affinity_timeout is not None:
        if len(flows) < at + 1 + 2 * len(was.live_backends):
            return None
        out.append(flows[at])  # the miss flow
        at += 1
        pairs = {be: flows[at + 2 * i:at + 2 * i + 2] for i, be in enumerate(was.live_backends)}
        at += 2 * len(was.live_backends)
        now_live = set(plan.live_backends)
        # the pairs going, or else the first, are where they should be?
        checked = [be for be in was.live_backends if be not in now_live] or [
            was.live_backends[0]]
        if any(pairs[be] != _affinity_pair(p, was, be, max_idle) for be in checked):
            return None
        for be in plan.live_backends:
            out += pairs.get(be) or _affinity_pair(p, plan, be, max_idle)
    out += flows[at:]
    group, shared = part.group, part.shared
    if live_changed:
        assert topo is not None
        group = _regrouped(part.group, was, plan, p) or pack_group(vip_group(p, plan))
        snat = addr_text(plan.lb.hairpin_source(plan.vip.endpoint))
        before = _live_shared(p, was, topo, snat)
        if [fid for _, fid, _ in shared[:len(before)]] != [fid for _, fid, _ in before]:
            return None
        shared = (*_live_shared(p, plan, topo, snat),
                  *shared[len(before):])
    return VipPart(tuple(fid for fid, _ in out), tuple(body for _, body in out),
                   part.group_id, group, shared, part.parts)


def _regrouped(group: GroupBody, was: VipPlan, plan: VipPlan, p: Pipeline) -> GroupBody | None:
    """The group of ``plan`` made from ``was``'s (``group``): a bucket of the
    same id and backend keeps its bytes (the same DNAT) with its new weight,
    the others are encoded; None when ``group`` does not hold ``was``'s
    buckets.  Encoding every bucket again (its actions through the encoder)
    was most of a derived part's time."""
    old, props = messages.split_group_mod(group)
    if len(old) != len(was.buckets):
        return None
    have = dict(zip(was.buckets, old, strict=True))  # (bucket id, backend) -> its bytes
    out = []
    for (bid, be), weight in zip(plan.buckets, bucket_weights(plan.buckets), strict=True):
        bucket = have.get((bid, be))
        out.append(messages.with_bucket_weight(bucket, weight) if bucket is not None
                   else messages.encode_bucket(vip_bucket(p, plan, bid, be, weight)))
    return messages.join_group_mod(plan.group_id, b"".join(out), props)


def _encoded(b: FlowBuilder) -> list[tuple[FlowId, FlowBody]]:
    return [(flow_id(body), body) for body in map(pack_flow, b.flows.values())]


def _hairpins(p: Pipeline, plan: VipPlan, local: frozenset[IPAddress]
              ) -> list[tuple[FlowId, FlowBody]]:
    b = FlowBuilder()
    hairpin_flows(b, p, plan, local)
    return _encoded(b)


def _affinity_pair(p: Pipeline, plan: VipPlan, be: Endpoint, max_idle: int
                   ) -> list[tuple[FlowId, FlowBody]]:
    b = FlowBuilder()
    affinity_flows(b, p, plan, be, max_idle)
    return _encoded(b)


def _live_shared(p: Pipeline, plan: VipPlan, topo: Topology, snat: str
                 ) -> tuple[tuple[own.OwnerKey, FlowId, FlowBody], ...]:
    """The entry's shared flows that follow the live backends (``EntryStages.live``)."""
    b = FlowBuilder()
    entry_of(p).live(b, p, plan, topo, snat)
    return _shared_flows(b)
