"""What changed in the SB and the local OVS DB since the worker last read.

The SB IDL records the uuids of the rows each update touched
(``NotifyingIdl.notify``), a new dump after a reconnect included (it is
compared with the rows held: ``NotifyingIdl._Idl__clear``); the first sync
records "unknown" (None) and everything is read.  ``read_delta`` copies just the changed rows
of the tables lbaffd follows row by row (Load_Balancer, Port_Binding,
Service_Monitor) and, when the local DB changed, the integration bridge's
interfaces (``BridgeReader``: only its changed Port and Interface rows are
converted again).  Changes to the other SB
tables (Datapath_Binding, Logical_DP_Group, Chassis) are only named: they
reshape which datapaths are local or which LBs are where, and the caller
runs a full pass for them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from lbaffd.model.records import (
    DpGroupRow,
    InterfaceRow,
    LoadBalancerRow,
    PortBindingRow,
    ServiceMonitorRow,
)
from lbaffd.sb.bridge import BridgeReader
from lbaffd.sb.monitor import DbMonitor, take_dirty, taken_since
from lbaffd.sb.rows import dpg_record, lbs_of_groups, pb_record, read_lbs, read_rows, sm_record

ROW_TABLES = frozenset({"Load_Balancer", "Port_Binding", "Service_Monitor",
                        "Logical_DP_Group"})
_EMPTY: Mapping[str, None] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Delta:
    lbs: Mapping[str, LoadBalancerRow | None] = field(default_factory=lambda: _EMPTY)
    port_bindings: Mapping[str, PortBindingRow | None] = field(default_factory=lambda: _EMPTY)
    monitors: Mapping[str, ServiceMonitorRow | None] = field(default_factory=lambda: _EMPTY)
    interfaces: tuple[InterfaceRow, ...] | None = None  # the bridge's, if the local DB changed
    structural: frozenset[str] = frozenset()  # other SB tables that changed
    dp_groups: Mapping[str, DpGroupRow | None] = field(default_factory=lambda: _EMPTY)
    group_lbs: Mapping[str, LoadBalancerRow] = field(default_factory=dict)
    # when the IDL took the first of these changes in (time.time(); None: no
    # change): the start of the change's latency, logged with its pass
    arrived_at: float | None = None
    # this many Load_Balancer rows changed, more than the caller's ``max_lbs``:
    # none of the SB's rows were read (a full pass reads everything anyway)
    bulk_lbs: int = 0

    @property
    def empty(self) -> bool:
        return not (self.lbs or self.port_bindings or self.monitors or self.structural
                    or self.dp_groups or self.interfaces is not None or self.bulk_lbs)


def read_delta(ovs: DbMonitor, sb: DbMonitor, bridge: str, local: BridgeReader,
               max_lbs: int | None = None) -> Delta | None:
    """The rows changed since the last read (or since ``read_all``), or None
    when unknown (the first sync, or a plain ``monitor`` reply that replaced
    every row): read everything.  A DB that
    is away still holds its last consistent rows and what changed up to
    them: the caller defers while one is (``PassRunner.run``), and a
    connection lost between that check and this read loses nothing
    (returning None there made every such pass a full one).
    With more than ``max_lbs`` changed Load_Balancer rows no SB row is read
    (``Delta.bulk_lbs``): converting 5000 new LBs only to hand them to a full
    pass cost ~0.3 s of a cold start."""
    with ovs.conn.lock:
        local_dirty = take_dirty(ovs)
        if local_dirty is None:
            return None
        interfaces = local.read(ovs, bridge, local_dirty) if local_dirty else None
        local_since = taken_since(ovs)
    with sb.conn.lock:
        dirty = take_dirty(sb)
        if dirty is None:
            return None
        groups = dirty.get("Logical_DP_Group", set())
        since = [t for t in (local_since, taken_since(sb)) if t is not None]
        arrived_at = min(since) if since else None
        n_lbs = len(dirty.get("Load_Balancer", ()))
        if max_lbs is not None and n_lbs > max_lbs:
            return Delta(arrived_at=arrived_at, bulk_lbs=n_lbs, interfaces=interfaces)
        return Delta(
            arrived_at=arrived_at,
            lbs=read_lbs(sb, sorted(dirty.get("Load_Balancer", ()))),
            dp_groups=read_rows(sb, "Logical_DP_Group", groups, dpg_record),
            group_lbs=lbs_of_groups(sb, groups) if groups else {},
            port_bindings=read_rows(sb, "Port_Binding", dirty.get("Port_Binding", ()),
                                    pb_record),
            monitors=read_rows(sb, "Service_Monitor", dirty.get("Service_Monitor", ()),
                               sm_record),
            interfaces=interfaces,
            structural=frozenset(t for t, rows in dirty.items()
                                 if rows and t not in ROW_TABLES),
        )
