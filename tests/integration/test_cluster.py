"""The OVN SB as a 3-server OVSDB Raft cluster (the production deployment):
leader failover and a full outage, with lbaffd connected to the remote list."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, sandbox_in_tmp, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic, pytest.mark.slow]

MANAGED = "cookie=0x1baf000000000000/0xffff000000000000"
LEARNED = "cookie=0x1bae000000000000/0xffff000000000000"
VIP = "10.0.0.100:80"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Sandbox]:
    with sandbox_in_tmp("lbx-raft-", sb_cluster=3) as sb:
        yield sb


@pytest.fixture(scope="module")
def topo(cluster: Sandbox) -> Topology:
    return build_demo_topology(cluster, affinity_timeout=300)


@pytest.fixture(scope="module")
def daemon(cluster: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    proc = LbaffdProcess(cluster, "--audit-interval", "2")
    proc.start()
    yield proc
    proc.stop()


def changes_sent(daemon: LbaffdProcess) -> int:
    out = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "reconcile/stats"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"changes sent: (\d+)", out)
    assert m, out
    return int(m.group(1))


def sb_rows(daemon: LbaffdProcess) -> dict[str, int]:
    out = subprocess.run(["ovs-appctl", "-t", daemon.ctl, "sb/rows"], capture_output=True,
                         text=True, check=True).stdout
    return {t: int(n) for t, n in (line.split(": ") for line in out.splitlines() if line)}


def snapshot(sb: Sandbox) -> tuple[list[str], list[str], list[str]]:
    return sb.dump_flows(MANAGED), sb.dump_groups(), sb.dump_flows(LEARNED)


def backends_in_group(sb: Sandbox) -> set[str]:
    return {m for g in sb.dump_groups() for m in re.findall(r"nat\(dst=([\d.:]+)\)", g)}


def wait(pred, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not pred():
        assert time.monotonic() - start < timeout, f"not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_reconnect_to_another_member_resumes_from_its_history(
        cluster: Sandbox, topo: Topology, daemon: LbaffdProcess) -> None:
    """The member lbaffd is connected to crashes while lbaffd is paused
    (SIGSTOP, so that the SB changes while it is away: a VIP's backends, an
    LB deleted, one added).  lbaffd reconnects to another member, which
    answers ``monitor_cond_since`` from its history: only those rows come,
    as row events, and they are applied incrementally - no full pass (at
    1000s of LBs that was seconds of CPU on every chassis at each member's
    restart) - and the deleted LB's flows are gone.  First in this module:
    every member has been up since the cluster started, so each has the
    history (a member restarted moments before may not, and then answers
    with a full dump: a full pass, rightly)."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    wait(lambda: cluster.sb_leader() is not None, 30)
    gone = cluster.add_load_balancer("lb-gone", {"10.0.0.101:80": "10.0.0.21:8080"},
                                     datapaths=[topo.datapath_uuid])
    wait(lambda: any("10.0.0.101" in f for f in cluster.dump_flows(MANAGED)), 10)
    wait(lambda: cluster.sb_member_of(pid) is not None, 15)
    member = cluster.sb_member_of(pid)
    assert member is not None
    mark = daemon.mark()
    os.kill(pid, signal.SIGSTOP)
    try:
        cluster.stop_sb_member(member)
        wait(lambda: cluster.sb_leader() not in (None, member), 15)
        cluster.set_lb_vips(topo.lb_uuid, {VIP: "10.0.0.22:8080"})
        cluster.delete_load_balancer(gone)
        added = cluster.add_load_balancer("lb-added", {"10.0.0.102:80": "10.0.0.23:8080"},
                                          datapaths=[topo.datapath_uuid])
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        wait(lambda: backends_in_group(cluster) == {"10.0.0.22:8080", "10.0.0.23:8080"}, 15)
        flows = "\n".join(cluster.dump_flows(MANAGED))
        assert "10.0.0.102" in flows and "10.0.0.101" not in flows
        events = daemon.events()[mark:]
        synced = [e for e in events
                  if e.get("event") == "ovsdb_synced" and e.get("db") == "OVN_Southbound"]
        assert synced and all(e["resumed"] for e in synced), synced
        full = [e for e in events if e.get("event") == "full_pass_needed"]
        assert not full, (full, [e for e in events if e.get("event") in (
            "ovsdb_synced", "pass_deferred", "openflow_disconnected")])
        assert any(e.get("event") == "reconciled" and "step_ms" in e for e in events), events
    finally:
        cluster.start_sb_member(member)
        cluster.delete_load_balancer(added)
        cluster.set_lb_vips(topo.lb_uuid, {VIP: "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080"})
        wait(lambda: backends_in_group(cluster) == {"10.0.0.21:8080", "10.0.0.22:8080",
                                                    "10.0.0.23:8080"}, 15)


