"""Another controller's group too large for group-desc never stops lbaffd.

Group 100 gets 1200 buckets of ~100 bytes (``add-group`` + ``insert-buckets``,
as another client would): OVS installs it, but its group-desc entry needs
more than 16 bits of length.  Before, lbaffd's group-desc dump came back with
wrapped lengths and it disconnected for good (``bad OpenFlow length``); with
another group after the big one in the reply ovs-vswitchd itself aborts.  Now
lbaffd lists groups by their stats, reads its own one by one, reports the
skipped group once, syncs, serves, and ovs-vswitchd lives on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

CT = "ct(commit,table=5,zone=NXM_NX_REG13[0..15],nat(dst={}:8080),exec(set_field:1->ct_mark))"


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    t = build_demo_topology(sandbox, affinity_timeout=30)
    sandbox.ofctl("add-group", "br-int", "group_id=101,type=select,bucket=actions=drop")
    sandbox.ofctl("add-group", "br-int", "group_id=100,type=select,selection_method=hash,"
                  f"fields(ip_src),bucket=bucket_id=0,actions={CT.format('10.9.0.1')}")
    for chunk in range(12):
        buckets = ",".join(f"bucket=bucket_id={chunk * 100 + i + 1},"
                           f"actions={CT.format(f'10.9.{chunk}.{i + 1}')}" for i in range(100))
        sandbox.ofctl("insert-buckets", "br-int",
                      f"group_id=100,command_bucket_id=last,{buckets}")
    return t


def vswitchd_pid(sandbox: Sandbox) -> int:
    return int(Path(sandbox.rundir, "ovs-vswitchd.pid").read_text())


def test_lbaffd_syncs_next_to_a_group_desc_cannot_report(sandbox: Sandbox, topo: Topology,
                                                         daemon: LbaffdProcess) -> None:
    pid = vswitchd_pid(sandbox)
    done = daemon.wait_event("initial_sync_done", timeout=20)
    assert done["groups"] >= 1
    skipped = [e for e in daemon.events() if e.get("event") == "foreign_groups_skipped"]
    assert len(skipped) == 1 and skipped[0]["groups"] == ["0x64"]
    assert skipped[0]["buckets"] == [1201]
    results = sandbox.connect("cli1", topo.vip, 80, count=4)
    assert all(r.ok for r in results) and len({r.backend for r in results}) == 1
    # audits keep reading the switch the same way: a recompute is in sync, no disconnect
    sandbox.appctl("version")
    before = daemon.count("in_sync")
    subprocess.run(["ovs-appctl", "-t", daemon.ctl, "recompute"], check=True,
                   capture_output=True)
    assert wait_until(lambda: daemon.count("in_sync") > before, timeout=15)
    assert daemon.count("openflow_disconnected") == 0
    assert daemon.count("foreign_groups_skipped") == 1  # reported once
    assert vswitchd_pid(sandbox) == pid
