"""SB and local OVS rows -> lbaffd's immutable records (``model.records``).

Read under the connection's lock (``DbMonitor.conn.lock``), straight from the
IDL's row data (``column``): lbaffd never writes these databases, so there is
no pending change to merge."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any, TypeVar

from lbaffd.model.records import (
    DatapathRow,
    DpGroupRow,
    LoadBalancerRow,
    PortBindingRow,
    ServiceMonitorRow,
)
from lbaffd.sb.monitor import DbMonitor

_R = TypeVar("_R")
UuidText = Callable[[uuid.UUID], str]


class SharedUuidTexts:
    """One string per uuid for the records of one read (a ``UuidText``).

    A full read names each datapath from every port, group and LB on it, and
    each row by its own uuid twice (the record's and the dict's key): at
    N=1000 ~13k strings of 85 bytes for ~5k uuids, built again by every full
    pass (``bench.memprobe``).  Records of a later step make their own."""

    __slots__ = ("_texts",)

    def __init__(self) -> None:
        self._texts: dict[uuid.UUID, str] = {}

    def __call__(self, u: uuid.UUID) -> str:
        text = self._texts.get(u)
        if text is None:
            text = self._texts[u] = str(u)
        return text


def _ref(value: Any, text: UuidText = str) -> str | None:
    """An optional reference column (a 0..1 list of Rows) -> uuid string."""
    if not value:
        return None
    row = value[0] if isinstance(value, list) else value
    return text(row.uuid)


def lb_group_columns(mon: DbMonitor) -> tuple[str, ...]:
    """The datapath group columns this SB schema's Load_Balancer has."""
    return tuple(c for c in ("datapath_group", "ls_datapath_group", "lr_datapath_group")
                 if mon.has_column("Load_Balancer", c))


def column(r: Any, name: str) -> Any:
    """``getattr(r, name)`` for a row lbaffd only reads, from the row's data.

    The IDL's ``Row.__getattr__`` merges a transaction's pending changes: for
    every set column it rebuilds the datum from a list first, which was ~40 %
    of reading 5000 Load_Balancer rows.  lbaffd never writes the SB, so there
    is nothing to merge; a row that has changes takes the IDL's path."""
    data = r._data
    if data is None or r._changes or r._mutations or name not in data:
        return getattr(r, name)
    return datum_value(data[name], r._uuid_to_row)


def datum_value(datum: Any, uuid_to_row: Callable[[Any, Any], Any]) -> Any:
    """``datum.to_python(uuid_to_row)`` (``ovs/db/data.py``), without its
    generic steps for the columns that reference no table: a full read at
    N=5000 converts ~170k datums (``tests/unit/test_datums.py`` holds the
    two equal on random datums of every column type)."""
    t = datum.type
    value_type = t.value
    if t.key.ref_table_name is None and (value_type is None
                                         or value_type.ref_table_name is None):
        values = datum.values
        if value_type is not None:
            return {k.value: v.value for k, v in values.items()}
        if t.n_min == 1 and t.n_max == 1:
            for atom in values:  # (an empty scalar: python-ovs's own answer below)
                return atom.value
        else:
            return sorted({k.value for k in values})
    return datum.to_python(uuid_to_row)


def lb_record(mon: DbMonitor, r: Any, group_cols: tuple[str, ...] | None = None,
              text: UuidText = str) -> LoadBalancerRow:
    """One Load_Balancer row -> record; call with ``mon.conn.lock`` held."""
    if group_cols is None:
        group_cols = lb_group_columns(mon)
    groups = {c: _ref(column(r, c), text) for c in group_cols}
    protocol = column(r, "protocol")
    return LoadBalancerRow(
        uuid=text(r.uuid),
        name=column(r, "name"),
        vips=MappingProxyType(dict(column(r, "vips"))),
        protocol=(protocol[0] if isinstance(protocol, list) and protocol else protocol or ""),
        options=MappingProxyType(dict(column(r, "options"))),
        datapaths=tuple(sorted(text(d.uuid) for d in column(r, "datapaths"))),
        **groups,
    )


def read_lbs(mon: DbMonitor, uuids: Iterable[str]) -> dict[str, LoadBalancerRow | None]:
    """Just these Load_Balancer rows (None: deleted); with the lock held."""
    cols = lb_group_columns(mon)
    return read_rows(mon, "Load_Balancer", uuids, lambda r: lb_record(mon, r, cols))


