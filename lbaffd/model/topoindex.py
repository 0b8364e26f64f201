"""``build_topology`` kept up to date row by row.

``build_topology`` walks every Port_Binding and Service_Monitor: ~16k ports
and ~7.5k monitors in a 5000-service cluster, tens of milliseconds, for a pod
started on another node that changes nothing here.  ``TopologyIndex`` holds
what it derives per row (each port's addresses and MAC claims, each
monitor's down key) and applies changed rows in O(those rows), then says
which backend addresses the change touched, so the caller recompiles only the
VIPs that use them.  ``topology()`` equals ``build_topology`` of the same
snapshot exactly (``tests/unit/test_topoindex.py`` checks it on random
changes).

What it does not follow row by row, it reports as ``structural`` (the caller
then runs a full pass): a change to the set of local datapaths (a first or
last local port of a datapath, a patch/l3gateway/chassisredirect port, which
decide what ovn-controller's ``local_datapaths`` closure contains) and any
change to Datapath_Binding rows.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from lbaffd.model.loadbalancer import IPAddress, LoadBalancer
from lbaffd.model.records import (
    InterfaceRow,
    PortBindingRow,
    SbSnapshot,
    ServiceMonitorRow,
)
from lbaffd.model.topology import (
    DOWN_STATES,
    LocalPort,
    Topology,
    addresses_of,
    attached_datapaths,
    local_ports,
    parsed_macs,
)

# Port_Binding types that join datapaths or make one local (``attached_datapaths``)
STRUCTURAL_TYPES = frozenset({"patch", "l3gateway", "chassisredirect"})
DownKey = tuple[IPAddress, int | None, str]
MacKey = tuple[int, IPAddress]


@dataclass(frozen=True, slots=True)
class TopologyChange:
    """What one step changed, for choosing what to recompile."""

    structural: bool  # the local datapath set may have changed: full pass
    ips: frozenset[IPAddress]  # backend addresses whose MAC, health or locality changed
    ports: bool  # the local ports (ofport, logical port, datapath) changed


def _mac_claims(pb: PortBindingRow, tunnel_key: int,
                parsed: list[tuple[str, tuple[IPAddress, ...]]] | None = None
                ) -> dict[MacKey, str]:
    """The (datapath, IP) -> MAC entries this port contributes; within a
    port the first entry naming an IP wins (``setdefault`` in build_topology).
    ``parsed``: its ``parsed_macs``, when at hand."""
    out: dict[MacKey, str] = {}
    for mac, ips in parsed_macs(pb.macs) if parsed is None else parsed:
        for ip in ips:
            out.setdefault((tunnel_key, ip), mac)
    return out


class MacView(Mapping[MacKey, str]):
    """An immutable (datapath, IP) -> MAC mapping that shares its bulk with
    the view it was derived from: ``updated`` costs O(change + overlay), not a
    copy of ~40k entries, and every Topology handed out stays as it was."""

    FLATTEN = 2048  # overlay entries before a step copies everything once

    def __init__(self, base: Mapping[MacKey, str],
                 overlay: Mapping[MacKey, str | None] | None = None) -> None:
        self._base = base
        self._overlay: Mapping[MacKey, str | None] = overlay or {}
        gone = sum(1 for k, v in self._overlay.items() if v is None and k in base)
        new = sum(1 for k, v in self._overlay.items() if v is not None and k not in base)
        self._len = len(base) - gone + new

    def updated(self, changes: Mapping[MacKey, str | None]) -> MacView:
        overlay = {**self._overlay, **changes}
        if len(overlay) <= self.FLATTEN:
            return MacView(self._base, overlay)
        flat = dict(self._base)
        for k, v in overlay.items():
            if v is None:
                flat.pop(k, None)
            else:
                flat[k] = v
        return MacView(flat)

    def __getitem__(self, key: MacKey) -> str:
        if key in self._overlay:
            v = self._overlay[key]
            if v is None:
                raise KeyError(key)
            return v
        return self._base[key]

    def get(self, key: MacKey, default: str | None = None) -> str | None:  # type: ignore[override]
        """``Mapping.get`` without its ``__getitem__``/``KeyError`` round:
        a VIP's compile-cache key asks for every backend on every datapath
        (~700 lookups in a health flip at N=5000), and a key's hash (an
        ``ipaddress`` object's is computed in Python) once, not twice, while
        the overlay is empty."""
        overlay = self._overlay
        if overlay and key in overlay:
            v = overlay[key]
            return default if v is None else v
        return self._base.get(key, default)

    def __contains__(self, key: object) -> bool:
        if key in self._overlay:
            return self._overlay[key] is not None  # type: ignore[index]
        return key in self._base

    def __iter__(self) -> Iterator[MacKey]:
        for k in self._base:
            if k not in self._overlay:
                yield k
        for k, v in self._overlay.items():
            if v is not None:
                yield k

    def __len__(self) -> int:
        return self._len


class TopologyIndex:
    """Mutable, owned by the worker; rebuilt from scratch after a full pass."""

    def __init__(self, snap: SbSnapshot) -> None:
        self.chassis = snap.chassis_name
        self.datapaths = snap.datapaths
        self.pbs: dict[str, PortBindingRow] = dict(snap.port_bindings)
        self.by_name: dict[str, PortBindingRow] = {pb.logical_port: pb
                                                   for pb in self.pbs.values()}
        self.port_ips: dict[str, frozenset[IPAddress]] = {}
        # (datapath key, IP) -> {logical_port: MAC}; the smallest logical_port wins
        self.claims: dict[MacKey, dict[str, str]] = {}
        for pb in self.pbs.values():
            self._add_port(pb)
        self.macs = MacView({key: by_port[min(by_port)]
                             for key, by_port in self.claims.items()})
        self.monitors: dict[str, ServiceMonitorRow] = {m.uuid: m
                                                       for m in snap.service_monitors}
        self.monitors_of_port: dict[str, set[str]] = {}
        self.down_of: dict[str, DownKey] = {}
        self.down = Counter[DownKey]()
        for m in self.monitors.values():
            self._add_monitor(m)
        self.interfaces = snap.interfaces
        self.peer_names = {pb.options.get("peer", "") for pb in self.pbs.values()
                           if pb.type in STRUCTURAL_TYPES}
        self._local_ips_of: tuple[tuple[LocalPort, ...], frozenset[IPAddress]] = ((),
                                                                                  frozenset())
        self.local_ports = self._local_ports()
        self.attached = self._attached()

    # ------------------------------------------------------------ derived

    def _local_ports(self) -> tuple[LocalPort, ...]:
        return local_ports(self.interfaces, self.by_name, self.datapaths, self.chassis,
                           self.port_ips)

    def _attached(self) -> frozenset[int]:
        snap = SbSnapshot(MappingProxyType({}), self.datapaths, MappingProxyType({}),
                          MappingProxyType(self.pbs), (), self.chassis)
        dps = attached_datapaths(snap, (p.datapath.uuid for p in self.local_ports))
        return frozenset(self.datapaths[d].tunnel_key for d in dps if d in self.datapaths)

    def _local_ips(self) -> frozenset[IPAddress]:
        ports, ips = self._local_ips_of
        if ports is not self.local_ports:  # (the tuple is replaced when they change)
            ips = frozenset(ip for p in self.local_ports for ip in p.ips)
            self._local_ips_of = (self.local_ports, ips)
        return ips

    def topology(self) -> Topology:
        return Topology(self.local_ports, self.macs, frozenset(self.down), self.attached,
                        self._local_ips())

    # ------------------------------------------------------------ rows

    def _add_port(self, pb: PortBindingRow) -> None:
        parsed = parsed_macs(pb.macs)
        self.port_ips[pb.logical_port] = addresses_of(parsed)
        dp = self.datapaths.get(pb.datapath)
        if dp is None:
            return
        for key, mac in _mac_claims(pb, dp.tunnel_key, parsed).items():
            self.claims.setdefault(key, {})[pb.logical_port] = mac

    def _remove_port(self, pb: PortBindingRow, touched: set[MacKey]) -> None:
        self.port_ips.pop(pb.logical_port, None)
        dp = self.datapaths.get(pb.datapath)
        if dp is None:
            return
        for key in _mac_claims(pb, dp.tunnel_key):
            by_port = self.claims.get(key)
            if by_port is not None:
                by_port.pop(pb.logical_port, None)
                if not by_port:
                    del self.claims[key]
            touched.add(key)

    def _monitor_key(self, m: ServiceMonitorRow) -> DownKey | None:
        """``topology.unhealthy`` for one monitor."""
        if m.status not in DOWN_STATES:
            return None
        try:
            ip = ipaddress.ip_address(m.ip)
        except ValueError:
            return None
        bound = self.port_ips.get(m.logical_port)
        if bound and ip not in bound:
            return None
        return (ip, m.port or None, m.protocol or "tcp")

    def _add_monitor(self, m: ServiceMonitorRow) -> None:
        self.monitors_of_port.setdefault(m.logical_port, set()).add(m.uuid)
        key = self._monitor_key(m)
        if key is not None:
            self.down_of[m.uuid] = key
            self.down[key] += 1

    def _remove_monitor(self, m: ServiceMonitorRow) -> None:
        users = self.monitors_of_port.get(m.logical_port)
        if users is not None:
            users.discard(m.uuid)
            if not users:
                del self.monitors_of_port[m.logical_port]
        key = self.down_of.pop(m.uuid, None)
        if key is not None:
            self.down[key] -= 1
            if not self.down[key]:
                del self.down[key]

    # ------------------------------------------------------------ a step

    def apply(self, port_bindings: Mapping[str, PortBindingRow | None],
              monitors: Mapping[str, ServiceMonitorRow | None],
              interfaces: tuple[InterfaceRow, ...] | None) -> TopologyChange:
        """Apply changed rows (uuid -> new row, None: deleted) and the local
        interfaces when they changed.  After a structural change the index is
        no longer maintained exactly (the caller discards it)."""
        structural = False
        touched: set[MacKey] = set()
        down_before = set(self.down)
        # the local ports depend on the interfaces and on the bindings they
        # name: looked at again only when one of those changed
        named = {i.iface_id for i in (*self.interfaces, *(interfaces or ()))}
        relocal = interfaces is not None or any(
            pb is not None and pb.logical_port in named
            for uuid, new in port_bindings.items() for pb in (new, self.pbs.get(uuid)))
        local_ips_before = self._local_ips() if relocal else frozenset()
        recheck: set[str] = set()  # monitors whose port's addresses changed
        for uuid, new in port_bindings.items():
            old = self.pbs.get(uuid)
            for pb in (old, new):
                if pb is not None and (pb.type in STRUCTURAL_TYPES
                                       or pb.logical_port in self.peer_names):
                    structural = True
            if old is not None:
                self._remove_port(old, touched)
                if self.by_name.get(old.logical_port) is old:
                    del self.by_name[old.logical_port]
                del self.pbs[uuid]
                recheck |= self.monitors_of_port.get(old.logical_port, set())
            if new is not None:
                self.pbs[uuid] = new
                self.by_name[new.logical_port] = new
                self._add_port(new)
                dp = self.datapaths.get(new.datapath)
                if dp is not None:
                    touched.update(_mac_claims(new, dp.tunnel_key))
                recheck |= self.monitors_of_port.get(new.logical_port, set())
        changed_ips: set[IPAddress] = set()
        mac_changes: dict[MacKey, str | None] = {}
        # VIPs only look MACs up on local datapaths (which stay the same, or
        # the step is structural): other switches' pods touch no VIP
        local_dps = self.attached | {p.datapath.tunnel_key for p in self.local_ports}
        for key in touched:
            by_port = self.claims.get(key)
            mac = by_port[min(by_port)] if by_port else None
            if mac != self.macs.get(key):
                mac_changes[key] = mac
                if key[0] in local_dps:
                    changed_ips.add(key[1])
        if mac_changes:
            self.macs = self.macs.updated(mac_changes)
        for uuid, m in monitors.items():
            old_m = self.monitors.pop(uuid, None)
            if old_m is not None:
                self._remove_monitor(old_m)
            if m is not None:
                self.monitors[uuid] = m
                self._add_monitor(m)
            recheck.discard(uuid)
        for uuid in recheck:
            m = self.monitors[uuid]
            self._remove_monitor(m)
            self._add_monitor(m)
        changed_ips |= {k[0] for k in down_before.symmetric_difference(self.down)}
        if interfaces is not None:
            self.interfaces = interfaces
        ports = False
        if relocal:
            ports_before = self.local_ports
            self.local_ports = self._local_ports()
            ports = self.local_ports != ports_before
            if ports and ({p.datapath.uuid for p in ports_before}
                          != {p.datapath.uuid for p in self.local_ports}):
                structural = True
            changed_ips |= local_ips_before.symmetric_difference(self._local_ips())
        return TopologyChange(structural, frozenset(changed_ips), ports)


def backend_index(lbs: Iterable[LoadBalancer]) -> dict[IPAddress, set[str]]:
    """Backend address -> uuids of the LBs with a VIP using it."""
    out: dict[IPAddress, set[str]] = {}
    for lb in lbs:
        for vip in lb.vips:
            for be in vip.backends:
                out.setdefault(be.ip, set()).add(lb.uuid)
    return out
