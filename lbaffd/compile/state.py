"""Model -> desired OpenFlow state: a pure function, see ``pipeline`` for the stages.

``compile_state`` is deterministic: the same model, topology and group ids give
the same ``DesiredState``, which is what makes a restart a no-op on the switch.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from lbaffd.compile import faults, isolation
from lbaffd.compile.entry import entry_of, local_port_flows
from lbaffd.compile.layout import Pipeline
from lbaffd.compile.shapes import Shape, VipTemplates
from lbaffd.compile.stages import FlowBuilder, static_flows
from lbaffd.compile.vip import VipPart, compile_vip, derived
from lbaffd.model import distribution as dist
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import MAX_OPENFLOW_IDLE_TIMEOUT, LoadBalancer, ParseIssue
from lbaffd.model.plan import BucketMemo, Planned, Slot, VipPlan, make_plan, plan_pass
from lbaffd.model.topology import Topology
from lbaffd.openflow.packed import (
    FlowBody,
    FlowId,
    GroupBody,
    PackedState,
    cookie,
    flow_id,
    pack_flow,
    unpack_flow,
)


@dataclass(frozen=True, slots=True)
class DesiredState:
    state: PackedState  # ``packed.unpack_flow``/``unpack_group`` decode its bodies
    owners: Mapping[int, own.OwnerKey]  # cookie -> owner key
    vips: tuple[VipPlan, ...]
    issues: tuple[ParseIssue, ...]
    # for incremental updates (see ``incremental``): which VIPs need each
    # shared flow (ARP/ND, hairpin, backend MAC), who holds each VIP slot, and
    # the slots more than one LB claims
    shared_refs: Mapping[FlowId, tuple[own.OwnerKey, ...]] = field(default_factory=dict)
    slots: Mapping[Slot, own.OwnerKey] = field(default_factory=dict)
    contested: frozenset[Slot] = frozenset()


def _topo_key(plan: VipPlan, topo: Topology, p: Pipeline) -> tuple[object, ...]:
    """What of the topology a VIP's part depends on: its backends' MACs and
    which of them are local ports (hairpin); in companion mode also the
    client ports it is intercepted on."""
    key = (tuple(topo.macs.get((tk, be.ip)) for tk in plan.datapaths
                 for be in plan.vip.backends),
           tuple(be.ip in topo.local_ips for be in plan.live_backends))
    return (*key, *entry_of(p).ports_key(plan, topo))


class VipCache:
    """A VIP's part by (plan, pipeline, idle cap, its backends' MACs): a VIP
    whose inputs did not change is not compiled again (most of a pass at 1000s
    of LBs).  Keeps only what the latest full pass used, plus what
    incremental passes add."""

    def __init__(self, templates: bool = True) -> None:
        self._parts: dict[tuple[object, ...], VipPart] = {}
        self._used: dict[tuple[object, ...], VipPart] = {}
        # VIPs that could not be compiled (``isolation``), kept like parts: a
        # VIP of 13000+ backends costs ~1 s to find too large, every full pass
        self._failed: dict[tuple[object, ...], Exception] = {}
        self._failed_used: dict[tuple[object, ...], Exception] = {}
        # VIPs shaped like one compiled before are filled in from its bytes
        self.templates = VipTemplates(compile_vip) if templates else None
        self.buckets = BucketMemo()  # plans of unchanged VIPs share their buckets
        self.derived = 0  # parts derived from another liveness's or locality's (``derive``)
        # during a ``step``: each plan's topology key, by topology (see there)
        self._keys: dict[tuple[VipPlan, int], tuple[object, ...]] | None = None
        # the shape each part above was looked up under (filled in from a
        # template, or compiled and counted towards one), kept and dropped
        # with its part: the shapes the VIPs kept have (``VipTemplates.retain``)
        self._shape_of: dict[tuple[object, ...], Shape] = {}
        self._shape_used: dict[tuple[object, ...], Shape] = {}

    @contextmanager
    def step(self) -> Iterator[None]:
        """An incremental step: no new template is made (it costs three
        compiles, for the few VIPs a step compiles once), and each plan's key
        under each topology is worked out once.  A step asks for a changed
        VIP's part up to seven times (its groups, derived, compiled, the old
        part out, the new in, forgotten) under two topologies, and a key
        looks up each backend's MAC on each datapath (hashing an ``ipaddress``
        is Python code): ~24 keys a health flip at N=5000 before, ~6 now.  The
        caller holds both topologies for the step, so their ids stay theirs."""
        learn = self.templates is not None and self.templates.learn
        if self.templates is not None:
            self.templates.learn = False
        self._keys = {}
        try:
            yield
        finally:
            self._keys = None
            if self.templates is not None:
                self.templates.learn = learn

    def _key(self, plan: VipPlan, topo: Topology, p: Pipeline) -> tuple[object, ...]:
        keys = self._keys
        if keys is None:
            return _topo_key(plan, topo, p)
        key = keys.get((plan, id(topo)))
        if key is None:
            key = keys[(plan, id(topo))] = _topo_key(plan, topo, p)
        return key

    def get(self, plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology) -> VipPart:
        key = (plan, p, max_idle, self._key(plan, topo, p))
        part = self._parts.get(key) or self._used.get(key)
        if part is not None:
            shape = self._shape_of.get(key)
            if shape is not None:
                self._shape_used[key] = shape
        else:
            failed = self._failed.get(key) or self._failed_used.get(key)
            if failed is not None:
                self._failed_used[key] = failed
                raise failed
            try:
                # parts of an entry by port hold the client ports, which
                # shapes do not mark
                if self.templates is not None and entry_of(p).templates:
                    part = self.templates.part(plan, p, max_idle, topo)
                    if self.templates.last_shape is not None:
                        self._shape_used[key] = self.templates.last_shape
                else:
                    part = compile_vip(plan, p, max_idle, topo)
            except Exception as exc:
                self._failed_used[key] = exc.with_traceback(None)  # no frames kept alive
                raise
            if faults.FAULTS:  # tests only (LBAFFD_TEST_FAULTS)
                part = faults.inject(plan, p, part)
        self._used[key] = part
        return _without(part, topo.foreign) if topo.foreign else part

    def derive(self, was_plan: VipPlan, plan: VipPlan, p: Pipeline, max_idle: int,
               was: Topology, topo: Topology) -> bool:
        """Derive the part of ``plan`` under ``topo`` from the part of
        ``was_plan`` cached under ``was`` when the two differ only in which
        backends are live (a health check flipped) and which are local ports
        (``vip.derived``: a few flows and the group, not a compile).  True
        when the part of ``plan`` under ``topo`` is cached now."""
        new_key = self._key(plan, topo, p)
        key = (plan, p, max_idle, new_key)
        if key in self._parts or key in self._used:
            return True
        old_key = self._key(was_plan, was, p)
        if old_key[0] != new_key[0] or old_key[2:] != new_key[2:]:
            return False  # a MAC or (companion) a client port changed too
        old = (was_plan, p, max_idle, old_key)
        part = self._used.get(old) or self._parts.get(old)
        if part is None:
            return False
        out = derived(part, was_plan, plan, p, max_idle, was.local_ips, topo.local_ips, topo)
        if out is None:
            return False
        self._used[key] = out
        self.derived += 1
        return True

    def forget(self, gone: Iterable[VipPlan], kept: Iterable[VipPlan], p: Pipeline,
               max_idle: int, was: Topology, topo: Topology) -> None:
        """Drop the parts of the VIPs an incremental step replaced (``gone``,
        under ``was``) but those the VIPs it put in (``kept``, under
        ``topo``) still use: a VIP of a changed LB whose own inputs did not
        change has the same key under both (full passes drop what they did
        not use in ``end_pass``).  Dropping those too made the next change of
        that LB compile its old part again, only to take it off."""
        kept = list(kept)
        keep = {(plan, p, max_idle, self._key(plan, topo, p)) for plan in kept}
        owners = {plan.owner for plan in kept}
        for plan in gone:
            if plan.owner not in owners:
                own.drop_vip_owners((plan.owner,))
            key = (plan, p, max_idle, self._key(plan, was, p))
            if key in keep:
                continue
            self._parts.pop(key, None)
            self._used.pop(key, None)
            self._failed.pop(key, None)
            self._failed_used.pop(key, None)
            self._shape_of.pop(key, None)
            self._shape_used.pop(key, None)

    def begin_pass(self) -> None:
        """A full pass starts: what steps added since the last one joins what
        that pass kept, to be used again or dropped at ``end_pass`` (kept
        apart, a part a step added for a VIP the next full pass no longer had
        stayed one full pass more, and its shape's template and its owner
        key with it)."""
        self._parts.update(self._used)
        self._failed.update(self._failed_used)
        self._shape_of.update(self._shape_used)
        self._used, self._failed_used, self._shape_used = {}, {}, {}

    def held(self) -> int:
        """Entries of the two generations (``memory/show``): the parts the
        last full pass kept and those used since (a part in both counts
        twice).  Plain ``len``s: the control thread asks while the worker
        may be adding."""
        return len(self._parts) + len(self._used)

    def end_pass(self) -> None:
        self._parts, self._used = self._used, {}
        self._failed, self._failed_used = self._failed_used, {}
        self._shape_of, self._shape_used = self._shape_used, {}
        self.buckets.end_pass()
        own.retain_vip_owners([plan.owner for plan, *_ in (*self._parts, *self._failed)
                               if isinstance(plan, VipPlan)])
        if self.templates is not None:
            self.templates.retain(set(self._shape_of.values()))


def _without(part: VipPart, foreign: frozenset[FlowId]) -> VipPart:
    """``part`` less the flows whose key another controller's flow has."""
    keep = [i for i, fid in enumerate(part.flow_ids) if fid not in foreign]
    if len(keep) == len(part.flow_ids) and not any(f in foreign for _, f, _ in part.shared):
        return part
    return replace(part, flow_ids=tuple(part.flow_ids[i] for i in keep),
                   flows=tuple(part.flows[i] for i in keep),
                   shared=tuple(s for s in part.shared if s[1] not in foreign))


