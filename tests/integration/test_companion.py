"""Companion mode on a real OVN chassis: lbaffd next to a stock ovn-controller.

Real ovn-northd, two chassis each with ovs-vswitchd and Debian's
ovn-controller, Geneve between them; the topology is written with
``ovn-nbctl`` (``lbaffd_sandbox.ovn_topology``): clients and two backends on
sw0 (chassis 1), a third backend on sw0 but on chassis 2, a routed client on
sw1 behind lr0, a stateful ACL with a drop rule, ``lb-aff`` (affinity) and
``lb-plain`` (none) on both switches.  lbaffd runs with default flags
(``--mode auto``) on chassis 1 and must take over ``lb-aff`` only, leave
everything else of OVN's untouched, and survive ovn-controller's restart.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.ovn import OvnSandbox, started_ovn_sandbox
from lbaffd_sandbox.ovn_topology import (
    AFFINITY_VIP,
    BACKEND_PORT,
    DROP_PORT,
    HOSTS,
    PLAIN_VIP,
    VIP_PORT,
    OvnTopology,
    build_ovn_topology,
)
from lbaffd_sandbox.scenarios import burst, first_connections, open_connections, stickiness
from tests.integration.lbaffd_proc import LbaffdProcess, free_port, metric, scrape, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

LBAFFD = re.compile(r"cookie=0x1ba[ef]")
HAIRPIN_VIP = "172.16.0.20"  # one backend (be1): be1 connecting to it is balanced to itself


def ovn_flows(sb: OvnSandbox, chassis: int = 1) -> list[str]:
    """OVN's flows (everything not lbaffd's), without counters."""
    out = sb.node(chassis).ofctl("-O", "OpenFlow15", "--no-stats", "dump-flows", "br-int")
    return sorted(line.strip() for line in out.splitlines()
                  if line.strip() and not LBAFFD.search(line) and "reply" not in line)


def lbaffd_flows(sb: OvnSandbox) -> list[str]:
    out = sb.ofctl("-O", "OpenFlow15", "--no-stats", "dump-flows", "br-int",
                   "cookie=0x1baf000000000000/0xffff000000000000")
    return [line.strip() for line in out.splitlines() if "cookie=" in line]


def entries(sb: OvnSandbox) -> list[str]:
    out = sb.ofctl("-O", "OpenFlow15", "dump-flows", "br-int",
                   "cookie=0x1bae000000000000/0xffff000000000000")
    return [line.strip() for line in out.splitlines() if "nw_src" in line]


def appctl(daemon: LbaffdProcess, *args: str) -> str:
    """The real ovs-appctl against lbaffd's control socket."""
    return subprocess.run(["ovs-appctl", "-t", daemon.ctl, *args], capture_output=True,
                          text=True, check=True, timeout=10).stdout


@pytest.fixture(scope="module")
def topo() -> Iterator[OvnTopology]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, ovs-vswitchd)")
    with started_ovn_sandbox(chassis_count=2) as sb:
        t = build_ovn_topology(sb)
        sb.nbctl("lb-add", "lb-hp", f"{HAIRPIN_VIP}:{VIP_PORT}",
                 f"{HOSTS['be1'].ip}:{BACKEND_PORT}", "tcp", "--",
                 "set", "Load_Balancer", "lb-hp", "options:affinity_timeout=120", "--",
                 "ls-lb-add", "sw0", "lb-hp")
        sb.nbctl("--wait=hv", "sync")
        # the first cross-chassis packet is lost while OVS resolves the underlay
        open_connections(t, "cli1", HOSTS["be3"].ip, BACKEND_PORT, 1, [], 2.0)
        yield t


@pytest.fixture(scope="module")
def before(topo: OvnTopology) -> list[str]:
    """OVN's flows on chassis 1 before lbaffd ever ran."""
    return ovn_flows(topo.sandbox)


@pytest.fixture(scope="module")
def daemon(topo: OvnTopology, before: list[str]) -> Iterator[LbaffdProcess]:
    proc = LbaffdProcess(topo.sandbox, "--audit-interval", "5", "--metrics-address",
                         f"127.0.0.1:{free_port()}")
    proc.start()
    yield proc
    proc.stop()


def test_auto_mode_is_companion_and_ovn_flows_stay_as_they_were(
        topo: OvnTopology, before: list[str], daemon: LbaffdProcess) -> None:
    chosen = daemon.wait_event("mode_chosen")
    assert chosen["mode"] == "companion"
    assert ovn_flows(topo.sandbox) == before  # not one OVN flow replaced or changed
    mine = lbaffd_flows(topo.sandbox)
    # every table-0 flow of lbaffd is above OVN's per-port flows, and only
    # for the VIPs it took over (lb-aff, lb-hp), never lb-plain's
    table0 = [f for f in mine if "table=" not in f.split("priority=")[0]]
    assert table0 and all(re.search(r"priority=1[01][05]0,", f) for f in table0)
    assert not any(PLAIN_VIP in f for f in mine)
    tables = {int(t) for f in mine for t in re.findall(r"table=(\d+)", f.split(" actions")[0])}
    assert tables <= {*range(200, 207), 65}
    out = appctl(daemon, "lb/list")
    assert "lb-aff" in out and "left to OVN: lb-plain" in out
    assert "left to OVN" in appctl(daemon, "lb/show", "lb-plain")
    assert "taken over from OVN" in appctl(daemon, "lb/show", "lb-aff")


