"""Between full passes: every input change applied in O(what it affects).

``ChangeTracker`` holds what the last full pass read (``Inputs``), the
topology derived from it, a ``TopologyIndex`` that keeps that topology up to
date row by row, and which LBs use each backend address.  ``step`` turns a
``Delta`` into the LBs to recompile and the new topology:

- Load_Balancer rows: those LBs, parsed again (as before);
- a Port_Binding: its addresses' MAC entries and, for a port named by a
  Service_Monitor, that monitor's verdict; only the LBs with a backend at an
  address whose MAC (on a local datapath), health or locality (hairpin)
  changed are recompiled: a pod on another chassis that is no backend here
  costs no compile and no OpenFlow message;
- a Service_Monitor status flip: the LBs with that backend;
- a local interface added or removed: that port's classifier flows (and the
  LBs whose backend it is, which become hairpin-capable or stop being);
- a Logical_DP_Group's members: the LBs of that group, when its members on
  this chassis's local datapaths changed (else nothing);
- anything that changes which datapaths are local (a first or last port of
  a datapath, patch/gateway ports, datapaths, chassis), or a bulk change (see
  ``BULK_MIN``):
  None, and the caller runs a full pass (rare next to the above).

``step`` mutates the index; the caller drops the tracker if the step is not
committed (a declined or failed reconcile), and the next full pass builds a
new one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from lbaffd.model import loadbalancer as model
from lbaffd.model.records import DpGroupRow
from lbaffd.model.topoindex import TopologyIndex, backend_index
from lbaffd.model.topology import Topology
from lbaffd.sb.delta import Delta
from lbaffd.sb.inputs import Inputs

# A step that recompiles more LBs than this (and more than a quarter of them)
# runs as a full pass instead: it sends its bundle while it compiles, so
# ovs-vswitchd checks the adds meanwhile, where an incremental step sends
# everything after compiling (seen at 1000 new LBs in one SB transaction).
BULK_MIN = 100


@dataclass(frozen=True, slots=True)
class Step:
    changed: Mapping[str, model.LoadBalancer | None]  # LBs to recompile (None: gone)
    topo: Topology
    old_topo: Topology
    ports: bool  # the local ports changed: their classifier flows
    inputs: Inputs
    issues: tuple[model.ParseIssue, ...]

    @property
    def no_effect(self) -> bool:
        """Nothing compiled changes: no OpenFlow message at all."""
        return not self.changed and not self.ports


class ChangeTracker:
    def __init__(self, inputs: Inputs, topo: Topology,
                 index: TopologyIndex | None = None) -> None:
        """``index``: the ``TopologyIndex`` of ``inputs`` already made (the
        pass took ``topo`` from it)."""
        self.inputs = inputs
        self.topo = topo
        self.index = TopologyIndex(inputs.snapshot) if index is None else index
        self.backends = backend_index(inputs.lbs)

    def bulk_limit(self) -> int:
        """More changed LBs than this make a step a full pass (see ``BULK_MIN``)."""
        return max(BULK_MIN, len(self.inputs.parsed) // 4)

    def step(self, delta: Delta) -> Step | None:
        if delta.structural or delta.bulk_lbs:
            return None
        last = self.inputs
        lb_rows = dict(delta.lbs)
        if delta.dp_groups:
            last, moved = self._regroup(delta)
            lb_rows = {**{u: r for u, r in delta.group_lbs.items() if moved & r.groups},
                       **lb_rows}
        bulk = self.bulk_limit()
        if len(lb_rows) > bulk:
            return None  # (before parsing them: the full pass parses every LB anyway)
        if lb_rows:
            changed, issues = last.parse_change(lb_rows)
            inputs = last.with_change(lb_rows, changed, issues)
        else:
            changed, issues, inputs = {}, last.issues, last
        topo = self.topo
        if delta.port_bindings or delta.monitors or delta.interfaces is not None:
            tc = self.index.apply(delta.port_bindings, delta.monitors, delta.interfaces)
            if tc.structural:
                return None
            topo = self.index.topology()
            affected = {u for ip in tc.ips for u in self.backends.get(ip, ())}
            recompile = {u: last.parsed[u] for u in affected
                         if u not in changed and u in last.parsed}
            changed = {**recompile, **changed}
            snap = replace(inputs.snapshot,
                           port_bindings=MappingProxyType(self.index.pbs),
                           service_monitors=(tuple(self.index.monitors.values())
                                             if delta.monitors
                                             else inputs.snapshot.service_monitors),
                           interfaces=self.index.interfaces)
            inputs = replace(inputs, snapshot=snap)
            ports = tc.ports
        else:
            ports = False
        if len(changed) > bulk:
            return None  # a bulk change: the full pass streams its bundle as it compiles
        return Step(changed, topo, self.topo, ports, inputs, issues)

    def _regroup(self, delta: Delta) -> tuple[Inputs, set[str]]:
        """The inputs with the new Logical_DP_Group rows, and the groups
        whose *local* members changed: only their LBs move on this chassis
        (a switch of another node joining the cluster's LB group moves none
        here, and their models keep the old remote members until the next
        full pass, which compiles to the same flows)."""
        snap = self.inputs.snapshot
        local = self.topo.local_datapaths

        def members(group: DpGroupRow | None) -> frozenset[int]:
            if group is None:
                return frozenset()
            return frozenset(tk for d in group.datapaths
                             if (dp := snap.datapaths.get(d)) is not None
                             and (tk := dp.tunnel_key) in local)

        moved = {u for u, g in delta.dp_groups.items()
                 if members(g) != members(snap.dp_groups.get(u))}
        groups = dict(snap.dp_groups)
        for u, g in delta.dp_groups.items():
            if g is None:
                groups.pop(u, None)
            else:
                groups[u] = g
        snap = replace(snap, dp_groups=MappingProxyType(groups))
        return replace(self.inputs, snapshot=snap), moved

    def commit(self, step: Step) -> None:
        """The step is on the switch: it becomes the state to follow."""
        for uuid in step.changed:
            old = self.inputs.parsed.get(uuid)
            new = step.inputs.parsed.get(uuid)
            if old is new:
                continue
            for lb, add in ((old, False), (new, True)):
                if lb is None:
                    continue
                for vip in lb.vips:
                    for be in vip.backends:
                        if add:
                            self.backends.setdefault(be.ip, set()).add(uuid)
                            continue
                        users = self.backends.get(be.ip)
                        if users is not None:
                            users.discard(uuid)
                            if not users:  # (kept, every pod IP that ever backed
                                del self.backends[be.ip]  # a VIP stayed till a full pass)
        self.inputs, self.topo = step.inputs, step.topo
