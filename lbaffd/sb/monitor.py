"""OVSDB monitors: the OVN Southbound DB and the local Open_vSwitch DB.

ovsdbapp runs each IDL in its own thread.  Per table, a ``RowEvent`` (matcher
+ handler, ovsdbapp's pattern) forwards "table T changed" to the daemon's single
worker queue; the IDL thread does no other work.  The worker then reads an
immutable snapshot (``sb.rows``) while holding the connection's lock (the same
lock ovsdbapp holds around ``idl.run()``), and only when the IDL is in the
MONITORING state, i.e. after a complete (re)sync.  While the DB is unreachable
the last snapshot stands and flows stay as they are.  How the IDL takes an
update in, and records which rows changed, is ``sb.idl``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import structlog
import tenacity
from ovs.stream import Stream
from ovsdbapp.backend.ovs_idl import connection, event, idlutils

from lbaffd.sb.idl import NotifyingIdl, OnChange

log = structlog.get_logger("lbaffd.sb")


def json_parser() -> str:
    """``c`` when the ``ovs`` package has its C JSON parser (``ovs._json``, as
    Debian's python3-openvswitch does), else ``python``: the pure-Python
    parser takes ~10x longer to read a large SB update (1 s for 5000 LBs)."""
    return "c" if importlib.util.find_spec("ovs._json") is not None else "python"

SB_TABLES = ("Load_Balancer", "Datapath_Binding", "Logical_DP_Group", "Port_Binding", "Chassis",
             "Service_Monitor")
# Only the columns lbaffd reads (those this schema has): the IDL keeps no copy
# of the rest, and a change to them (Port_Binding.up, external_ids, ...) no
# longer wakes the worker for a full pass.
SB_COLUMNS = {
    "Load_Balancer": ("name", "vips", "protocol", "options", "datapaths", "datapath_group",
                      "ls_datapath_group", "lr_datapath_group"),
    "Datapath_Binding": ("tunnel_key", "external_ids"),
    "Logical_DP_Group": ("datapaths",),
    "Port_Binding": ("logical_port", "datapath", "tunnel_key", "mac", "chassis", "type",
                     "options"),
    "Chassis": ("name",),
    "Service_Monitor": ("ip", "port", "protocol", "logical_port", "status"),
}
OVS_TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface")
# Only the columns read_ovs_external_ids and sb.bridge use: Interface statistics and the like change
# every few seconds and must not wake the worker.
OVS_COLUMNS = {
    "Open_vSwitch": ("external_ids", "ovs_version", "bridges"),
    "Bridge": ("name", "ports", "external_ids"),  # ct-zone-*: ovn-controller's zones
    "Port": ("name", "interfaces", "external_ids"),  # ovn-localnet-port: OVN's patch ports
    "Interface": ("name", "ofport", "external_ids"),
}

class TableChanged(event.RowEvent):  # type: ignore[misc]
    """Any create/update/delete in ``table`` -> ``on_change(table)``."""

    def __init__(self, table: str, on_change: OnChange) -> None:
        super().__init__((self.ROW_CREATE, self.ROW_UPDATE, self.ROW_DELETE), table, None)
        self._on_change = on_change

    def matches(self, event: str, row: Any, old: Any = None) -> bool:
        """ovsdbapp's ``matches`` formats the whole row for a debug line
        (``row2str``) on every match, logged or not: ~1 s for a transaction
        of 5000 rows.  No conditions here: the event and table decide."""
        return event in self.events and bool(row._table.name == self.table)

    def run(self, event: str, row: Any, old: Any) -> None:
        self._on_change(self.table)


class DbMonitor:
    """One OVSDB connection (ovsdbapp ``Connection``) with table-change events."""

    def __init__(self, remote: str, schema: str, tables: Iterable[str], on_change: OnChange,
                 stopping: threading.Event | None = None, timeout: float = 60.0,
                 columns: Mapping[str, tuple[str, ...]] | None = None,
                 gc_pause: AbstractContextManager[object] | None = None) -> None:
        self._columns = dict(columns or {})
        self._gc_pause = gc_pause
        self._stopping = stopping or threading.Event()
        self.remote = remote
        self.schema = schema
        self._tables = tuple(tables)
        self._on_change = on_change
        self._timeout = timeout
        self.idl: NotifyingIdl | None = None
        self.conn: Any = None

    def start(self) -> None:
        """Fetch the schema (retrying, with a warning per attempt, for as long as
        the server is unreachable: an expected fault, not a crash) and start."""
        helper = self._fetch_helper()
        present = helper.schema_json["tables"]
        for table in self._tables:
            if table in self._columns and table in present:
                have = present[table]["columns"]
                helper.register_columns(table, [c for c in self._columns[table] if c in have])
            elif table in present:
                helper.register_table(table)
        idl = NotifyingIdl(self.remote, helper, self._on_change, self.schema, self._gc_pause)
        for table in self._tables:
            if table in present:
                idl.watch_event(TableChanged(table, self._on_change))
        # (the connection first: whoever sees ``idl`` set, from another thread
        # while this one starts it, finds its lock too)
        self.conn = connection.Connection(idl, timeout=self._timeout)
        self.idl = idl
        self.conn.start()  # returns once the first reply is in (ovsdbapp: wait_for_change)
        parser = json_parser()
        log.info("ovsdb_connected", db=self.schema, remote=self.remote, json_parser=parser)
        if parser != "c":
            log.warning("ovsdb_json_parser_slow", db=self.schema, json_parser=parser,
                        hint="install Debian's python3-openvswitch (ovs with ovs._json)")

    def _fetch_helper(self) -> Any:
        retry = tenacity.Retrying(
            stop=tenacity.stop_when_event_set(self._stopping),
            wait=tenacity.wait_exponential(multiplier=0.1, max=5.0),
            reraise=True,
            before_sleep=lambda rs: log.warning(
                "ovsdb_unreachable", db=self.schema, remote=self.remote,
                attempt=rs.attempt_number),
        )
        return retry(idlutils.get_schema_helper, self.remote, self.schema)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.stop(timeout=2)
        if self.idl is not None:
            self.idl.shutdown()

    @property
    def connected(self) -> bool:
        """Connected and monitoring (not merely connecting or resyncing)."""
        idl = self.idl
        return idl is not None and idl.in_sync and bool(idl._session.is_connected())

    @property
    def session(self) -> int:
        """Moves with every connection made or lost (python-ovs's session
        seqno); -1 before the first.  What the worker watches to sweep what
        a replaced connection left (``gcpause.Freezer``)."""
        idl = self.idl
        return -1 if idl is None else int(idl._session.get_seqno())

    def has_column(self, table: str, column: str) -> bool:
        assert self.idl is not None
        t = self.idl.tables.get(table)
        return t is not None and column in t.columns

    def rows(self, table: str) -> Iterable[Any]:
        assert self.idl is not None
        t = self.idl.tables.get(table)
        return () if t is None else t.rows.values()


def configure_ssl(private_key: str, certificate: str, ca_cert: str) -> None:
    """Key, certificate and CA for every ``ssl:`` OVSDB remote (the ovs
    library keeps these process-wide, as ovn-controller's -p/-c/-C do)."""
    files = {"--ssl-private-key": private_key, "--ssl-certificate": certificate,
             "--ssl-ca-cert": ca_cert}
    missing = [flag for flag, path in files.items() if not path]
    if missing:
        raise ValueError(f"an ssl: remote needs {', '.join(missing)}")
    for flag, path in files.items():
        if not os.access(path, os.R_OK):
            raise ValueError(f"{flag} {path}: not readable")
    Stream.ssl_set_private_key_file(private_key)
    Stream.ssl_set_certificate_file(certificate)
    Stream.ssl_set_ca_cert_file(ca_cert)


def take_dirty(mon: DbMonitor) -> dict[str, set[str]] | None:
    """See ``NotifyingIdl.take_dirty``; call with ``mon.conn.lock`` held."""
    return None if mon.idl is None else mon.idl.take_dirty()


def taken_since(mon: DbMonitor) -> float | None:
    """When the changes of the last ``take_dirty`` began to arrive (None: none)."""
    return None if mon.idl is None else mon.idl.taken_since
