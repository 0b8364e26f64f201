"""One VIP's part of the switch: what it puts there, compiled through the stages.

``compile_vip`` is the reference: it runs the pipeline stages for one VIP
(FlowSpecs) and encodes the result (``packed``).  ``templates`` produces the
very same parts for VIPs shaped like one compiled before, from bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbaffd.compile.entry import entry_of
from lbaffd.compile.layout import Pipeline
from lbaffd.compile.stages import (
    FlowBuilder,
    addr_text,
    forward_flow,
    hairpin_flows,
    hairpin_reply,
    hairpin_unsnat,
    vip_flows,
)
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import IPAddress
from lbaffd.model.plan import VipPlan
from lbaffd.model.topology import Topology
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
                   tuple(_shared(shared.owners[f.cookie], pack_flow(f))
                         for f in shared.flows.values()),
                   tuple((g.group_id, pack_group(g)) for g in parts))


def _shared(owner: own.OwnerKey, body: FlowBody) -> tuple[own.OwnerKey, FlowId, FlowBody]:
    return owner, flow_id(body), body


def relocated(part: VipPart, plan: VipPlan, p: Pipeline, was_local: frozenset[IPAddress],
              now_local: frozenset[IPAddress]) -> VipPart:
    """``part``, compiled when ``was_local`` were the local ports' addresses,
    as ``compile_vip`` makes it when they are ``now_local``, all else equal.

    Of everything a VIP puts on the switch only its hairpin SNAT flows
    depend on which backends are local ports (``stages.vip_flows``): a pod
    plugged in here that backs 20 VIPs changed one flow of each, and
    compiling the 20 VIPs again (groups of up to 256 buckets) was most of
    that change's time at N=5000 (issue 17).  The hairpin flows follow the
    VIP's dispatch flows, one per datapath (``vip_flows``' order, which
    ``tests/unit/test_relocate.py`` holds equal to ``compile_vip``)."""
    before, after = FlowBuilder(), FlowBuilder()
    hairpin_flows(before, p, plan, was_local)
    hairpin_flows(after, p, plan, now_local)
    gone = {flow_id(b) for b in map(pack_flow, before.flows.values())}
    kept = [(fid, body) for fid, body in zip(part.flow_ids, part.flows, strict=True)
            if fid not in gone]
    at = len(plan.datapaths)  # after the dispatch flows
    new = [(flow_id(body), body) for body in map(pack_flow, after.flows.values())]
    flows = (*kept[:at], *new, *kept[at:])
    return VipPart(tuple(fid for fid, _ in flows), tuple(body for _, body in flows),
                   part.group_id, part.group, part.shared, part.parts)
