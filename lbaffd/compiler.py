"""Model -> desired OpenFlow state: a pure function, see ``pipeline`` for the stages.

``compile_state`` is deterministic: the same model, topology and group ids give
the same ``DesiredState``, which is what makes a restart a no-op on the switch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from lbaffd import distribution as dist
from lbaffd import faults, isolation
from lbaffd import ownership as own
from lbaffd.model import (
    MAX_OPENFLOW_IDLE_TIMEOUT,
    Endpoint,
    LoadBalancer,
    ParseIssue,
    Vip,
)
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
from lbaffd.pipeline import (
    Pipeline,
)
from lbaffd.stages import (
    FlowBuilder,
    port_flows,
    reply_hook_flows,
    static_flows,
    vip_mac,
)
from lbaffd.templates import VipTemplates
from lbaffd.topology import Topology
from lbaffd.vippart import VipPart, compile_vip

__all__ = ["DesiredState", "VipCache", "VipPart", "VipPlan", "compile_state", "make_plan",
           "plan_vips", "vip_mac", "vip_owners"]



@dataclass(frozen=True, slots=True)
class VipPlan:
    """One VIP as realized: its owner, group, the datapaths it is on and the
    backends that take traffic (those a Service_Monitor reports down do not)."""

    lb: LoadBalancer
    vip: Vip
    owner: own.OwnerKey
    group_id: int
    datapaths: tuple[int, ...]  # tunnel keys
    live_backends: tuple[Endpoint, ...] = ()
    # the group's buckets in order: (bucket id, backend); a backend may have many
    buckets: tuple[tuple[int, Endpoint], ...] = ()
    distribution: str = dist.OVS_DEFAULT
    expected_shares: tuple[float, ...] = ()  # per live backend, in live_backends order
    # a plan keys the compile cache: hashing it walks the whole LB, so once
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        h = self._hash
        if not h:
            h = hash((self.lb, self.vip, self.owner, self.group_id, self.datapaths,
                      self.live_backends, self.buckets, self.distribution,
                      self.expected_shares)) or 1
            object.__setattr__(self, "_hash", h)
        return h

    def learned_cookie(self, backend: Endpoint) -> int:
        """Cookie of the affinity entries learned for ``backend`` of this VIP."""
        return own.learned_cookie((*self.owner, str(backend)))


Slot = tuple[int, Endpoint, str]  # (datapath tunnel key, VIP endpoint, protocol)


@dataclass(frozen=True, slots=True)
class DesiredState:
    state: PackedState  # ``state.specs()`` decodes it
    owners: Mapping[int, own.OwnerKey]  # cookie -> owner key
    vips: tuple[VipPlan, ...]
    issues: tuple[ParseIssue, ...]
    # for incremental updates (see ``incremental``): which VIPs need each
    # shared flow (ARP/ND, hairpin, backend MAC), who holds each VIP slot, and
    # the slots more than one LB claims
    shared_refs: Mapping[FlowId, tuple[own.OwnerKey, ...]] = field(default_factory=dict)
    slots: Mapping[Slot, own.OwnerKey] = field(default_factory=dict)
    contested: frozenset[Slot] = frozenset()


def group_buckets(backends: tuple[Endpoint, ...], mode: str) -> list[tuple[int, Endpoint]]:
    """The buckets of a VIP's group, in order.  ``balanced``: each backend
    ``256 // n`` times, interleaved (see ``distribution``); the bucket id of
    replica r of a backend is derived from both, so ids never shift when
    other backends come or go."""
    if dist.replicas(len(backends), mode) == 1:
        return sorted(bucket_ids(backends).items())
    ordered = sorted(backends)
    taken: set[int] = set()
    out: list[tuple[int, Endpoint]] = []
    for index, be_index in enumerate(dist.bucket_layout(len(ordered), mode)):
        replica = index // len(ordered)
        bid = _bucket_hash(f"{ordered[be_index]}#{replica}")
        while bid in taken:
            bid = (bid + 1) & 0x7FFFFFFF
        taken.add(bid)
        out.append((bid, ordered[be_index]))
    return out


def _bucket_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") & (
        0x7FFFFFFF)


def bucket_ids(backends: tuple[Endpoint, ...]) -> dict[int, Endpoint]:
    """A stable bucket id per backend, derived from the backend itself.

    OVS's ``hash`` selection method is rendezvous hashing over bucket ids, so
    ids that do not shift when another backend is added or removed keep every
    other client on its backend (minimal disruption).
    """
    out: dict[int, Endpoint] = {}
    for be in sorted(backends):
        bid = _bucket_hash(str(be))
        while bid in out:
            bid = (bid + 1) & 0x7FFFFFFF
        out[bid] = be
    return out


def _expected_shares(live: tuple[Endpoint, ...], buckets: tuple[tuple[int, Endpoint], ...],
                     mode: str, min_slots: int) -> tuple[float, ...]:
    """Each live backend's expected share of new connections: from OVS's dp_hash
    slot table for dp_hash groups, even for the client hash."""
    slots = dist.ovs_slots([1] * len(buckets), min_slots) if mode != "client-hash" else None
    if not live:
        return ()
    if slots is None:
        return tuple(1 / len(live) for _ in live)
    per: dict[Endpoint, int] = dict.fromkeys(live, 0)
    for (_, be), n in zip(buckets, slots, strict=True):
        per[be] += n
    total = sum(per.values())
    return tuple(per[be] / total for be in live)


def plan_vips(
    lbs: tuple[LoadBalancer, ...], topo: Topology,
    incumbents: frozenset[own.OwnerKey] = frozenset(),
) -> tuple[list[tuple[LoadBalancer, Vip, tuple[int, ...]]], list[ParseIssue]]:
    """Which VIP goes on which local datapath.  When two LBs claim the same
    (datapath, VIP, protocol), the one already realized (``incumbents``) keeps
    it, so a newly added conflicting LB never disturbs a working one; between
    newcomers the first by (name, uuid) wins.  The loser is reported."""
    planned, issues, _ = _plan_vips(lbs, topo, incumbents)
    return planned, issues


def _plan_vips(
    lbs: tuple[LoadBalancer, ...], topo: Topology, incumbents: frozenset[own.OwnerKey],
) -> tuple[list[tuple[LoadBalancer, Vip, tuple[int, ...]]], list[ParseIssue], set[Slot]]:
    local = topo.local_datapaths
    contested: set[Slot] = set()
    claimed: dict[tuple[int, Endpoint, str], str] = {}
    won: dict[tuple[str, str], tuple[int, ...]] = {}
    issues: list[ParseIssue] = []
    ordered = sorted(((lb, i, vip) for lb in lbs for i, vip in enumerate(lb.vips)),
                     key=lambda t: (own.vip_owner(t[0].uuid, t[2].key) not in incumbents,
                                    t[0].name, t[0].uuid, t[1]))
    for lb, _, vip in ordered:
        dps: list[int] = []
        for dp in lb.datapaths:
            if dp.tunnel_key not in local:
                continue
            slot = (dp.tunnel_key, vip.endpoint, vip.protocol)
            other = claimed.get(slot)
            if other is not None:
                contested.add(slot)
                issues.append(ParseIssue(lb.name or lb.uuid, "vip_conflict",
                                         f"VIP already served by LB {other} on datapath "
                                         f"{dp.tunnel_key}", vip=vip.key))
                continue
            claimed[slot] = lb.name or lb.uuid
            dps.append(dp.tunnel_key)
        if dps:
            won[(lb.uuid, vip.key)] = tuple(dps)
    out = [(lb, vip, won[(lb.uuid, vip.key)])
           for lb in sorted(lbs, key=lambda b: (b.name, b.uuid)) for vip in lb.vips
           if (lb.uuid, vip.key) in won]
    return out, issues, contested


def vip_owners(lbs: tuple[LoadBalancer, ...], topo: Topology,
               incumbents: frozenset[own.OwnerKey] = frozenset()) -> list[own.OwnerKey]:
    planned, _ = plan_vips(lbs, topo, incumbents)
    return [own.vip_owner(lb.uuid, vip.key) for lb, vip, _ in planned]


def _topo_key(plan: VipPlan, topo: Topology, p: Pipeline) -> tuple[object, ...]:
    """What of the topology a VIP's part depends on: its backends' MACs and
    which of them are local ports (hairpin); in companion mode also the
    client ports it is intercepted on."""
    key = (tuple(topo.macs.get((tk, be.ip)) for tk in plan.datapaths
                 for be in plan.vip.backends),
           tuple(be.ip in topo.local_ips for be in plan.live_backends))
    if p.companion:
        return (*key, topo.ports_on(plan.datapaths))
    return key


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

    def get(self, plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology) -> VipPart:
        key = (plan, p, max_idle, _topo_key(plan, topo, p))
        part = self._parts.get(key) or self._used.get(key)
        if part is None:
            failed = self._failed.get(key) or self._failed_used.get(key)
            if failed is not None:
                self._failed_used[key] = failed
                raise failed
            try:
                # companion parts hold the client ports, which shapes do not mark
                if self.templates is not None and not p.companion:
                    part = self.templates.part(plan, p, max_idle, topo)
                else:
                    part = compile_vip(plan, p, max_idle, topo)
            except Exception as exc:
                self._failed_used[key] = exc.with_traceback(None)  # no frames kept alive
                raise
            if faults.FAULTS:  # tests only (LBAFFD_TEST_FAULTS)
                part = faults.inject(plan, p, part)
        self._used[key] = part
        return _without(part, topo.foreign) if topo.foreign else part

    def forget(self, plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology) -> None:
        """Drop a VIP's part that an incremental pass replaced (full passes
        drop what they did not use in ``end_pass``)."""
        key = (plan, p, max_idle, _topo_key(plan, topo, p))
        self._parts.pop(key, None)
        self._used.pop(key, None)
        self._failed.pop(key, None)
        self._failed_used.pop(key, None)

    def end_pass(self) -> None:
        self._parts, self._used = self._used, {}
        self._failed, self._failed_used = self._failed_used, {}


def _without(part: VipPart, foreign: frozenset[FlowId]) -> VipPart:
    """``part`` less the flows whose key another controller's flow has."""
    keep = [i for i, fid in enumerate(part.flow_ids) if fid not in foreign]
    if len(keep) == len(part.flow_ids) and not any(f in foreign for _, f, _ in part.shared):
        return part
    return replace(part, flow_ids=tuple(part.flow_ids[i] for i in keep),
                   flows=tuple(part.flows[i] for i in keep),
                   shared=tuple(s for s in part.shared if s[1] not in foreign))


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
    on_flow: Callable[[FlowId, FlowBody], None] | None = None,
    on_group: Callable[[int, GroupBody], None] | None = None,
) -> DesiredState:
    """``max_idle`` caps learned idle timeouts (OpenFlow's is 16-bit); longer
    affinity timeouts are completed by the daemon when an entry idles out.
    ``distribution`` is the default for dp_hash groups (an LB's
    ``options:distribution`` wins); ``min_slots`` is 1 for OVS <= 3.4, 4 after.
    ``on_group``/``on_flow`` see each group and (distinct) flow as soon as it is
    compiled, a VIP's group before its flows (a caller can send them on)."""
    planned, issues, contested = _plan_vips(lbs, topo, incumbents)
    flows: dict[FlowId, FlowBody] = {}
    groups: dict[int, GroupBody] = {}

    def add(fid: FlowId, body: FlowBody) -> None:
        if fid in topo.foreign:
            return  # another controller's flow has this key: never replace it
        have = flows.get(fid)
        if have is None:
            flows[fid] = body
            if on_flow is not None:
                on_flow(fid, body)
        elif have != body:
            raise AssertionError(f"flow key clash: {unpack_flow(have)} vs {unpack_flow(body)}")

    b = FlowBuilder()
    layout = topo.ovn
    static_flows(b, pipeline, layout.output_table if layout is not None else None)
    for port in topo.local_ports:
        port_flows(b, pipeline, port.ofport, port.logical_port, port.datapath.tunnel_key)
        ovn_match = layout.output_match(port.ofport) if layout is not None else None
        if pipeline.companion and layout is not None and ovn_match is not None:
            reply_hook_flows(b, pipeline, port, ovn_match, layout.output_table)
    owners = b.owners
    for spec in b.flows.values():
        body = pack_flow(spec)
        add(flow_id(body), body)
    plans: list[VipPlan] = []
    refs: dict[FlowId, tuple[own.OwnerKey, ...]] = {}
    slots: dict[Slot, own.OwnerKey] = {}
    cache = cache or VipCache()
    for lb, vip, dps in planned:
        plan = make_plan(lb, vip, dps, topo, group_ids, distribution, min_slots)
        # whatever goes wrong with one VIP leaves only that VIP out, before
        # anything of it is sent (``isolation``)
        part = isolation.compile_part(cache, plan, pipeline, max_idle, topo, groups, issues)
        if part is None:
            continue
        plans.append(plan)
        for gid, g in part.groups():
            groups[gid] = g
            if on_group is not None:
                on_group(gid, g)
        for fid, body in zip(part.flow_ids, part.flows, strict=True):
            add(fid, body)
        owners[own.owner_cookie(plan.owner)] = plan.owner
        for shared_owner, fid, body in part.shared:
            add(fid, body)
            owners[cookie(body)] = shared_owner
            refs[fid] = (*refs.get(fid, ()), plan.owner)  # once per VIP: no duplicates
        for tk in dps:
            slots[(tk, vip.endpoint, vip.protocol)] = plan.owner
    cache.end_pass()
    return DesiredState(PackedState(flows, groups), dict(owners), tuple(plans), tuple(issues),
                        refs, slots, frozenset(contested))


def make_plan(lb: LoadBalancer, vip: Vip, dps: tuple[int, ...], topo: Topology,
              group_ids: Mapping[own.OwnerKey, int], distribution: str,
              min_slots: int) -> VipPlan:
    owner = own.vip_owner(lb.uuid, vip.key)
    live = tuple(be for be in vip.backends if not topo.is_down(be, vip.protocol))
    # hash(ip_src) (affinity) is rendezvous hashing: no slot table to fill
    hashed = lb.affinity_timeout or lb.selection_fields
    mode = "client-hash" if hashed else lb.distribution or distribution
    buckets = tuple(group_buckets(live, mode))
    return VipPlan(lb, vip, owner, group_ids[owner], dps, live, buckets, mode,
                   _expected_shares(live, buckets, mode, min_slots))