def test_new_clients_first_connection_and_affinity(topo: OvnTopology,
                                                   daemon: LbaffdProcess) -> None:
    first = first_connections(topo, AFFINITY_VIP, n=12, timeout=3.0)
    assert first.completed == 12, first.summary()
    assert max(first.times_ms) < 500, first.summary()
    run = stickiness(topo, AFFINITY_VIP, k=8)
    assert run.failed == 0 and run.sticky, run.summary()
    fast = burst(topo, AFFINITY_VIP, k=10)  # back-to-back: the learn has not happened yet
    assert fast.failed == 0 and fast.sticky, fast.summary()
    routed = stickiness(topo, AFFINITY_VIP, k=6, host="rcli1")
    assert routed.failed == 0 and routed.sticky, routed.summary()


def test_every_backend_reached_including_the_one_on_chassis_2(
        topo: OvnTopology, daemon: LbaffdProcess) -> None:
    """Clients spread over all three backends by their address; replies of
    be3 come back through the Geneve tunnel and are un-DNATed on chassis 1."""
    ips = topo.new_clients("cli1", 30)
    res = open_connections(topo, "cli1", AFFINITY_VIP, VIP_PORT, 60, ips, 3.0)
    assert all(r.ok for r in res)
    by_client: dict[str, set[str]] = {}
    for r in res:
        by_client.setdefault(r.src, set()).add(r.backend)
    assert all(len(b) == 1 for b in by_client.values())
    assert {b for s in by_client.values() for b in s} == {"be1", "be2", "be3"}
    assert len(entries(topo.sandbox)) >= 30


def test_ovn_traffic_unchanged(topo: OvnTopology, daemon: LbaffdProcess) -> None:
    def one(host: str, ip: str, port: int) -> str:
        r = open_connections(topo, host, ip, port, 1, [], 2.0)[0]
        return r.backend if r.ok else ""
    assert one("cli1", HOSTS["be2"].ip, BACKEND_PORT) == "be2"  # direct
    assert one("rcli1", HOSTS["be1"].ip, BACKEND_PORT) == "be1"  # routed through lr0
    assert one("cli1", HOSTS["be3"].ip, BACKEND_PORT) == "be3"  # tunnelled
    assert one("cli1", HOSTS["be1"].ip, DROP_PORT) == ""  # the ACL's drop rule still drops
    plain = open_connections(topo, "cli1", PLAIN_VIP, VIP_PORT, 12, [], 2.0)
    assert all(r.ok for r in plain)  # OVN's own LB for the VIP it kept
    assert len({r.backend for r in plain}) >= 2


def test_backend_reaching_its_own_vip(topo: OvnTopology, daemon: LbaffdProcess) -> None:
    res = open_connections(topo, "be1", HAIRPIN_VIP, VIP_PORT, 4, [], 2.0)
    assert [r.backend for r in res] == ["be1"] * 4


def test_ovn_controller_restart_flows_and_entries_back_within_a_second(
        topo: OvnTopology, daemon: LbaffdProcess) -> None:
    sb = topo.sandbox
    ips = topo.new_clients("cli1", 6)
    res = open_connections(topo, "cli1", AFFINITY_VIP, VIP_PORT, 6, ips, 3.0)
    pinned = {r.src: r.backend for r in res}
    learned = len(entries(sb))
    mine = sorted(lbaffd_flows(sb))
    recovered = daemon.count("flush_recovered")
    sb.stop_ovn_controller(1)
    sb.start_ovn_controller(1, wait=False)
    assert wait_until(lambda: daemon.count("flush_recovered") > recovered, timeout=10)
    sb.wait_programmed()  # ovn-controller done: its flush came in waves, all repaired
    assert wait_until(lambda: sorted(lbaffd_flows(sb)) == mine, timeout=2)
    assert len(entries(sb)) >= learned
    waves = [e for e in daemon.events() if e.get("event") == "flush_recovered"][recovered:]
    assert waves[0]["first"] and waves[-1]["ms"] < 1000, waves  # from the first deletion
    again = open_connections(topo, "cli1", AFFINITY_VIP, VIP_PORT, 6, ips, 3.0)
    assert {r.src: r.backend for r in again} == pinned
    _, text = scrape(daemon)
    assert metric(text, "lbaffd_ovn_flush_recoveries_total") >= 1
    assert metric(text, "lbaffd_affinity_entries_restored_total") >= len(pinned)


