"""Planning: which VIP goes on which local datapath, with which group, buckets
and live backends (``VipPlan``) — what the compile side builds flows from.

The plan layer sits below the stages, the templates and the compiler: they all
take ``VipPlan`` from here, so nothing of the compile side imports the
compiler.  A pass plans once (``plan_vips``) and compiles from that.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from lbaffd.model import distribution as dist
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import Endpoint, LoadBalancer, ParseIssue, Vip
from lbaffd.model.topology import Topology


class Buckets(Sequence[tuple[int, Endpoint]]):
    """A group's buckets in order, (bucket id, backend) each, with their
    weights (``weights()``; ``dist.DEFAULT_WEIGHT`` unless given).

    Stored compactly: the ids an ``array`` of 32-bit ints, the backends an
    index per bucket into the distinct backends, the pairs made as they are
    read (a balanced VIP once had 256 buckets, 730k of the daemon's 1.9M
    objects at N=5000 as tuples of pairs; ``bench.memprobe``, issue 19).
    Equal to (and hashed as) the tuple of its pairs when every weight is the
    default; with other weights, only to ``Buckets`` with the same ones."""

    __slots__ = ("_backends", "_hash", "_ids", "_weights", "_which")

    def __init__(self, pairs: Iterable[tuple[int, Endpoint]] = (),
                 weights: Iterable[int] | None = None) -> None:
        index: dict[Endpoint, int] = {}
        ids, which = array("I"), array("I")
        for bid, be in pairs:
            ids.append(bid)
            which.append(index.setdefault(be, len(index)))
        self._ids, self._which, self._backends = ids, which, tuple(index)
        self._weights = _weights_or_none(weights)
        self._hash = 0

    @classmethod
    def of(cls, ids: array[int], which: array[int], backends: tuple[Endpoint, ...],
           weights: array[int] | None = None) -> Buckets:
        """From its parts: bucket ``i`` is ``(ids[i], backends[which[i]])``
        with weight ``weights[i]`` (all the default when None)."""
        self = cls.__new__(cls)
        self._ids, self._which, self._backends = ids, which, backends
        self._weights, self._hash = _weights_or_none(weights), 0
        return self

    def weights(self) -> Sequence[int]:
        """Each bucket's weight, in order."""
        if self._weights is None:
            return (dist.DEFAULT_WEIGHT,) * len(self._ids)
        return self._weights

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[tuple[int, Endpoint]]:
        bes = self._backends
        return zip(self._ids, [bes[i] for i in self._which], strict=True)

    @overload
    def __getitem__(self, i: int) -> tuple[int, Endpoint]: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[tuple[int, Endpoint], ...]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return tuple(self)[i]
        return (self._ids[i], self._backends[self._which[i]])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Buckets):
            if self._ids != other._ids or self._weights != other._weights:
                return False
            a, b = self._backends, other._backends
            return all(a[i] == b[j] for i, j in zip(self._which, other._which, strict=True))
        if isinstance(other, tuple):
            return self._weights is None and tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        h = self._hash
        if not h:
            pairs = tuple(self)
            h = hash(pairs if self._weights is None else (pairs, tuple(self._weights))) or 1
            self._hash = h
        return h

    def owners(self, live: Sequence[Endpoint]) -> list[int]:
        """Each bucket's backend as its index in ``live`` (which holds them
        all): one lookup a distinct backend, not one hash a bucket."""
        where = {be: i for i, be in enumerate(live)}
        at = [where[be] for be in self._backends]
        return [at[w] for w in self._which]

    def __repr__(self) -> str:
        if self._weights is None:
            return f"Buckets({list(self)!r})"
        return f"Buckets({list(self)!r}, weights={list(self._weights)!r})"


def _weights_or_none(weights: Iterable[int] | None) -> array[int] | None:
    """The weights as stored: None when every one is the default."""
    if weights is None:
        return None
    got = weights if isinstance(weights, array) else array("H", weights)
    return None if all(w == dist.DEFAULT_WEIGHT for w in got) else got


def bucket_weights(buckets: Sequence[tuple[int, Endpoint]]) -> Sequence[int]:
    """The weights of a plan's buckets (a plain tuple of pairs has the
    default ones: marker plans and tests)."""
    if isinstance(buckets, Buckets):
        return buckets.weights()
    return (dist.DEFAULT_WEIGHT,) * len(buckets)


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
    buckets: Sequence[tuple[int, Endpoint]] = ()  # a ``Buckets`` when planned
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


def group_buckets(backends: tuple[Endpoint, ...], mode: str) -> Buckets:
    """The buckets of a VIP's group, in order: a bucket per backend, ordered
    by id, then for ``balanced`` (where the 256-slot table does not divide
    evenly, see ``distribution``) the filler, a second bucket of the backend
    whose bucket came last, weighing 1 to the others' ``255 // n``.

    Ids: blake2b-32 of ``f"{backend}"`` (the filler's: ``f"{backend}#filler"``),
    top bit cleared, the next free id on a clash; derived from the backend
    alone, so ids never shift when other backends come or go."""
    ordered = tuple(sorted(backends, key=_endpoint_order))
    n = len(ordered)
    layout = dist.bucket_layout(n, mode)
    ids, which = array("I"), array("I")
    taken: dict[int, int] = {}

    def free_id(text: str) -> int:
        bid = _bucket_hash(text)
        while bid in taken:
            bid = (bid + 1) & 0x7FFFFFFF
        return bid

    for i, be in enumerate(ordered):
        taken[free_id(str(be))] = i
    for bid in sorted(taken):
        ids.append(bid)
        which.append(taken[bid])
    if len(layout) == n:
        return Buckets.of(ids, which, ordered)
    last = which[-1]
    ids.append(free_id(f"{ordered[last]}#filler"))
    which.append(last)
    return Buckets.of(ids, which, ordered, array("H", (w for _, w in layout)))


