"""Compile a VIP by filling in the bytes of one shaped like it.

At scale most VIPs differ only in values: their address, their backends'
addresses and MACs, their group id and the cookies derived from these (a
cluster's services: the same ports, options and number of backends).  Their
encoded flows are then the same bytes but for those values, at the same
offsets.  Compiling through the stages costs ~0.5 ms a VIP in pure Python;
filling in ~16 flows' values costs a tenth of that.

``VipTemplates.part`` first tries the VIP's *unrolled* shape (``unrolled``:
any number of backends, filled in backend by backend); the *positional*
shapes below are for the VIPs that cannot be unrolled.

How it stays exact:

- The *shape* of a VIP is its plan with every value replaced by a marker
  (``marked_plan``: addresses by their index among the VIP's distinct addresses,
  the LB's identity and the group id by constants), plus which addresses are
  local and have a MAC.  Whatever is not replaced stays in the key (``_shape``
  takes every other dataclass field): an input this module does not know
  about can only make shapes more specific.
- A template is made on a shape's second VIP: the shape compiled with two
  marker sets (A, B); a *slot* is an offset where A's bytes hold one of A's
  values and B's bytes the same value of B.  It is kept only if it turns B's
  values into B's bytes exactly and the VIP at hand into its own compiled
  part; else that shape is always compiled.
- Markers are of the VIP's family (IPv4 or IPv6).  An LB's
  ``hairpin_snat_ip`` is not replaced: it is part of the shape, and so is
  which of the VIP's addresses equal it (the stages answer ARP/ND for it only
  when it is not the VIP).  A cluster's LBs share one such address (OVN-
  Kubernetes: 169.254.169.5), so their shapes still recur.
- VIPs with so many buckets that their group may have to be split
  (``groupsplit``) are always compiled.

The group is filled in bucket by bucket (``_GroupTemplate``): its bucket
order follows hashes of the backends, so each backend has a bucket template
and the plan's bucket list says which goes where.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from lbaffd.compile import groupsplit, unrolled
from lbaffd.compile.layout import Pipeline
from lbaffd.compile.markers import (
    MARK_BUCKET_A,
    MARK_BUCKET_B,
    MARKS_A,
    MARKS_B,
    Marks,
    OwnerPattern,
    SlotBody,
    bucketed_plan,
    distinct_addresses,
    marked_plan,
    marker_endpoint,
    owner_from,
    owner_pattern,
    shared_cookies,
    slot_values,
)
from lbaffd.compile.stages import addr_text, vip_group
from lbaffd.compile.vip import VipPart
from lbaffd.model.distribution import DEFAULT_WEIGHT
from lbaffd.model.loadbalancer import Endpoint, IPAddress, LoadBalancer, Vip
from lbaffd.model.plan import VipPlan, bucket_weights
from lbaffd.model.topology import Topology
from lbaffd.openflow import messages
from lbaffd.openflow.packed import flow_id, pack_group

CompileVip = Callable[[VipPlan, Pipeline, int, Topology], VipPart]
Shape = tuple[object, ...]


# shapes remembered (a template is a few KB); the realistic SB at N=5000 has
# ~1100, and at 1024 they were all let go once in the middle of a cold pass
MAX_SHAPES: Final = 4096




# what ``marked_plan`` replaces; every other field of the plan, its LB and its VIP
# is part of the shape as it is (``dataclasses.fields``: a field added later
# joins the key by itself)
_REPLACED_PLAN: Final = frozenset({"lb", "vip", "owner", "group_id", "live_backends", "buckets",
                                   "expected_shares"})
_REPLACED_LB: Final = frozenset({"uuid", "name", "vips"})
_REPLACED_VIP: Final = frozenset({"key", "endpoint", "backends"})


def _kept(cls: Any, replaced: frozenset[str]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.compare and f.name not in replaced)


def _shape(plan: VipPlan, addrs: Sequence[IPAddress], kept: tuple[tuple[str, ...], ...]
           ) -> Shape:
    """What ``marked_plan(plan, addrs, MARKS_A)`` equals, without building it
    (the key is looked up for every VIP compiled); ``kept``: the names of the
    plan's, its LB's and its VIP's fields that are not replaced."""
    index = {int(ip): k for k, ip in enumerate(addrs)}
    v6 = addrs[0].version == 6

    def ep(e: Endpoint) -> Endpoint:
        return marker_endpoint(MARKS_A, index[int(e.ip)], e.port, v6)

    lb, vip = plan.lb, plan.vip
    return (tuple(getattr(plan, n) for n in kept[0]), tuple(getattr(lb, n) for n in kept[1]),
            tuple(getattr(vip, n) for n in kept[2]),
            ep(vip.endpoint), tuple(map(ep, vip.backends)), tuple(map(ep, plan.live_backends)))




