"""Model -> desired OpenFlow state: a pure function, see ``pipeline`` for the stages.

``compile_state`` is deterministic: the same model, topology and group ids give
the same ``DesiredState``, which is what makes a restart a no-op on the switch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from lbaffd import distribution as dist
from lbaffd import ownership as own
from lbaffd.model import MAX_OPENFLOW_IDLE_TIMEOUT, Endpoint, LoadBalancer, ParseIssue, Vip
from lbaffd.openflow.flowspec import (
    LEARN_DELETE_LEARNED,
    LEARN_SEND_FLOW_REM,
    OFPP_IN_PORT,
    OFPP_NORMAL,
    Action,
    Bucket,
    Ct,
    FlowKey,
    FlowSpec,
    Group,
    GroupSpec,
    Learn,
    LearnLoadValue,
    LearnMatchField,
    LearnMatchValue,
    Match,
    MatchValue,
    Move,
    Nat,
    Output,
    Resubmit,
    SetField,
    SwitchState,
)
from lbaffd.pipeline import (
    CS_EST,
    CS_INV,
    CS_NEW,
    CS_REL,
    CS_RPL,
    CS_TRK,
    PRIO_ARP_RESPONDER,
    PRIO_BACKEND_MAC,
    PRIO_COMMIT_OTHER,
    PRIO_CT_INVALID,
    PRIO_DEFAULT,
    PRIO_ESTABLISHED,
    PRIO_HIT,
    PRIO_LEARN,
    PRIO_LEARNED,
    PRIO_MISS,
    PRIO_PORT,
    PRIO_REPLY,
    PRIO_VIP,
    REG_AFFINITY_HIT,
    REG_BACKEND_IP,
    REG_BACKEND_PORT,
    REG_CT_ZONE,
    REG_VIP_ID,
    Pipeline,
)
from lbaffd.topology import Topology

OFPFF_SEND_FLOW_REM = 1
ETH_IP = 0x0800
ETH_ARP = 0x0806
TP_DST = {"tcp": "tcp_dst", "udp": "udp_dst", "sctp": "sctp_dst"}


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

    def learned_cookie(self, backend: Endpoint) -> int:
        """Cookie of the affinity entries learned for ``backend`` of this VIP."""
        return own.learned_cookie((*self.owner, str(backend)))


@dataclass(frozen=True, slots=True)
class DesiredState:
    state: SwitchState
    owners: Mapping[int, own.OwnerKey]  # cookie -> owner key
    vips: tuple[VipPlan, ...]
    issues: tuple[ParseIssue, ...]


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


def vip_mac(ip: str) -> str:
    """A stable, locally administered MAC the ARP responder answers with."""
    d = hashlib.blake2b(ip.encode(), digest_size=3).digest()
    return "02:1b:af:" + ":".join(f"{b:02x}" for b in d)


def plan_vips(
    lbs: tuple[LoadBalancer, ...], topo: Topology,
    incumbents: frozenset[own.OwnerKey] = frozenset(),
) -> tuple[list[tuple[LoadBalancer, Vip, tuple[int, ...]]], list[ParseIssue]]:
    """Which VIP goes on which local datapath.  When two LBs claim the same
    (datapath, VIP, protocol), the one already realized (``incumbents``) keeps
    it, so a newly added conflicting LB never disturbs a working one; between
    newcomers the first by (name, uuid) wins.  The loser is reported."""
    local = topo.local_datapaths
    claimed: dict[tuple[int, Endpoint, str], str] = {}
    won: dict[tuple[str, str], tuple[int, ...]] = {}
    issues: list[ParseIssue] = []
    ordered = sorted(((lb, i, vip) for lb in lbs for i, vip in enumerate(lb.vips)),
                     key=lambda t: (own.vip_owner(t[0].uuid, t[2].key) not in incumbents,
                                    t[0].name, t[0].uuid, t[1]))
    for lb, _, vip in ordered:
        if vip.endpoint.ip.version != 4:
            issues.append(ParseIssue(lb.name or lb.uuid, "unsupported_family",
                                     "IPv6 VIPs are not realized by this version",
                                     vip=vip.key))
            continue
        dps: list[int] = []
        for dp in lb.datapaths:
            if dp.tunnel_key not in local:
                continue
            slot = (dp.tunnel_key, vip.endpoint, vip.protocol)
            other = claimed.get(slot)
            if other is not None:
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
    return out, issues


def vip_owners(lbs: tuple[LoadBalancer, ...], topo: Topology,
               incumbents: frozenset[own.OwnerKey] = frozenset()) -> list[own.OwnerKey]:
    planned, _ = plan_vips(lbs, topo, incumbents)
    return [own.vip_owner(lb.uuid, vip.key) for lb, vip, _ in planned]


class _Builder:
    """Accumulates flows per owner and rejects two different flows on one key."""

    def __init__(self) -> None:
        self.flows: dict[FlowKey, FlowSpec] = {}
        self.groups: list[GroupSpec] = []
        self.owners: dict[int, own.OwnerKey] = {}

    def flow(self, owner: own.OwnerKey, table: int, priority: int,
             match: Mapping[str, MatchValue], actions: tuple[Action, ...]) -> None:
        cookie = own.owner_cookie(owner)
        self.owners[cookie] = owner
        # send_flow_rem: a foreign delete of an lbaffd flow wakes the daemon at once
        self.add(FlowSpec(table, priority, Match.of(match), actions, cookie,
                          flags=OFPFF_SEND_FLOW_REM))

    def add(self, spec: FlowSpec) -> None:
        have = self.flows.get(spec.key)
        if have is not None and have != spec:
            raise AssertionError(f"flow key clash: {have} vs {spec}")
        self.flows[spec.key] = spec


VipPart = tuple[tuple[FlowSpec, ...], GroupSpec]


class VipCache:
    """A VIP's flows and group by (plan, pipeline, idle cap): a VIP whose inputs
    did not change is not compiled again (most of a pass at 1000s of LBs).
    Keeps only what the latest pass used."""

    def __init__(self) -> None:
        self._parts: dict[tuple[VipPlan, Pipeline, int], VipPart] = {}
        self._used: dict[tuple[VipPlan, Pipeline, int], VipPart] = {}

    def get(self, plan: VipPlan, p: Pipeline, max_idle: int) -> VipPart:
        key = (plan, p, max_idle)
        part = self._parts.get(key) or self._used.get(key)
        if part is None:
            sub = _Builder()
            _vip_flows(sub, p, plan, max_idle)
            part = (tuple(sub.flows.values()), sub.groups[0])
        self._used[key] = part
        return part

    def end_pass(self) -> None:
        self._parts, self._used = self._used, {}


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
) -> DesiredState:
    """``max_idle`` caps learned idle timeouts (OpenFlow's is 16-bit); longer
    affinity timeouts are completed by the daemon when an entry idles out.
    ``distribution`` is the default for dp_hash groups (an LB's
    ``options:distribution`` wins); ``min_slots`` is 1 for OVS <= 3.4, 4 after."""
    planned, issues = plan_vips(lbs, topo, incumbents)
    b = _Builder()
    _static_flows(b, pipeline)
    for port in topo.local_ports:
        _port_flows(b, pipeline, port.ofport, port.logical_port, port.datapath.tunnel_key)
    plans: list[VipPlan] = []
    arp_done: set[tuple[int, str]] = set()
    for lb, vip, dps in planned:
        owner = own.vip_owner(lb.uuid, vip.key)
        live = tuple(be for be in vip.backends if not topo.is_down(be, vip.protocol))
        # hash(ip_src) (affinity) is rendezvous hashing: no slot table to fill
        mode = "client-hash" if lb.affinity_timeout else lb.distribution or distribution
        buckets = tuple(group_buckets(live, mode))
        plan = VipPlan(lb, vip, owner, group_ids[owner], dps, live, buckets, mode,
                       _expected_shares(live, buckets, mode, min_slots))
        plans.append(plan)
        flows, group = (cache or VipCache()).get(plan, pipeline, max_idle)
        for spec in flows:
            b.add(spec)
        b.owners[own.owner_cookie(owner)] = owner
        b.groups.append(group)
        for tk in dps:
            ip = str(vip.endpoint.ip)
            if (tk, ip) not in arp_done:
                arp_done.add((tk, ip))
                _arp_responder(b, pipeline, tk, ip)
            for be in vip.backends:
                mac = topo.macs.get((tk, be.ip))
                if mac is not None:
                    _forward_flow(b, pipeline, tk, str(be.ip), mac)
    if cache is not None:
        cache.end_pass()
    state = SwitchState(flows=dict(b.flows), groups={g.group_id: g for g in b.groups})
    return DesiredState(state, dict(b.owners), tuple(plans), tuple(issues))


# ------------------------------------------------------------------ stages


def _ct_state(on: int, off: int = 0) -> tuple[int, int]:
    return (on, on | off)


def _static_flows(b: _Builder, p: Pipeline) -> None:
    g = own.GLOBAL_OWNER
    normal = _exit(p)
    if p.classify is not None:
        b.flow(g, p.classify, PRIO_DEFAULT, {}, normal)
    b.flow(g, p.pre_lb, PRIO_DEFAULT, {}, normal)
    b.flow(g, p.pre_lb, PRIO_PORT, {"eth_type": ETH_IP},
           (Ct(zone_field=REG_CT_ZONE, table=p.dispatch, nat=Nat()),))
    b.flow(g, p.dispatch, PRIO_CT_INVALID, {"ct_state": _ct_state(CS_INV | CS_TRK)}, ())
    fwd: tuple[Action, ...] = (Resubmit(p.forward),)
    b.flow(g, p.dispatch, PRIO_ESTABLISHED, {"ct_state": _ct_state(CS_EST | CS_TRK, CS_RPL)}, fwd)
    b.flow(g, p.dispatch, PRIO_ESTABLISHED, {"ct_state": _ct_state(CS_REL | CS_TRK, CS_RPL)}, fwd)
    b.flow(g, p.dispatch, PRIO_REPLY, {"ct_state": _ct_state(CS_RPL | CS_TRK)}, normal)
    b.flow(g, p.dispatch, PRIO_COMMIT_OTHER,
           {"ct_state": _ct_state(CS_NEW | CS_TRK), "eth_type": ETH_IP},
           (Ct(commit=True, zone_field=REG_CT_ZONE), *normal))
    b.flow(g, p.dispatch, PRIO_DEFAULT, {}, normal)
    b.flow(g, p.learn, PRIO_DEFAULT, {}, fwd)
    b.flow(g, p.forward, PRIO_DEFAULT, {}, normal)


def _exit(p: Pipeline) -> tuple[Action, ...]:
    """How a packet leaves lbaffd: NORMAL, or the embedding controller's table."""
    return (Resubmit(p.next_table),) if p.embedded else (Output(OFPP_NORMAL),)


def _port_flows(b: _Builder, p: Pipeline, ofport: int, logical_port: str, tk: int) -> None:
    if p.classify is None:
        return
    b.flow(("port", logical_port), p.classify, PRIO_PORT, {"in_port": ofport},
           (SetField("metadata", tk), SetField(REG_CT_ZONE, tk & 0xFFFF), Resubmit(p.pre_lb)))


def _arp_responder(b: _Builder, p: Pipeline, tk: int, ip: str) -> None:
    mac = vip_mac(ip)
    b.flow(("arp", str(tk), ip), p.pre_lb, PRIO_ARP_RESPONDER,
           {"metadata": tk, "eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": ip},
           (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac), SetField("arp_op", 2),
            Move("arp_sha", "arp_tha", 48), SetField("arp_sha", mac),
            Move("arp_spa", "arp_tpa", 32), SetField("arp_spa", ip), Output(OFPP_IN_PORT)))


