"""The same load balancers through real OVN: ovn-northd (Debian ``ovn-central``)
turns an NB transaction into SB logical flows and ovn-controller (``ovn-host``)
turns those into OpenFlow on a netdev br-int of its own sandbox.

One NB transaction inserts the N LBs, attaches them to one logical switch and
one gateway router (both local: the switch has a VIF bound here, the router is
pinned to this chassis) and bumps ``NB_Global.nb_cfg``.  ovn-northd copies
nb_cfg to ``SB_Global.nb_cfg`` in the same SB transaction as the logical flows;
ovn-controller writes it to ``Chassis_Private.nb_cfg`` with
``nb_cfg_timestamp`` once the flows computed from it are acknowledged by a
barrier.  ovn-controller's part = nb_cfg_timestamp - arrival of the SB update."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import (
    AFFINITY_TIMEOUT,
    CLIENT,
    bench_sandbox,
    count_groups,
    lb_vips,
    proc_status_mb,
    wait_for,
)
from bench.ovsdb_watch import OvsdbWatch
from lbaffd_sandbox.sandbox import Sandbox, ovsdb_transact, run

NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
NB = "OVN_Northbound"


def _named(name: str) -> list[str]:
    return ["named-uuid", name]


def nb_base_ops(chassis: str) -> list[dict[str, Any]]:
    name, ip, mac, _ = CLIENT
    return [
        {"op": "insert", "table": "Logical_Switch_Port", "uuid-name": "vif",
         "row": {"name": name, "addresses": f"{mac} {ip}"}},
        {"op": "insert", "table": "Logical_Switch_Port", "uuid-name": "ls_rp",
         "row": {"name": "ls0-lr0", "type": "router", "addresses": "router",
                 "options": ["map", [["router-port", "lr0-ls0"]]]}},
        {"op": "insert", "table": "Logical_Switch", "row": {
            "name": "ls0", "ports": ["set", [_named("vif"), _named("ls_rp")]]}},
        {"op": "insert", "table": "Logical_Router_Port", "uuid-name": "lrp",
         "row": {"name": "lr0-ls0", "mac": "02:00:00:00:00:01", "networks": "10.0.0.1/24"}},
        {"op": "insert", "table": "Logical_Router", "row": {
            "name": "lr0", "ports": ["set", [_named("lrp")]],
            "options": ["map", [["chassis", chassis]]]}},  # a gateway router, local here
    ]


def nb_lb_ops(n: int) -> list[dict[str, Any]]:
    """N LBs x 5 backends with affinity, on ls0 and lr0, and an nb_cfg bump."""
    ops: list[dict[str, Any]] = []
    for i in range(n):
        ops.append({"op": "insert", "table": "Load_Balancer", "uuid-name": f"lb{i}", "row": {
            "name": f"lb-{i}", "protocol": "tcp",
            "vips": ["map", [[k, v] for k, v in lb_vips(i).items()]],
            "options": ["map", [["affinity_timeout", str(AFFINITY_TIMEOUT)]]]}})
    refs = ["set", [_named(f"lb{i}") for i in range(n)]]
    for table, name in (("Logical_Switch", "ls0"), ("Logical_Router", "lr0")):
        ops.append({"op": "mutate", "table": table, "where": [["name", "==", name]],
                    "mutations": [["load_balancer", "insert", refs]]})
    ops.append(bump_nb_cfg())
    return ops


def bump_nb_cfg() -> dict[str, Any]:
    return {"op": "mutate", "table": "NB_Global", "where": [],
            "mutations": [["nb_cfg", "+=", 1]]}


def _pid(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


def ovn_controller_cold(n: int, timeout: float) -> dict[str, Any]:
    with bench_sandbox(f"ovn{n}") as sb:
        return _measure(sb, n, timeout)


def _measure(sb: Sandbox, n: int, timeout: float) -> dict[str, Any]:
    nb = sb.add_ovsdb("nb", NB_SCHEMA)
    sb.spawn_daemon("ovn-northd", "ovn-northd", f"--ovnnb-db={nb}",
                    f"--ovnsb-db={sb.sb_remote}")
    # ovn-northd creates the NB_Global row
    wait_for(lambda: _count_rows(nb, NB, "NB_Global"), 30, "ovn-northd to create NB_Global")
    ovsdb_transact(nb, NB, nb_base_ops(sb.chassis))
    name, ip, mac, ofport = CLIENT
    sb.add_host(name, ip, mac, ofport, iface_id=name)
    sb.vsctl("set", "Open_vSwitch", ".", "external_ids:ovn-encap-type=geneve",
             "external_ids:ovn-encap-ip=127.0.0.1")
    ctl_pid = sb.spawn_daemon("ovn-controller", "ovn-controller", sb.ovs_db_remote,
                              unixctl=False)
    sb_sock = sb.sb_remote.removeprefix("unix:")
    watch = OvsdbWatch(sb_sock, "OVN_Southbound", {
        "SB_Global": ["nb_cfg"], "Chassis_Private": ["nb_cfg", "nb_cfg_timestamp"]})
    watch.start()
    try:
        # base topology bound and installed: the VIF is up, nb_cfg 1 reported
        wait_for(lambda: "true" in run("ovn-nbctl", f"--db={nb}", "get",
                                       "Logical_Switch_Port", name, "up"),
                 60, "ovn-controller to bind the VIF", step=0.2)
        ovsdb_transact(nb, NB, [bump_nb_cfg()])
        wait_for(lambda: watch.first("Chassis_Private", "nb_cfg", lambda v: v >= 1), 120,
                 "ovn-controller to report the base topology (nb_cfg 1)")
        time.sleep(1.0)
        base_flows = _count_flows(sb)
        t_send = time.time()
        ovsdb_transact(nb, NB, nb_lb_ops(n), timeout=timeout)
        t_nb = time.time()
        hv = wait_for(lambda: watch.first("Chassis_Private", "nb_cfg", lambda v: v >= 2),
                      timeout, f"ovn-controller to converge N={n}", step=0.05)
        sb_up = watch.first("SB_Global", "nb_cfg", lambda v: v >= 2)
        if sb_up is None:
            raise AssertionError("ovn-controller reported nb_cfg 2 before the SB had it")
        t_sb = sb_up.at
        t_hv = float(hv.new["nb_cfg_timestamp"]) / 1000.0
        flows, groups = _count_flows(sb), count_groups(sb)
        ctl_rss = proc_status_mb(_pid(ctl_pid), "VmHWM")
        northd_rss = proc_status_mb(_pid(sb.rundir / "ovn-northd.pid"), "VmHWM")
        lflows = _count_rows(sb.sb_remote, "OVN_Southbound", "Logical_Flow")
    finally:
        watch.stop()
    if groups < n:
        raise AssertionError(f"ovn-controller N={n}: only {groups} groups on br-int")
    return {
        "n": n, "nb_commit_s": round(t_nb - t_send, 3),
        "northd_s": round(t_sb - t_nb, 3),  # NB commit -> SB update with the lflows
        "ovn_controller_s": round(t_hv - t_sb, 3),  # SB update -> flows acked (barrier)
        "total_s": round(t_hv - t_nb, 3),
        "reported_seen_s": round(hv.at - t_hv, 3),
        "flows": flows - base_flows, "flows_total": flows, "groups": groups,
        "logical_flows": lflows, "ovn_controller_rss_peak_mb": round(ctl_rss, 1),
        "ovn_northd_rss_peak_mb": round(northd_rss, 1),
    }


def _count_flows(sb: Sandbox) -> int:
    out = sb.ofctl("--no-stats", "dump-flows", "br-int")
    return sum(1 for line in out.splitlines() if "actions=" in line)


def _count_rows(remote: str, db: str, table: str) -> int:
    res = ovsdb_transact(remote, db, [{"op": "select", "table": table, "where": [],
                                       "columns": ["_uuid"]}])
    first = res[0]
    return len(first["rows"]) if isinstance(first, dict) else 0
