"""The OVN sandbox of companion mode is real, and OVN works natively in it.

No lbaffd here: real ovn-northd, two chassis each with its own ovs-vswitchd
and a real ovn-controller (Debian's ``ovn-host``), Geneve between them, the
topology written with ``ovn-nbctl`` (``lbaffd_sandbox.ovn_topology``).  What
these tests pin is the ground the companion tests stand on: ovn-controller
programs br-int on both chassis, direct, routed and cross-chassis traffic
flows, the ACL's drop rule drops, the LB without affinity balances, and
traffic survives an ovn-controller restart.  They also pin the behaviour that
motivates companion mode: with OVN 23.03's own ``affinity_timeout`` the first
connection of a new client does not complete.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from lbaffd_sandbox.companion_demo import new_clients, render
from lbaffd_sandbox.ovn import OvnSandbox, started_ovn_sandbox
from lbaffd_sandbox.ovn_topology import (
    BACKEND_PORT,
    DROP_PORT,
    HOSTS,
    OvnTopology,
    build_ovn_topology,
)
from lbaffd_sandbox.sandbox import _alive
from lbaffd_sandbox.scenarios import first_connections, measure, open_connections

pytestmark = [pytest.mark.integration, pytest.mark.traffic]


@pytest.fixture(scope="module")
def topo() -> Iterator[OvnTopology]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, ovs-vswitchd)")
    with started_ovn_sandbox(chassis_count=2) as sb:
        yield build_ovn_topology(sb)


def _one(topo: OvnTopology, host: str, ip: str, port: int, timeout: float = 2.0) -> str:
    """Backend name that answered one connection, or '' when it failed."""
    res = open_connections(topo, host, ip, port, 1, [], timeout)
    return res[0].backend if res[0].ok else ""


def _binding_chassis(sb: OvnSandbox, port: str) -> str:
    uuid = sb.sbctl("--bare", "--columns=chassis", "find", "Port_Binding",
                    f"logical_port={port}")
    return sb.sbctl("--bare", "--columns=name", "list", "Chassis", uuid)


def test_ovn_controller_programs_both_chassis(topo: OvnTopology) -> None:
    sb = topo.sandbox
    for n, ch in ((1, sb.node(1)), (2, sb.node(2))):
        assert sb.sbctl("--bare", "--columns=ip", "find", "Encap",
                        f"chassis_name={ch.name}") == ch.encap_ip
        assert ch.interfaces_of_type("geneve"), f"no tunnel port on {ch.name}"
        assert sb.mgmt_socket_of(n).is_socket()
        for name, ofport in ch.ofports.items():
            # OVN's own table-0 flow for the VIF (sets the zone, datapath, inport)
            assert ch.dump_flows(f"table=0,in_port={ofport}"), name
            assert _binding_chassis(sb, name) == ch.name
    assert sb.mgmt_socket_of(2) == sb.rundir / "ch2" / "br-int.mgmt"
    assert sb.node(2).ofports.keys() == {"be3", "cli3"}
    assert sb.node(1).ofports.keys() == set(HOSTS) - {"be3", "cli3"}


def test_ct_zones_are_ovn_controllers(topo: OvnTopology) -> None:
    """``ct_zones`` (br-int external_ids) agrees with ovn-controller's own
    ``ct-zone-list`` on its control socket, one zone per local port and per
    datapath's DNAT/SNAT, all distinct."""
    for n in (1, 2):
        sb = topo.sandbox
        zones = sb.ct_zones(n)
        ctl = sb.ovn_controller_ctl(n)
        assert ctl.name == f"ovn-controller.{sb.node(n).controller_pid()}.ctl"
        listed = dict(line.split() for line in sb.node(n).ovn_appctl("ct-zone-list").splitlines()
                      if line.strip())
        assert {k: int(v) for k, v in listed.items()} == zones
        assert set(sb.node(n).ofports) <= set(zones)
        assert len(set(zones.values())) == len(zones)


def test_direct_routed_and_cross_chassis_traffic(topo: OvnTopology) -> None:
    assert _one(topo, "cli1", HOSTS["be1"].ip, BACKEND_PORT) == "be1"  # sw0 -> sw0
    assert _one(topo, "rcli1", HOSTS["be2"].ip, BACKEND_PORT) == "be2"  # sw1 -> lr0 -> sw0
    assert _one(topo, "cli1", HOSTS["be3"].ip, BACKEND_PORT) == "be3"  # over Geneve
    assert _one(topo, "rcli1", HOSTS["be3"].ip, BACKEND_PORT) == "be3"  # routed + Geneve
    assert _one(topo, "cli3", HOSTS["be1"].ip, BACKEND_PORT) == "be1"  # chassis 2 -> 1


def test_acl_drop_rule_still_drops(topo: OvnTopology) -> None:
    """The drop ACL (tcp.dst == 9999) beats the allow-related one, for direct
    and routed clients and on the remote chassis; the servers do listen."""
    for host, backend in (("cli1", "be1"), ("rcli1", "be2"), ("cli1", "be3")):
        assert _one(topo, host, HOSTS[backend].ip, DROP_PORT, timeout=1.0) == ""
        assert _one(topo, host, HOSTS[backend].ip, BACKEND_PORT) == backend
    listening = topo.hosts["be1"].exec("ss", "-ltnH", f"sport = :{DROP_PORT}")
    assert str(DROP_PORT) in listening