def read_sb(mon: DbMonitor) -> tuple[dict[str, LoadBalancerRow], dict[str, DatapathRow],
                                      dict[str, DpGroupRow], dict[str, PortBindingRow]]:
    """Copy the SB tables lbaffd uses; call with ``mon.conn.lock`` held."""
    cols = lb_group_columns(mon)
    text = SharedUuidTexts()
    lbs = {text(r.uuid): lb_record(mon, r, cols, text) for r in mon.rows("Load_Balancer")}
    dps: dict[str, DatapathRow] = {}
    for r in mon.rows("Datapath_Binding"):
        ext = dict(column(r, "external_ids"))
        dps[text(r.uuid)] = DatapathRow(
            uuid=text(r.uuid), tunnel_key=int(column(r, "tunnel_key")), name=ext.get("name", ""),
            is_router="logical-router" in ext,
        )
    groups_ = {text(r.uuid): dpg_record(r, text) for r in mon.rows("Logical_DP_Group")}
    pbs = {text(r.uuid): pb_record(r, text) for r in mon.rows("Port_Binding")}
    return lbs, dps, groups_, pbs


def read_bridge_external_ids(mon: DbMonitor, bridge: str) -> dict[str, str]:
    """``Bridge.external_ids`` of ``bridge`` (ovn-controller records its
    conntrack zones there as ``ct-zone-<name>``)."""
    for br in mon.rows("Bridge"):
        if br.name == bridge:
            return dict(br.external_ids)
    return {}


def pb_record(r: Any, text: UuidText = str) -> PortBindingRow:
    """One Port_Binding row -> record; call with the lock held."""
    bound = column(r, "chassis")
    return PortBindingRow(
        uuid=text(r.uuid), logical_port=column(r, "logical_port"),
        datapath=_ref([column(r, "datapath")], text) or "",
        tunnel_key=int(column(r, "tunnel_key")), macs=tuple(column(r, "mac")),
        chassis=column(bound[0], "name") if bound else None, type=column(r, "type"),
        options=MappingProxyType(dict(column(r, "options"))),
    )


def dpg_record(r: Any, text: UuidText = str) -> DpGroupRow:
    """One Logical_DP_Group row -> record; call with the lock held."""
    return DpGroupRow(uuid=text(r.uuid),
                      datapaths=tuple(sorted(text(d.uuid) for d in column(r, "datapaths"))))


def lbs_of_groups(mon: DbMonitor, groups: set[str]) -> dict[str, LoadBalancerRow]:
    """The Load_Balancer rows that use any of ``groups``; lock held."""
    cols = lb_group_columns(mon)
    out: dict[str, LoadBalancerRow] = {}
    for r in mon.rows("Load_Balancer"):
        if any(_ref(column(r, c)) in groups for c in cols):
            out[str(r.uuid)] = lb_record(mon, r, cols)
    return out


def sm_record(r: Any) -> ServiceMonitorRow:
    """One Service_Monitor row -> record; call with the lock held."""
    status = column(r, "status")
    status = status[0] if isinstance(status, list) and status else status or ""
    protocol = column(r, "protocol")
    protocol = (protocol[0] if isinstance(protocol, list) and protocol else protocol or "tcp")
    return ServiceMonitorRow(str(r.uuid), column(r, "ip"), int(column(r, "port")), protocol,
                             column(r, "logical_port"), str(status))


def read_rows(mon: DbMonitor, table: str, uuids: Iterable[str],
              record: Callable[[Any], _R]) -> dict[str, _R | None]:
    """Just these rows of ``table`` as records (None: deleted); lock held."""
    assert mon.idl is not None
    rows = mon.idl.tables[table].rows
    out: dict[str, _R | None] = {}
    for u in uuids:
        r = rows.get(uuid.UUID(u))
        out[u] = None if r is None else record(r)
    return out


def read_ovs_external_ids(mon: DbMonitor) -> dict[str, str]:
    """``Open_vSwitch.external_ids``, plus ``ovs_version`` under that key;
    lock held.  The bridge's interfaces: ``sb.bridge.BridgeReader``."""
    ext: dict[str, str] = {}
    for r in mon.rows("Open_vSwitch"):
        ext = dict(r.external_ids)
        version = r.ovs_version[0] if isinstance(r.ovs_version, list) and r.ovs_version else ""
        ext["ovs_version"] = str(version or "")
    return ext


def read_service_monitors(mon: DbMonitor) -> tuple[ServiceMonitorRow, ...]:
    """Copy ``Service_Monitor``; call with ``mon.conn.lock`` held."""
    return tuple(sorted((sm_record(r) for r in mon.rows("Service_Monitor")),
                        key=lambda m: m.uuid))
