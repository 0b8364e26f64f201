"""The integration bridge's interfaces as records, read again row by row.

A local port plugged or unplugged changes one Port and one Interface row of
the local Open_vSwitch DB, but reading every port of the bridge through the
IDL costs ~6.5 ms at 250 ports (every column of every row converted from
its datum again), a large share of a local-port change's 10 ms budget
(issue 17).  ``BridgeReader`` keeps each Port's records and converts again
only the Port and Interface rows the IDL reported changed (``take_dirty``);
with no such report (first read, reconnect) it reads everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lbaffd.model.records import InterfaceRow
from lbaffd.sb.monitor import DbMonitor
from lbaffd.sb.rows import column

# per Port row: the uuids of its Interface rows and their records
_PortRecords = tuple[frozenset[str], tuple[InterfaceRow, ...]]


def port_interfaces(port: Any) -> tuple[frozenset[str], tuple[InterfaceRow, ...]]:
    """One Port row's interfaces that name a logical port; lock held.

    ovn-controller's patch port to a provider bridge names the localnet
    logical port it carries (``controller/patch.c``): where traffic from the
    physical network enters, e.g. for a gateway router's VIPs."""
    localnet = dict(column(port, "external_ids")).get("ovn-localnet-port")
    ifaces = column(port, "interfaces")
    out: list[InterfaceRow] = []
    for iface in ifaces:
        ofport = column(iface, "ofport")
        ids = dict(column(iface, "external_ids"))
        iface_id = ids.get("iface-id") or ids.get("ovn-localnet-port") or localnet
        if iface_id:
            out.append(InterfaceRow(column(iface, "name"), int(ofport[0] if ofport else -1),
                                    iface_id))
    return frozenset(str(i.uuid) for i in ifaces), tuple(out)


class BridgeReader:
    """Owned by the worker; ``read`` with the OVS DB connection's lock held."""

    def __init__(self) -> None:
        self._ports: dict[str, _PortRecords] = {}
        self.converted = 0  # Port rows the last read converted again

    def read(self, mon: DbMonitor, bridge: str,
             dirty: Mapping[str, set[str]] | None = None) -> tuple[InterfaceRow, ...]:
        """The interfaces on ``bridge`` that name a logical port, by name.
        ``dirty``: the rows changed since the last read, by table (None:
        unknown, everything is read again)."""
        if dirty is None:
            self._ports = {}
        ports_changed = dirty.get("Port", set()) if dirty else set()
        ifaces_changed = dirty.get("Interface", set()) if dirty else set()
        kept: dict[str, _PortRecords] = {}
        self.converted = 0
        for br in mon.rows("Bridge"):
            if column(br, "name") != bridge:
                continue
            for port in column(br, "ports"):
                key = str(port.uuid)
                known = self._ports.get(key)
                if (known is None or key in ports_changed
                        or not known[0].isdisjoint(ifaces_changed)):
                    known = port_interfaces(port)
                    self.converted += 1
                kept[key] = known
        self._ports = kept
        return tuple(sorted((i for _, recs in kept.values() for i in recs),
                            key=lambda i: i.name))
