"""What the daemon keeps while it runs next to ovn-controller (companion mode).

The pure decisions are elsewhere (``companion``: which LBs, for which ports;
``ovnlayout``: OVN's output stage; ``flushrecovery``: what to put back after a
flush); this holds their state between passes and does their I/O on the
switch, so the worker loop only calls it at a few points: before a full pass
(``view``), for an incremental LB change (``realize``), when the switch
reports lbaffd's flows or entries deleted, and after a pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from lbaffd.compile.layout import HAIRPIN_ZONE, Pipeline
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import LoadBalancer
from lbaffd.model.ovnlayout import OvnLayout
from lbaffd.model.ovnlayout import merge as merge_layout
from lbaffd.model.plan import VipPlan
from lbaffd.model.records import SbSnapshot
from lbaffd.model.topology import Topology
from lbaffd.openflow.flowdesc import iter_entries
from lbaffd.openflow.messages import match_and_idle
from lbaffd.ops.metrics import Metrics
from lbaffd.ovn import chassis as ovnchassis
from lbaffd.ovn.flushrecovery import FlushRecovery
from lbaffd.ovn.takeover import (
    Scope,
    ovn_zones,
    scopes,
    take_over,
    taken_by,
    zone_clash,
)
from lbaffd.reconcile.changes import Step
from lbaffd.reconcile.entries import EntryKeeper
from lbaffd.reconcile.longidle import RemovedEntry

log = structlog.get_logger("lbaffd.companion")

ENTRY_AGES_INTERVAL = 5.0  # seconds between polls of the learned entries' idle ages


class CompanionRuntime:
    def __init__(self, pipeline: Pipeline, policy: str, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.metrics = metrics
        self.flush = FlushRecovery()
        self.scope: Scope | None = None
        # the LBs left to OVN on purpose, by uuid: their names, and sorted
        self._left: dict[str, str] = {}
        self._left_names: tuple[str, ...] = ()
        self.layout: OvnLayout | None = None  # OVN's output stage, as last seen
        self._retry = 0.0
        self.retry_at = 0.0  # >0: a full pass is due then (ports OVN had not programmed)
        self.ages_due = 0.0  # next poll of the learned entries' idle ages

    @property
    def left_to_ovn(self) -> tuple[str, ...]:
        return self._left_names

    def zone_clash(self, bridge_external_ids: Mapping[str, str]) -> list[str]:
        """Ports to which ovn-controller gave lbaffd's zones (none, normally)."""
        clash = zone_clash(ovn_zones(bridge_external_ids), (self.pipeline.ct_zone, HAIRPIN_ZONE))
        self.metrics.ct_zone_clash.set(1 if clash else 0)
        return clash

    # ------------------------------------------------------------ passes

    def view(self, snap: SbSnapshot, lbs: Iterable[LoadBalancer], topo: Topology,
             channel: Any) -> tuple[tuple[LoadBalancer, ...], Topology]:
        """Before a full pass: the LBs taken over, with the client switches
        they apply to, and the topology reduced to the ports ovn-controller
        has programmed (their output flows found on the switch), with OVN's
        layout and the keys of its flows in the tables lbaffd shares."""
        scope = scopes(snap, topo)
        self.scope = scope
        taken = take_over(lbs, scope, self.policy)
        self._set_left(taken.left)
        ofports = frozenset(p.ofport for p in topo.local_ports)
        layout = self.layout = merge_layout(
            self.layout, ovnchassis.read_layout(channel, sorted(ofports)), ofports)
        known = layout.known_ports if layout is not None else frozenset()
        waiting = sorted(p.logical_port for p in topo.local_ports if p.ofport not in known)
        if waiting:
            # not programmed by ovn-controller yet (or not an OVN port): look again soon
            self._retry = min(max(self._retry * 2, 0.25), 5.0)
            self.retry_at = time.monotonic() + self._retry
            log.info("ports_not_programmed_by_ovn", ports=",".join(waiting[:20]),
                     count=len(waiting), retry_in=self._retry)
        else:
            self._retry = self.retry_at = 0.0
        ports = tuple(p for p in topo.local_ports if p.ofport in known)
        shared = [0] + ([layout.output_table] if layout is not None else [])
        return taken.lbs, replace(topo, local_ports=ports, ovn=layout,
                                       foreign=ovnchassis.foreign_ids(channel, shared))

    def realize(self, changed: Mapping[str, LoadBalancer | None]
                ) -> dict[str, LoadBalancer | None] | None:
        """An incremental LB change as lbaffd realizes it (an LB not taken over
        is gone for lbaffd); None before the first full pass."""
        if self.scope is None:
            return None
        taken = take_over((lb for lb in changed.values() if lb is not None), self.scope,
                          self.policy)
        by_uuid = {lb.uuid: lb for lb in taken.lbs}
        return {u: by_uuid.get(u) for u in changed}

    def incremental(self, step: Step, last: Topology | None
                    ) -> tuple[Mapping[str, LoadBalancer | None], Topology, Topology] | None:
        """An incremental step (``changes.Step``) as companion mode realizes it:
        the changed LBs taken over (or gone for lbaffd) and the step's topology
        with the last full pass's view of OVN (programmed ports, output stage,
        other controllers' keys).  None when a full pass must run: the local
        ports changed, or which datapaths their clients reach."""
        # (the scope cannot have changed otherwise: what it is made of, the
        # patch and gateway ports and the datapaths, makes a step structural,
        # i.e. a full pass; ``topoindex.TopologyIndex.apply``, ``sb.delta``)
        if last is None or self.scope is None or step.ports:
            return None
        changed = self.realize(step.changed)
        if changed is None:
            return None
        def view(t: Topology) -> Topology:
            return replace(t, local_ports=last.local_ports, ovn=last.ovn, foreign=last.foreign)

        return changed, view(step.topo), view(step.old_topo)

    def after_change(self, changed: Mapping[str, LoadBalancer | None]) -> None:
        """The LBs an incremental change touched (None: gone): which of them
        are left to OVN now, in O(change) (a step used to apply the policy
        to all 5000 LBs again)."""
        left, moved = self._left, False
        for uuid, lb in changed.items():
            was = left.pop(uuid, None)
            now = ((lb.name or lb.uuid) if lb is not None and not taken_by(self.policy, lb)
                   else None)
            if now is not None:
                left[uuid] = now
            moved |= was != now
        if moved:
            self._names_left()

    def _set_left(self, left: Mapping[str, str]) -> None:
        """What a full pass leaves to OVN."""
        self._left = dict(left)
        self._names_left()

    def _names_left(self) -> None:
        self._left_names = tuple(sorted(self._left.values()))
        self.metrics.lbs_left_to_ovn.set(len(self._left_names))

    # ------------------------------------------------------------ flushes

    def deleted(self, removed: Iterable[RemovedEntry]) -> None:
        """Learned entries the switch reported deleted: kept, maybe a flush."""
        self.flush.hold(e for e in removed if not e.idled_out)

    def after_pass(self, ok: bool, entries: EntryKeeper, plans: Iterable[VipPlan],
                   channel: Any) -> None:
        """After a pass (``ok``: it went through) or a batch of deletions: once
        lbaffd's flows are back, the learned entries a flush took go back too."""
        if ok:
            self.flush.repaired()
        due = self.flush.take()
        if due is None:
            return
        try:
            n = entries.restore(due.restores, plans, channel)
        except Exception as exc:
            log.warning("affinity_entries_not_restored", count=len(due.restores),
                        error=str(exc))
            return
        if due.first:
            self.metrics.flush_recoveries.inc()
        self.metrics.flush_recovery_seconds.observe(due.seconds)
        log.info("flush_recovered", ms=round(due.seconds * 1000, 1), entries_restored=n,
                 entries_reported=len(due.restores), first=due.first)

    def poll_ages(self, channel: Any, now: float) -> None:
        """How long each learned entry has been idle, so one put back after a
        flush gets the time it had left (FLOW_REMOVED does not say): one
        flow-desc dump of the affinity table, matches and stats only."""
        self.ages_due = now + ENTRY_AGES_INTERVAL
        if channel is None or not channel.connected:
            return
        try:
            parts = channel.dump_flow_desc(own.LEARNED_COOKIE, own.MAGIC_MASK,
                                           self.pipeline.affinity)
        except Exception as exc:
            log.debug("entry_ages_not_read", error=str(exc))
            return
        ages = {}
        for part in parts:
            for offset, _, _ in iter_entries(part.raw):
                got = match_and_idle(part.raw, offset)
                if got is not None:
                    ages[got[0]] = got[1]
        self.flush.ages.update(ages, time.monotonic())
