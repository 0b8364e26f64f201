"""Immutable copies of the OVSDB rows lbaffd reads.

IDL rows are mutable and owned by the IDL thread; the worker only ever sees
these frozen snapshots, so no IDL object crosses a thread boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DatapathRow:
    uuid: str
    tunnel_key: int
    name: str = ""
    is_router: bool = False


@dataclass(frozen=True, slots=True)
class DpGroupRow:
    uuid: str
    datapaths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoadBalancerRow:
    uuid: str
    name: str
    vips: Mapping[str, str]
    protocol: str = ""
    options: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    datapaths: tuple[str, ...] = ()
    datapath_group: str | None = None
    ls_datapath_group: str | None = None
    lr_datapath_group: str | None = None

    @property
    def groups(self) -> set[str]:
        """The Logical_DP_Group rows this LB uses (whichever columns the schema has)."""
        return {g for g in (self.datapath_group, self.ls_datapath_group,
                            self.lr_datapath_group) if g}


@dataclass(frozen=True, slots=True)
class PortBindingRow:
    uuid: str
    logical_port: str
    datapath: str
    tunnel_key: int
    macs: tuple[str, ...] = ()
    chassis: str | None = None  # Chassis *name*, resolved from the reference
    type: str = ""
    options: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # peer, l3gateway-chassis


@dataclass(frozen=True, slots=True)
class InterfaceRow:
    """A local Open_vSwitch Interface on the integration bridge."""

    name: str
    ofport: int
    iface_id: str


@dataclass(frozen=True, slots=True)
class ServiceMonitorRow:
    """ovn-controller's health check result for one backend (ip, port, protocol)."""

    uuid: str
    ip: str
    port: int
    protocol: str
    logical_port: str
    status: str  # "online", "offline", "error" or "" (not probed yet)


@dataclass(frozen=True, slots=True)
class SbSnapshot:
    """Everything the compiler needs, as of one consistent read."""

    load_balancers: Mapping[str, LoadBalancerRow]
    datapaths: Mapping[str, DatapathRow]
    dp_groups: Mapping[str, DpGroupRow]
    port_bindings: Mapping[str, PortBindingRow]
    interfaces: tuple[InterfaceRow, ...]
    chassis_name: str = ""
    service_monitors: tuple[ServiceMonitorRow, ...] = ()
