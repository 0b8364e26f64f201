"""Reading SB rows past the IDL's change merging (``monitor.column``) gives
what ``Row.__getattr__`` gives, for every column of the tables lbaffd reads."""

from __future__ import annotations

import threading
import time

import pytest

from lbaffd.sb.monitor import SB_COLUMNS, SB_TABLES, DbMonitor, column, read_sb
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
    changed: list[str] = []
    mon = DbMonitor(sandbox.sb_remote, "OVN_Southbound", SB_TABLES, changed.append,
                    threading.Event(), columns=SB_COLUMNS)  # as the daemon monitors it
    mon.start()
    try:
        deadline = time.monotonic() + 10
        while not (mon.connected and len(mon.idl.tables["Load_Balancer"].rows) >= 3):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with mon.conn.lock:
            checked = 0
            for table in ("Load_Balancer", "Datapath_Binding", "Logical_DP_Group"):
                t = mon.idl.tables[table]
                for r in t.rows.values():
                    for name in t.columns:
                        assert column(r, name) == getattr(r, name), (table, name)
                        checked += 1
            lbs, _, _, _ = read_sb(mon)
        assert checked > 20
        by_name = {lb.name: lb for lb in lbs.values()}
        assert by_name["lb-udp"].protocol == "udp" and by_name["lb-empty"].protocol == "sctp"
        assert dict(by_name["lb-udp"].options) == {"affinity_timeout": "30", "reject": "true"}
        assert len(by_name["lb-plain"].datapaths) == 2 and by_name["lb-udp"].datapath_group
        # a column lbaffd does not read changes: nothing wakes it
        time.sleep(0.3)
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
