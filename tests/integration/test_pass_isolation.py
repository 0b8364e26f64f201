"""One VIP that cannot be installed is left out; everything else is applied.

Three kinds of failure at once, against the real ovs-vswitchd: a group the
switch refuses (a bucket id above OFPG15_BUCKET_MAX), a flow whose match
this OVS does not support (``pbb_isid``), and a VIP too large for its group
parts (the split limit capped at 4096 bytes).  The first two are provoked
through ``LBAFFD_TEST_FAULTS`` (``lbaffd/compile/faults.py``); the refusals are the
switch's own.  Meanwhile other LBs come and change, and their traffic flows.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from lbaffd.compile import isolation
from lbaffd_sandbox.sandbox import LbSpec, Sandbox
from lbaffd_sandbox.topology import BACKEND_PORT, Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, free_port, metric, scrape, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

FAULTS = "refuse-group=bad-group,bad-match=bad-match,group-limit=4096"
BACKENDS = ",".join(f"10.0.0.2{i}:{BACKEND_PORT}" for i in (1, 2, 3))
HUGE = ",".join(f"10.2.{i // 250}.{i % 250 + 1}:{BACKEND_PORT}" for i in range(900))
AFF = {"affinity_timeout": "60"}
BAD = {"bad-group": "10.0.0.111:80", "bad-match": "10.0.0.112:80", "huge": "10.0.0.113:80"}


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=30)


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    proc = LbaffdProcess(sandbox, "--metrics-address", f"127.0.0.1:{free_port()}")
    os.environ["LBAFFD_TEST_FAULTS"] = FAULTS
    try:
        proc.start()
    finally:
        del os.environ["LBAFFD_TEST_FAULTS"]
    yield proc
    proc.stop()


def served(sandbox: Sandbox, vip: str) -> bool:
    results = sandbox.connect("cli1", vip, 80, count=3)
    return all(r.ok and r.backend.startswith("be") for r in results)


def lb_show(daemon: LbaffdProcess, name: str) -> str:
    return subprocess.run(["ovs-appctl", "-t", daemon.ctl, "lb/show", name],
                          capture_output=True, text=True, check=True).stdout


def failures(daemon: LbaffdProcess) -> list[tuple[str, str, str]]:
    return sorted((e["lb"], e["vip"], e["reason"]) for e in daemon.events()
                  if e.get("event") == "vip_install_failed")


def test_bad_vips_are_left_out_and_the_rest_applied(sandbox: Sandbox, topo: Topology,
                                                    daemon: LbaffdProcess) -> None:
    uuids = sandbox.add_load_balancers(
        [LbSpec("good1", {"10.0.0.110:80": BACKENDS}, options=AFF),
         *(LbSpec(name, {vip: HUGE if name == "huge" else BACKENDS}, options=AFF)
           for name, vip in BAD.items())], [topo.datapath_uuid], group_column=None)
    assert len(uuids) == 4
    want = sorted([("bad-group", BAD["bad-group"], isolation.SWITCH_ERROR),
                   ("bad-match", BAD["bad-match"], isolation.SWITCH_ERROR),
                   ("huge", BAD["huge"], isolation.GROUP_TOO_LARGE)])
    assert wait_until(lambda: failures(daemon) == want, timeout=30), (failures(daemon),
                                                                     daemon.tail())
    # the good LB and the one from before are on the switch and serve
    assert served(sandbox, "10.0.0.110") and served(sandbox, topo.vip)
    # the switch's answers were what made them fail: blamed by xid, once each
    refused = [e for e in daemon.events() if e.get("event") == "vip_refused_by_switch"]
    assert sorted(e["vip"] for e in refused) == [BAD["bad-group"], BAD["bad-match"]]
    assert any("OFPGMFC_BAD_BUCKET" in e["error"] for e in refused)
    assert any("OFPBMC_BAD_FIELD" in e["error"] for e in refused)
    # nothing of a bad VIP is installed: no ARP responder for its address
    flows = "\n".join(sandbox.dump_flows())
    for vip in BAD.values():
        assert f"arp_tpa={vip.split(':')[0]}" not in flows
    # reported: metric by reason, lb/show
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_vip_install_failures_total", reason="switch_error") == 2
    assert metric(text, "lbaffd_vip_install_failures_total", reason="group_too_large") == 1
    shown = lb_show(daemon, "bad-match")
    assert f"rejected: {BAD['bad-match']} switch_error" in shown
    assert "group_too_large" in lb_show(daemon, "huge")


def test_other_changes_apply_while_bad_vips_stay_out(sandbox: Sandbox, topo: Topology,
                                                     daemon: LbaffdProcess) -> None:
    before = failures(daemon)
    refusals = daemon.count("vip_refused_by_switch")
    passes = daemon.count("reconciled")
    sandbox.add_load_balancers([LbSpec("good2", {"10.0.0.120:80": BACKENDS}, options=AFF)],
                               [topo.datapath_uuid], group_column=None)
    assert wait_until(lambda: served(sandbox, "10.0.0.120"), timeout=15)
    uuid = sandbox.sbctl("--bare", "--columns=_uuid", "find", "Load_Balancer", "name=good1")
    sandbox.set_lb_vips(uuid, {"10.0.0.110:80": BACKENDS, "10.0.0.130:80": BACKENDS})
    assert wait_until(lambda: served(sandbox, "10.0.0.130"), timeout=15)
    sandbox.appctl("version")  # (the switch is fine)
    subprocess.run(["ovs-appctl", "-t", daemon.ctl, "recompute"], check=True,
                   capture_output=True)
    assert wait_until(lambda: daemon.count("reconciled") + daemon.count("in_sync") > passes + 2,
                      timeout=15)
    # full and incremental passes ran; the bad VIPs were neither sent again
    # nor reported again, and no pass failed
    assert daemon.count("vip_refused_by_switch") == refusals
    assert failures(daemon) == before
    assert daemon.count("reconcile_failed") == 0


def test_a_changed_row_is_tried_again(sandbox: Sandbox, topo: Topology,
                                      daemon: LbaffdProcess) -> None:
    """``huge`` made small fits now; ``bad-match`` changed is refused again."""
    huge = sandbox.sbctl("--bare", "--columns=_uuid", "find", "Load_Balancer", "name=huge")
    sandbox.set_lb_vips(huge, {BAD["huge"]: BACKENDS})
    assert wait_until(lambda: served(sandbox, BAD["huge"].split(":")[0]), timeout=15)
    assert daemon.wait_event("lb_input_fixed", lb="huge", reason="group_too_large")
    refusals = daemon.count("vip_refused_by_switch")
    bad = sandbox.sbctl("--bare", "--columns=_uuid", "find", "Load_Balancer", "name=bad-match")
    sandbox.set_lb_vips(bad, {BAD["bad-match"]: BACKENDS.rsplit(",", 1)[0]})
    assert wait_until(lambda: daemon.count("vip_refused_by_switch") == refusals + 1, timeout=15)
    assert served(sandbox, "10.0.0.110") and served(sandbox, BAD["huge"].split(":")[0])
    # the incremental pass that sent it blamed it too: no pass failed
    assert daemon.count("reconcile_failed") == 0
