"""Conditional monitoring of the SB (the default; ``--monitor-all`` turns it
off): rows of datapaths that are not local are not received at all, local
interest widens the conditions, and a restart never installs a partial SB."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from tests.integration.lbaffd_proc import LbaffdProcess, wait_until

pytestmark = pytest.mark.integration

MANAGED = "cookie=0x1baf000000000000/0xffff000000000000"


def sb_rows(daemon: LbaffdProcess) -> dict[str, int]:
    out = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "sb/rows"], capture_output=True,
                         text=True, check=True).stdout
    return {t: int(n) for t, n in (line.split(": ") for line in out.splitlines() if line)}


@pytest.fixture(scope="module")
def world(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    """ls1 with a local VIF and a router behind it (patch), ls2 elsewhere."""
    sb = sandbox
    ids = {"ls1": sb.add_datapath("ls1", 1), "ls2": sb.add_datapath("ls2", 2),
           "lr": sb.add_datapath("lr", 3, "router")}
    sb.sbctl("chassis-add", "node-2", "geneve", "127.0.0.2")
    sb.add_host("cli", "10.0.0.11", "02:00:00:00:00:0b", 11, iface_id="cli")
    sb.add_port_binding("cli", ids["ls1"], 1, "02:00:00:00:00:0b", "10.0.0.11",
                        chassis=sb.chassis)
    sb.add_patch("ls1-lr", ids["ls1"], 2, "lr-ls1", ids["lr"], 1)
    for n in range(10):  # pods of another node on a switch that is not local here
        sb.add_port_binding(f"pod{n}", ids["ls2"], 10 + n, f"02:00:00:00:02:{n:02x}",
                            f"10.2.0.{n + 2}", chassis="node-2")
    sb.add_load_balancer("lb-here", {"172.16.0.1:80": "10.0.0.21:8080"},
                         datapaths=[ids["ls1"]])
    sb.add_load_balancer("lb-router", {"172.16.0.2:80": "10.0.0.22:8080"},
                         groups={"datapath_group": [ids["lr"]]})
    sb.add_load_balancer("lb-far", {"172.16.0.3:80": "10.2.0.2:8080"},
                         datapaths=[ids["ls2"]])
    yield ids


def test_only_local_rows_are_received_and_interest_widens(sandbox: Sandbox,
                                                          world: dict[str, str]) -> None:
    sb = sandbox
    d = LbaffdProcess(sb)
    d.start(timeout=60)
    try:
        # narrowed after the first pass: the LBs of ls1 and of the router behind
        # it (through its group), not ls2's
        assert wait_until(lambda: sb_rows(d)["Load_Balancer"] == 2, timeout=10)
        rows = sb_rows(d)
        assert rows["Logical_DP_Group"] == 1
        # cli, the two patch ports; none of ls2's pods
        assert rows["Port_Binding"] == 3
        flows = sb.dump_flows(MANAGED)
        assert any("172.16.0.2" in f for f in flows) and not any("172.16.0.3" in f
                                                                for f in flows)
        # a pod of ls2 added elsewhere: not received, nothing wakes.  Proven by a
        # pod of ls1 added after it: the SB sends updates in order, so once that
        # one is here, ls2's would be too if it were sent; and only ls1's woke
        # the worker (changes without effect: it is no backend here)
        seen = len(d.events())
        sb.add_port_binding("pod-late", world["ls2"], 40, "02:00:00:00:02:40", "10.2.0.40",
                            chassis="node-2")
        sb.add_port_binding("pod-ls1", world["ls1"], 41, "02:00:00:00:01:41", "10.1.0.41",
                            chassis="node-2")
        assert wait_until(lambda: sb_rows(d)["Port_Binding"] == 4, timeout=10,
                          what="ls1's new pod received")
        woke = [e for e in d.events()[seen:] if e.get("event") in (
            "reconciled", "input_change_no_effect", "in_sync") and not e.get("audit")]
        assert sb_rows(d)["Port_Binding"] == 4  # pod-late never arrived
        # (ls1's pod is two SB transactions: the row, then its chassis)
        assert len(woke) <= 2 and all(e["event"] == "input_change_no_effect"
                                      for e in woke), woke
        # a VIF of ls2 bound here: ls2 becomes local, its ports and LB arrive
        sb.add_port_binding("vif2", world["ls2"], 50, "02:00:00:00:02:50", "10.2.0.50",
                            chassis=sb.chassis)
        sb.vsctl("add-port", "br-int", "vif2", "--", "set", "Interface", "vif2",
                 "type=internal", "external_ids:iface-id=vif2")
        assert wait_until(lambda: any("172.16.0.3" in f for f in sb.dump_flows(MANAGED)),
                          timeout=15)
        assert sb_rows(d)["Port_Binding"] == 4 + 12 and sb_rows(d)["Load_Balancer"] == 3
    finally:
        d.stop()
        sb.vsctl("--if-exists", "del-port", "br-int", "vif2")


def test_restart_with_conditions_sends_nothing(sandbox: Sandbox,
                                               world: dict[str, str]) -> None:
    """The first pass works from a complete read, then the conditions narrow:
    it never sees a partial SB (which would delete flows)."""
    sb = sandbox
    d = LbaffdProcess(sb, "--monitor-all")
    d.start(timeout=60)
    before = sb.dump_flows(MANAGED), sb.dump_groups()
    assert sb_rows(d)["Load_Balancer"] == 3  # everything, without conditions
    d.stop()
    d2 = LbaffdProcess(sb)
    d2.start(timeout=60)
    try:
        ev = d2.wait_event("initial_sync_done")
        assert ev["changes"] == 0  # not one flow re-sent or removed
        assert (sb.dump_flows(MANAGED), sb.dump_groups()) == before
        assert wait_until(lambda: sb_rows(d2)["Load_Balancer"] == 2, timeout=10)
        assert d2.count("sb_conditions") == 1
    finally:
        d2.stop()
