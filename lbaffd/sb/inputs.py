"""What a pass works from: one consistent read of both databases, parsed, and
how it is brought up to date when some Load_Balancer rows changed (the other
inputs: ``changes``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from lbaffd.model import loadbalancer as model
from lbaffd.model.overlay import Overlay
from lbaffd.model.records import LoadBalancerRow, SbSnapshot
from lbaffd.sb.bridge import BridgeReader
from lbaffd.sb.monitor import DbMonitor, take_dirty
from lbaffd.sb.rows import read_sb, read_service_monitors

LbRows = Mapping[str, LoadBalancerRow | None]  # uuid -> row (None: deleted)
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class Inputs:
    # without its Load_Balancer rows: once parsed, the models hold what a pass
    # needs (the rows were another ~1 KB per LB for as long as they were kept)
    snapshot: SbSnapshot
    parsed: Mapping[str, model.LoadBalancer]  # by uuid; LBs that failed to parse are absent
    issues: tuple[model.ParseIssue, ...]
    labels: Mapping[str, str] = field(default_factory=dict)  # uuid -> what issues call the LB

    @property
    def lbs(self) -> tuple[model.LoadBalancer, ...]:
        return tuple(self.parsed.values())

    def parse_change(self, rows: LbRows) -> tuple[dict[str, model.LoadBalancer | None],
                                                  tuple[model.ParseIssue, ...]]:
        """The changed LBs parsed against this snapshot's datapaths, and the
        issues after the change (the changed LBs' old ones replaced)."""
        snap = self.snapshot
        # issues are labelled by LB name (or uuid)
        labels = {self.labels[u] for u in rows if u in self.labels}
        labels |= {r.name or r.uuid for r in rows.values() if r is not None}
        issues = [i for i in self.issues if i.lb not in labels]
        changed: dict[str, model.LoadBalancer | None] = {}
        for uuid, row in rows.items():
            lb, found = (None, []) if row is None else model.parse_load_balancer(
                row, snap.datapaths, snap.dp_groups)
            changed[uuid] = lb
            issues.extend(found)
        return changed, tuple(issues)

    def with_change(self, rows: LbRows, changed: Mapping[str, model.LoadBalancer | None],
                    issues: tuple[model.ParseIssue, ...]) -> Inputs:
        """These inputs with ``rows`` changed (``changed``: them parsed), in
        O(change) (``Overlay``)."""
        parsed, labels = _overlay(self.parsed), _overlay(self.labels)
        return Inputs(
            self.snapshot,
            parsed.updated({u: lb for u, lb in changed.items() if lb is not None},
                           [u for u, lb in changed.items() if lb is None]),
            issues,
            labels.updated({u: r.name or r.uuid for u, r in rows.items() if r is not None},
                           [u for u, r in rows.items() if r is None]))


def _overlay(m: Mapping[str, _V]) -> Overlay[str, _V]:
    return m if isinstance(m, Overlay) else Overlay(dict(m))


def read_all(ovs: DbMonitor, sb: DbMonitor, bridge: str, chassis: str,
             local: BridgeReader) -> Inputs | None:
    """Everything, when both IDLs are in sync (else None: keep what is installed)."""
    if not (ovs.idl is not None and ovs.idl.in_sync and sb.idl is not None
            and sb.idl.in_sync):
        return None
    with ovs.conn.lock:
        take_dirty(ovs)  # everything is read: what changed so far is covered
        interfaces = local.read(ovs, bridge)
    with sb.conn.lock:
        take_dirty(sb)
        lbs_rows, dps, groups, pbs = read_sb(sb)
        monitors = read_service_monitors(sb)
    snap = SbSnapshot(
        load_balancers=MappingProxyType({}), datapaths=MappingProxyType(dps),
        dp_groups=MappingProxyType(groups), port_bindings=MappingProxyType(pbs),
        interfaces=interfaces, chassis_name=chassis, service_monitors=monitors,
    )
    lbs, issues = model.parse_all(lbs_rows.values(), dps, groups)
    labels = Overlay({u: r.name or r.uuid for u, r in lbs_rows.items()})
    return Inputs(snap, Overlay({lb.uuid: lb for lb in lbs}), tuple(issues), labels)