@dataclass(frozen=True, slots=True)
class _GroupTemplate:
    """A bucket per live backend (its bucket id, group id and addresses are
    slots) and the properties; the plan says which backend each bucket DNATs
    to, in an order that follows their hashes."""

    buckets: tuple[SlotBody, ...]  # by live backend index
    props: bytes

    def body(self, plan: VipPlan, addr_vals: Sequence[bytes]) -> bytes:
        gid = plan.group_id.to_bytes(4, "big")
        index = {be: i for i, be in enumerate(plan.live_backends)}
        # a backend's buckets differ only in their bucket id and weight: each
        # backend's bytes around the id made once, not filled for each bucket
        vals = [b"", gid, *addr_vals]
        around = [t.around(0, vals) for t in self.buckets]
        split = [a for a in around if a is not None]
        every_split = len(split) == len(around)
        weights = bucket_weights(plan.buckets)
        parts: list[bytes] = []
        for (bid, be), weight in zip(plan.buckets, weights, strict=True):
            if every_split:
                before, after = split[index[be]]
                bucket = b"".join((before, bid.to_bytes(4, "big"), after))
            else:
                bucket = self.buckets[index[be]].fill([bid.to_bytes(4, "big"), gid, *addr_vals])
            # the marker plans' buckets have the default weight (``bucketed_plan``)
            parts.append(bucket if weight == DEFAULT_WEIGHT
                         else messages.with_bucket_weight(bucket, weight))
        return messages.join_group_mod(plan.group_id, b"".join(parts), self.props)

    @classmethod
    def find(cls, a: bytes, b: bytes, va: Sequence[bytes], vb: Sequence[bytes],
             n_live: int) -> _GroupTemplate | None:
        """From the groups of the two marker plans (``bucketed_plan``); ``va``/``vb``
        are (group id, *addresses)."""
        buckets_a, props_a = messages.split_group_mod(a)
        buckets_b, props_b = messages.split_group_mod(b)
        if props_a != props_b or not len(buckets_a) == len(buckets_b) == n_live:
            return None
        out: list[SlotBody] = []
        for i, (x, y) in enumerate(zip(buckets_a, buckets_b, strict=True)):
            body = SlotBody.find(x, y, [(MARK_BUCKET_A + i).to_bytes(4, "big"), *va],
                              [(MARK_BUCKET_B + i).to_bytes(4, "big"), *vb])
            if body is None:
                return None
            out.append(body)
        return cls(tuple(out), props_a)


@dataclass(frozen=True, slots=True)
class _Template:
    flows: tuple[SlotBody, ...]
    shared: tuple[tuple[OwnerPattern, SlotBody], ...]
    group: _GroupTemplate

    def part(self, plan: VipPlan, p: Pipeline, addrs: Sequence[IPAddress],
             macs: Sequence[str]) -> VipPart:
        vals = slot_values(plan, addrs, macs)
        texts = [addr_text(ip) for ip in addrs]
        owners = [owner_from(pattern, texts) for pattern, _ in self.shared]
        vals += shared_cookies(owners)
        bodies = tuple(t.fill(vals) for t in self.flows)
        shared = tuple((o, flow_id(body), body) for o, body in
                       zip(owners, (t.fill(vals) for _, t in self.shared), strict=True))
        return VipPart(tuple(map(flow_id, bodies)), bodies, plan.group_id,
                       self.group.body(plan, vals[3:3 + len(addrs)]), shared)


_SEEN_ONCE: Final = "seen once"
_COMPILE: Final = "compile"  # no usable template for this shape


