"""Companion mode: which load balancers lbaffd takes over from OVN, and for
which of this chassis' ports (pure functions; the daemon feeds them).

OVN applies a *switch* LB to traffic entering the switch from its own ports
(northd skips LB stages for packets from router ports), and a *router* LB to
traffic entering the router, i.e. from every switch patched to it, directly
or through other routers and switches.  lbaffd intercepts at the client's
port (table 0), so an LB is realized, per client switch ``S`` with a local
port, when it is on ``S`` or on a router in ``S``'s patch-connected component.
The LB's ``datapaths`` are rewritten to those client switches: every later
stage (dispatch, affinity, learned entries) is then keyed by the client's
switch, exactly as in the other modes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from lbaffd.model.loadbalancer import LoadBalancer
from lbaffd.model.records import DatapathRow, SbSnapshot
from lbaffd.model.topology import Topology, closure, patch_neighbours

TAKE_OVER_AFFINITY = "affinity"  # LBs with options:affinity_timeout (OVN's fails)
TAKE_OVER_ALL = "all"
TAKE_OVER = (TAKE_OVER_AFFINITY, TAKE_OVER_ALL)


@dataclass(frozen=True, slots=True)
class Scope:
    """Per local client switch (tunnel key): the datapaths whose LBs apply to
    traffic from its ports."""

    applies: Mapping[int, frozenset[int]]
    switches: Mapping[int, DatapathRow]


def scopes(snap: SbSnapshot, topo: Topology) -> Scope:
    patches = patch_neighbours(snap)
    by_key = {dp.tunnel_key: dp for dp in snap.datapaths.values()}
    applies: dict[int, frozenset[int]] = {}
    switches: dict[int, DatapathRow] = {}
    for port in topo.local_ports:
        dp = port.datapath
        if dp.is_router or dp.tunnel_key in applies:
            continue
        component = closure([dp.uuid], patches)
        routers = {d.tunnel_key for u in component
                   if (d := snap.datapaths.get(u)) is not None and d.is_router}
        applies[dp.tunnel_key] = frozenset({dp.tunnel_key} | routers)
        switches[dp.tunnel_key] = by_key.get(dp.tunnel_key, dp)
    return Scope(applies, switches)


@dataclass(frozen=True, slots=True)
class TakeOver:
    """The LBs lbaffd realizes (datapaths rewritten to client switches) and
    those it leaves to OVN on purpose (``--take-over``), by uuid: their names."""

    lbs: tuple[LoadBalancer, ...]
    left: Mapping[str, str]

    @property
    def left_to_ovn(self) -> tuple[str, ...]:
        return tuple(sorted(self.left.values()))


def taken_by(policy: str, lb: LoadBalancer) -> bool:
    """Whether ``policy`` takes ``lb`` over: ``affinity`` takes the LBs with an
    ``affinity_timeout`` (OVN 23.03 drops the first connection of every new
    client of those), ``all`` every LB."""
    return policy == TAKE_OVER_ALL or lb.affinity_timeout is not None


def take_over(lbs: Iterable[LoadBalancer], scope: Scope, policy: str) -> TakeOver:
    """The ``--take-over`` policy applied to ``lbs`` (``taken_by``)."""
    if policy not in TAKE_OVER:
        raise ValueError(f"--take-over must be one of {', '.join(TAKE_OVER)}")
    taken: list[LoadBalancer] = []
    left: dict[str, str] = {}
    for lb in lbs:
        if not taken_by(policy, lb):
            left[lb.uuid] = lb.name or lb.uuid
            continue
        lb_dps = {dp.tunnel_key for dp in lb.datapaths}
        clients = tuple(scope.switches[s] for s in sorted(scope.applies)
                        if scope.applies[s] & lb_dps)
        if clients:
            taken.append(replace(lb, datapaths=clients))
    return TakeOver(tuple(taken), left)


def ovn_zones(bridge_external_ids: Mapping[str, str]) -> dict[str, int]:
    """The conntrack zones ovn-controller has assigned (it records them in
    br-int's ``external_ids:ct-zone-<name>``; ``controller/ct-zone.c``)."""
    zones: dict[str, int] = {}
    for key, value in bridge_external_ids.items():
        if key.startswith("ct-zone-") and value.isascii() and value.isdigit():
            zones[key[len("ct-zone-"):]] = int(value)
    return zones


def zone_clash(zones: Mapping[str, int], wanted: Iterable[int]) -> list[str]:
    """Names whose OVN zone is one lbaffd wants for itself."""
    w = set(wanted)
    return sorted(name for name, z in zones.items() if z in w)
