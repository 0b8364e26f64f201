"""Which conntrack entries to flush when a backend leaves a VIP.

A connection through a VIP is DNATed by ``ct(commit, zone=reg13,
nat(dst=backend))`` (stages.bucket action): its conntrack entry keeps the
original tuple ``client -> VIP`` and the reply tuple ``backend -> client``, and
every later packet of it follows that entry, not the group.  So a backend
removed from ``vips`` (or reported offline by its Service_Monitor) keeps
receiving the connections it had for as long as they stay active: harmless
for TCP (the backend answers RST or FIN), but a UDP client that keeps
sending from one source port never reaches another backend.

Like kube-proxy (which clears a removed endpoint's UDP entries) and OVN (its
``options:ct_flush``), lbaffd flushes, in each zone the VIP is committed in,
the entries whose original destination is the VIP and whose reply source is
the backend: always for UDP VIPs, for TCP/SCTP VIPs when the LB sets
``options:ct_flush=true``.  The zone comes from the pipeline
(``Pipeline.ct_zone``): lbaffd does not recompute it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lbaffd.compile.layout import Pipeline
from lbaffd.model.loadbalancer import Endpoint
from lbaffd.model.plan import VipPlan
from lbaffd.openflow.ctflush import CtFlush, CtTuple


@dataclass(frozen=True, slots=True)
class Departure:
    """A backend that took a VIP's new connections and no longer does."""

    lb: str
    vip: str  # the ``vips`` key
    backend: Endpoint
    reason: str  # "removed" (not in vips, or the VIP gone) or "down" (Service_Monitor)
    # one per conntrack zone of the VIP's datapaths; when all of a VIP's
    # backends leave, the first departure carries VIP-wide flushes, the rest none
    flushes: tuple[CtFlush, ...]


def wants_flush(plan: VipPlan) -> bool:
    return plan.lb.ct_flush or plan.vip.protocol == "udp"


def departures(old: Iterable[VipPlan], new: Iterable[VipPlan],
               pipeline: Pipeline) -> list[Departure]:
    """The backends live in ``old`` (the plans of the previous pass) that are
    not live in ``new``, for VIPs that want their entries flushed."""
    # inline wants_flush: this scan runs on every full pass that changes a
    # group (~0.15 ms at 5000 VIPs; the call would double it)
    candidates = [p for p in old if p.lb.ct_flush or p.vip.protocol == "udp"]
    if not candidates:
        return []
    by_owner = {p.owner: p for p in new}
    return replaced_departures(((p, by_owner.get(p.owner)) for p in candidates), pipeline)


def replaced_departures(replaced: Iterable[tuple[VipPlan, VipPlan | None]],
                        pipeline: Pipeline) -> list[Departure]:
    """``departures`` for the plans a pass replaced, each with its successor
    (None: the VIP went): an incremental pass knows them, and scanning every
    plan of 5000 VIPs twice cost it ~2 ms (issue 17)."""
    out: list[Departure] = []
    for before, after in replaced:
        if after is before or not wants_flush(before):
            continue
        live = set(after.live_backends) if after is not None else set()
        listed = set(after.vip.backends) if after is not None else set()
        zones = sorted({z for tk in before.datapaths
                        if (z := pipeline.zone_of(tk)) is not None})
        leaving = [be for be in before.live_backends if be not in live]
        if not zones or not leaving:
            continue
        vip = before.vip.endpoint
        # an IP-only VIP balances every protocol: ip_proto 0 is a wildcard
        proto = before.vip.ip_proto if vip.port is not None else 0
        orig = CtTuple(dst=vip.ip, dst_port=vip.port)
        # Each partial-tuple flush makes ovs-vswitchd walk the zone's entries:
        # when every backend leaves (the VIP deleted, say), one walk per zone
        # for the whole VIP instead of one per backend.
        whole = len(leaving) == len(before.live_backends) > 1
        for i, be in enumerate(leaving):
            if whole:
                flushes = tuple(CtFlush(z, proto, orig) for z in zones) if i == 0 else ()
            else:
                flushes = tuple(CtFlush(z, proto, orig, CtTuple(src=be.ip, src_port=be.port))
                                for z in zones)
            out.append(Departure(before.lb.name or before.lb.uuid, before.vip.key, be,
                                 "down" if be in listed else "removed", flushes))
    return out