class VipTemplates:
    """Templates by shape; owned by one compile cache (no global state)."""

    def __init__(self, compile_vip: CompileVip) -> None:
        self._compile = compile_vip
        self._shapes: dict[Shape, _Template | unrolled.Unrolled | str] = {}
        self.made = self.refused = 0  # templates made / shapes found unusable
        self.filled = 0  # parts filled in from a template
        # False: use the templates there are, make no new one (an incremental
        # step compiles a few VIPs once; making a template costs three compiles)
        self.learn = True
        self._kept = (_kept(VipPlan, _REPLACED_PLAN), _kept(LoadBalancer, _REPLACED_LB),
                      _kept(Vip, _REPLACED_VIP))
        # the shape the last ``part`` call looked up (None: it took none), for
        # the compile cache to know which shapes its VIPs have (``retain``);
        # one object per shape (``_canon``), not one per VIP: the cache keeps
        # one for each of 1000s of VIPs, and a shape is 100s of bytes
        self.last_shape: Shape | None = None
        self._canon: dict[Shape, Shape] = {}

    def retain(self, live: set[Shape]) -> None:
        """Keep the templates and sightings of these shapes only: those of
        the VIPs the latest full pass kept (``VipCache.end_pass``).

        A shape is also which backend positions are local pods, have a MAC,
        are the hairpin source: a pod plugged or unplugged, a service made
        with other pods, gives the VIPs concerned a new one, and the next
        full pass but one makes its template.  Kept until ``MAX_SHAPES``
        (4096), the templates of shapes no VIP had any more grew as the
        cluster changed (issue 19).  600 of ``random_lbs``'s VIPs, three pods
        of a pool of 300 (half plugged) moved before each of 200 full
        passes: 177 shapes, 102 templates, +1.07 MB and still growing
        before; 117, 55, +0.57 MB and flat after the first 20 passes now
        (a pool of 60: 109 shapes, 0.46 MB before, ~93 and ~0.2-0.3 MB now).
        The price: a pattern that comes back after a pass without it has
        its template made again (two more compiles of one VIP, in a full
        pass; 101 templates made in those 200 passes against 102).  A VIP
        taken from the compile cache looks nothing up, so the cache hands
        over the shapes of all the VIPs it kept, not only those looked up in
        the pass."""
        self._shapes = {s: e for s, e in self._shapes.items() if s in live}
        self._canon = {s: c for s, c in self._canon.items() if s in live}

    def part(self, plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology) -> VipPart:
        self.last_shape = None
        if groupsplit.may_split(len(plan.buckets)):
            # a group that may need parts (``groupsplit``) is built by the stages
            return self._compile(plan, p, max_idle, topo)
        key = unrolled.unrolled_shape(plan, self._kept, p, max_idle)
        if key is not None:
            out = self._unrolled(key, plan, p, max_idle, topo)
            if out is not None:
                return out
        return self._positional(plan, p, max_idle, topo)

    def _unrolled(self, key: Shape, plan: VipPlan, p: Pipeline, max_idle: int,
                  topo: Topology) -> VipPart | None:
        """The part from the template of the VIP's unrolled shape, or
        compiled and the template made from it; None when that shape has no
        usable template (the positional one may)."""
        key = self._canon.setdefault(key, key) if self.learn else self._canon.get(key, key)
        entry = self._shapes.get(key)
        if isinstance(entry, unrolled.Unrolled):
            self.last_shape = key
            self.filled += 1
            return entry.part(plan, p, topo)
        if entry == _COMPILE or (entry is None and not self.learn):
            return None
        self.last_shape = key
        part = self._compile(plan, p, max_idle, topo)
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        self._keep(key, unrolled.make(plan, p, max_idle, topo, part, self._compile))
        return part

    def _keep(self, shape: Shape, made: _Template | unrolled.Unrolled | None) -> None:
        """The template made for ``shape``, or that it has none (counted)."""
        self._shapes[shape] = made or _COMPILE
        if made is None:
            self.refused += 1
        else:
            self.made += 1

    def _positional(self, plan: VipPlan, p: Pipeline, max_idle: int,
                    topo: Topology) -> VipPart:
        addrs = distinct_addresses(plan)
        if any(ip.version != addrs[0].version for ip in addrs):  # (the model refuses them)
            return self._compile(plan, p, max_idle, topo)
        mac_of = [topo.macs.get((tk, ip)) for tk in plan.datapaths for ip in addrs]
        macs = [m for m in mac_of if m is not None]
        if not all(len(m) == 17 and m[2::3] == ":::::" for m in macs):
            return self._compile(plan, p, max_idle, topo)  # as ``messages`` would not take them
        snat = plan.lb.hairpin_source(plan.vip.endpoint) if plan.lb.hairpin_snat_ip else None
        shape: Shape = (_shape(plan, addrs, self._kept), p, max_idle,
                        tuple(ip in topo.local_ips for ip in addrs),
                        tuple(m is not None for m in mac_of),
                        None if snat is None else tuple(ip == snat for ip in addrs))
        # (an incremental step adds none: steps between two full passes may
        # be months of them, and only a full pass prunes)
        shape = (self._canon.setdefault(shape, shape) if self.learn
                 else self._canon.get(shape, shape))
        self.last_shape = shape
        entry = self._shapes.get(shape)
        if isinstance(entry, _Template):
            self.filled += 1
            return entry.part(plan, p, addrs, macs)
        part = self._compile(plan, p, max_idle, topo)
        if not self.learn:
            return part
        if entry is None:
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            self._shapes[shape] = _SEEN_ONCE
        elif entry == _SEEN_ONCE:
            self._keep(shape, self._make(plan, p, max_idle, topo, addrs, macs, part))
        return part

    def _instance(self, plan: VipPlan, topo: Topology, addrs: Sequence[IPAddress],
                  marks: Marks) -> tuple[VipPlan, Topology, list[str], list[str]]:
        """The shape with ``marks``' values: plan, topology, MACs, address texts."""
        marked = marked_plan(plan, addrs, marks)
        mapped = [marks.addr(k, addrs[0].version == 6) for k in range(len(addrs))]
        macs: dict[tuple[int, IPAddress], str] = {}
        i = 0
        for tk in plan.datapaths:
            for k, ip in enumerate(addrs):
                if (tk, ip) in topo.macs:
                    macs[(tk, mapped[k])] = marks.mac(i)
                    i += 1
        local = frozenset(mapped[k] for k, ip in enumerate(addrs) if ip in topo.local_ips)
        mtopo = Topology((), MappingProxyType(macs), local_ips=local)
        return marked, mtopo, list(macs.values()), [addr_text(ip) for ip in mapped]

    def _make(self, plan: VipPlan, p: Pipeline, max_idle: int, topo: Topology,
              addrs: Sequence[IPAddress], macs: Sequence[str], real: VipPart
              ) -> _Template | None:
        plan_a, topo_a, macs_a, texts_a = self._instance(plan, topo, addrs, MARKS_A)
        plan_b, topo_b, macs_b, texts_b = self._instance(plan, topo, addrs, MARKS_B)
        part_a = self._compile(plan_a, p, max_idle, topo_a)
        part_b = self._compile(plan_b, p, max_idle, topo_b)
        if not (len(part_a.flows) == len(part_b.flows) == len(real.flows)
                and len(part_a.shared) == len(part_b.shared) == len(real.shared)):
            return None
        patterns = [owner_pattern(o, texts_a) for o, _, _ in part_a.shared]
        if [owner_from(pt, texts_b) for pt in patterns] != [o for o, _, _ in part_b.shared]:
            return None
        v6 = addrs[0].version == 6
        va = slot_values(plan_a, [MARKS_A.addr(k, v6) for k in range(len(addrs))], macs_a)
        vb = slot_values(plan_b, [MARKS_B.addr(k, v6) for k in range(len(addrs))], macs_b)
        va += shared_cookies([o for o, _, _ in part_a.shared])
        vb += shared_cookies([o for o, _, _ in part_b.shared])
        bodies: list[SlotBody] = []
        for a, b in zip((*part_a.flows, *(x for _, _, x in part_a.shared)),
                        (*part_b.flows, *(x for _, _, x in part_b.shared)), strict=True):
            body = SlotBody.find(a, b, va, vb)
            if body is None or body.fill(vb) != b:
                return None
            bodies.append(body)
        n = len(part_a.flows)
        addr_a, addr_b = va[3:3 + len(addrs)], vb[3:3 + len(addrs)]
        group_a = pack_group(vip_group(p, bucketed_plan(plan_a, MARK_BUCKET_A)))
        group_b = pack_group(vip_group(p, bucketed_plan(plan_b, MARK_BUCKET_B)))
        group = _GroupTemplate.find(group_a, group_b, [va[1], *addr_a], [vb[1], *addr_b],
                                    len(plan.live_backends))
        if group is None or group.body(bucketed_plan(plan_b, MARK_BUCKET_B), addr_b) != group_b:
            return None
        template = _Template(tuple(bodies[:n]), tuple(zip(patterns, bodies[n:], strict=True)),
                             group)
        if template.part(plan, p, addrs, macs) != real:
            return None
        return template
