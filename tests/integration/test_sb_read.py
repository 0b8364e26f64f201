"""Reading SB rows past the IDL's change merging (``rows.column``) gives
what ``Row.__getattr__`` gives, for every column of the tables lbaffd reads."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from ovs.db import idl as ovs_idl
from ovsdbapp.backend.ovs_idl import idlutils

from lbaffd.model.records import InterfaceRow, PortBindingRow, ServiceMonitorRow
from lbaffd.sb.bridge import BridgeReader
from lbaffd.sb.monitor import OVS_COLUMNS, OVS_TABLES, SB_COLUMNS, SB_TABLES, DbMonitor, take_dirty
from lbaffd.sb.rows import column, read_sb, read_service_monitors
from lbaffd_sandbox.sandbox import Sandbox

pytestmark = pytest.mark.integration


def test_column_equals_the_idl_row_attribute(sandbox: Sandbox) -> None:
    ls = sandbox.add_datapath("ls-read", 41)
    lr = sandbox.add_datapath("lr-read", 42, kind="router")
    sandbox.add_load_balancer("lb-plain", {"10.9.0.1:80": "10.9.1.1:8080,10.9.1.2:8080"},
                              datapaths=[ls, lr])
    sandbox.add_load_balancer("lb-udp", {"10.9.0.2:53": "10.9.1.3:53"}, protocol="udp",
                              options={"affinity_timeout": "30", "reject": "true"},
                              groups={"datapath_group": [ls]})
    sandbox.add_load_balancer("lb-empty", {}, protocol="sctp", datapaths=[])
    # ports: bound here, bound elsewhere, unbound, typed with options, several addresses
    sandbox.sbctl("chassis-add", "read-other", "geneve", "127.0.0.9")
    sandbox.add_port_binding("pb-here", ls, 1, "02:00:00:00:09:01", "10.9.1.1",
                             chassis=sandbox.chassis)
    sandbox.add_port_binding("pb-there", ls, 2, "02:00:00:00:09:02", "10.9.1.2",
                             chassis="read-other")
    sandbox.add_port_binding("pb-nowhere", ls, 3)
    sandbox.add_port_binding("pb-patch", lr, 4, type="patch", options={"peer": "pb-here"})
    sandbox.sbctl("set", "Port_Binding", "pb-there",
                  'mac="02:00:00:00:09:02 10.9.1.2 fd00::2","02:00:00:00:09:03 10.9.1.3"')
    sandbox.sbctl("create", "Service_Monitor", "ip=10.9.1.1", "port=8080", "protocol=udp",
                  "logical_port=pb-here", "status=offline")
    sandbox.sbctl("create", "Service_Monitor", "ip=10.9.1.2", "port=8080",
                  "logical_port=pb-there")
    changed: list[str] = []
    mon = DbMonitor(sandbox.sb_remote, "OVN_Southbound", SB_TABLES, changed.append,
                    threading.Event(), columns=SB_COLUMNS)  # as the daemon monitors it
    mon.start()
    try:
        deadline = time.monotonic() + 10
        while not (mon.connected and len(mon.idl.tables["Load_Balancer"].rows) >= 3
                   and len(mon.idl.tables["Service_Monitor"].rows) >= 2):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with mon.conn.lock:
            checked = 0
            for table in ("Load_Balancer", "Datapath_Binding", "Logical_DP_Group",
                          "Port_Binding", "Service_Monitor", "Chassis"):
                t = mon.idl.tables[table]
                for r in t.rows.values():
                    for name in t.columns:
                        assert column(r, name) == getattr(r, name), (table, name)
                        checked += 1
            lbs, _, _, pbs = read_sb(mon)
            monitors = {m.uuid: m for m in read_service_monitors(mon)}
            # the records equal what the IDL's own attributes give
            for r in mon.idl.tables["Port_Binding"].rows.values():
                assert pbs[str(r.uuid)] == PortBindingRow(
                    uuid=str(r.uuid), logical_port=r.logical_port,
                    datapath=str(r.datapath.uuid), tunnel_key=r.tunnel_key, macs=tuple(r.mac),
                    chassis=r.chassis[0].name if r.chassis else None, type=r.type,
                    options=MappingProxyType(dict(r.options)))
            for r in mon.idl.tables["Service_Monitor"].rows.values():
                status = r.status[0] if r.status else ""
                assert monitors[str(r.uuid)] == ServiceMonitorRow(
                    str(r.uuid), r.ip, r.port, r.protocol[0] if r.protocol else "tcp",
                    r.logical_port, status)
        assert checked > 60
        assert {p.logical_port: p.chassis for p in pbs.values()} == {
            "pb-here": sandbox.chassis, "pb-there": "read-other", "pb-nowhere": None,
            "pb-patch": None}
        by_name = {lb.name: lb for lb in lbs.values()}
        assert by_name["lb-udp"].protocol == "udp" and by_name["lb-empty"].protocol == "sctp"
        assert dict(by_name["lb-udp"].options) == {"affinity_timeout": "30", "reject": "true"}
        assert len(by_name["lb-plain"].datapaths) == 2 and by_name["lb-udp"].datapath_group
        # the initial sync's notifications have all run (ovsdbapp's notify thread,
        # in order, after the IDL) once a later change's has
        there = sandbox.sbctl("--bare", "--columns=_uuid", "find", "Service_Monitor",
                              "ip=10.9.1.2")
        sandbox.sbctl("set", "Service_Monitor", there, "status=online")
        deadline = time.monotonic() + 5
        while "Service_Monitor" not in changed:
            assert time.monotonic() < deadline, changed
            time.sleep(0.02)
        # a column lbaffd does not read changes: nothing wakes it
        changed.clear()
        sandbox.sbctl("set", "Load_Balancer", "lb-plain", "external_ids:owner=someone")
        # then a change it does read: once that one is seen, the first one (earlier
        # on the same session) has been too; it woke nothing
        sandbox.sbctl("set", "Load_Balancer", "lb-plain", 'vips:"10.9.0.1:80"="10.9.1.9:8080"')
        deadline = time.monotonic() + 5
        while "Load_Balancer" not in changed:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert changed.count("Load_Balancer") == 1, changed
    finally:
        mon.stop()


def test_bridge_reader_converts_only_changed_ports(sandbox: Sandbox) -> None:
    """``BridgeReader`` on the real local DB: after each change (a port
    plugged, its ofport assigned, an iface-id changed, a localnet patch
    port, a port unplugged) what it reads from the changed rows alone equals
    a full read, and only the changed Port rows were converted again."""
    sb = sandbox
    mon = DbMonitor(sb.ovs_db_remote, "Open_vSwitch", OVS_TABLES, lambda _: None,
                    threading.Event(), columns=OVS_COLUMNS)
    mon.start()
    reader = BridgeReader()

    def settle(check: Callable[[tuple[InterfaceRow, ...]], bool]) -> tuple[InterfaceRow, ...]:
        deadline = time.monotonic() + 10
        while True:
            with mon.conn.lock:
                dirty = take_dirty(mon)
                if dirty:
                    got = reader.read(mon, "br-int", dirty)
                    full = BridgeReader().read(mon, "br-int")
                    assert got == full
                    if check(got):
                        return got
            assert time.monotonic() < deadline, "change not seen"
            time.sleep(0.05)

    def quiesce() -> None:
        """Read until ovs-vswitchd has written nothing for 0.5 s: it writes
        some columns (a patch port's ofport) a moment after the change that
        made them, and that late write must not count for the next change."""
        deadline = time.monotonic() + 10
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 0.5:
            with mon.conn.lock:
                dirty = take_dirty(mon)
                if dirty:
                    reader.read(mon, "br-int", dirty)
                    quiet_since = time.monotonic()
            assert time.monotonic() < deadline, "the bridge never went quiet"
            time.sleep(0.05)

    try:
        deadline = time.monotonic() + 10
        while not (mon.connected and mon.idl.in_sync):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with mon.conn.lock:
            take_dirty(mon)
            first = reader.read(mon, "br-int")
        assert reader.converted >= len(first)
        args: list[str] = []
        for i in range(20):
            args += ["--", "add-port", "br-int", f"brd{i}", "--", "set", "Interface", f"brd{i}",
                     "type=internal", f"external_ids:iface-id=brd-pod-{i}"]
        sb.vsctl(*args)
        # the ports come first (ovs-vsctl's transaction), their ofports with
        # ovs-vswitchd's own write, which may be the next update: both read
        # from the changed rows alone (settle compares every read with a full one)
        got = settle(lambda r: sum(i.iface_id.startswith("brd-pod-") and i.ofport > 0
                                   for i in r) == 20)
        assert sum(i.iface_id.startswith("brd-pod-") for i in got) == 20
        quiesce()
        sb.vsctl("set", "Interface", "brd3", "external_ids:iface-id=brd-moved")
        got = settle(lambda r: any(i.iface_id == "brd-moved" for i in r))
        assert reader.converted == 1
        quiesce()
        sb.vsctl("add-port", "br-int", "patch-brd-ln", "--", "set", "Interface", "patch-brd-ln",
                 "type=patch", "options:peer=nowhere", "--", "set", "Port", "patch-brd-ln",
                 "external_ids:ovn-localnet-port=ln-brd")
        got = settle(lambda r: any(i.iface_id == "ln-brd" for i in r))
        assert reader.converted == 1
        quiesce()
        sb.vsctl("del-port", "br-int", "brd7")
        got = settle(lambda r: not any(i.name == "brd7" for i in r))
        assert reader.converted == 0  # the bridge's port list alone changed
        assert {i.iface_id for i in got} >= {"brd-moved", "ln-brd", "brd-pod-19"}
    finally:
        mon.stop()


def _vanilla_idl(remote: str) -> ovs_idl.Idl:
    """python-ovs's own IDL on the columns lbaffd monitors."""
    helper = idlutils.get_schema_helper(remote, "OVN_Southbound")
    have = helper.schema_json["tables"]
    for table in SB_TABLES:
        helper.register_columns(table, [c for c in SB_COLUMNS[table]
                                        if c in have[table]["columns"]])
    return ovs_idl.Idl(remote, helper)


def _contents(idl: ovs_idl.Idl) -> dict[str, dict[str, dict[str, object]]]:
    """Every row's every column as JSON (references as uuids), by table."""
    return {name: {str(u): {c: r._data[c].to_json() for c in t.columns}
                   for u, r in t.rows.items()}
            for name, t in idl.tables.items()}


def test_rows_taken_in_equal_python_ovs_idl_and_events_coalesce(sandbox: Sandbox) -> None:
    """``NotifyingIdl`` fills in the defaults an update leaves out from a
    table's cached list and passes one row per table and update to the
    RowEvents: the rows it holds are python-ovs's own, through an initial
    sync, inserts, modifications and deletes of rows that leave columns at
    their defaults, and a transaction of many rows wakes the worker once."""
    ls = sandbox.add_datapath("ls-intake", 61)
    sandbox.add_load_balancer("lb-bare", {"10.61.0.1:80": "10.61.1.1:80"}, datapaths=[ls])
    sandbox.add_port_binding("pb-bare", ls, 1)  # no mac, chassis, type or options
    sandbox.sbctl("create", "Service_Monitor", "ip=10.61.1.1", "port=80",
                  "logical_port=pb-bare")  # no protocol, no status
    changed: list[str] = []
    mon = DbMonitor(sandbox.sb_remote, "OVN_Southbound", SB_TABLES, changed.append,
                    threading.Event(), columns=SB_COLUMNS)
    mon.start()
    vanilla = _vanilla_idl(sandbox.sb_remote)

    def settled() -> dict[str, dict[str, dict[str, object]]]:
        """Both IDLs caught up with the server and holding the same rows."""
        deadline = time.monotonic() + 10
        while True:
            vanilla.run()
            with mon.conn.lock:
                ours = _contents(mon.idl) if mon.connected else None
            theirs = _contents(vanilla) if vanilla.state == vanilla.IDL_S_MONITORING else None
            if ours is not None and ours == theirs:
                return ours
            assert time.monotonic() < deadline, "the IDLs did not agree"
            time.sleep(0.05)

    try:
        rows = settled()
        with mon.conn.lock:
            bare = next(r for r in mon.idl.tables["Port_Binding"].rows.values()
                        if r.logical_port == "pb-bare")
            assert (bare.type, bare.mac, bare.chassis) == ("", [], [])
        changed.clear()
        sandbox.sbctl("set", "Load_Balancer", "lb-bare", 'vips:"10.61.0.2:80"="10.61.1.2:80"',
                      "protocol=udp", "options:affinity_timeout=30")
        sandbox.sbctl("set", "Port_Binding", "pb-bare", 'mac="02:00:00:00:61:01 10.61.1.1"')
        sandbox.sbctl("clear", "Port_Binding", "pb-bare", "mac")
        sandbox.sbctl("--all", "destroy", "Service_Monitor")
        # the last change's notification is in (the RowEvents run on ovsdbapp's
        # notify thread, after the IDL): nothing of these is left to arrive
        deadline = time.monotonic() + 10
        while "Service_Monitor" not in changed:
            assert time.monotonic() < deadline, changed
            time.sleep(0.02)
        time.sleep(0.3)
        changed.clear()
        # 40 ports in one transaction: one update, one "Port_Binding changed"
        many: list[str] = []
        for i in range(40):
            many += ["--", "create", "Port_Binding", f"logical_port=pb-many-{i}",
                     f"datapath={ls}", f"tunnel_key={100 + i}"]
        sandbox.sbctl(*many)
        rows = settled()
        assert sum(name.startswith("pb-many-") for name in (
            r["logical_port"] for r in rows["Port_Binding"].values())) == 40
        # the IDLs agreeing says nothing of ovsdbapp's notify thread, which runs
        # the RowEvents after the IDL: a later change of another table, once its
        # notification is in, says every notification of the ports has run
        # (one thread, in order)
        sandbox.sbctl("set", "Load_Balancer", "lb-bare", "options:affinity_timeout=31")
        deadline = time.monotonic() + 10
        while "Load_Balancer" not in changed:
            assert time.monotonic() < deadline, changed
            time.sleep(0.02)
        assert changed.count("Port_Binding") == 1, changed
        assert set(changed) == {"Port_Binding", "Load_Balancer", "OVN_Southbound"}, changed
    finally:
        mon.stop()
        vanilla.close()


def _idl_state(idl: ovs_idl.Idl) -> dict[str, dict[str, dict[str, object]]]:
    """Every row's every column as JSON (``_data``, defaults included)."""
    return {name: {str(u): {c: r._data[c].to_json() for c in t.columns}
                   for u, r in t.rows.items()}
            for name, t in idl.tables.items()}


def _synced(*idls: ovs_idl.Idl, until: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + 10
    while True:
        for idl in idls:
            idl.run()
        if all(i.state == ovs_idl.Idl.IDL_S_MONITORING for i in idls) and until():
            return
        assert time.monotonic() < deadline, "not synced"
        time.sleep(0.02)


def _same(stock: ovs_idl.Idl, ours: ovs_idl.Idl) -> dict[str, dict[str, dict[str, object]]]:
    """Both IDLs' rows, once equal (ovs-vswitchd writes statistics and status
    on its own: between the two IDLs' reads the DB may have moved on; they
    agree again within a few updates, or never if they hold rows differently)."""
    deadline = time.monotonic() + 15
    while True:
        _synced(stock, ours)
        want, got = _idl_state(stock), _idl_state(ours)
        if got == want or time.monotonic() > deadline:
            assert got == want
            return got
        time.sleep(0.05)


@pytest.mark.parametrize("db", ["OVN_Southbound", "Open_vSwitch"])
def test_notifying_idl_holds_what_python_ovs_holds(sandbox: Sandbox, db: str) -> None:
    """``NotifyingIdl._Idl__row_update`` (``sb.datums``' parser, a default
    per column, equal single values shared by rows) leaves every row as
    python-ovs's own ``__row_update`` does, for every column of every table of
    a real SB and Open_vSwitch DB: at the initial sync, for rows inserted
    after it, and after one of the rows that share a value changes it."""
    from lbaffd.sb.idl import NotifyingIdl

    remote = sandbox.sb_remote if db == "OVN_Southbound" else sandbox.ovs_db_remote
    if db == "OVN_Southbound":
        ls = sandbox.add_datapath("ls-idl", 51)
        sandbox.add_load_balancer("lb-idl", {"10.8.0.1:80": "10.8.1.1:8080,10.8.1.2:8080",
                                             "[fd00::8]:80": "[fd00::9]:80"},
                                  datapaths=[ls], options={"affinity_timeout": "60"})
        sandbox.add_load_balancer("lb-idl-b", {"10.8.0.3:80": "10.8.1.3:80"}, datapaths=[ls])
        sandbox.add_port_binding("pb-idl", ls, 9, "02:00:00:00:08:01", "10.8.1.1",
                                 chassis=sandbox.chassis)
        sandbox.add_port_binding("pb-idl-b", ls, 10, "02:00:00:00:08:02", "10.8.1.2",
                                 chassis=sandbox.chassis)  # same datapath, chassis, type
    else:
        sandbox.vsctl("add-port", "br-int", "idl-p0", "--", "set", "Interface", "idl-p0",
                      "type=internal", "external_ids:iface-id=pb-idl")
    helpers = [idlutils.get_schema_helper(remote, db) for _ in range(2)]
    for h in helpers:
        h.register_all()
    stock = ovs_idl.Idl(remote, helpers[0])
    ours = NotifyingIdl(remote, helpers[1], lambda _: None, db)
    try:
        _synced(stock, ours)
        first = _same(stock, ours)
        assert sum(len(rows) for rows in first.values()) > 5
        # rows inserted after the sync (``insert``, not ``initial``)
        if db == "OVN_Southbound":
            sandbox.add_load_balancer("lb-idl-2", {"10.8.0.2:53": "10.8.1.3:53"},
                                      protocol="udp", datapaths=[ls])
            table, name = "Load_Balancer", "lb-idl-2"
        else:
            sandbox.vsctl("add-port", "br-int", "idl-p1", "--", "set", "Interface", "idl-p1",
                          "type=internal", "external_ids:iface-id=pb-idl")
            table, name = "Interface", "idl-p1"

        def inserted() -> bool:
            return all(any(r._data.get("name") is not None and r.name == name
                           for r in i.tables[table].rows.values()) for i in (stock, ours))
        _synced(stock, ours, until=inserted)
        _same(stock, ours)
        # a value several rows share (one object in ``ours``) changes on one row
        if db == "OVN_Southbound":
            before = _idl_state(ours)
            pb = sandbox.sbctl("--bare", "--columns=_uuid", "find", "Port_Binding",
                               "logical_port=pb-idl-b").strip()
            sandbox.sbctl("set", "Port_Binding", pb, "tunnel_key=11", "type=patch")
            sandbox.sbctl("clear", "Port_Binding", pb, "chassis")
            # a set (not shared: python-ovs edits it in place) the same in two rows of the sync
            sandbox.sbctl("clear", "Load_Balancer", "lb-idl-b", "datapaths")
            table, name = "Port_Binding", "pb-idl-b"

            def changed() -> bool:
                return all(any(r.logical_port == name and r.tunnel_key == 11
                               for r in i.tables[table].rows.values())
                           and any(r.name == "lb-idl-b" and not r.datapaths
                                   for r in i.tables["Load_Balancer"].rows.values())
                           for i in (stock, ours))
            _synced(stock, ours, until=changed)
            after = _same(stock, ours)
            same = [u for u, r in before["Port_Binding"].items() if r["logical_port"] != name]
            assert same and all(after["Port_Binding"][u] == before["Port_Binding"][u]
                                for u in same)
            lb = next(u for u, r in before["Load_Balancer"].items() if r["name"] == "lb-idl")
            assert after["Load_Balancer"][lb] == before["Load_Balancer"][lb]
    finally:
        stock.close()
        ours.close()
        if db == "Open_vSwitch":
            for port in ("idl-p0", "idl-p1"):
                sandbox.vsctl("--if-exists", "del-port", "br-int", port)


def test_a_new_dump_is_taken_in_place_as_python_ovs_rebuilds(sandbox: Sandbox) -> None:
    """A standalone SB restarted has no history: its reply is a new dump.
    python-ovs drops every row and builds all anew; ``NotifyingIdl`` compares
    the dump with the rows it holds (``_Idl__clear``).  Across a restart
    with rows inserted, deleted and changed while the server was down
    (columns set, and columns cleared to their default, which the dump
    leaves out) it holds what python-ovs's own IDL holds, keeps the row
    objects the dump brings again, and reports exactly the rows that changed."""
    from lbaffd.sb.idl import NotifyingIdl

    remote = sandbox.sb_remote
    ls = sandbox.add_datapath("ls-dump", 71)
    lbs = {name: sandbox.add_load_balancer(name, {f"10.71.0.{i}:80": f"10.71.1.{i}:80"},
                                           datapaths=[ls], options=opts)
           for i, (name, opts) in enumerate([("lb-same", None), ("lb-gone", None),
                                             ("lb-edit", {"affinity_timeout": "30"})], 1)}
    sandbox.add_port_binding("pb-same", ls, 1, "02:00:00:00:71:01", "10.71.1.1")
    pb_edit = sandbox.add_port_binding("pb-edit", ls, 2, "02:00:00:00:71:02", "10.71.1.2",
                                       chassis=sandbox.chassis)
    stock = _vanilla_idl(remote)
    helper = idlutils.get_schema_helper(remote, "OVN_Southbound")
    have = helper.schema_json["tables"]
    for table in SB_TABLES:
        helper.register_columns(table, [c for c in SB_COLUMNS[table]
                                        if c in have[table]["columns"]])
    ours = NotifyingIdl(remote, helper, lambda _: None, "OVN_Southbound")

    def agreed(until: Callable[[], bool]) -> dict[str, dict[str, dict[str, object]]]:
        deadline = time.monotonic() + 40  # (python-ovs backs off up to 8 s between attempts)
        while True:
            stock.run()
            ours.run()
            if (stock.state == ours.state == ovs_idl.Idl.IDL_S_MONITORING and until()
                    and _contents(stock) == _contents(ours)):
                return _contents(ours)
            assert time.monotonic() < deadline, "the IDLs did not agree"
            time.sleep(0.05)

    def named(idl: ovs_idl.Idl, table: str, name: str) -> object:
        col = "name" if table == "Load_Balancer" else "logical_port"
        return next((r for r in idl.tables[table].rows.values() if getattr(r, col) == name),
                    None)

    try:
        agreed(lambda: named(ours, "Port_Binding", "pb-edit") is not None)
        ours.take_dirty()  # (None: the first sync) from here on, row by row
        assert ours.take_dirty() == {}
        rows_before = {u: r for t in ours.tables.values() for u, r in t.rows.items()}
        ls_uuid = ["uuid", ls]
        sandbox.restart_ovsdb("sb", down_for=0.3, while_down=[
            {"op": "delete", "table": "Load_Balancer", "where": [["name", "==", "lb-gone"]]},
            {"op": "update", "table": "Load_Balancer", "where": [["name", "==", "lb-edit"]],
             "row": {"vips": ["map", [["10.71.0.9:80", "10.71.1.9:80"]]], "protocol": "udp",
                     "options": ["map", []]}},
            {"op": "insert", "table": "Load_Balancer", "uuid-name": "new",
             "row": {"name": "lb-new", "vips": ["map", [["10.71.0.4:80", "10.71.1.4:80"]]],
                     "datapaths": ["set", [ls_uuid]]}},
            {"op": "update", "table": "Port_Binding", "where": [["_uuid", "==", ["uuid",
                                                                              pb_edit]]],
             "row": {"chassis": ["set", []], "mac": ["set", ["02:00:00:00:71:0a 10.71.1.10"]]}},
        ])
        after = agreed(lambda: named(ours, "Load_Balancer", "lb-new") is not None
                       and named(stock, "Load_Balancer", "lb-new") is not None)
        assert named(ours, "Load_Balancer", "lb-gone") is None
        edited = named(ours, "Load_Balancer", "lb-edit")
        assert edited is not None and edited.options == {} and edited.protocol == ["udp"]
        assert named(ours, "Port_Binding", "pb-edit").chassis == []  # type: ignore[union-attr]
        # the rows the dump brought again are the same objects, changed or not
        assert all(ours.tables[t].rows[u] is rows_before[u]
                   for t in after for u in after[t] if u in rows_before)
        new = str(named(ours, "Load_Balancer", "lb-new").uuid)  # type: ignore[union-attr]
        dirty = ours.take_dirty()
        assert dirty is not None, "the resync was not taken row by row"
        assert dirty.get("Load_Balancer") == {lbs["lb-gone"], lbs["lb-edit"], new}
        assert dirty.get("Port_Binding") == {pb_edit}
        assert not {t: r for t, r in dirty.items()
                    if r and t not in ("Load_Balancer", "Port_Binding")}
    finally:
        stock.close()
        ours.close()


class CuttingProxy:
    """A unix-socket relay in front of the SB that, when armed, closes the
    next connection after ``cut_after`` bytes from the server: a reply lost
    half way, at a point the test chooses (nothing mocked: both ends are
    the real ovsdb-server and the real IDL)."""

    def __init__(self, path: str, target: str) -> None:
        import socket

        self.path, self.target = path, target
        self.cut_after: int | None = None
        self.cuts = 0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                server.connect(self.target)
            except OSError:  # the SB is down (restarting): as if it refused
                client.close()
                server.close()
                continue
            cut, self.cut_after = self.cut_after, None
            threading.Thread(target=self._pump, args=(client, server, None),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, cut),
                             daemon=True).start()

    def _pump(self, src: object, dst: object, cut: int | None) -> None:
        import socket

        assert isinstance(src, socket.socket) and isinstance(dst, socket.socket)
        sent = 0
        try:
            while data := src.recv(16384):
                if cut is not None and sent + len(data) >= cut:
                    dst.sendall(data[:cut - sent])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._listener.close()


def test_a_dump_cut_short_is_asked_for_whole_again(sandbox: Sandbox) -> None:
    """The monitor reply is taken in row by row as it arrives
    (``sb.streamconn``).  A new dump lost half way (the connection dropped
    after some of its rows were taken in) leaves rows of before and after:
    the next request asks for a whole dump (not the changes since a
    transaction id, which would apply to rows already changed), which is
    compared with the rows held as any new dump; the IDL then holds what
    python-ovs's own IDL holds, and the worker is told to read everything."""
    from lbaffd.sb.idl import NotifyingIdl

    ls = sandbox.add_datapath("ls-cut", 72)
    batch = [{"op": "insert", "table": "Load_Balancer",
              "row": {"name": f"lb-cut-{i}", "protocol": "tcp",
                      "vips": ["map", [[f"10.72.{i // 250}.{i % 250}:80",
                                        f"10.72.200.{i % 250}:8080,10.72.201.{i % 250}:8080"]]],
                      "datapaths": ["set", [["uuid", ls]]],
                      "external_ids": ["map", [["test", "cut"]]]}} for i in range(600)]
    sandbox.transact(batch)
    mine = [["external_ids", "includes", ["map", [["test", "cut"]]]]]
    proxy = CuttingProxy(str(sandbox.rundir / "sb-cut.sock"), str(sandbox.rundir / "sb.sock"))
    remote = f"unix:{proxy.path}"
    stock = _vanilla_idl(sandbox.sb_remote)
    helper = idlutils.get_schema_helper(sandbox.sb_remote, "OVN_Southbound")
    have = helper.schema_json["tables"]
    for table in SB_TABLES:
        helper.register_columns(table, [c for c in SB_COLUMNS[table]
                                        if c in have[table]["columns"]])
    ours = NotifyingIdl(remote, helper, lambda _: None, "OVN_Southbound")
    split: list[int] = []
    lost: list[str] = []
    take_rows, lose = ours.dump_rows, ours.dump_lost

    def counted_rows(rows: dict[str, dict[str, object]]) -> None:
        split.append(sum(map(len, rows.values())))
        take_rows(rows)

    def counted_lost() -> None:
        lose()
        lost.append(ours.last_id)  # the next request asks from no transaction
        assert ours.last_id == str(uuid.UUID(int=0))

    ours.dump_rows, ours.dump_lost = counted_rows, counted_lost  # type: ignore[method-assign]

    def agreed(until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 40
        while True:
            stock.run()
            ours.run()
            if (stock.state == ours.state == ovs_idl.Idl.IDL_S_MONITORING and until()
                    and _contents(stock) == _contents(ours)):
                return
            assert time.monotonic() < deadline, "the IDLs did not agree"
            time.sleep(0.02)

    def cut_lbs(idl: ovs_idl.Idl) -> list[Any]:  # (the module's other tests left theirs)
        return [r for r in idl.tables["Load_Balancer"].rows.values()
                if r.name.startswith("lb-cut-")]

    def lbs(idl: ovs_idl.Idl) -> int:
        return len(cut_lbs(idl))

    try:
        agreed(lambda: lbs(ours) == 600)
        assert sum(split) >= 600 and len(split) >= 3  # in batches, as it arrived
        ours.take_dirty()
        # while the SB is down: every LB changed; the dump after it is cut
        # after ~60 kB, when ~a third of its rows have been taken in; down for
        # longer than python-ovs's first retry (1 s), which the relay refuses
        proxy.cut_after = 60_000
        sandbox.restart_ovsdb("sb", down_for=1.5, while_down=[
            {"op": "update", "table": "Load_Balancer", "where": mine,
             "row": {"protocol": "udp"}},
            {"op": "delete", "table": "Load_Balancer",
             "where": [["name", "==", "lb-cut-599"]]}])
        agreed(lambda: lbs(ours) == 599 and proxy.cuts == 1 and bool(lost))
        assert all(r.protocol == ["udp"] for r in cut_lbs(ours))
        assert len(lost) == 1
        assert ours.take_dirty() is None  # everything is read again
    finally:
        stock.close()
        ours.close()
        proxy.close()
