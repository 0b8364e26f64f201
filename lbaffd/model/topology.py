"""What is local to this chassis: bound ports on br-int and backend MACs.

Mirrors ovn-controller's binding logic at the level lbaffd needs: an Interface
whose ``external_ids:iface-id`` names a Port_Binding's ``logical_port`` (and
which is bound to this chassis, when the binding says) is a local port of that
Port_Binding's datapath.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lbaffd.model.loadbalancer import Endpoint, IPAddress, strict_ip
from lbaffd.model.ovnlayout import OvnLayout
from lbaffd.model.records import (
    DatapathRow,
    InterfaceRow,
    PortBindingRow,
    SbSnapshot,
    ServiceMonitorRow,
)

DOWN_STATES = ("offline", "error")


def unhealthy(monitors: Iterable[ServiceMonitorRow],
              port_ips: Mapping[str, frozenset[IPAddress]]) -> frozenset[
        tuple[IPAddress, int | None, str]]:
    """Backends whose Service_Monitor says offline/error (ovn-northd's rule),
    matched by ip, port, protocol and logical_port: a monitor whose
    logical_port is bound to other addresses does not describe this backend.
    A backend without a monitor, or not yet probed, takes traffic."""
    down: set[tuple[IPAddress, int | None, str]] = set()
    for m in monitors:
        if m.status not in DOWN_STATES:
            continue
        ip = strict_ip(m.ip)
        if ip is None:
            continue
        bound = port_ips.get(m.logical_port)
        if bound and ip not in bound:
            continue
        down.add((ip, m.port or None, m.protocol or "tcp"))
    return frozenset(down)


@dataclass(frozen=True, slots=True)
class LocalPort:
    ofport: int
    logical_port: str
    datapath: DatapathRow
    # the port's addresses (Port_Binding ``mac`` column): which backends it is
    ips: frozenset[IPAddress] = frozenset()


@dataclass(frozen=True, slots=True)
class Topology:
    """The local view the compiler needs besides the load balancers."""

    local_ports: tuple[LocalPort, ...]
    # (datapath tunnel key, IP) -> MAC, from every Port_Binding's ``mac`` column
    macs: Mapping[tuple[int, IPAddress], str]
    # backends a Service_Monitor reports offline/error: (ip, port, protocol)
    down: frozenset[tuple[IPAddress, int | None, str]] = frozenset()
    # datapaths local without a port here: routers behind a local switch, gateways
    attached: frozenset[int] = frozenset()
    # addresses of the local ports: only these backends can be balanced to
    # themselves (hairpin) through this switch
    local_ips: frozenset[IPAddress] = frozenset()
    # companion mode only: where ovn-controller outputs to each local port
    # (read from its flows on the switch, see ``ovnlayout``)
    ovn: OvnLayout | None = None
    # (table, priority, match) of other controllers' flows in the tables
    # lbaffd writes (``packed.flow_id`` form): lbaffd never installs one
    # (OpenFlow would replace the other controller's flow)
    foreign: frozenset[bytes] = frozenset()

    def is_down(self, backend: Endpoint, protocol: str) -> bool:
        return (backend.ip, backend.port, protocol) in self.down

    def ports_on(self, datapaths: Iterable[int]) -> tuple[LocalPort, ...]:
        """The local ports of these datapaths (companion: the clients to intercept)."""
        wanted = frozenset(datapaths)
        return tuple(p for p in self.local_ports if p.datapath.tunnel_key in wanted)

    @property
    def local_datapaths(self) -> frozenset[int]:
        return frozenset(p.datapath.tunnel_key for p in self.local_ports) | self.attached


def patch_neighbours(snap: SbSnapshot) -> dict[str, list[str]]:
    """Datapath uuid -> the datapaths its patch (and l3gateway) ports join."""
    by_name = {pb.logical_port: pb for pb in snap.port_bindings.values()}
    patches: dict[str, list[str]] = {}
    for pb in snap.port_bindings.values():
        peer = by_name.get(pb.options.get("peer", ""))
        if pb.type in ("patch", "l3gateway") and peer is not None:
            patches.setdefault(pb.datapath, []).append(peer.datapath)
    return patches


def closure(seeds: Iterable[str], patches: Mapping[str, list[str]]) -> frozenset[str]:
    """Every datapath reachable from ``seeds`` through patch ports."""
    todo = list(seeds)
    seen = set(todo)
    while todo:
        for nxt in patches.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


def attached_datapaths(snap: SbSnapshot, port_datapaths: Iterable[str]) -> frozenset[str]:
    """ovn-controller's local datapaths: those with a local port, the gateway
    routers and chassis-redirect ports bound to this chassis, and, closed
    over, every datapath a patch port connects to one of them (a router LB
    must act on traffic that a local switch hands to the router)."""
    seeds = set(port_datapaths)
    for pb in snap.port_bindings.values():
        if snap.chassis_name and (
                (pb.type == "l3gateway"
                 and pb.options.get("l3gateway-chassis") == snap.chassis_name)
                or (pb.type == "chassisredirect" and pb.chassis == snap.chassis_name)):
            seeds.add(pb.datapath)
    return closure(seeds, patch_neighbours(snap))


def parse_mac_column(entry: str) -> tuple[str, tuple[IPAddress, ...]] | None:
    """``"02:00:00:00:00:15 10.0.0.21 fd00::15"`` -> (mac, ips); None for
    ``unknown``/``dynamic``/``router`` or malformed entries."""
    parts = entry.split()
    if not parts or parts[0].count(":") != 5:
        return None
    mac = parts[0].lower()
    try:
        if len(bytes.fromhex(mac.replace(":", ""))) != 6:
            return None
    except ValueError:
        return None
    ips: list[IPAddress] = []
    for p in parts[1:]:
        ip = strict_ip(p.split("/", 1)[0])  # "10.0.0.21/24": OVN's extract_lsp_addresses
        if ip is not None:
            ips.append(ip)
    return mac, tuple(ips)


def parsed_macs(macs: Iterable[str]) -> list[tuple[str, tuple[IPAddress, ...]]]:
    """The well-formed entries of a Port_Binding's ``mac`` column, parsed
    (parsing is most of what a full pass spends on ~16k ports: once a port)."""
    return [parsed for entry in macs if (parsed := parse_mac_column(entry)) is not None]


def addresses_of(parsed: Iterable[tuple[str, tuple[IPAddress, ...]]]) -> frozenset[IPAddress]:
    """Every address of ``parsed_macs`` entries."""
    return frozenset(ip for _, ips in parsed for ip in ips)


def port_addresses(macs: Iterable[str]) -> frozenset[IPAddress]:
    """Every address of a Port_Binding's ``mac`` column."""
    return addresses_of(parsed_macs(macs))


def local_ports(interfaces: Iterable[InterfaceRow], by_name: Mapping[str, PortBindingRow],
                datapaths: Mapping[str, DatapathRow], chassis: str,
                addresses: Mapping[str, frozenset[IPAddress]] | None = None
                ) -> tuple[LocalPort, ...]:
    """The interfaces that are local ports of a datapath (``iface-id`` names a
    Port_Binding not bound to another chassis), by ofport.  ``addresses``:
    each port's ``port_addresses`` by logical port, where already known."""
    local: dict[int, LocalPort] = {}
    for iface in interfaces:
        pb = by_name.get(iface.iface_id)
        if pb is None or iface.ofport <= 0:
            continue
        if pb.chassis and chassis and pb.chassis != chassis:
            continue  # bound elsewhere: the port is moving or stale here
        dp = datapaths.get(pb.datapath)
        if dp is None:
            continue
        ips = addresses.get(pb.logical_port) if addresses is not None else None
        local[iface.ofport] = LocalPort(iface.ofport, pb.logical_port, dp,
                                        port_addresses(pb.macs) if ips is None else ips)
    return tuple(local[k] for k in sorted(local))


def build_topology(snap: SbSnapshot) -> Topology:
    """The topology of ``snap`` from scratch: the definition
    ``topoindex.TopologyIndex.topology()`` is held equal to (the passes take
    theirs from the index, which the changes after them keep up to date)."""
    by_name = {pb.logical_port: pb for pb in snap.port_bindings.values()}
    ports = local_ports(snap.interfaces, by_name, snap.datapaths, snap.chassis_name)
    local = {p.ofport: p for p in ports}
    macs: dict[tuple[int, IPAddress], str] = {}
    port_ips: dict[str, frozenset[IPAddress]] = {}
    for pb in sorted(snap.port_bindings.values(), key=lambda p: p.logical_port):
        parsed = parsed_macs(pb.macs)
        port_ips[pb.logical_port] = addresses_of(parsed)
        dp = snap.datapaths.get(pb.datapath)
        if dp is None:
            continue
        for mac, ips in parsed:
            for ip in ips:
                macs.setdefault((dp.tunnel_key, ip), mac)
    attached = attached_datapaths(snap, (p.datapath.uuid for p in local.values()))
    return Topology(tuple(local[k] for k in sorted(local)), macs,
                    unhealthy(snap.service_monitors, port_ips),
                    frozenset(snap.datapaths[d].tunnel_key for d in attached
                              if d in snap.datapaths),
                    frozenset(ip for p in local.values()
                              for ip in port_ips.get(p.logical_port, ())))