def _forward_flow(b: _Builder, p: Pipeline, tk: int, ip: str, mac: str) -> None:
    b.flow(("fwd", str(tk), ip), p.forward, PRIO_BACKEND_MAC,
           {"metadata": tk, "eth_type": ETH_IP, "ipv4_dst": ip},
           (SetField("eth_dst", mac), *_exit(p)))


def _l4(vip: Vip, ep: Endpoint, dst: bool = True) -> dict[str, MatchValue]:
    """Match on protocol (+ port) of ``ep``; IP-only VIPs match any protocol."""
    if ep.port is None:
        return {"eth_type": ETH_IP}
    return {"eth_type": ETH_IP, "ip_proto": vip.ip_proto, TP_DST[vip.protocol]: ep.port}


def _nat(be: Endpoint) -> Nat:
    port = be.port or 0
    return Nat(kind="dst", ip_min=str(be.ip), port_min=port, port_max=port)


def _commit_to(p: Pipeline, be: Endpoint) -> Ct:
    return Ct(commit=True, zone_field=REG_CT_ZONE, table=p.learn, nat=_nat(be))


def _vip_flows(b: _Builder, p: Pipeline, plan: VipPlan, max_idle: int) -> None:
    vip, gid, owner = plan.vip, plan.group_id, plan.owner
    affinity = plan.lb.affinity_timeout is not None
    new = {"ct_state": _ct_state(CS_NEW | CS_TRK)}
    dispatch: tuple[Action, ...]
    if affinity:
        dispatch = (SetField(REG_VIP_ID, gid), Resubmit(p.affinity), Resubmit(p.lb))
    else:
        dispatch = (SetField(REG_VIP_ID, gid), Group(gid))
    for tk in plan.datapaths:
        match = {**new, "metadata": tk, **_l4(vip, vip.endpoint), "ipv4_dst": str(vip.endpoint.ip)}
        b.flow(owner, p.dispatch, PRIO_VIP, match, dispatch)

    b.groups.append(GroupSpec(
        group_id=gid,
        buckets=tuple(Bucket(bid, (_commit_to(p, be),))
                      for bid, be in plan.buckets),
        selection_method="hash" if affinity else "dp_hash",
        fields=("ipv4_src",) if affinity else (),
        owner_cookie=own.owner_cookie(owner),
    ))
    if not affinity:
        return
    timeout = plan.lb.affinity_timeout or 0
    b.flow(owner, p.lb, PRIO_MISS, {REG_VIP_ID: gid, "eth_type": ETH_IP},
           (SetField(REG_AFFINITY_HIT, 0), Group(gid)))
    # A backend that is down has no hit and no learn flow: deleting its learn
    # flow deletes its learned entries (delete_learned), so its clients move now.
    for be in plan.live_backends:
        hit = {REG_VIP_ID: gid, REG_AFFINITY_HIT: 1, REG_BACKEND_IP: int(be.ip),
               "eth_type": ETH_IP}
        if be.port is not None:
            hit[REG_BACKEND_PORT] = be.port
        b.flow(owner, p.lb, PRIO_HIT, hit, (_commit_to(p, be),))
        learn_match = {**new, REG_VIP_ID: gid, REG_AFFINITY_HIT: 0, **_l4(vip, be),
                       "ipv4_dst": str(be.ip)}
        b.flow(owner, p.learn, PRIO_LEARN, learn_match,
               (_learn(p, plan, be, min(timeout, max_idle)), Resubmit(p.forward)))


def _learn(p: Pipeline, plan: VipPlan, be: Endpoint, idle_timeout: int) -> Learn:
    specs: list[LearnMatchField | LearnMatchValue | LearnLoadValue] = [
        LearnMatchField("metadata", "metadata", 64),
        LearnMatchValue(ETH_IP, "eth_type", 16),
        LearnMatchField("ipv4_src", "ipv4_src", 32),
        LearnMatchField(REG_VIP_ID, REG_VIP_ID, 32),
        LearnLoadValue(int(be.ip), REG_BACKEND_IP, 32),
    ]
    if be.port is not None:
        specs.append(LearnLoadValue(be.port, REG_BACKEND_PORT, 16))
    specs.append(LearnLoadValue(1, REG_AFFINITY_HIT, 32))
    return Learn(
        table=p.affinity,
        specs=tuple(specs),
        idle_timeout=idle_timeout,
        priority=PRIO_LEARNED,
        cookie=plan.learned_cookie(be),
        # send_flow_rem: expiry/flush are counted, and entries capped below the
        # real timeout are re-installed for the remainder.
        flags=LEARN_DELETE_LEARNED | LEARN_SEND_FLOW_REM,
    )