def _endpoint_order(be: Endpoint) -> tuple[int, int | None]:
    """``Endpoint``'s own order (address, then port) for the addresses of one
    VIP, which are of one family: ``int`` instead of ipaddress's ``__lt__``
    (Python code, called ~30 times a VIP)."""
    return int(be.ip), be.port


def _bucket_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") & (
        0x7FFFFFFF)


def _expected_shares(live: tuple[Endpoint, ...], buckets: Buckets, mode: str,
                     min_slots: int) -> tuple[float, ...]:
    """Each live backend's expected share of new connections: from OVS's dp_hash
    slot table for dp_hash groups, even for the client hash."""
    slots = (dist.ovs_slots(buckets.weights(), min_slots) if mode != "client-hash"
             else None)
    if not live:
        return ()
    if slots is None:
        return tuple(1 / len(live) for _ in live)
    per = [0] * len(live)
    for i, n in zip(buckets.owners(live), slots, strict=True):
        per[i] += n
    total = sum(per)
    return tuple(p / total for p in per)


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


@dataclass(frozen=True, slots=True)
class Planned:
    """One pass's planning: the (LB, VIP, local datapaths) realized, the
    conflicts reported, the slots more than one LB claims."""

    vips: tuple[tuple[LoadBalancer, Vip, tuple[int, ...]], ...]
    issues: tuple[ParseIssue, ...]
    contested: frozenset[Slot]

    @property
    def owners(self) -> list[own.OwnerKey]:
        return [own.vip_owner(lb.uuid, vip.key) for lb, vip, _ in self.vips]


def plan_pass(lbs: tuple[LoadBalancer, ...], topo: Topology,
              incumbents: frozenset[own.OwnerKey] = frozenset()) -> Planned:
    """``plan_vips`` with what the compiler needs too, once per pass."""
    planned, issues, contested = _plan_vips(lbs, topo, incumbents)
    return Planned(tuple(planned), tuple(issues), frozenset(contested))


def vip_owners(lbs: tuple[LoadBalancer, ...], topo: Topology,
               incumbents: frozenset[own.OwnerKey] = frozenset()) -> list[own.OwnerKey]:
    planned, _ = plan_vips(lbs, topo, incumbents)
    return [own.vip_owner(lb.uuid, vip.key) for lb, vip, _ in planned]


class BucketMemo:
    """The buckets of each (live backends, mode) a pass planned, handed to the
    next pass: a VIP whose backends did not change gets the very tuple of
    the previous plan, not an equal new one.

    When a balanced VIP had up to 256 buckets (~25 KB of tuples and ints, and
    256 hashes to make), a full pass held the previous pass's plans and its
    own until it ended, ~14 MB more at N=1000 (``bench.memprobe``, issue 19),
    and the Python arenas the new copies took stayed resident.  Keeps only
    what the latest full pass used, plus what later plans add (as
    ``compile.state.VipCache``)."""

    def __init__(self) -> None:
        self._last: dict[tuple[tuple[Endpoint, ...], str], Buckets] = {}
        self._used: dict[tuple[tuple[Endpoint, ...], str], Buckets] = {}

    def buckets(self, live: tuple[Endpoint, ...], mode: str) -> Buckets:
        key = (live, mode)
        got = self._used.get(key) or self._last.get(key)
        if got is None:
            got = group_buckets(live, mode)
        self._used[key] = got
        return got

    def end_pass(self) -> None:
        self._last, self._used = self._used, {}

    def __len__(self) -> int:
        return len(self._last) + len(self._used)


def live_backends(vip: Vip, topo: Topology) -> tuple[Endpoint, ...]:
    """The backends of ``vip`` that no health check reports down."""
    return tuple(be for be in vip.backends if not topo.is_down(be, vip.protocol))


def make_plan(lb: LoadBalancer, vip: Vip, dps: tuple[int, ...], topo: Topology,
              group_ids: Mapping[own.OwnerKey, int], distribution: str,
              min_slots: int, memo: BucketMemo | None = None) -> VipPlan:
    owner = own.vip_owner(lb.uuid, vip.key)
    live = live_backends(vip, topo)
    # hash(ip_src) (affinity) is rendezvous hashing: no slot table to fill
    hashed = lb.affinity_timeout or lb.selection_fields
    mode = "client-hash" if hashed else lb.distribution or distribution
    buckets = memo.buckets(live, mode) if memo is not None else group_buckets(live, mode)
    return VipPlan(lb, vip, owner, group_ids[owner], dps, live, buckets, mode,
                   _expected_shares(live, buckets, mode, min_slots))


def replan(old: VipPlan | None, lb: LoadBalancer, vip: Vip, dps: tuple[int, ...],
           topo: Topology, group_ids: Mapping[own.OwnerKey, int], distribution: str,
           min_slots: int) -> VipPlan:
    """``make_plan``, or ``old`` itself when it would equal it: the same LB
    and VIP objects (an LB recompiled because of the topology only), the same
    datapaths and group, the same backends live.  A local port plugged in or
    a MAC learned then keeps the plan, its buckets and its cached hash, and
    the compile cache finds its part from the old one (``VipCache.derive``)."""
    if (old is not None and old.lb is lb and old.vip is vip and old.datapaths == dps
            and old.group_id == group_ids[old.owner]
            and old.live_backends == live_backends(vip, topo)):
        return old
    return make_plan(lb, vip, dps, topo, group_ids, distribution, min_slots)
