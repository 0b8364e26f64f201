"""An SB reconnect keeps the narrow conditions: the rows of datapaths that are
not local are not received again.

The soak saw an RSS step at its SB reconnect and read it as "the reconnect
monitors the whole SB again until the first full pass narrows it".  Here the
SB ovsdb-server is restarted the way the soak does (``restart_ovsdb("sb")``:
killed, down for a while, started on the same file) under a daemon whose
conditions have narrowed, and the rows it holds are sampled every ~50 ms from
the kill until well after the resync, next to the counts the IDL logs at the
moment the resync completes (``ovsdb_synced``'s ``rows``)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from lbaffd.model.topology import build_topology
from lbaffd.sb.bridge import BridgeReader
from lbaffd.sb.conditions import SbConditions
from lbaffd.sb.inputs import read_all
from lbaffd.sb.monitor import OVS_COLUMNS, OVS_TABLES, SB_COLUMNS, SB_TABLES, DbMonitor
from lbaffd_sandbox.sandbox import LbSpec, Sandbox
from tests.integration.lbaffd_proc import LbaffdProcess, wait_until

pytestmark = pytest.mark.integration

MANAGED = "cookie=0x1baf000000000000/0xffff000000000000"
FAR_PODS, FAR_LBS, LOCAL_PODS = 200, 100, 5
# what the conditions let through: 3 LBs of ls1 + the router's (through its
# group); the router's group; cli, the two patch ports and ls1's pods
NARROW = {"Load_Balancer": 4, "Logical_DP_Group": 1, "Port_Binding": 3 + LOCAL_PODS}
CONDITIONAL = tuple(NARROW)


def sb_rows(daemon: LbaffdProcess) -> dict[str, int]:
    out = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "sb/rows"], capture_output=True,
                         text=True, check=True).stdout
    return {t: int(n) for t, n in (line.split(": ") for line in out.splitlines() if line)}


def changes_sent(daemon: LbaffdProcess) -> int:
    out = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "reconcile/stats"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"changes sent: (\d+)", out)
    assert m, out
    return int(m.group(1))


def _ts(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def world(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    """ls1 with a local VIF and a router behind it (patch); ls2 on another
    chassis with many pods and LBs (directly and through a group)."""
    sb = sandbox
    ids = {"ls1": sb.add_datapath("ls1", 1), "ls2": sb.add_datapath("ls2", 2),
           "lr": sb.add_datapath("lr", 3, "router")}
    sb.sbctl("chassis-add", "node-2", "geneve", "127.0.0.2")
    node2 = sb.sbctl("--bare", "--columns=_uuid", "find", "Chassis", "name=node-2").strip()
    sb.add_host("cli", "10.0.0.11", "02:00:00:00:00:0b", 11, iface_id="cli")
    sb.add_port_binding("cli", ids["ls1"], 1, "02:00:00:00:00:0b", "10.0.0.11",
                        chassis=sb.chassis)
    sb.add_patch("ls1-lr", ids["ls1"], 2, "lr-ls1", ids["lr"], 1)

    def pods(dp: str, first_key: int, count: int, prefix: str, net: int) -> None:
        sb.transact([{"op": "insert", "table": "Port_Binding", "row": {
            "logical_port": f"{prefix}{n}", "datapath": ["uuid", dp],
            "tunnel_key": first_key + n, "chassis": ["uuid", node2],
            "mac": f"02:00:00:{net:02x}:{n >> 8:02x}:{n & 0xff:02x} 10.{net}.{n >> 8}.{n & 0xff}"}}
            for n in range(count)])

    pods(ids["ls2"], 10, FAR_PODS, "far", 2)
    pods(ids["ls1"], 10, LOCAL_PODS, "near", 1)
    half = FAR_LBS // 2
    sb.add_load_balancers([LbSpec(f"far-g{n}", {f"172.17.{n >> 8}.{n & 0xff}:80":
                                                f"10.2.0.{n % 200}:8080"})
                           for n in range(half)], [ids["ls2"]])
    sb.add_load_balancers([LbSpec(f"far-d{n}", {f"172.18.{n >> 8}.{n & 0xff}:80":
                                                f"10.2.0.{n % 200}:8080"})
                           for n in range(FAR_LBS - half)], [ids["ls2"]], group_column=None)
    sb.add_load_balancers([LbSpec(f"here{n}", {f"172.16.0.{n + 1}:80": f"10.1.0.{n}:8080"})
                           for n in range(3)], [ids["ls1"]], group_column=None)
    sb.add_load_balancer("lb-router", {"172.16.1.1:80": "10.1.0.1:8080"},
                         groups={"datapath_group": [ids["lr"]]})
    yield ids


def test_reconnect_receives_only_the_local_rows(sandbox: Sandbox,
                                                world: dict[str, str]) -> None:
    sb = sandbox
    d = LbaffdProcess(sb)
    d.start(timeout=60)
    stop = threading.Event()
    samples: list[tuple[float, dict[str, int]]] = []

    def poll() -> None:
        while not stop.is_set():
            samples.append((time.time(), sb_rows(d)))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    try:
        # the first pass reads everything (no conditions yet), then they narrow
        first = d.wait_event("ovsdb_synced", db="OVN_Southbound")
        assert first["rows"]["Load_Balancer"] == FAR_LBS + 4
        assert first["rows"]["Port_Binding"] == FAR_PODS + NARROW["Port_Binding"]
        wait_until(lambda: {t: sb_rows(d)[t] for t in CONDITIONAL} == NARROW, timeout=15,
                   what="conditions narrowed")
        flows, groups = sb.dump_flows(MANAGED), sb.dump_groups()
        assert any("172.16.1.1" in f for f in flows)
        assert not any("172.17." in f or "172.18." in f for f in flows)
        sent = changes_sent(d)

        mark = d.mark()
        poller.start()
        sb.restart_ovsdb("sb", down_for=1.0)
        synced = d.wait_event("ovsdb_synced", db="OVN_Southbound", after=mark, timeout=20)
        assert synced["session"] > first["session"]
        # a standalone SB keeps no history: a new dump, compared with the rows
        # held (``NotifyingIdl._Idl__clear``); nothing changed, so nothing to do
        assert synced["resumed"] is False
        assert synced["in_place"] == {"held": sum(synced["rows"].values()), "changed": 0,
                                      "gone": 0, "added": 0}
        time.sleep(1.0)
        stop.set()
        poller.join(timeout=5)

        # the monitor reply of the new session: only the local rows
        got = {t: synced["rows"][t] for t in CONDITIONAL}
        after = [rows for t, rows in samples if t >= _ts(synced)]
        peak = {t: max(rows[t] for _, rows in samples) for t in CONDITIONAL}
        print(f"\nbefore the reconnect {NARROW}; at the resync {got}; "
              f"peak over {len(samples)} samples ({len(after)} after the resync) {peak}")
        assert got == NARROW
        assert len(after) >= 10
        assert peak == NARROW  # never more than the narrow rows, at any sample
        assert d.count("sb_conditions") == 1  # nothing was asked again

        # flows unchanged, nothing sent, and the conditions still hold on the
        # new server: a far LB is not received, a local one is
        assert (sb.dump_flows(MANAGED), sb.dump_groups()) == (flows, groups)
        assert changes_sent(d) == sent
        sb.add_load_balancer("far-late", {"172.19.0.1:80": "10.2.0.5:8080"},
                             datapaths=[world["ls2"]])
        sb.add_load_balancer("here-late", {"172.16.0.9:80": "10.1.0.2:8080"},
                             datapaths=[world["ls1"]])
        wait_until(lambda: any("172.16.0.9" in f for f in sb.dump_flows(MANAGED)),
                   timeout=15, what="the local LB added after the reconnect installed")
        assert sb_rows(d)["Load_Balancer"] == NARROW["Load_Balancer"] + 1
        assert not any("172.19." in f for f in sb.dump_flows(MANAGED))
    finally:
        stop.set()
        d.stop()


def test_conditions_count_as_acknowledged_after_a_reconnect(sandbox: Sandbox,
                                                           world: dict[str, str]) -> None:
    """``SbConditions.update`` says True once the server has the conditions.
    A reconnect sends them in its first monitor request, and the IDL's reply
    without history resets its ``cond_seqno`` to 0: counted in sequence
    numbers, conditions asked before a reconnect never counted as
    acknowledged again (until the next change).  The monitors and the
    conditions in this process, on the real SB."""
    sb = sandbox
    ovs = DbMonitor(sb.ovs_db_remote, "Open_vSwitch", OVS_TABLES, lambda _: None,
                    columns=OVS_COLUMNS)
    sbm = DbMonitor(sb.sb_remote, "OVN_Southbound", SB_TABLES, lambda _: None,
                    columns=SB_COLUMNS)
    ovs.start()
    sbm.start()
    try:
        cond = SbConditions(sbm, sb.chassis)

        def update() -> bool:
            inputs = read_all(ovs, sbm, "br-int", sb.chassis, BridgeReader())
            return inputs is not None and cond.update(inputs.snapshot,
                                                      build_topology(inputs.snapshot))

        def lbs() -> int:
            with sbm.conn.lock:
                return len(list(sbm.rows("Load_Balancer")))

        wait_until(update, timeout=10, what="the narrow conditions acknowledged")
        wait_until(lambda: lbs() < FAR_LBS, timeout=10, what="the far LBs gone")
        narrow = lbs()
        assert sbm.idl is not None
        session = sbm.idl._session.get_seqno()
        sb.restart_ovsdb("sb", down_for=0.5)
        wait_until(lambda: sbm.connected and sbm.idl._session.get_seqno() != session,
                   timeout=20, what="the SB monitor resynced on a new connection")
        assert lbs() == narrow
        assert update()  # the same conditions, acknowledged: nothing asked again
        assert lbs() == narrow
    finally:
        sbm.stop()
        ovs.stop()


def test_a_row_deleted_while_the_sb_was_down_goes(sandbox: Sandbox,
                                                 world: dict[str, str]) -> None:
    """A standalone SB restarted has no history of what lbaffd missed: its
    monitor reply is a new dump (``found`` false), in which python-ovs would
    replace every row without a row event: an LB deleted meanwhile (written
    to the file while the server was down) would go unnoticed by row
    tracking.  ``NotifyingIdl`` compares the dump with the rows it holds:
    the LB's absence is a row deletion, applied as a change (no full pass)."""
    sb = sandbox
    d = LbaffdProcess(sb)
    d.start(timeout=60)
    try:
        # (an earlier test may have added a local LB)
        wait_until(lambda: sb_rows(d)["Load_Balancer"] < FAR_LBS, timeout=15,
                   what="conditions narrowed")
        flows = sb.dump_flows(MANAGED)
        assert any("172.16.0.2," in f for f in flows) and any("172.16.0.1," in f for f in flows)
        mark = d.mark()
        sb.restart_ovsdb("sb", down_for=0.5, while_down=[
            {"op": "delete", "table": "Load_Balancer", "where": [["name", "==", "here1"]]}])
        synced = d.wait_event("ovsdb_synced", db="OVN_Southbound", after=mark, timeout=20)
        assert synced["resumed"] is False
        assert synced["in_place"]["gone"] == 1
        assert synced["in_place"]["changed"] == synced["in_place"]["added"] == 0
        wait_until(lambda: not any("172.16.0.2," in f for f in sb.dump_flows(MANAGED)),
                   timeout=15, what="the deleted LB's flows removed")
        after = sb.dump_flows(MANAGED)
        assert any("172.16.0.1," in f for f in after) and any("172.16.1.1," in f for f in after)
        assert not any(e.get("event") == "full_pass_needed" for e in d.events()[mark:])
        # what the old connection held was frozen by the first full pass: the
        # step after the resync sweeps it (it is cyclic garbage now), not a
        # full pass ten minutes on (gcpause.Freezer)
        swept = d.wait_event("frozen_objects_swept", after=mark, timeout=15)
        assert swept["reason"] == "reconnected" and swept["unreachable"] > 0
    finally:
        d.stop()