def test_lb_changes_are_incremental_and_others_cost_nothing(topo: OvnTopology,
                                                             daemon: LbaffdProcess) -> None:
    """A backend removed from a taken-over LB is one small incremental pass;
    a change of an LB left to OVN sends lbaffd nothing."""
    sb = topo.sandbox
    be = [f"{HOSTS[b].ip}:{BACKEND_PORT}" for b in ("be1", "be2", "be3")]
    mark = daemon.mark()
    sb.nbctl("--wait=sb", "set", "Load_Balancer", "lb-aff",
             f'vips:"{AFFINITY_VIP}:{VIP_PORT}"="{be[0]},{be[2]}"')
    done = daemon.wait_event("reconciled", after=mark)
    assert done["audit"] is False and 0 < done["changes"] < 20, done
    assert wait_until(lambda: not any(HOSTS["be2"].ip in g for g in lbaffd_groups(sb)),
                      what="be2 gone from lbaffd's group")
    ips = topo.new_clients("cli1", 6)
    res = open_connections(topo, "cli1", AFFINITY_VIP, VIP_PORT, 6, ips, 3.0)
    assert all(r.ok for r in res) and {r.backend for r in res} <= {"be1", "be3"}, res
    mark = daemon.mark()
    sent = daemon_sends(daemon)
    sb.nbctl("--wait=sb", "set", "Load_Balancer", "lb-plain",
             f'vips:"{PLAIN_VIP}:{VIP_PORT}"="{be[0]},{be[1]}"')
    daemon.wait_pass(mark, audit=False)
    assert daemon_sends(daemon) == sent  # lb-plain is OVN's: nothing for lbaffd to do
    sb.nbctl("--wait=sb", "set", "Load_Balancer", "lb-aff",
             f'vips:"{AFFINITY_VIP}:{VIP_PORT}"="{",".join(be)}"')
    sb.nbctl("--wait=sb", "set", "Load_Balancer", "lb-plain",
             f'vips:"{PLAIN_VIP}:{VIP_PORT}"="{",".join(be)}"')
    assert wait_until(lambda: any(HOSTS["be2"].ip in g for g in lbaffd_groups(sb)),
                      what="be2 back in lbaffd's group")


def lbaffd_groups(sb: OvnSandbox) -> list[str]:
    """lbaffd's groups (ids 0xb0000000 and up; OVN's are small)."""
    return [g for g in sb.dump_groups()
            if int(g.split("group_id=", 1)[1].split(",", 1)[0]) >= 0xB0000000]


def daemon_sends(daemon: LbaffdProcess) -> float:
    """Flow and group mods lbaffd has sent (its own counter)."""
    _, text = scrape(daemon)
    return sum(metric(text, "lbaffd_openflow_messages_sent_total", type=t)
               for t in ("OFPBundleAddMsg", "OFPFlowMod", "OFPGroupMod")
               if f'type="{t}"' in text)


def test_sigkill_and_restart_send_no_flow_mod(topo: OvnTopology,
                                              daemon: LbaffdProcess) -> None:
    daemon.stop(sig=signal.SIGKILL)
    ips = topo.new_clients("cli1", 2)  # traffic keeps flowing without lbaffd
    res = open_connections(topo, "cli1", AFFINITY_VIP, VIP_PORT, 2, ips, 3.0)
    assert all(r.ok for r in res), res
    daemon.start()
    done = daemon.wait_event("initial_sync_done")
    assert done["changes"] == 0


@pytest.mark.parametrize(("flags", "tables"), [
    (("--mode", "standalone"), "0"),
    # embedded over OVN 23.03's output, MAC-binding and hairpin tables
    (("--mode", "embedded", "--table-base", "60", "--next-table", "59"), "64,65,66"),
])
def test_other_modes_refused_on_the_ovn_bridge(topo: OvnTopology, daemon: LbaffdProcess,
                                               flags: tuple[str, ...], tables: str) -> None:
    before = ovn_flows(topo.sandbox)  # (ovn-controller restarted since the module began)
    other = LbaffdProcess(topo.sandbox, *flags, "--pidfile",
                          str(topo.sandbox.rundir / "lbaffd-other.pid"))
    other.rundir = other.rundir.with_name("lbaffd-other")
    other.start(wait_sync=False)
    assert other.proc is not None
    assert other.proc.wait(timeout=15) == 2
    refused = other.wait_event("tables_in_use")
    assert refused["tables"] == tables
    assert ovn_flows(topo.sandbox) == before


def test_cleanup_on_exit_leaves_the_vips_to_ovn(topo: OvnTopology,
                                                daemon: LbaffdProcess) -> None:
    before = ovn_flows(topo.sandbox)
    daemon.stop()
    proc = LbaffdProcess(topo.sandbox, "--cleanup-on-exit")
    proc.start()
    proc.stop()
    assert lbaffd_flows(topo.sandbox) == [] and entries(topo.sandbox) == []
    assert ovn_flows(topo.sandbox) == before
    # OVN balances the VIP again: a client OVN already knows gets through
    res = open_connections(topo, "cli1", AFFINITY_VIP, VIP_PORT, 3, [], 3.0)
    assert any(r.ok for r in res)
    daemon.start()  # the module's daemon fixture stops it