class CompiledGroup(NamedTuple):
    """A group as soon as it is compiled (before any flow that names it)."""

    group_id: int
    body: GroupBody


class CompiledFlow(NamedTuple):
    """A flow as soon as it is compiled, once however many VIPs need it."""

    flow_id: FlowId
    body: FlowBody


Compiled = CompiledGroup | CompiledFlow


def compile_stream(
    lbs: tuple[LoadBalancer, ...],
    topo: Topology,
    group_ids: Mapping[own.OwnerKey, int],
    pipeline: Pipeline,
    max_idle: int = MAX_OPENFLOW_IDLE_TIMEOUT,
    distribution: str = dist.BALANCED,
    min_slots: int = 1,
    cache: VipCache | None = None,
    incumbents: frozenset[own.OwnerKey] = frozenset(),
    planned: Planned | None = None,
) -> Generator[Compiled, None, DesiredState]:
    """The desired state, compiled VIP by VIP: yields each ``CompiledGroup``
    and ``CompiledFlow`` as soon as it is compiled (a VIP's groups before its
    flows, every flow once), and returns the ``DesiredState``.

    The caller streams what is yielded (the reconciler diffs it and writes
    its bundle while the rest compiles: ovs-vswitchd checks the adds on its
    own core meanwhile); the compiler itself does no I/O.  ``max_idle`` caps
    learned idle timeouts (OpenFlow's is 16-bit); longer affinity timeouts are
    completed by the daemon when an entry idles out.  ``distribution`` is the
    default for dp_hash groups (an LB's ``options:distribution`` wins);
    ``min_slots`` is 1 for OVS <= 3.4, 4 after.  ``planned``: this pass's
    planning when the caller has it (else planned here)."""
    if planned is None:
        planned = plan_pass(lbs, topo, incumbents)
    issues = list(planned.issues)
    flows: dict[FlowId, FlowBody] = {}
    groups: dict[int, GroupBody] = {}

    def add(fid: FlowId, body: FlowBody) -> bool:
        """Whether ``body`` is new (to be handed on)."""
        if fid in topo.foreign:
            return False  # another controller's flow has this key: never replace it
        have = flows.get(fid)
        if have is None:
            flows[fid] = body
            return True
        if have != body:
            raise AssertionError(f"flow key clash: {unpack_flow(have)} vs {unpack_flow(body)}")
        return False

    b = FlowBuilder()
    layout = topo.ovn
    static_flows(b, pipeline, layout.output_table if layout is not None else None)
    for port in topo.local_ports:
        local_port_flows(b, pipeline, port, topo)
    owners = b.owners
    for spec in b.flows.values():
        body = pack_flow(spec)
        if add(fid := flow_id(body), body):
            yield CompiledFlow(fid, body)
    plans: list[VipPlan] = []
    refs: dict[FlowId, tuple[own.OwnerKey, ...]] = {}
    slots: dict[Slot, own.OwnerKey] = {}
    cache = cache or VipCache()
    cache.begin_pass()
    for lb, vip, dps in planned.vips:
        plan = make_plan(lb, vip, dps, topo, group_ids, distribution, min_slots, cache.buckets)
        # whatever goes wrong with one VIP leaves only that VIP out, before
        # anything of it is handed on (``isolation``)
        part = isolation.compile_part(cache, plan, pipeline, max_idle, topo, groups, issues)
        if part is None:
            continue
        plans.append(plan)
        for gid, g in part.groups():
            groups[gid] = g
            yield CompiledGroup(gid, g)
        for fid, body in zip(part.flow_ids, part.flows, strict=True):
            if add(fid, body):
                yield CompiledFlow(fid, body)
        owners[own.owner_cookie(plan.owner)] = plan.owner
        for shared_owner, fid, body in part.shared:
            if add(fid, body):
                yield CompiledFlow(fid, body)
            owners[cookie(body)] = shared_owner
            refs[fid] = (*refs.get(fid, ()), plan.owner)  # once per VIP: no duplicates
        for tk in dps:
            slots[(tk, vip.endpoint, vip.protocol)] = plan.owner
    cache.end_pass()
    return DesiredState(PackedState(flows, groups), dict(owners), tuple(plans), tuple(issues),
                        refs, slots, planned.contested)


def compile_state(
    lbs: tuple[LoadBalancer, ...],
    topo: Topology,
    group_ids: Mapping[own.OwnerKey, int],
    pipeline: Pipeline,
    max_idle: int = MAX_OPENFLOW_IDLE_TIMEOUT,
    distribution: str = dist.BALANCED,
    min_slots: int = 1,
    cache: VipCache | None = None,
    incumbents: frozenset[own.OwnerKey] = frozenset(),
    planned: Planned | None = None,
) -> DesiredState:
    """``compile_stream`` run to its end: the desired state alone."""
    return drain(compile_stream(lbs, topo, group_ids, pipeline, max_idle, distribution,
                                min_slots, cache, incumbents, planned))


def collect(stream: Generator[Compiled, None, DesiredState]
            ) -> tuple[list[Compiled], DesiredState]:
    """Everything a compile stream yields, in order, and what it returns."""
    items: list[Compiled] = []
    while True:
        try:
            items.append(next(stream))
        except StopIteration as done:
            return items, done.value


def drain(stream: Generator[Compiled, None, DesiredState]) -> DesiredState:
    """What a compile stream returns, once everything it yields is taken."""
    while True:
        try:
            next(stream)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
