"""Apply a change of a few load balancers to the last desired state.

A full pass costs O(N) (read, parse, compile, diff every LB); a change to one
LB should cost O(that LB).  ``DesiredIndex`` keeps the last desired state
indexed by owner: each VIP's own flows and group, which VIPs need each shared
flow (ARP/ND responder, hairpin, backend MAC rewrite) and which VIP holds
each (datapath, VIP, protocol) slot.  ``apply`` removes the changed LBs' old
VIPs, adds their new ones and returns the ChangeSet of just the affected
flows and groups.

It declines (returns None, and the caller does a full pass) whenever the
result could depend on other LBs: a VIP slot that another LB holds or that
was contested, or a conflict inside the LB itself.  Everything else about the
world (topology, health, settings) is the caller's to hold still: only
Load_Balancer rows may have changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from lbaffd.compile import isolation
from lbaffd.compile.layout import Pipeline
from lbaffd.compile.stages import FlowBuilder, port_flows
from lbaffd.compile.state import DesiredState, VipCache
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer, ParseIssue
from lbaffd.model.plan import Slot, VipPlan, plan_vips, replan
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow.packed import (
    FlowBody,
    FlowId,
    GroupBody,
    PackedState,
    cookie,
    flow_id,
    pack_flow,
)
from lbaffd.reconcile.diff import ChangeSet, diff

_K = TypeVar("_K")
_V = TypeVar("_V")


def _port_flows(ports: Iterable[LocalPort], pipeline: Pipeline
                ) -> dict[FlowId, tuple[own.OwnerKey, FlowBody]]:
    b = FlowBuilder()
    for port in ports:
        port_flows(b, pipeline, port.ofport, port.logical_port, port.datapath.tunnel_key)
    out: dict[FlowId, tuple[own.OwnerKey, FlowBody]] = {}
    for spec in b.flows.values():
        body = pack_flow(spec)
        out[flow_id(body)] = (b.owners[spec.cookie], body)
    return out


class _GroupsTaken(Mapping[int, GroupBody]):
    """The group ids other VIPs hold while a step compiles: the installed
    groups less those leaving, plus what the step compiled so far (a view:
    a step costs O(its VIPs), not a copy of every group id)."""

    def __init__(self, groups: Mapping[int, GroupBody], leaving: set[int]) -> None:
        self._groups = groups
        self._leaving = leaving
        self.added: dict[int, GroupBody] = {}

    def __getitem__(self, gid: int) -> GroupBody:
        if gid in self.added:
            return self.added[gid]
        if gid in self._leaving:
            raise KeyError(gid)
        return self._groups[gid]

    def __contains__(self, gid: object) -> bool:
        return gid in self.added or (gid not in self._leaving and gid in self._groups)

    def __iter__(self) -> Iterator[int]:
        yield from self.added
        yield from (g for g in self._groups if g not in self._leaving and g not in self.added)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _adopted(m: Mapping[_K, _V]) -> dict[_K, _V]:
    return m if isinstance(m, dict) else dict(m)


class DesiredIndex:
    """Mutable index over one desired state; owned by the reconciler, valid
    only while the switch holds exactly that state."""

    def __init__(self, desired: DesiredState, group_ids: Mapping[own.OwnerKey, int],
                 adopt: bool = False) -> None:
        """``adopt``: take ``desired``'s dicts instead of copying them (no
        second 80k-entry dict at the end of a big pass); the caller must then
        use ``desired()``, not ``desired``, which the index goes on changing."""
        own_ = _adopted if adopt else dict
        self.flows: dict[FlowId, FlowBody] = own_(desired.state.flows)
        # the same flows by audit slice (``ownership.audit_chunk`` of the cookie)
        self.chunks: list[dict[FlowId, FlowBody]] = [{} for _ in range(own.AUDIT_CHUNKS)]
        for k, f in self.flows.items():
            self.chunks[own.audit_chunk(cookie(f))][k] = f
        self.groups: dict[int, GroupBody] = own_(desired.state.groups)
        self.owners: dict[int, own.OwnerKey] = own_(desired.owners)
        # tuples, not sets: nearly every shared flow has one user (~200 bytes
        # a flow less at 20k shared flows); users of one flow are few
        self.refs: dict[FlowId, tuple[own.OwnerKey, ...]] = own_(desired.shared_refs)
        # how many shared flows an owner has, by its cookie, for owners of
        # more than one (absent: one): the owner's entry in ``owners`` goes
        # with its last flow, as a full compile would not have it.  Kept, the
        # owner of every address a VIP or a local backend ever had stayed
        # until the next full pass (``test_random_changes_match_a_full_compile``).
        counts: dict[int, int] = {}
        for fid in self.refs:
            body = self.flows.get(fid)
            if body is not None:
                c = cookie(body)
                counts[c] = counts.get(c, 0) + 1
        self._shared_flows = {c: n for c, n in counts.items() if n > 1}
        self.slots: dict[Slot, own.OwnerKey] = own_(desired.slots)
        self.contested: frozenset[Slot] = desired.contested
        self.plans: dict[own.OwnerKey, VipPlan] = {p.owner: p for p in desired.vips}
        self.by_lb: dict[str, list[own.OwnerKey]] = {}
        for p in desired.vips:
            self.by_lb.setdefault(p.lb.uuid, []).append(p.owner)
        self.conflicted = {i.lb for i in desired.issues if i.reason == "vip_conflict"}
        self.issues = desired.issues
        self.group_ids: dict[own.OwnerKey, int] = dict(group_ids)
        self.taken: set[int] = set(self.group_ids.values())
        # the plans the last ``apply`` took out, each with its successor (None:
        # the VIP went): whose backends may have left (``ctflush``)
        self.replaced: tuple[tuple[VipPlan, VipPlan | None], ...] = ()
        # the plans it put in: successors and new VIPs (``ReconcileResult.vip_change``)
        self.came: tuple[VipPlan, ...] = ()

    def desired(self) -> DesiredState:
        """The current state as a DesiredState (the dicts are shared, not copied)."""
        return DesiredState(PackedState(self.flows, self.groups), self.owners,
                            tuple(self.plans.values()), self.issues)

    def apply(self, changed: Mapping[str, LoadBalancer | None], topo: Topology,
              pipeline: Pipeline, cache: VipCache, max_idle: int, distribution: str,
              min_slots: int, old_topo: Topology | None = None,
              ports: bool = False) -> ChangeSet | None:
        """``old_topo``: the topology the current state was compiled with, when
        ``topo`` differs from it (then the changed LBs' old parts are found
        with it; an LB whose backends' MACs, health or locality changed must
        be in ``changed``).  ``ports``: the local ports changed (their
        classifier flows are swapped; a pipeline whose VIP flows depend on
        the local ports declines)."""
        was = topo if old_topo is None else old_topo
        if ports and pipeline.layout.vips_follow_ports:
            return None
        with cache.step():
            return self._apply(changed, topo, was, pipeline, cache, max_idle, distribution,
                               min_slots, ports)

    def _apply(self, changed: Mapping[str, LoadBalancer | None], topo: Topology,
               was: Topology, pipeline: Pipeline, cache: VipCache, max_idle: int,
               distribution: str, min_slots: int, ports: bool) -> ChangeSet | None:
        new_plans = self._plan(changed, topo, distribution, min_slots)
        if new_plans is None:
            return None
        # a VIP that cannot be compiled is left out by a full pass, which
        # reports it (``isolation``): decline before touching anything
        compiled: list[ParseIssue] = []
        # (the parts installed now were compiled with the old topology: cached)
        leaving = {gid for uuid in changed for owner in self.by_lb.get(uuid, [])
                   for gid, _ in cache.get(self.plans[owner], pipeline, max_idle, was).groups()}
        taken = _GroupsTaken(self.groups, leaving)
        if was is not topo:  # a VIP whose backends' health or locality alone changed:
            for plan in new_plans:  # derived from its part, not compiled
                old = self.plans.get(plan.owner)
                if old is not None:
                    cache.derive(old, plan, pipeline, max_idle, was, topo)
        for plan in new_plans:
            part = isolation.compile_part(cache, plan, pipeline, max_idle, topo, taken, compiled)
            if part is None:
                return None
            taken.added.update(part.groups())
        touched_flows: set[FlowId] = set()
        touched_groups: set[int] = set()
        old_flows: dict[FlowId, FlowBody] = {}
        old_groups: dict[int, GroupBody] = {}

        def remember(keys: set[FlowId], gids: set[int]) -> None:
            for k in keys - touched_flows:
                if k in self.flows:
                    old_flows[k] = self.flows[k]
            for g in gids - touched_groups:
                if g in self.groups:
                    old_groups[g] = self.groups[g]
            touched_flows.update(keys)
            touched_groups.update(gids)

        keep = {p.owner for p in new_plans}  # VIPs that stay keep their group id
        removed: list[VipPlan] = []
        for uuid in changed:  # out with the old VIPs
            for owner in self.by_lb.pop(uuid, []):
                plan = self.plans.pop(owner)
                part = cache.get(plan, pipeline, max_idle, was)
                remember({*part.flow_ids, *(fid for _, fid, _ in part.shared)},
                         {gid for gid, _ in part.groups()})
                for fid in part.flow_ids:
                    self._drop(fid)
                for gid, _ in part.groups():
                    del self.groups[gid]
                for _, fid, _ in part.shared:
                    users = self.refs.get(fid)
                    if users is not None:
                        users = tuple(u for u in users if u != owner)
                        if users:
                            self.refs[fid] = users
                        else:
                            del self.refs[fid]
                            self._drop_shared(fid)
                for tk in plan.datapaths:
                    self.slots.pop((tk, plan.vip.endpoint, plan.vip.protocol), None)
                if owner not in keep:
                    self.taken.discard(self.group_ids.pop(owner))
                    self.owners.pop(own.owner_cookie(owner), None)
                removed.append(plan)
        for plan in new_plans:  # in with the new
            part = cache.get(plan, pipeline, max_idle, topo)
            remember({*part.flow_ids, *(fid for _, fid, _ in part.shared)},
                     {gid for gid, _ in part.groups()})
            for fid, body in zip(part.flow_ids, part.flows, strict=True):
                self._put(fid, body)
            for gid, g in part.groups():
                self.groups[gid] = g
            self.owners[own.owner_cookie(plan.owner)] = plan.owner
            for shared_owner, fid, body in part.shared:
                c = cookie(body)
                if fid not in self.flows:
                    self._put(fid, body)
                    if c in self.owners:  # the owner's second flow or more
                        self._shared_flows[c] = self._shared_flows.get(c, 1) + 1
                self.owners[c] = shared_owner
                users = self.refs.get(fid, ())
                if plan.owner not in users:
                    self.refs[fid] = (*users, plan.owner)
            self.plans[plan.owner] = plan
            self.by_lb.setdefault(plan.lb.uuid, []).append(plan.owner)
            for tk in plan.datapaths:
                self.slots[(tk, plan.vip.endpoint, plan.vip.protocol)] = plan.owner
        if ports:
            self._swap_ports(was, topo, pipeline, remember)
        self.replaced = tuple((plan, self.plans.get(plan.owner)) for plan in removed)
        self.came = tuple(new_plans)
        cache.forget(removed, new_plans, pipeline, max_idle, was, topo)
        new = PackedState({k: self.flows[k] for k in touched_flows if k in self.flows},
                          {g: self.groups[g] for g in touched_groups if g in self.groups})
        return diff(new, PackedState(old_flows, old_groups))

    def _swap_ports(self, was: Topology, topo: Topology, pipeline: Pipeline,
                    remember: Callable[[set[FlowId], set[int]], None]) -> None:
        """The classifier flows of the local ports that changed: out with the
        old, in with the new (O(those ports): a port's flows depend on it alone)."""
        old_ports, new_ports = set(was.local_ports), set(topo.local_ports)
        # by logical port (its flows share one owner, whichever ofports it has)
        moved = {p.logical_port for p in old_ports ^ new_ports}
        before = _port_flows((p for p in was.local_ports if p.logical_port in moved), pipeline)
        after = _port_flows((p for p in topo.local_ports if p.logical_port in moved), pipeline)
        remember(set(before) | set(after), set())
        for fid, (_, old) in before.items():
            if fid not in after:
                self._drop(fid)
            if fid not in after or cookie(after[fid][1]) != cookie(old):
                self.owners.pop(cookie(old), None)
        for fid, (owner, new) in after.items():
            self._put(fid, new)
            self.owners[cookie(new)] = owner

    def _put(self, fid: FlowId, body: FlowBody) -> None:
        old = self.flows.get(fid)
        if old is not None and cookie(old) != cookie(body):
            self.chunks[own.audit_chunk(cookie(old))].pop(fid, None)
        self.flows[fid] = body
        self.chunks[own.audit_chunk(cookie(body))][fid] = body

    def _drop_shared(self, fid: FlowId) -> None:
        """A shared flow whose last user went: out, and its owner with it when
        that was the owner's last flow."""
        body = self.flows.get(fid)
        self._drop(fid)
        if body is None:
            return
        c = cookie(body)
        left = self._shared_flows.pop(c, 1) - 1
        if left > 1:
            self._shared_flows[c] = left
        elif left == 0:
            self.owners.pop(c, None)

    def _drop(self, fid: FlowId) -> None:
        old = self.flows.pop(fid, None)
        if old is not None:
            self.chunks[own.audit_chunk(cookie(old))].pop(fid, None)

    def _plan(self, changed: Mapping[str, LoadBalancer | None], topo: Topology,
              distribution: str, min_slots: int) -> list[VipPlan] | None:
        """The changed LBs' new VIP plans, or None if they depend on other LBs."""
        plans: list[VipPlan] = []
        for uuid, lb in changed.items():
            for owner in self.by_lb.get(uuid, []):
                old = self.plans[owner]
                if any((tk, old.vip.endpoint, old.vip.protocol) in self.contested
                       for tk in old.datapaths):
                    return None  # someone waits for this slot: full pass decides
            if lb is None:
                continue
            if (lb.name or lb.uuid) in self.conflicted:
                return None
            planned, issues = plan_vips((lb,), topo)
            if issues:
                return None
            for _, vip, dps in planned:
                for tk in dps:
                    holder = self.slots.get((tk, vip.endpoint, vip.protocol))
                    if holder is not None and self.plans[holder].lb.uuid != uuid:
                        return None  # would conflict with another LB
                owner = own.vip_owner(lb.uuid, vip.key)
                if owner not in self.group_ids:
                    self.group_ids[owner] = own.allocate_one(owner, self.taken)
                plans.append(replan(self.plans.get(owner), lb, vip, dps, topo,
                                    self.group_ids, distribution, min_slots))
        return plans
