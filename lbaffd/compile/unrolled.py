"""Compile a VIP of any number of backends from the bytes of a one-backend VIP.

``shapes`` fills a VIP in from one of the same *positional* shape: the same
number of backends, the same ones local, with a MAC, down.  A cluster's
services differ in exactly that: on the realistic SB at N=5000 (``bench
.compile --cluster``) 874 of 1049 shapes were seen once, nearly all VIPs of
10-50 endpoints (which of them are pods on this node is a pattern of its
own), and compiling those through the stages was half of a cold pass's
compile.

What a VIP puts on the switch repeats per backend in an order the stages fix
(``vip.compile_vip``, the same order ``vip.derived`` relies on):

- own flows: the dispatch flow of each datapath; then, per datapath, the
  hairpin SNAT flow of each live backend that is a local port; then, for an
  affinity VIP, its miss flow and, per live backend, its hit and learn flows;
- shared flows, per datapath: the VIP's block (ARP/ND, hairpin reply and
  unSNAT), then the forward flow of each backend with a MAC there;
- the group: a bucket per entry of the plan's bucket list.

So one compile of the VIP cut down to a single live backend that is a local
port, with marker values A and B (``markers``), gives a slotted body for
each of those pieces; a VIP of this *unrolled* shape (everything but its
backends' number, addresses, locality, MACs and liveness) is then its pieces
filled with its values, backend by backend.  Forward flows depend on the
backend alone and go through the stages.

It stays exact as ``shapes`` does: a VIP is unrolled only when all its
addresses differ (the VIP's, the hairpin source's and each backend's, so no
flow of two backends can be one), all its backends have one port and
family, it has a live backend and its group needs no parts; and the
template is kept only if it turns B's values into B's bytes and the VIP it
was made from into that VIP's compiled part (``tests/unit/test_templates.py``
holds both kinds equal to the stages on random VIPs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from lbaffd.compile import groupsplit
from lbaffd.compile.layout import Pipeline
from lbaffd.compile.markers import (
    MARK_BUCKET_A,
    MARK_BUCKET_B,
    MARKS_A,
    MARKS_B,
    Marks,
    OwnerPattern,
    SlotBody,
    address_words,
    bucketed_plan,
    mac_bytes,
    marked_plan,
    owner_from,
    owner_pattern,
    shared_cookies,
    slot_values,
)
from lbaffd.compile.stages import FlowBuilder, addr_text, forward_flow, vip_group, vip_mac
from lbaffd.compile.vip import VipPart
from lbaffd.model import ownership as own
from lbaffd.model.distribution import DEFAULT_WEIGHT
from lbaffd.model.loadbalancer import IPAddress
from lbaffd.model.plan import VipPlan, bucket_weights
from lbaffd.model.topology import Topology
from lbaffd.openflow import messages
from lbaffd.openflow.packed import FlowBody, flow_id, pack_flow, pack_group

CompileVip = Callable[[VipPlan, Pipeline, int, Topology], VipPart]
UNROLLED: Final = "unrolled"  # the first item of an unrolled shape (positional ones are tuples)
# the values of a one-backend marker VIP (``markers.slot_values``): owner
# cookie, group id, VIP MAC, VIP address, backend address, learned cookie,
# then for IPv6 the four words of each address; the shared flows' cookies last
_LEARNED_COOKIE: Final = 5
_BACKEND_V4: Final = frozenset({4, _LEARNED_COOKIE})
_BACKEND_V6: Final = _BACKEND_V4 | {10, 11, 12, 13}


def unrolled_shape(plan: VipPlan, kept: tuple[tuple[str, ...], ...], p: Pipeline,
                   max_idle: int) -> tuple[object, ...] | None:
    """The VIP's unrolled shape, or None when it cannot be unrolled (see the
    module doc); ``kept``: the plan's, LB's and VIP's fields that are not
    values (``shapes``)."""
    vip, lb = plan.vip, plan.lb
    if not plan.live_backends or groupsplit.may_split(len(plan.buckets)):
        return None
    ip = vip.endpoint.ip
    snat = lb.hairpin_source(vip.endpoint)
    if snat == ip and lb.hairpin_snat_ip:
        return None  # an option naming the VIP: the markers would tell them apart
    seen = {int(ip), int(snat)}
    port = vip.backends[0].port
    for be in vip.backends:
        if be.port != port or be.ip.version != ip.version or int(be.ip) in seen:
            return None
        seen.add(int(be.ip))
    return (UNROLLED, tuple(getattr(plan, n) for n in kept[0]),
            tuple(getattr(lb, n) for n in kept[1]), tuple(getattr(vip, n) for n in kept[2]),
            vip.endpoint.port, port, ip.version, p, max_idle)


@dataclass(frozen=True, slots=True)
class Unrolled:
    """The slotted pieces of an unrolled shape (``datapaths`` order)."""

    dispatch: tuple[SlotBody, ...]  # per datapath
    hairpin: tuple[SlotBody, ...]  # per datapath, for one live local backend
    affinity: tuple[SlotBody, ...]  # miss, then a backend's hit and learn; () without affinity
    blocks: tuple[tuple[tuple[OwnerPattern, SlotBody], ...], ...]  # shared, per datapath
    bucket: SlotBody  # values: bucket id, group id, VIP address, backend address
    props: bytes
    cookies: bool  # whether a filled flow holds a backend's learned cookie (affinity)

    def part(self, plan: VipPlan, p: Pipeline, topo: Topology) -> VipPart:
        vip = plan.vip
        ip = vip.endpoint.ip
        v6 = ip.version == 6
        vip_text = addr_text(ip)
        owners = [[owner_from(pattern, (vip_text,)) for pattern, _ in block]
                  for block in self.blocks]
        head = [own.owner_cookie(plan.owner).to_bytes(8, "big"),
                plan.group_id.to_bytes(4, "big"), mac_bytes(vip_mac(vip_text)), ip.packed]
        tail = shared_cookies([o for block in owners for o in block])
        vip_words = address_words(ip) if v6 else []
        empty = [b"", b""]
        vip_vals = [*head, *empty, *vip_words, *(empty * 2 if v6 else ()), *tail]

        def values(be_ip: IPAddress, cookie: bytes) -> list[bytes]:
            return [*head, be_ip.packed, cookie, *vip_words, *(address_words(be_ip) if v6 else ()),
                    *tail]

        live = plan.live_backends
        local = [be for be in live if be.ip in topo.local_ips]
        # the values of the backends a flow is filled for: the live ones of an
        # affinity VIP, else only the local ones (most VIPs have none)
        backend_vals = {be: values(be.ip, plan.learned_cookie(be).to_bytes(8, "big")
                                   if self.cookies else b"")
                        for be in (live if self.affinity else local)}
        flows = [t.fill(vip_vals) for t in self.dispatch]
        for t in self.hairpin:
            flows += [t.fill(backend_vals[be]) for be in local]
        if self.affinity:
            miss, *pair = self.affinity
            flows.append(miss.fill(vip_vals))
            for be in live:
                flows += [t.fill(backend_vals[be]) for t in pair]
        shared: list[tuple[own.OwnerKey, bytes, FlowBody]] = []
        for tk, block, block_owners in zip(plan.datapaths, self.blocks, owners, strict=True):
            for (_, t), owner in zip(block, block_owners, strict=True):
                body = t.fill(vip_vals)
                shared.append((owner, flow_id(body), body))
            fwd = FlowBuilder()
            for be in vip.backends:
                mac = topo.macs.get((tk, be.ip))
                if mac is not None:
                    forward_flow(fwd, p, tk, addr_text(be.ip), mac)
            for spec in fwd.flows.values():
                body = pack_flow(spec)
                shared.append((fwd.owners[spec.cookie], flow_id(body), body))
        return VipPart(tuple(map(flow_id, flows)), tuple(flows), plan.group_id,
                       self._group(plan), tuple(shared))

    def _group(self, plan: VipPlan) -> bytes:
        gid = plan.group_id.to_bytes(4, "big")
        vip_ip = plan.vip.endpoint.ip.packed
        parts = []
        for (bid, be), weight in zip(plan.buckets, bucket_weights(plan.buckets), strict=True):
            bucket = self.bucket.fill((bid.to_bytes(4, "big"), gid, vip_ip, be.ip.packed))
            # the marker plans' bucket has the default weight (``bucketed_plan``)
            parts.append(bucket if weight == DEFAULT_WEIGHT
                         else messages.with_bucket_weight(bucket, weight))
        return messages.join_group_mod(plan.group_id, b"".join(parts), self.props)


@dataclass(frozen=True, slots=True)
class _Instance:
    """The VIP cut down to one live local backend, with one set of markers."""

    part: VipPart
    group: bytes
    texts: tuple[str, str]  # the marker VIP's and backend's address texts
    values: list[bytes]
    bucket_values: list[bytes]


def _instance(one: VipPlan, p: Pipeline, max_idle: int, marks: Marks, first_bucket: int,
              compile_vip: CompileVip) -> _Instance:
    v6 = one.vip.endpoint.ip.version == 6
    addrs = (one.vip.endpoint.ip, one.live_backends[0].ip)
    marked = marked_plan(one, addrs, marks)
    mapped = (marks.addr(0, v6), marks.addr(1, v6))
    topo = Topology((), MappingProxyType({}), local_ips=frozenset({mapped[1]}))
    part = compile_vip(marked, p, max_idle, topo)
    group = pack_group(vip_group(p, bucketed_plan(marked, first_bucket)))
    texts = (addr_text(mapped[0]), addr_text(mapped[1]))
    vals = slot_values(marked, mapped, ())
    vals += shared_cookies([o for o, _, _ in part.shared])
    bucket_vals = [first_bucket.to_bytes(4, "big"), marks.group_id.to_bytes(4, "big"),
                   mapped[0].packed, mapped[1].packed]
    return _Instance(part, group, texts, vals, bucket_vals)


def make(plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology, real: VipPart,
         compile_vip: CompileVip) -> Unrolled | None:
    """The template of ``plan``'s unrolled shape, or None when its pieces are
    not where the module doc says (``real``: ``plan`` compiled)."""
    be = plan.live_backends[0]
    one = replace(plan, vip=replace(plan.vip, backends=(be,)), live_backends=(be,),
                  buckets=((0, be),), expected_shares=())
    a = _instance(one, p, max_idle, MARKS_A, MARK_BUCKET_A, compile_vip)
    b = _instance(one, p, max_idle, MARKS_B, MARK_BUCKET_B, compile_vip)
    n_dps = len(plan.datapaths)
    n_affinity = 3 if plan.lb.affinity_timeout is not None else 0
    if not (len(a.part.flows) == len(b.part.flows) == 2 * n_dps + n_affinity
            and len(a.part.shared) == len(b.part.shared)
            and len(a.part.shared) % n_dps == 0 and not a.part.parts):
        return None
    patterns = [owner_pattern(o, a.texts) for o, _, _ in a.part.shared]
    if any(1 in pattern for pattern in patterns) or [
            owner_from(pt, b.texts) for pt in patterns] != [o for o, _, _ in b.part.shared]:
        return None  # a shared flow of the backend's: not the VIP's block
    bodies: list[SlotBody] = []
    for x, y in zip((*a.part.flows, *(s for _, _, s in a.part.shared)),
                    (*b.part.flows, *(s for _, _, s in b.part.shared)), strict=True):
        body = SlotBody.find(x, y, a.values, b.values)
        if body is None or body.fill(b.values) != y:
            return None
        bodies.append(body)
    by_backend = _BACKEND_V6 if plan.vip.endpoint.ip.version == 6 else _BACKEND_V4
    own_bodies, shared_bodies = bodies[:len(a.part.flows)], bodies[len(a.part.flows):]
    dispatch = own_bodies[:n_dps]
    affinity = own_bodies[2 * n_dps:]
    if any(by_backend & set(t.refs) for t in (*dispatch, *affinity[:1], *shared_bodies)):
        return None  # a flow of the VIP's that holds a backend's value
    size = len(shared_bodies) // n_dps
    blocks = tuple(tuple(zip(patterns[i * size:(i + 1) * size],
                             shared_bodies[i * size:(i + 1) * size], strict=True))
                   for i in range(n_dps))
    buckets_a, props_a = messages.split_group_mod(a.group)
    buckets_b, props_b = messages.split_group_mod(b.group)
    if props_a != props_b or not len(buckets_a) == len(buckets_b) == 1:
        return None
    bucket = SlotBody.find(buckets_a[0], buckets_b[0], a.bucket_values, b.bucket_values)
    if bucket is None or bucket.fill(b.bucket_values) != buckets_b[0]:
        return None
    hairpin = own_bodies[n_dps:2 * n_dps]
    cookies = any(_LEARNED_COOKIE in t.refs for t in (*hairpin, *affinity))
    template = Unrolled(tuple(dispatch), tuple(hairpin), tuple(affinity), blocks, bucket,
                        props_a, cookies)
    try:
        if template.part(plan, p, topo) != real:
            return None
    except IndexError:  # a slot for a value the VIP does not have
        return None
    return template