def test_vip_without_affinity_balances_over_both_chassis(topo: OvnTopology) -> None:
    for host in ("cli1", "rcli1", "cli3"):
        counts = topo.sandbox.connect_counts(host, topo.plain_vip, topo.vip_port, 30,
                                             timeout=2.0)
        assert set(counts) == {"be1", "be2", "be3"}, (host, counts)  # no "error"


def test_scenarios_on_the_vip_without_affinity(topo: OvnTopology) -> None:
    """The scenario library, on the VIP OVN balances without affinity: every
    connection completes, and nothing holds a client to one backend."""
    report = measure(topo, topo.plain_vip, "OVN", n=4, k=8, timeout=2.0)
    assert report.first.completed == 4
    assert len(report.first.times_ms) == 4
    for run in (report.sticky, report.burst, report.routed, report.hairpin):
        assert run.failed == 0, run
        assert len(run.results) == 8
    spread = len(report.sticky.distinct) + len(report.burst.distinct)
    assert spread > 2, report  # 16 connections on one backend: ~1e-7 by chance
    assert report.hairpin.client == HOSTS["be1"].ip
    assert report.rows()[0][0] == "first connection of 4 new clients"


def test_backend_reaches_itself_through_the_vip(topo: OvnTopology) -> None:
    """OVN's hairpin: be1 -> VIP balanced to be1 is SNATed to the VIP and
    works; 30 connections reach every backend, be1 included."""
    counts = topo.sandbox.connect_counts("be1", topo.plain_vip, topo.vip_port, 30, timeout=2.0)
    assert set(counts) == {"be1", "be2", "be3"}, counts


def test_ovn_native_affinity_loses_each_new_clients_first_connection(
        topo: OvnTopology) -> None:
    """What issue 14 is about: OVN 23.03's ``affinity_timeout`` learns the
    backend and drops the packet (``commit_lb_aff(...); /* drop */``); the
    retransmitted SYN, already DNATed by conntrack, misses the learned entry.
    The next connections of those clients do complete, each on one backend."""
    first = first_connections(topo, topo.affinity_vip, n=4, timeout=2.0)
    assert first.completed == 0, first
    clients = [r.src for r in first.results]
    again = open_connections(topo, "cli1", topo.affinity_vip, topo.vip_port, 12, clients)
    by_client: dict[str, set[str]] = {}
    for r in again:
        assert r.ok, r
        by_client.setdefault(r.src, set()).add(r.backend)
    assert all(len(b) == 1 for b in by_client.values()), by_client


def test_restart_ovn_controller_reprograms_and_traffic_flows(topo: OvnTopology) -> None:
    sb = topo.sandbox
    for n in (1, 2):
        old_pid = sb.node(n).controller_pid()
        zones = sb.ct_zones(n)
        sb.restart_ovn_controller(n)  # returns once its flows are back
        new_pid = sb.node(n).controller_pid()
        assert old_pid is not None and new_pid is not None and new_pid != old_pid
        assert not _alive(old_pid)
        assert sb.ovn_controller_ctl(n).name == f"ovn-controller.{new_pid}.ctl"
        assert sb.ct_zones(n) == zones  # read back from br-int's external_ids
    assert _one(topo, "cli1", HOSTS["be1"].ip, BACKEND_PORT) == "be1"
    assert _one(topo, "rcli1", HOSTS["be3"].ip, BACKEND_PORT) == "be3"
    assert _one(topo, "cli1", HOSTS["be2"].ip, DROP_PORT, timeout=1.0) == ""
    counts = sb.connect_counts("cli1", topo.plain_vip, topo.vip_port, 30, timeout=2.0)
    assert set(counts) == {"be1", "be2", "be3"}, counts


def test_demo_rounds_of_new_clients(topo: OvnTopology) -> None:
    """The demo's round (new clients of both switches, concurrently, three
    connections each) on the VIP OVN balances without affinity."""
    runs = new_clients(topo, topo.plain_vip, (("cli1", 2), ("rcli1", 1)))
    assert [r.client.rsplit(".", 1)[0] for r in runs] == ["10.0.0", "10.0.0", "10.0.1"]
    assert len({r.client for r in runs}) == 3
    for run in runs:
        assert len(run.results) == 3 and run.failed == 0, run
        assert {r.src for r in run.results} == {run.client}
    lines = render(topo, [], runs, [], 1, [])
    assert sum(line.startswith("   new client ") for line in lines) == 3


def test_single_chassis_sandbox_and_teardown() -> None:
    """One chassis: ovn-encap-ip on loopback, be3 on chassis 1; after the
    context exits no process of it runs and its namespaces are gone."""
    with started_ovn_sandbox(chassis_count=1) as sb:
        topo = build_ovn_topology(sb, servers=False)
        assert set(sb.node(1).ofports) == set(HOSTS)
        assert sb.sbctl("--bare", "--columns=ip", "list", "Encap") == "127.0.0.1"
        sb.start_server(topo.hosts["be3"], BACKEND_PORT)
        assert _one(topo, "rcli1", HOSTS["be3"].ip, BACKEND_PORT) == "be3"
        pids = [int(p.read_text()) for p in sb.rundir.glob("*.pid")]
        prefix = sb.prefix
    assert len(pids) >= 7  # 3 ovsdb-servers, vswitchd, northd, ovn-controller, a server
    assert not [p for p in pids if _alive(p)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{prefix}-" not in netns