def test_leader_failover_changes_nothing_and_updates_keep_flowing(
        cluster: Sandbox, topo: Topology, daemon: LbaffdProcess) -> None:
    cluster.connect("cli1", topo.vip, topo.vip_port, count=3)
    before, sent = snapshot(cluster), changes_sent(daemon)
    leader = cluster.sb_leader()
    assert leader is not None
    mark = daemon.mark()
    cluster.stop_sb_member(leader)
    wait(lambda: cluster.sb_leader() not in (None, leader), 15)
    # lbaffd reconnects only if it was on the old leader (any member will do);
    # then an audit pass after its resync, else one after the election
    daemon.wait_pass(daemon.mark())
    resyncs = [i for i, e in enumerate(daemon.events()[mark:], start=mark + 1)
               if e.get("event") == "ovsdb_synced" and e.get("db") == "OVN_Southbound"]
    in_place = daemon.events()[resyncs[-1] - 1].get("in_place") if resyncs else None
    # (a new dump that changed nothing, taken ``in_place``, leaves nothing to do)
    if resyncs and (in_place is None or any(in_place[k] for k in ("changed", "gone", "added"))):
        daemon.wait_pass(daemon.wait_pass(resyncs[-1], audit=False)["_index"])
    assert snapshot(cluster) == before  # the failover itself changed nothing ...
    assert changes_sent(daemon) == sent  # ... and sent no OpenFlow change
    # updates keep flowing: a sequence of 6, each seen on the switch, none lost
    sequence = ["10.0.0.21:8080", "10.0.0.21:8080,10.0.0.22:8080", "10.0.0.23:8080",
                "10.0.0.22:8080,10.0.0.23:8080", "10.0.0.21:8080,10.0.0.23:8080",
                "10.0.0.21:8080,10.0.0.22:8080,10.0.0.23:8080"]
    lags = []
    for backends in sequence:
        cluster.set_lb_vips(topo.lb_uuid, {VIP: backends})
        lags.append(wait(lambda b=backends: backends_in_group(cluster) == set(b.split(",")),
                         5.0))
    print(f"update lag after failover: max {max(lags) * 1000:.0f} ms")
    # each was applied incrementally: on a cluster every commit also moves the
    # _Server database's index, which once made every SB change a full pass
    since = daemon.mark()
    cluster.set_lb_vips(topo.lb_uuid, {VIP: "10.0.0.21:8080,10.0.0.22:8080"})
    wait(lambda: backends_in_group(cluster) == {"10.0.0.21:8080", "10.0.0.22:8080"}, 5.0)
    cluster.set_lb_vips(topo.lb_uuid, {VIP: sequence[-1]})
    wait(lambda: backends_in_group(cluster) == set(sequence[-1].split(",")), 5.0)
    time.sleep(0.5)  # (a late pass would show too)
    events = daemon.events()[since:]
    full = [e for e in events if e.get("event") == "full_pass_needed"]
    assert not full, full
    stepped = [e for e in events if e.get("event") == "reconciled" and "step_ms" in e]
    assert len(stepped) >= 2, events  # the two changes, each as an incremental step
    cluster.start_sb_member(leader)  # the old leader rejoins as a follower


def test_all_servers_down_then_back(cluster: Sandbox, topo: Topology,
                                    daemon: LbaffdProcess) -> None:
    before = snapshot(cluster)[:2]
    pinned = {r.backend for r in cluster.connect("cli1", topo.vip, topo.vip_port, count=3)}
    for i in range(3):
        cluster.stop_sb_member(i)
    for _ in range(6):  # 30 s without any SB: flows stay, traffic stays sticky
        time.sleep(5)
        assert snapshot(cluster)[:2] == before
        assert {r.backend for r in cluster.connect("cli1", topo.vip, topo.vip_port,
                                                   count=2)} == pinned
    for i in range(3):
        cluster.start_sb_member(i)
    wait(lambda: cluster.sb_leader() is not None, 30)
    cluster.set_lb_vips(topo.lb_uuid, {VIP: "10.0.0.21:8080,10.0.0.22:8080"})
    took = wait(lambda: backends_in_group(cluster) == {"10.0.0.21:8080", "10.0.0.22:8080"},
                20)
    print(f"converged {took:.1f}s after the cluster came back")
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_through_a_relay_with_conditions_that_widen(cluster: Sandbox, topo: Topology,
                                                    daemon: LbaffdProcess) -> None:
    """lbaffd on an ovsdb-server relay in front of the cluster (conditional
    monitoring, the default): a restart onto the relay changes nothing, an
    update made on the cluster arrives, and an LB of a datapath that becomes
    local only then (a VIF bound to it here) is received and realized."""
    wait(lambda: cluster.sb_leader() is not None, 30)
    relay = cluster.start_sb_relay()
    before, other = snapshot(cluster)[:2], cluster.add_datapath("ls9", 9)
    far_vip = "10.9.0.100"
    cluster.add_load_balancer("lb-far", {f"{far_vip}:80": "10.9.0.21:8080"},
                              datapaths=[other])
    daemon.stop()
    on_relay = LbaffdProcess(cluster, "--sb-db", relay, "--audit-interval", "2")
    on_relay.start(timeout=60)
    try:
        assert snapshot(cluster)[:2] == before  # nothing re-sent, nothing lost
        assert changes_sent(on_relay) == 0
        assert on_relay.count("sb_conditions") >= 1
        # narrowed after the first pass: lb-far is not even received
        assert wait_until(lambda: sb_rows(on_relay)["Load_Balancer"] == 1, timeout=10)
        cluster.set_lb_vips(topo.lb_uuid, {VIP: "10.0.0.21:8080,10.0.0.23:8080"})
        wait(lambda: backends_in_group(cluster) == {"10.0.0.21:8080", "10.0.0.23:8080"}, 10)
        assert not any(far_vip in f for f in cluster.dump_flows(MANAGED))
        # a VIF of ls9 bound here: ls9 becomes local, its LB comes through the relay
        cluster.add_port_binding("vif9", other, 1, "02:00:00:00:09:01", "10.9.0.5",
                                 chassis=cluster.chassis)
        cluster.vsctl("add-port", "br-int", "vif9", "--", "set", "Interface", "vif9",
                      "type=internal", "external_ids:iface-id=vif9")
        wait(lambda: any(far_vip in f for f in cluster.dump_flows(MANAGED)), 15)
        assert sb_rows(on_relay)["Load_Balancer"] == 2
    finally:
        on_relay.stop()
